"""Connection states and THE one transition table (ARCHITECTURE.md, "Invariants").

Whether a command is allowed in a state is a single dictionary lookup in ``TRANSITIONS``; a miss
is refused with the reply ``refusal()`` picks (all ``503 5.5.1``, worded for the situation).
Nothing else in the engine decides sequence.
"""

from __future__ import annotations

from enum import Enum, StrEnum

from smtpkit.protocol.replies import (
    AUTH_IN_TRANSACTION,
    BAD_SEQUENCE,
    DATA_AFTER_BDAT,
    NEED_HELO,
    NO_VALID_RECIPIENTS,
    SENDER_ALREADY,
    Reply,
)

__all__ = [
    "AFTER_REFUSAL",
    "ALWAYS_APPLIES",
    "CHALLENGES",
    "COMMAND_VERBS",
    "TRANSITIONS",
    "State",
    "Verb",
    "refusal",
]


class State(Enum):
    """Where the SMTP dialogue is (RFC 5321 3.3 and 4.1.4)."""

    # Every command looks its (state, verb) pair up in the tables below: hash by identity,
    # in C, rather than by Enum's hash of the name, a Python call each time. Members are
    # singletons and compare by identity, so the two agree.
    __hash__ = object.__hash__

    #: Connected; the greeting has not been sent yet. Commands wait in the buffer.
    INITIAL = "initial"
    #: Greeting sent (or STARTTLS completed, RFC 3207 4.2): HELO or EHLO is needed.
    GREETED = "greeted"
    #: HELO/EHLO accepted, no transaction open.
    READY = "ready"
    #: MAIL accepted: a transaction is open, no recipient accepted yet.
    MAIL = "mail"
    #: At least one RCPT accepted.
    RCPT = "rcpt"
    #: 354 sent: bytes are message content until ``<CRLF>.<CRLF>``.
    DATA = "data"
    #: ``BDAT <size>`` read: the next ``size`` bytes are message content, then its reply
    #: (RFC 3030 2).
    CHUNK = "chunk"
    #: A chunk accepted, not the last: the message goes on with more BDAT commands.
    BDAT = "bdat"
    #: 334 sent in an AUTH exchange: the next line is a response, not a command (RFC 4954).
    AUTH = "auth"
    #: QUIT answered, a 421 sent, or the peer closed: nothing more is read.
    CLOSED = "closed"


class Verb(StrEnum):
    """Command verbs (RFC 5321 4.1.1, RFC 3207) and two pseudo-steps of the dialogue."""

    HELO = "HELO"
    EHLO = "EHLO"
    MAIL = "MAIL"
    RCPT = "RCPT"
    DATA = "DATA"
    RSET = "RSET"
    NOOP = "NOOP"
    QUIT = "QUIT"
    VRFY = "VRFY"
    EXPN = "EXPN"
    HELP = "HELP"
    STARTTLS = "STARTTLS"
    AUTH = "AUTH"
    BDAT = "BDAT"
    #: Pseudo-step: the client's answer to a 334 challenge (RFC 4954 4).
    AUTH_RESPONSE = "<auth-response>"
    #: Pseudo-step: the server sends its greeting (RFC 5321 3.1).
    GREETING = "<greeting>"
    #: Pseudo-step: the server answers the final dot (RFC 5321 4.1.1.4).
    END_OF_DATA = "<end-of-data>"
    #: Pseudo-steps: the server answers a BDAT command once its chunk was read, a chunk
    #: that is not the last, or the last one (RFC 3030 2).
    END_OF_CHUNK = "<end-of-chunk>"
    END_OF_LAST_CHUNK = "<end-of-last-chunk>"


#: The verbs a client can type, by their upper-case spelling.
COMMAND_VERBS: dict[bytes, Verb] = {
    v.value.encode("ascii"): v
    for v in Verb
    if not v.value.startswith("<")  # the pseudo-steps
}

_S = State
_V = Verb

# States in which the client may type commands at all (not before the greeting, not inside
# DATA or a chunk, not after the end).
_DIALOGUE = (_S.GREETED, _S.READY, _S.MAIL, _S.RCPT, _S.BDAT)


def _everywhere(verb: Verb, to: State | None) -> dict[tuple[State, Verb], State]:
    """``verb`` is allowed in every dialogue state; ``to`` None means "stays where it is"."""
    return {(s, verb): (s if to is None else to) for s in _DIALOGUE}


#: (state, verb) -> state after a *positive* reply (2xx/3xx) to that command.
#: A missing key means the command is out of sequence in that state.
#: For the pseudo-steps in ``ALWAYS_APPLIES`` the transition applies whatever the reply code.
#: A 421 reply closes the connection from any state (RFC 5321 3.8) and is not in the table.
TRANSITIONS: dict[tuple[State, Verb], State] = {
    (_S.INITIAL, _V.GREETING): _S.GREETED,
    # RFC 5321 4.1.4: EHLO/HELO may be sent at any time and resets the transaction (like RSET).
    **_everywhere(_V.HELO, _S.READY),
    **_everywhere(_V.EHLO, _S.READY),
    # RFC 5321 4.1.4: a transaction needs the client to have identified itself, and MAIL may
    # not be given inside an open transaction.
    (_S.READY, _V.MAIL): _S.MAIL,
    # RFC 5321 4.1.1.3: RCPT only after MAIL; each accepted RCPT adds a recipient.
    (_S.MAIL, _V.RCPT): _S.RCPT,
    (_S.RCPT, _V.RCPT): _S.RCPT,
    # RFC 5321 4.1.1.4: DATA needs at least one accepted recipient.
    (_S.RCPT, _V.DATA): _S.DATA,
    # RFC 5321 4.1.1.4: after the final dot's reply the transaction is over, whatever the
    # outcome; the HELO/EHLO identity is kept.
    (_S.DATA, _V.END_OF_DATA): _S.READY,
    # RFC 3030 2: BDAT needs an accepted recipient too, and may follow accepted chunks (not
    # DATA: they are not mixed in a transaction). Its row applies as soon as it is read,
    # since its chunk follows it at once; the reply comes at the chunk's end, and moves on
    # from CHUNK. The last chunk's reply ends the transaction whatever its code, like the
    # final dot's; any refused chunk ends it too (AFTER_REFUSAL).
    (_S.RCPT, _V.BDAT): _S.CHUNK,
    (_S.BDAT, _V.BDAT): _S.CHUNK,
    (_S.CHUNK, _V.END_OF_CHUNK): _S.BDAT,
    (_S.CHUNK, _V.END_OF_LAST_CHUNK): _S.READY,
    # RFC 5321 4.1.1.5: RSET drops the transaction but not the HELO/EHLO identity; before any
    # HELO there is nothing to keep. RFC 3030 2: that includes the chunks already sent.
    (_S.GREETED, _V.RSET): _S.GREETED,
    (_S.READY, _V.RSET): _S.READY,
    (_S.MAIL, _V.RSET): _S.READY,
    (_S.RCPT, _V.RSET): _S.READY,
    (_S.BDAT, _V.RSET): _S.READY,
    # RFC 5321 4.1.4: NOOP, HELP, EXPN, VRFY and QUIT may be used at any time.
    **_everywhere(_V.NOOP, None),
    **_everywhere(_V.VRFY, None),
    **_everywhere(_V.EXPN, None),
    **_everywhere(_V.HELP, None),
    **_everywhere(_V.QUIT, _S.CLOSED),
    # RFC 3207 4.2: after the TLS handshake the server forgets everything it learned from the
    # client, including HELO/EHLO. Whether STARTTLS is offered at all is the session's call.
    **_everywhere(_V.STARTTLS, _S.GREETED),
    # RFC 4954 4: AUTH after EHLO and outside a transaction; 235 leaves the identity in
    # place. Whether AUTH is offered at all (TLS, the listener) is the session's call.
    (_S.READY, _V.AUTH): _S.READY,
    # RFC 4954 4: the exchange ends with the reply to a response, whatever its code.
    (_S.AUTH, _V.AUTH_RESPONSE): _S.READY,
}

#: Where a ``334`` challenge leads: the next line is the client's response (RFC 4954 4).
CHALLENGES: dict[tuple[State, Verb], State] = {
    (_S.READY, _V.AUTH): _S.AUTH,
    (_S.AUTH, _V.AUTH_RESPONSE): _S.AUTH,
}

#: Pseudo-steps whose transition applies on any reply code, not only positive ones: a refused
#: greeting (554, RFC 5321 3.1) still leads to a dialogue, and a refused message still ends the
#: transaction.
ALWAYS_APPLIES = frozenset({_V.GREETING, _V.END_OF_DATA, _V.END_OF_LAST_CHUNK, _V.AUTH_RESPONSE})

#: Where a refusal (4xx/5xx) leads instead of staying put. RFC 3030 2: a refused chunk fails
#: its transaction, and the client sends none of its other chunks; those it had pipelined
#: already are read and refused as out of sequence, never added to a later message.
AFTER_REFUSAL: dict[tuple[State, Verb], State] = {
    (_S.CHUNK, _V.END_OF_CHUNK): _S.READY,
}

# Which 503 wording a lookup miss gets; any miss not listed gets BAD_SEQUENCE.
_REFUSALS: dict[tuple[State, Verb], Reply] = {
    (_S.GREETED, _V.MAIL): NEED_HELO,
    (_S.GREETED, _V.RCPT): NEED_HELO,
    (_S.GREETED, _V.DATA): NEED_HELO,
    (_S.MAIL, _V.MAIL): SENDER_ALREADY,
    (_S.RCPT, _V.MAIL): SENDER_ALREADY,
    (_S.MAIL, _V.DATA): NO_VALID_RECIPIENTS,
    (_S.GREETED, _V.AUTH): NEED_HELO,
    (_S.MAIL, _V.AUTH): AUTH_IN_TRANSACTION,
    (_S.RCPT, _V.AUTH): AUTH_IN_TRANSACTION,
    (_S.GREETED, _V.BDAT): NEED_HELO,
    (_S.MAIL, _V.BDAT): NO_VALID_RECIPIENTS,
    (_S.BDAT, _V.DATA): DATA_AFTER_BDAT,
    (_S.BDAT, _V.MAIL): SENDER_ALREADY,
    (_S.BDAT, _V.AUTH): AUTH_IN_TRANSACTION,
}


def refusal(state: State, verb: Verb) -> Reply:
    """The 503 reply for ``verb`` arriving in ``state`` when the table has no entry for it."""
    return _REFUSALS.get((state, verb), BAD_SEQUENCE)
