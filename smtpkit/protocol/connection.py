"""``ServerConnection``: the sans-I/O SMTP server engine (bytes in, events out; replies in,
bytes out), in the manner of h11's ``Connection``.

The engine checks syntax and sequence (the "check" step of each command); every decision
about addresses, policy and storage belongs to the session, which answers each event with a
``Reply`` through ``send()``.

Pipelining (RFC 2920) falls out of one rule: after a command event the engine is *paused* and
parses nothing until the reply to that event is sent. Bytes that arrive meanwhile only wait in
the buffer, so the bytes after ``DATA`` are read as content once ``354`` was sent, and the bytes
after ``STARTTLS`` can be dropped when ``220`` is sent. BDAT (RFC 3030) is the one command
answered later: its chunk follows it at once, so the engine reads the chunk first, by its
octet count, and the reply answers the chunk's end. Whenever a BDAT's size can be read, its
chunk is read as content (or dropped, when the command is refused), never as commands.

Command lines are decoded as strict UTF-8; a line that is not UTF-8 is refused with ``501``.
UTF-8 addresses are parsed whether or not the transaction's MAIL said SMTPUTF8 (RFC 6531): the
session's policy refuses them without it (a sender or recipient with ``553 5.6.7``, clearer
than a syntax error) and checks them against the mailbox rules with it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from smtpkit.limits import BareNewline, Limits
from smtpkit.protocol.buffer import ChunkScanner, LineError, ReceiveBuffer
from smtpkit.protocol.events import (
    BadCommand,
    Bdat,
    ConnectionClosed,
    Data,
    Event,
    Expn,
    Hello,
    Help,
    MailFrom,
    Noop,
    Quit,
    RefusedChunk,
    Rset,
    StartTls,
    Vrfy,
)
from smtpkit.protocol.grammar import CONTROL, parse_auth, parse_bdat, parse_mail, parse_rcpt
from smtpkit.protocol.readers import READERS, ChunkReader, DropChunk, Reader, ReaderFactory, Step
from smtpkit.protocol.replies import (
    BARE_NEWLINE_IN_COMMAND,
    BDAT_NEEDS_EHLO,
    BDAT_UNREADABLE,
    BINARYMIME_NEEDS_BDAT,
    COMMAND_TOO_LONG,
    NON_ASCII_HELO,
    SYNTAX_ERROR_ARGS,
    UNKNOWN_COMMAND,
    Reply,
)
from smtpkit.protocol.state import (
    AFTER_REFUSAL,
    ALWAYS_APPLIES,
    CHALLENGES,
    COMMAND_VERBS,
    TRANSITIONS,
    State,
    Verb,
    refusal,
)

__all__ = [
    "NEED_DATA",
    "PAUSED",
    "LocalProtocolError",
    "NeedData",
    "Paused",
    "ServerConnection",
]


# Before any BDAT: one value for every session (it is frozen).
_NO_CHUNK: Final = Bdat(0)


class LocalProtocolError(Exception):
    """The *caller* broke the engine's rules (a programming error, not a client error):
    ``send()`` with no event awaiting a reply, ``send()`` after the connection closed, or
    ``receive_data()`` after EOF."""


class NeedData:
    """Type of ``NEED_DATA``: feed more bytes with ``receive_data()``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


class Paused:
    """Type of ``PAUSED``: nothing will be parsed until the session acts.

    Returned while an event awaits its reply (``send()``), before the greeting was sent, and
    for good once the connection is CLOSED.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "PAUSED"


NEED_DATA: Final = NeedData()
PAUSED: Final = Paused()


class ServerConnection:
    """One SMTP server connection's protocol state, fed with bytes and answered with replies.

    Usage by the session: ``send(greeting)`` first; then after each ``receive_data()`` call
    ``next_event()`` until it returns ``NEED_DATA`` or ``PAUSED``, answering every command
    event, ``EndOfData`` and ``EndOfChunk`` with exactly one ``send(reply)`` (``DataChunk``,
    ``Bdat`` and ``ConnectionClosed`` get no reply). A 421 may be sent at any moment and
    closes.
    """

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._buffer = ReceiveBuffer()
        self._state = State.INITIAL
        # An event awaits its reply; _pending is its verb (None for BadCommand, which never
        # moves the state).
        self._awaiting = False
        self._pending: Verb | None = None
        self._extended = False
        # The input mode of the current state (readers.READERS); None before the greeting
        # and after the end, when nothing is read.
        self._reader: Reader | None = None
        self._reader_kind: ReaderFactory | None = None
        # The chunk of a refused BDAT being dropped, read before the state's reader.
        self._dropping: DropChunk | None = None
        # The transaction: whether its MAIL said BODY=BINARYMIME (RFC 3030 3), and the
        # checks on its BDAT content, which carry over from chunk to chunk.
        self._mail_body: str | None = None
        self._binary = False
        self._content: ChunkScanner | None = None
        self._next_chunk = _NO_CHUNK

    # --- properties ----------------------------------------------------------------------------

    @property
    def state(self) -> State:
        """The current state; it changes only in ``send()`` and on EOF."""
        return self._state

    @property
    def extended(self) -> bool:
        """The last accepted HELO/EHLO was EHLO (reset by STARTTLS, RFC 3207 4.2)."""
        return self._extended

    @property
    def buffered(self) -> int:
        """Bytes received and not yet consumed.

        While the engine is paused nothing is consumed, so a session that keeps reading
        from the socket then should stop once this passes its own bound (backpressure).
        """
        return len(self._buffer)

    # --- bytes in ------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the peer; ``b""`` means the peer closed its side (EOF).

        Bytes arriving after the connection is CLOSED are ignored.
        """
        if self._state is State.CLOSED:
            return
        if not data:
            self._buffer.eof = True
            return
        if self._buffer.eof:
            raise LocalProtocolError("receive_data() called with bytes after EOF")
        self._buffer.feed(data)

    def next_event(self) -> Event | NeedData | Paused:
        """The next thing the client said, ``NEED_DATA`` or ``PAUSED``.

        ``ConnectionClosed`` comes once, after EOF, when every complete line buffered before
        it was returned (an incomplete last line is dropped); the state is then CLOSED. In
        DATA mode an EOF before the final dot also gives ``ConnectionClosed``: the message
        is incomplete and must be dropped.
        """
        while True:
            reader = self._dropping or self._reader
            if self._awaiting or reader is None:
                return PAUSED
            step = reader.read(self._buffer)
            if step is None:
                if self._buffer.eof:
                    self._close()
                    return ConnectionClosed()
                return NEED_DATA
            if step.drop:
                # RFC 3030 2: a refused BDAT's chunk is read and dropped before its reply.
                self._dropping = DropChunk(step)
                continue
            self._dropping = None
            if step.needs_reply:
                self._awaiting = True
                self._pending = step.verb
            elif step.verb is not None:
                # Answered later (BDAT, after its chunk): the transition applies now.
                self._enter(TRANSITIONS[self._state, step.verb], step.verb)
            return step.event

    # --- replies out ---------------------------------------------------------------------------

    def send(self, reply: Reply) -> bytes:
        """Answer the event awaiting a reply (or send the greeting); return the bytes to write.

        The transition table applies when the reply is positive (2xx/3xx); the greeting and
        the reply to ``EndOfData`` move on whatever their code. A 421 is allowed in every
        state, with or without an event awaiting, and closes (RFC 5321 3.8).
        """
        out = reply.to_bytes()
        if reply.closes:
            self._close()
            return out
        if self._state is State.CLOSED:
            raise LocalProtocolError(f"send({reply.code}) on a closed connection")
        if self._state is State.INITIAL:
            verb: Verb | None = Verb.GREETING
        elif self._awaiting:
            verb = self._pending
        else:
            raise LocalProtocolError(f"send({reply.code}) with no event awaiting a reply")
        self._awaiting = False
        self._pending = None
        if verb is None:
            return out
        if reply.code == 334:
            # A challenge (RFC 4954 4): the next line is the client's response.
            self._enter(CHALLENGES[self._state, verb], verb)
        elif reply.is_positive or verb in ALWAYS_APPLIES:
            self._enter(TRANSITIONS[self._state, verb], verb)
        elif (self._state, verb) in AFTER_REFUSAL:
            self._enter(AFTER_REFUSAL[self._state, verb], verb)
        return out

    def _enter(self, new: State, verb: Verb) -> None:
        if new is State.CLOSED:
            self._close()
            return
        self._state = new
        kind = READERS.get(new)
        if kind is not self._reader_kind:
            self._reader_kind = kind
            self._reader = kind(self._limits, self._command) if kind is not None else None
        # After the state's reader is made: a chunk's reader is given its chunk.
        effect = _ON_ACCEPT.get(verb)
        if effect is not None:
            effect(self)

    def _close(self) -> None:
        self._state = State.CLOSED
        self._awaiting = False
        self._pending = None
        self._reader = None
        self._reader_kind = None
        self._dropping = None
        self._buffer.clear()

    # --- what an accepted command changes besides the state ----------------------------------

    def _greeted_with_helo(self) -> None:
        self._extended = False

    def _greeted_with_ehlo(self) -> None:
        self._extended = True

    def _transaction_begins(self) -> None:
        self._binary = self._mail_body == "BINARYMIME"
        self._content = None

    def _chunk_begins(self) -> None:
        """The accepted BDAT's chunk is next; the first chunk starts the content checks."""
        if self._content is None:
            limits = self._limits
            self._content = ChunkScanner(
                limits.max_text_line,
                limits.max_message_size,
                binary=self._binary,
                normalize=limits.bare_newline is BareNewline.NORMALIZE,
            )
        reader = self._reader
        assert isinstance(reader, ChunkReader)
        reader.start(self._content, self._next_chunk.size, self._next_chunk.last)

    def _tls_begins(self) -> None:
        # RFC 3207 4.2 / CVE-2011-0411: bytes the client pipelined after STARTTLS were sent
        # in plaintext and must never be executed as if they came over TLS; the client
        # starts over with EHLO.
        self._buffer.clear()
        self._extended = False

    # --- commands ------------------------------------------------------------------------------

    def _command(self, line: bytes, error: LineError | None) -> Step:
        """Turn one command line into a step: the event and the verb to transition on."""
        word, _, argument = line.partition(b" ")
        if word.upper() == b"BDAT":
            return self._bdat(line, argument, error)
        checked = self._check(line, error)
        if isinstance(checked, Reply):
            return Step(BadCommand(checked, line.decode("utf-8", "backslashreplace")), None)
        return Step(checked[1], checked[0])

    def _bdat(self, line: bytes, argument: bytes, error: LineError | None) -> Step:
        """A BDAT command (RFC 3030 2). Its chunk is read whatever the verdict: into the
        message when the command may come now, else dropped before its refusal. Only when
        its size cannot be read (whatever was wrong with the line) is the chunk's end
        unknown: then no byte after it can be told from chunk data, and the session closes
        (Postfix answers 521 there)."""
        chunk = parse_bdat(argument) if error is None else None
        if chunk is None:
            return Step(BadCommand(BDAT_UNREADABLE, line.decode("utf-8", "backslashreplace")), None)
        if (self._state, Verb.BDAT) not in TRANSITIONS:
            refused: Reply | None = refusal(self._state, Verb.BDAT)
        elif not self._extended:
            refused = BDAT_NEEDS_EHLO
        else:
            refused = None
        if refused is not None:
            return Step(RefusedChunk(refused, chunk.size), None, drop=chunk.size)
        self._next_chunk = chunk
        return Step(chunk, Verb.BDAT, needs_reply=False)

    def _check(self, line: bytes, error: LineError | None) -> tuple[Verb, Event] | Reply:
        """Sequence, then syntax; a ``Reply`` means refused."""
        if error is LineError.TOO_LONG:
            return COMMAND_TOO_LONG
        if error is LineError.BARE_LF:
            return BARE_NEWLINE_IN_COMMAND
        if b"\r" in line:
            # RFC 5321 2.3.8: a CR may only appear as part of the CRLF line end.
            return SYNTAX_ERROR_ARGS
        word, _, raw_argument = line.partition(b" ")
        verb = COMMAND_VERBS.get(word.upper())
        if verb is None:
            return UNKNOWN_COMMAND
        if (self._state, verb) not in TRANSITIONS:
            return refusal(self._state, verb)
        if verb is Verb.NOOP:
            # RFC 5321 4.1.1.9: any argument of NOOP has no effect.
            return verb, Noop()
        try:
            argument = raw_argument.decode("utf-8")
        except UnicodeDecodeError:
            return SYNTAX_ERROR_ARGS
        if CONTROL.search(argument):
            return SYNTAX_ERROR_ARGS
        result = self._parse(verb, argument.strip(" "))
        if isinstance(result, Reply):
            return result
        return verb, result

    def _parse(self, verb: Verb, argument: str) -> Event | Reply:
        """Syntax of one allowed command; a ``Reply`` means refused."""
        return _PARSERS.get(verb, ServerConnection._parse_no_argument)(self, verb, argument)

    def _parse_hello(self, verb: Verb, argument: str) -> Event | Reply:
        # RFC 5321 4.1.1.1: exactly one Domain or address-literal. The name is not checked
        # further: real clients send bare host names; the session may judge it.
        if not argument or " " in argument:
            return SYNTAX_ERROR_ARGS
        # RFC 5321 4.1.2 Domain is ASCII, and SMTPUTF8 does not change that here: the
        # client sends EHLO before it knows the extension is offered, so RFC 6531 3.7.1
        # has it name itself in LDH labels or A-labels only. The name goes into
        # Received: headers and the journal.
        if not argument.isascii():
            return NON_ASCII_HELO
        return Hello(argument, verb is Verb.EHLO)

    def _parse_mail(self, verb: Verb, argument: str) -> Event | Reply:
        mail = parse_mail(argument, self._extended)
        self._mail_body = mail.body if isinstance(mail, MailFrom) else None
        return mail

    def _parse_rcpt(self, verb: Verb, argument: str) -> Event | Reply:
        return parse_rcpt(argument, self._extended)

    def _parse_no_argument(self, verb: Verb, argument: str) -> Event | Reply:
        # DATA, RSET, QUIT, STARTTLS take no argument (RFC 5321 4.1.1.4-5, 4.1.1.10; RFC 3207
        # 4).
        if argument:
            return SYNTAX_ERROR_ARGS
        if verb is Verb.DATA and self._binary:
            # RFC 3030 3: binary content has no lines to end with a dot; the transaction's
            # MAIL (which the table cannot see) said it comes in chunks.
            return BINARYMIME_NEEDS_BDAT
        return _NO_ARGUMENT_EVENTS[verb]


#: The syntax of each command that takes an argument; the others take none.
_PARSERS: Final[dict[Verb, Callable[[ServerConnection, Verb, str], Event | Reply]]] = {
    Verb.HELO: ServerConnection._parse_hello,
    Verb.EHLO: ServerConnection._parse_hello,
    Verb.MAIL: ServerConnection._parse_mail,
    Verb.RCPT: ServerConnection._parse_rcpt,
    Verb.AUTH: lambda conn, verb, argument: parse_auth(argument),
    Verb.VRFY: lambda conn, verb, argument: Vrfy(argument),
    Verb.EXPN: lambda conn, verb, argument: Expn(argument),
    Verb.HELP: lambda conn, verb, argument: Help(argument),
}


_NO_ARGUMENT_EVENTS: Final[dict[Verb, Event]] = {
    Verb.DATA: Data(),
    Verb.RSET: Rset(),
    Verb.QUIT: Quit(),
    Verb.STARTTLS: StartTls(),
}


#: What accepting a command changes besides the state (the transition table's job).
_ON_ACCEPT: Final[dict[Verb, Callable[[ServerConnection], None]]] = {
    Verb.HELO: ServerConnection._greeted_with_helo,
    Verb.EHLO: ServerConnection._greeted_with_ehlo,
    Verb.STARTTLS: ServerConnection._tls_begins,
    Verb.MAIL: ServerConnection._transaction_begins,
    Verb.BDAT: ServerConnection._chunk_begins,
}
