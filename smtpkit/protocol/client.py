"""``ClientConnection``: the sans-I/O SMTP client engine (RFC 5321; LMTP, RFC 2033), the
counterpart of ``ServerConnection`` for outbound delivery, in the manner of h11.

The caller (the queue runner) owns the socket, the clock and TLS. It feeds every byte it
reads to ``receive_data()`` (``b""`` at EOF), takes events from ``next_event()`` until
``NEED_DATA`` or ``PAUSED``, answers them with calls (``send_envelope()``, ``send_data()``,
``quit()``...), and writes whatever ``data_to_send()`` returns::

    conn = ClientConnection("mx.example.org")
    while True:
        event = conn.next_event()
        if event is NEED_DATA:
            sock.sendall(conn.data_to_send())     # a selectors loop writes when writable
            conn.receive_data(sock.recv(65536))   # with the timeout for conn.waiting_for
            continue
        match event:
            case Ready():
                conn.send_envelope(sender, recipients, size=size)
            case SendData():
                for chunk in message:
                    conn.send_data(chunk)
                conn.end_data()
            case TransactionDone():
                record(event.results)            # then another envelope, or:
                conn.quit()
            case StartTlsNow():
                sock = wrap(sock)                 # the TLS handshake
                conn.tls_started()
            case Closed():
                sock.close()
                break

What the engine does by itself: EHLO (LHLO) after the greeting and again after TLS (RFC 3207
4.2), HELO when EHLO is refused with 5xx (RFC 5321 3.2), an RSET before a transaction when the
last one may have left the server's open, the answers to AUTH challenges, and the lone dot of
RFC 2920 3.1. Everything that is a choice (TLS, AUTH, each envelope, QUIT) is the caller's.

A call that breaks the rules (a command in the wrong state, an address with a CR, AUTH in
the clear) raises ``LocalProtocolError`` and writes nothing of that call: nothing the engine
sends can break the protocol. The server's mistakes are events (``ProtocolError``), never
exceptions.
"""

from __future__ import annotations

import base64
import re
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Final

from smtpkit.limits import Limits
from smtpkit.protocol.client_events import (
    AuthResult,
    ClientEvent,
    Closed,
    Greeting,
    HelloRefused,
    MailResult,
    MessageResult,
    ProtocolError,
    Ready,
    RecipientResult,
    ResetResult,
    SendData,
    StartTlsNow,
    StartTlsRefused,
    TransactionDone,
)
from smtpkit.protocol.connection import NEED_DATA, PAUSED, LocalProtocolError, NeedData, Paused
from smtpkit.protocol.grammar import parse_mail, parse_rcpt
from smtpkit.protocol.replies import Reply
from smtpkit.protocol.reply_parser import Extensions, Malformed, ReplyBuffer, parse_extensions

__all__ = [
    "NEED_DATA",
    "PAUSED",
    "ClientConnection",
    "ClientState",
    "LocalProtocolError",
    "NeedData",
    "Paused",
    "Waiting",
]


class ClientState(Enum):
    """Where the client is, as far as the caller's calls go (``_CALLS`` says which calls
    each state takes; ``waiting_for`` says which reply is awaited)."""

    #: Waiting for the greeting, then the reply to EHLO/LHLO (or HELO).
    CONNECTING = "connecting"
    #: Greeted, no command in flight: ``start_tls()``, ``authenticate()``,
    #: ``send_envelope()``, ``reset()``, ``quit()``.
    READY = "ready"
    #: The greeting or EHLO/HELO was refused: only ``quit()``.
    REFUSED = "refused"
    #: STARTTLS, AUTH, RSET or a transaction's commands are in flight.
    BUSY = "busy"
    #: ``StartTlsNow`` was returned: the caller does the handshake, then ``tls_started()``.
    TLS_HANDSHAKE = "tls-handshake"
    #: ``SendData`` was returned: ``send_data()``, then ``end_data()``.
    MESSAGE = "message"
    #: QUIT was sent.
    CLOSING = "closing"
    #: ``Closed`` was returned: nothing more happens.
    CLOSED = "closed"


class Waiting(StrEnum):
    """The reply the engine waits for: what ``waiting_for`` returns, so the caller can apply
    RFC 5321 4.5.3.2's timeouts (greeting, MAIL, RCPT: 5 minutes; DATA: 2 minutes; the end
    of data: 10 minutes; while the caller streams the message, 3 minutes per write)."""

    GREETING = "greeting"
    EHLO = "ehlo"
    LHLO = "lhlo"
    HELO = "helo"
    STARTTLS = "starttls"
    AUTH = "auth"
    RSET = "rset"
    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"
    END_OF_DATA = "end-of-data"
    QUIT = "quit"


#: The calls each state takes: the one place that decides what the caller may do when.
_CALLS: Final[dict[str, frozenset[ClientState]]] = {
    "start_tls": frozenset({ClientState.READY}),
    "authenticate": frozenset({ClientState.READY}),
    "send_envelope": frozenset({ClientState.READY}),
    "reset": frozenset({ClientState.READY}),
    "quit": frozenset({ClientState.READY, ClientState.REFUSED}),
    "tls_started": frozenset({ClientState.TLS_HANDSHAKE}),
    "send_data": frozenset({ClientState.MESSAGE}),
    "end_data": frozenset({ClientState.MESSAGE}),
}

# RFC 5321 4.1.1.1: Domain or address-literal, ASCII (a U-label would need SMTPUTF8).
_HELO_NAME: Final = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[\x21-\x5a\x5e-\x7e]+\]", re.ASCII
)
# RFC 5321 4.1.2: esmtp-keyword and esmtp-value.
_PARAM_KEYWORD: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*", re.ASCII)
_PARAM_VALUE: Final = re.compile(r"[\x21-\x3c\x3e-\x7e]+")
# Parameters the engine itself adds to MAIL FROM, from what it is told and what is offered.
_ENGINE_PARAMS: Final = frozenset({"SIZE", "BODY", "SMTPUTF8"})
# Parameters that belong to an extension: sending one the server did not offer gets the
# whole MAIL (every recipient) refused with 555, so the caller must leave it out (RFC 3461
# 4.1 says what a relay does then: report "relayed").
_PARAM_EXTENSIONS: Final = {
    "RET": "DSN",
    "ENVID": "DSN",
    "NOTIFY": "DSN",
    "ORCPT": "DSN",
    "AUTH": "AUTH",
}
_MECHANISMS: Final = frozenset({"PLAIN", "LOGIN"})


@dataclass(frozen=True, slots=True)
class _Awaited:
    """One reply due, in the order the commands were sent: which one, and for RCPT and
    an LMTP final dot, which recipient."""

    waiting: Waiting
    index: int = 0


@dataclass(slots=True)
class _Transaction:
    """One envelope on its way: what was sent and what each recipient got so far."""

    recipients: tuple[str, ...]
    pipelined: bool
    mail_line: str
    rcpt_lines: list[str]
    mail_ok: bool = False
    #: Indexes of the recipients accepted at RCPT (only while MAIL was accepted).
    accepted: list[int] = field(default_factory=list)
    #: The reply deciding each recipient, once known.
    fates: list[Reply | None] = field(default_factory=list)
    #: The final dot went out: once it is answered the server's transaction is over.
    data_ended: bool = False
    #: The dot was the lone one of RFC 2920 3.1: its reply decides nothing.
    lone_dot: bool = False

    def accepted_addresses(self) -> tuple[str, ...]:
        return tuple(self.recipients[i] for i in self.accepted)

    @property
    def decided(self) -> bool:
        """Every recipient's fate is known: losing the connection now loses nothing."""
        return all(fate is not None for fate in self.fates)

    def results(self, default: Reply | None) -> tuple[tuple[str, Reply | None], ...]:
        return tuple(
            (address, fate if fate is not None else default)
            for address, fate in zip(self.recipients, self.fates, strict=True)
        )


def _positive(reply: Reply) -> bool:
    return 200 <= reply.code < 300


def _base64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


class ClientConnection:
    """One SMTP (or LMTP) client connection's protocol state, fed with the server's bytes.

    ``helo_name`` is the name sent with EHLO (LHLO, HELO): a domain or address literal.
    ``lmtp`` speaks RFC 2033: LHLO, no HELO fallback, one reply per accepted recipient after
    the final dot. ``tls`` says the connection is already encrypted (implicit TLS, port 465),
    which allows ``authenticate()``. ``limits`` bounds the AUTH lines it sends
    (``max_auth_line``, RFC 4954 4).
    """

    def __init__(
        self,
        helo_name: str,
        *,
        limits: Limits | None = None,
        lmtp: bool = False,
        tls: bool = False,
    ) -> None:
        if not _HELO_NAME.fullmatch(helo_name):
            raise LocalProtocolError(f"not a domain or address literal for EHLO: {helo_name!r}")
        self._helo_name = helo_name
        self._max_auth_line = (limits or Limits()).max_auth_line
        self._lmtp = lmtp
        self._tls = tls
        self._replies = ReplyBuffer()
        self._state = ClientState.CONNECTING
        self._awaiting: deque[_Awaited] = deque([_Awaited(Waiting.GREETING)])
        self._events: deque[ClientEvent] = deque()
        self._out: list[bytes] = []
        self._extensions = Extensions()
        self._extended = False
        self._authenticated = False
        # The answers still to give to AUTH challenges (secrets: dropped when it ends).
        self._auth_responses: deque[str] = deque()
        self._tx: _Transaction | None = None
        # The server may hold a transaction open (the last one ended without the final dot
        # being answered): RSET before the next MAIL, or MAIL gets 503.
        self._dirty = False
        # Message streaming: the next byte starts a line (dot-stuffing applies), and a CR
        # held back at the end of the last chunk until the next byte shows it is a CRLF.
        self._line_start = True
        self._held_cr = b""

    # --- properties ----------------------------------------------------------------------------

    @property
    def state(self) -> ClientState:
        return self._state

    @property
    def waiting_for(self) -> Waiting | None:
        """The reply awaited next (the oldest, when commands are pipelined), or None when
        no reply is due: the caller has the turn, or the TLS handshake, or the message."""
        return self._awaiting[0].waiting if self._awaiting else None

    @property
    def extensions(self) -> Extensions:
        """What the last EHLO/LHLO reply offered (nothing after HELO, or before EHLO)."""
        return self._extensions

    @property
    def extended(self) -> bool:
        """The server accepted EHLO (or LHLO), not only HELO."""
        return self._extended

    @property
    def tls(self) -> bool:
        return self._tls

    @property
    def authenticated(self) -> bool:
        return self._authenticated

    @property
    def buffered(self) -> int:
        """Bytes received and not yet read as replies."""
        return len(self._replies)

    # --- bytes in, bytes out -------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the server; ``b""`` means it closed its side (EOF).

        Bytes arriving after ``Closed`` are ignored. None may be fed between ``StartTlsNow``
        and ``tls_started()``: they would be plaintext the handshake must not see.
        """
        if self._state is ClientState.CLOSED:
            return
        if not data:
            self._replies.eof = True
            return
        if self._replies.eof:
            raise LocalProtocolError("receive_data() called with bytes after EOF")
        if self._state is ClientState.TLS_HANDSHAKE:
            raise LocalProtocolError("receive_data() during the TLS handshake")
        self._replies.feed(data)

    def next_event(self) -> ClientEvent | NeedData | Paused:
        """The next thing the server said, ``NEED_DATA`` (feed more bytes) or ``PAUSED``
        (nothing will happen until the caller acts: the TLS handshake, or after ``Closed``).

        Act on each event before asking for the next: a reply read while no command awaits
        one is the server's mistake (a ``ProtocolError``; a 421 closes). Write
        ``data_to_send()`` before waiting for more bytes: answering a reply, the engine may
        have sent a command of its own without returning an event (HELO after a refused
        EHLO, the next RCPT without pipelining, MAIL after its RSET, an AUTH response).
        """
        while not self._events:
            if self._state is ClientState.CLOSED:
                return PAUSED
            got = self._replies.next_reply()
            if got is None:
                if self._replies.eof:
                    self._on_eof()
                    continue
                return PAUSED if self._state is ClientState.TLS_HANDSHAKE else NEED_DATA
            if isinstance(got, Malformed):
                self._fail(got.description)
            else:
                self._on_reply(got)
        return self._events.popleft()

    def data_to_send(self) -> bytes:
        """Everything the engine has to write, in order; empty when there is nothing.
        Commands pipelined together (RFC 2920) come out of one call, for one write."""
        out = b"".join(self._out)
        self._out.clear()
        return out

    # --- the caller's calls ------------------------------------------------------------------

    def start_tls(self) -> None:
        """Send STARTTLS (RFC 3207 4); ``StartTlsNow`` or ``StartTlsRefused`` follows."""
        self._allow("start_tls")
        if self._tls:
            raise LocalProtocolError("start_tls(): TLS is already active")
        if not self._extensions.starttls:
            raise LocalProtocolError("start_tls(): the server does not offer STARTTLS")
        self._command("STARTTLS", Waiting.STARTTLS)
        self._state = ClientState.BUSY

    def tls_started(self) -> None:
        """The TLS handshake succeeded: EHLO again, and forget what was learned in the clear
        (RFC 3207 4.2); ``Ready`` (or ``HelloRefused``) follows."""
        self._allow("tls_started")
        self._tls = True
        self._extensions = Extensions()
        self._extended = False
        # RFC 3207 4.2: the server is back at the start too: no transaction is open.
        self._dirty = False
        self._hello()

    def authenticate(self, mechanism: str, username: str, password: str) -> None:
        """AUTH PLAIN (RFC 4616, as an initial response) or LOGIN (username and password as
        the two challenges ask); ``AuthResult`` follows.

        Refused before TLS: credentials never travel in the clear (PLAIN and LOGIN are only
        base64; RFC 4954 4 asks the same of servers for such mechanisms).
        """
        self._allow("authenticate")
        if not self._tls:
            raise LocalProtocolError("authenticate() before TLS: credentials would go in clear")
        if self._authenticated:
            # RFC 4954 4: after a successful AUTH, no more AUTH commands.
            raise LocalProtocolError("authenticate(): already authenticated")
        name = mechanism.upper()
        if name not in _MECHANISMS:
            raise LocalProtocolError(f"authenticate(): mechanism {mechanism!r} not supported")
        if name not in self._extensions.auth:
            raise LocalProtocolError(f"authenticate(): the server does not offer {name}")
        if "\0" in username or "\0" in password:
            # RFC 4616 2: NUL separates the fields of a PLAIN message.
            raise LocalProtocolError("authenticate(): NUL in the username or password")
        if name == "PLAIN":
            # RFC 4616 2: authzid (empty: the same as the user), authcid, passwd.
            plain = "\0".join(("", username, password))
            line, responses = f"AUTH PLAIN {_base64(plain)}", []
        else:
            line, responses = "AUTH LOGIN", [_base64(username), _base64(password)]
        # RFC 4954 4: 12288 octets for an AUTH command or response line, CRLF included.
        if any(len(text) + 2 > self._max_auth_line for text in (line, *responses)):
            raise LocalProtocolError("authenticate(): credentials too long for an AUTH line")
        self._auth_responses = deque(responses)
        self._command(line, Waiting.AUTH)
        self._state = ClientState.BUSY

    def send_envelope(
        self,
        sender: str,
        recipients: Sequence[str],
        *,
        size: int | None = None,
        eight_bit: bool = False,
        smtputf8: bool = False,
        mail_params: Mapping[str, str | None] | None = None,
        rcpt_params: Mapping[str, Mapping[str, str | None]] | None = None,
    ) -> None:
        """Start one transaction: MAIL FROM (``sender`` "" is the null path ``<>``), an RCPT
        TO for each recipient, and DATA once one is accepted.

        With PIPELINING (RFC 2920) they go in one write, DATA included, before any reply is
        known; without it, one at a time. ``MailResult``, a ``RecipientResult`` per RCPT
        answered, then ``SendData`` or ``MessageResult`` follow, and ``TransactionDone``
        always ends it.

        MAIL FROM gets ``SIZE=size`` when SIZE is offered (RFC 1870), ``BODY=8BITMIME`` when
        ``eight_bit`` and 8BITMIME is offered (RFC 6152; when it is not, converting the
        message or returning it is the caller's choice, RFC 6152 3), and ``SMTPUTF8`` when
        ``smtputf8`` or an address is not ASCII (RFC 6531 3.4; raises if not offered).
        ``mail_params`` and ``rcpt_params`` (by recipient address) are further ESMTP
        parameters, such as RFC 3461's RET, ENVID, NOTIFY and ORCPT (xtext already applied),
        passed through as given once checked: their syntax, and for DSN parameters that the
        server offers DSN.
        """
        self._allow("send_envelope")
        if isinstance(recipients, str):
            raise LocalProtocolError("send_envelope(): recipients must be a sequence of addresses")
        recipients = tuple(recipients)
        if not recipients:
            raise LocalProtocolError("send_envelope(): no recipient")
        if isinstance(parse_mail(f"FROM:<{sender}>", True), Reply):
            raise LocalProtocolError(f"send_envelope(): not a reverse-path: {sender!r}")
        for address in recipients:
            if isinstance(parse_rcpt(f"TO:<{address}>"), Reply):
                raise LocalProtocolError(f"send_envelope(): not a forward-path: {address!r}")
        rcpt_params = rcpt_params or {}
        unknown = set(rcpt_params) - set(recipients)
        if unknown:
            raise LocalProtocolError(f"send_envelope(): rcpt_params for {sorted(unknown)}")
        utf8 = smtputf8 or not (sender.isascii() and all(a.isascii() for a in recipients))
        if utf8 and not self._extensions.smtputf8:
            # RFC 6531 3.2: without SMTPUTF8 the envelope cannot be sent as it is.
            raise LocalProtocolError("send_envelope(): SMTPUTF8 needed, the server lacks it")
        params: list[str] = []
        if size is not None:
            if size < 0:
                raise LocalProtocolError("send_envelope(): negative size")
            if self._extensions.size is not None:
                params.append(f"SIZE={size}")
        if eight_bit and self._extensions.eight_bit_mime:
            params.append("BODY=8BITMIME")
        if utf8:
            params.append("SMTPUTF8")
        params += self._parameters(mail_params or {}, _ENGINE_PARAMS)
        rcpt_lines = [
            _with(f"RCPT TO:<{a}>", self._parameters(rcpt_params.get(a, {}), frozenset()))
            for a in recipients
        ]
        tx = _Transaction(
            recipients,
            pipelined=self._extensions.pipelining,
            mail_line=_with(f"MAIL FROM:<{sender}>", params),
            rcpt_lines=rcpt_lines,
            fates=[None] * len(recipients),
        )
        self._tx = tx
        self._state = ClientState.BUSY
        if self._dirty:
            # RFC 2920 3.1: RSET may come anywhere in a pipelined group.
            self._dirty = False
            self._command("RSET", Waiting.RSET)
            if not tx.pipelined:
                return  # MAIL goes when RSET is answered
        self._command(tx.mail_line, Waiting.MAIL)
        if tx.pipelined:
            for index, line in enumerate(rcpt_lines):
                self._command(line, Waiting.RCPT, index)
            # RFC 2920 3.1: DATA may end the group; its reply is read like any other.
            self._command("DATA", Waiting.DATA)

    def send_data(self, data: bytes) -> None:
        """Part of the message, after ``SendData``: any size, cut anywhere.

        Lines are sent with CRLF ends: a bare LF becomes CRLF (a Unix line end), a bare CR
        raises (RFC 5321 2.3.8: it is not a line end, and passing it on is how SMTP
        smuggling starts). A line starting with a period gets another (RFC 5321 4.5.2), also
        when the line starts in an earlier chunk. After a raise the message cannot be
        finished (ending it would deliver it cut short): close the connection.
        """
        self._allow("send_data")
        if not data:
            return
        chunk = self._held_cr + data
        # A CR at the end may be half of a CRLF whose LF is in the next chunk.
        hold = chunk.endswith(b"\r")
        if hold:
            chunk = chunk[:-1]
        crlf = chunk.count(b"\r\n")
        if chunk.count(b"\r") != crlf:
            raise LocalProtocolError("send_data(): bare CR in the message")
        if chunk.count(b"\n") != crlf:
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        if chunk:
            stuffed = chunk.replace(b"\r\n.", b"\r\n..")
            if self._line_start and chunk.startswith(b"."):
                stuffed = b"." + stuffed
            self._line_start = chunk.endswith(b"\n")
            self._out.append(stuffed)
        self._held_cr = b"\r" if hold else b""

    def end_data(self) -> None:
        """The end of the message: a CRLF if its last line lacks one (RFC 5321 4.1.1.4),
        then ``.``; ``MessageResult`` (one per accepted recipient with LMTP) and
        ``TransactionDone`` follow."""
        self._allow("end_data")
        if self._held_cr:
            raise LocalProtocolError("end_data(): the message ends with a bare CR")
        tx = self._transaction()
        self._out.append((b"" if self._line_start else b"\r\n") + b".\r\n")
        tx.data_ended = True
        # RFC 2033 4.2: LMTP answers the dot once for each accepted recipient, in order.
        for index in range(len(tx.accepted) if self._lmtp else 1):
            self._awaiting.append(_Awaited(Waiting.END_OF_DATA, index))
        self._state = ClientState.BUSY

    def reset(self) -> None:
        """RSET (RFC 5321 4.1.1.5), e.g. to check that an idle connection still answers;
        ``ResetResult`` follows."""
        self._allow("reset")
        self._dirty = False
        self._command("RSET", Waiting.RSET)
        self._state = ClientState.BUSY

    def quit(self) -> None:
        """QUIT (RFC 5321 4.1.1.10); ``Closed`` follows."""
        self._allow("quit")
        self._command("QUIT", Waiting.QUIT)
        self._state = ClientState.CLOSING

    # --- sending -------------------------------------------------------------------------------

    def _allow(self, call: str) -> None:
        if self._state not in _CALLS[call]:
            raise LocalProtocolError(f"{call}() in state {self._state.value}")

    def _command(self, line: str, waiting: Waiting, index: int = 0) -> None:
        self._out.append(line.encode("utf-8") + b"\r\n")
        self._awaiting.append(_Awaited(waiting, index))

    def _hello(self) -> None:
        verb = Waiting.LHLO if self._lmtp else Waiting.EHLO
        self._command(f"{verb.value.upper()} {self._helo_name}", verb)
        self._state = ClientState.CONNECTING

    def _parameters(self, given: Mapping[str, str | None], reserved: frozenset[str]) -> list[str]:
        """ESMTP parameters as given, once checked: nothing in them can end the command
        line or start another."""
        if given and not self._extended:
            # RFC 5321 4.1.1.2: parameters exist only in the EHLO dialogue.
            raise LocalProtocolError("ESMTP parameters after HELO")
        out = []
        for keyword, value in given.items():
            upper = keyword.upper()
            if not _PARAM_KEYWORD.fullmatch(keyword):
                raise LocalProtocolError(f"not an ESMTP parameter keyword: {keyword!r}")
            if upper in reserved:
                raise LocalProtocolError(f"{upper} is set by the engine, not by parameters")
            needs = _PARAM_EXTENSIONS.get(upper)
            if needs is not None and needs not in self._extensions:
                raise LocalProtocolError(f"{upper} needs {needs}, which the server lacks")
            if value is None:
                out.append(keyword)
            elif _PARAM_VALUE.fullmatch(value):
                out.append(f"{keyword}={value}")
            else:
                raise LocalProtocolError(f"not an ESMTP parameter value: {value!r}")
        return out

    def _transaction(self) -> _Transaction:
        tx = self._tx
        if tx is None:
            raise AssertionError("no transaction")  # the state machine guarantees one
        return tx

    # --- replies in ----------------------------------------------------------------------------

    def _on_reply(self, reply: Reply) -> None:
        if reply.closes:
            # RFC 5321 3.8: 421 may come at any time, and ends the connection.
            self._end(reply)
            return
        if not self._awaiting:
            self._fail(f"a reply when none was due: {reply}")
            return
        awaited = self._awaiting.popleft()
        if not _answers(awaited.waiting, reply.code):
            # Out of step: taking a 250 to DATA as the message's verdict would report mail
            # delivered that was never sent.
            self._fail(f"{reply.code} is no reply to {awaited.waiting.value}")
            return
        _ON_REPLY[awaited.waiting](self, reply, awaited.index)

    def _on_greeting(self, reply: Reply, index: int) -> None:
        self._events.append(Greeting(reply))
        if _positive(reply):
            self._hello()
        else:
            # RFC 5321 3.1: a 554 greeting refuses service; the client should send QUIT.
            self._state = ClientState.REFUSED

    def _on_ehlo(self, reply: Reply, index: int) -> None:
        if _positive(reply):
            self._ready(reply, parse_extensions(reply), extended=True)
        elif reply.code >= 500 and not self._lmtp:
            # RFC 5321 3.2: a server that does not know EHLO refuses it (500, 502); HELO
            # then still opens the session. LMTP has no HELO (RFC 2033 4.1).
            self._command(f"HELO {self._helo_name}", Waiting.HELO)
        else:
            self._refused(reply)

    def _on_helo(self, reply: Reply, index: int) -> None:
        if _positive(reply):
            self._ready(reply, Extensions(), extended=False)
        else:
            self._refused(reply)

    def _ready(self, reply: Reply, extensions: Extensions, *, extended: bool) -> None:
        self._extensions = extensions
        self._extended = extended
        self._state = ClientState.READY
        self._events.append(Ready(reply, extensions, extended))

    def _refused(self, reply: Reply) -> None:
        self._state = ClientState.REFUSED
        self._events.append(HelloRefused(reply))

    def _on_starttls(self, reply: Reply, index: int) -> None:
        if reply.code != 220:
            self._state = ClientState.READY
            self._events.append(StartTlsRefused(reply))
            return
        if self._replies.partial:
            # RFC 3207 5: anything after the 220 came in the clear, before TLS protects the
            # connection: a man in the middle may have added it, to be read as if the server
            # said it over TLS. Never read it; do not go on with such a connection.
            self._fail("bytes after the 220 to STARTTLS, before TLS")
            return
        self._state = ClientState.TLS_HANDSHAKE
        self._events.append(StartTlsNow(reply))

    def _on_auth(self, reply: Reply, index: int) -> None:
        if reply.code == 334:
            # RFC 4954 4: answer each challenge; "*" cancels when there is nothing to say.
            answer = self._auth_responses.popleft() if self._auth_responses else "*"
            self._command(answer, Waiting.AUTH)
            return
        self._auth_responses.clear()
        self._authenticated = reply.code == 235
        self._state = ClientState.READY
        self._events.append(AuthResult(reply))

    def _on_rset(self, reply: Reply, index: int) -> None:
        tx = self._tx
        if tx is None:
            self._state = ClientState.READY
            self._events.append(ResetResult(reply))
        elif not tx.pipelined:
            # The RSET before a transaction says nothing about it; MAIL's reply will.
            self._command(tx.mail_line, Waiting.MAIL)

    def _on_mail(self, reply: Reply, index: int) -> None:
        tx = self._transaction()
        self._events.append(MailResult(reply))
        tx.mail_ok = _positive(reply)
        if not tx.mail_ok:
            tx.fates = [reply] * len(tx.recipients)
            if not tx.pipelined:
                self._finish(tx)
        elif not tx.pipelined:
            self._command(tx.rcpt_lines[0], Waiting.RCPT, 0)

    def _on_rcpt(self, reply: Reply, index: int) -> None:
        tx = self._transaction()
        self._events.append(RecipientResult(tx.recipients[index], reply))
        # A recipient "accepted" after MAIL was refused (a confused pipelining server) is
        # not: the server has no transaction to add it to.
        if tx.mail_ok:
            if _positive(reply):
                tx.accepted.append(index)
            else:
                tx.fates[index] = reply
        if tx.pipelined:
            return
        if index + 1 < len(tx.recipients):
            self._command(tx.rcpt_lines[index + 1], Waiting.RCPT, index + 1)
        elif tx.accepted:
            self._command("DATA", Waiting.DATA)
        else:
            self._finish(tx)

    def _on_data(self, reply: Reply, index: int) -> None:
        tx = self._transaction()
        if reply.code == 354:
            if tx.accepted:
                self._line_start = True
                self._held_cr = b""
                self._state = ClientState.MESSAGE
                self._events.append(SendData(reply))
            elif self._lmtp:
                # RFC 2033 4.2: with no accepted recipient DATA must fail with 503; after a
                # 354 nobody knows how many replies the dot would get.
                self._fail("354 to DATA with no recipient accepted")
            else:
                # RFC 2920 3.1: DATA pipelined after recipients that were all refused was
                # accepted anyway: send a single dot, delivering nothing.
                tx.data_ended = tx.lone_dot = True
                self._command(".", Waiting.END_OF_DATA)
            return
        if tx.accepted:
            for i in tx.accepted:
                tx.fates[i] = reply
            self._events.append(MessageResult(reply, tx.accepted_addresses()))
        self._finish(tx)

    def _on_end_of_data(self, reply: Reply, index: int) -> None:
        tx = self._transaction()
        if tx.lone_dot:
            self._finish(tx)
            return
        if self._lmtp:
            i = tx.accepted[index]
            tx.fates[i] = reply
            self._events.append(MessageResult(reply, (tx.recipients[i],)))
            if index + 1 < len(tx.accepted):
                return
        else:
            for i in tx.accepted:
                tx.fates[i] = reply
            self._events.append(MessageResult(reply, tx.accepted_addresses()))
        self._finish(tx)

    def _on_quit(self, reply: Reply, index: int) -> None:
        self._end(reply)

    def _finish(self, tx: _Transaction) -> None:
        self._tx = None
        # Until the final dot is answered the server may hold the transaction open (MAIL
        # accepted, DATA refused or never sent); after a refused MAIL the client cannot
        # know either.
        self._dirty = not tx.data_ended
        self._state = ClientState.READY
        self._events.append(TransactionDone(tx.results(None)))

    # --- the end -------------------------------------------------------------------------------

    def _on_eof(self) -> None:
        if self._replies.partial:
            self._fail("the connection closed in the middle of a reply")
            return
        head = self.waiting_for
        tx = self._tx
        if head is Waiting.QUIT or (tx is not None and tx.decided):
            # Nothing is lost: QUIT's reply, or a DATA reply that would decide nothing (a
            # server may close after refusing every recipient).
            self._end(None)
        elif head is not None:
            self._fail(f"the connection closed while waiting for the {head.value} reply")
        elif self._state is ClientState.MESSAGE:
            self._fail("the connection closed during the message")
        else:
            self._end(None)

    def _fail(self, description: str) -> None:
        self._events.append(ProtocolError(description))
        self._end(None)

    def _end(self, reply: Reply | None) -> None:
        """The connection is over: what is pending gets ``reply`` (a 421, or None)."""
        tx = self._tx
        if tx is not None:
            self._tx = None
            self._events.append(TransactionDone(tx.results(reply)))
        self._events.append(Closed(reply))
        self._state = ClientState.CLOSED
        self._awaiting.clear()
        self._auth_responses.clear()
        self._replies.clear()
        self._out.clear()


#: The one 3xx each step may get (RFC 5321 4.3.2, RFC 4954 4); elsewhere 3xx is out of step.
_INTERMEDIATE: Final = {Waiting.DATA: 354, Waiting.AUTH: 334}


def _answers(waiting: Waiting, code: int) -> bool:
    """Whether ``code`` can answer the step at all (RFC 5321 4.3.2): 4xx and 5xx always;
    2xx anywhere but DATA, which only 354 accepts; 3xx only as the step's intermediate."""
    if code >= 400:
        return True
    if code >= 300:
        return code == _INTERMEDIATE.get(waiting)
    return waiting is not Waiting.DATA


def _with(command: str, params: list[str]) -> str:
    return " ".join([command, *params])


#: What each awaited reply does: the reply handlers, by the command they answer.
_ON_REPLY: Final[dict[Waiting, Callable[[ClientConnection, Reply, int], None]]] = {
    Waiting.GREETING: ClientConnection._on_greeting,
    Waiting.EHLO: ClientConnection._on_ehlo,
    Waiting.LHLO: ClientConnection._on_ehlo,
    Waiting.HELO: ClientConnection._on_helo,
    Waiting.STARTTLS: ClientConnection._on_starttls,
    Waiting.AUTH: ClientConnection._on_auth,
    Waiting.RSET: ClientConnection._on_rset,
    Waiting.MAIL: ClientConnection._on_mail,
    Waiting.RCPT: ClientConnection._on_rcpt,
    Waiting.DATA: ClientConnection._on_data,
    Waiting.END_OF_DATA: ClientConnection._on_end_of_data,
    Waiting.QUIT: ClientConnection._on_quit,
}
