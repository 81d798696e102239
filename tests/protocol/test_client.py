"""The client engine against a scripted server: events and bytes out, however the server's
bytes are cut into reads.

``FakeServer`` answers each command by a rule (a reply per verb, per recipient), as a real
server would: only once the command came. ``play()`` runs an engine, a ``Plan`` (what a
queue runner would do on each event) and the server together, delivering the server's bytes
whole, byte by byte, or cut at chosen positions, and returns everything observable.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import pytest

from smtpkit.protocol.client import (
    ClientConnection,
    ClientState,
    NeedData,
    Paused,
    Waiting,
)
from smtpkit.protocol.client_events import (
    AuthResult,
    ClientEvent,
    Closed,
    Greeting,
    HelloRefused,
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
from smtpkit.protocol.replies import Reply

HELO = "client.test"
EHLO_FULL = (
    b"250-mx.test Hello client.test\r\n250-PIPELINING\r\n250-SIZE 1000000\r\n250-8BITMIME\r\n"
    b"250-ENHANCEDSTATUSCODES\r\n250-DSN\r\n250 SMTPUTF8\r\n"
)
EHLO_PLAIN = b"250-mx.test\r\n250-SIZE\r\n250 8BITMIME\r\n"  # no PIPELINING
EHLO_TLS = b"250-mx.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n"
EHLO_AUTH = b"250-mx.test\r\n250-PIPELINING\r\n250-AUTH PLAIN LOGIN\r\n250 SIZE 5000\r\n"
#: The rule value for "close without a reply".
CLOSE = b""


# --- the scripted server -----------------------------------------------------------------------

DEFAULTS: Mapping[str, bytes] = {
    "EHLO": EHLO_FULL,
    "LHLO": EHLO_FULL,
    "HELO": b"250 mx.test\r\n",
    "STARTTLS": b"220 2.0.0 Ready to start TLS\r\n",
    "AUTH": b"235 2.7.0 Authentication successful\r\n",
    "AUTH-RESPONSE": b"235 2.7.0 Authentication successful\r\n",
    "MAIL": b"250 2.1.0 Sender OK\r\n",
    "RCPT": b"250 2.1.5 Recipient OK\r\n",
    "DATA": b"354 End data with <CR><LF>.<CR><LF>\r\n",
    ".": b"250 2.0.0 OK: queued\r\n",
    "RSET": b"250 2.0.0 OK\r\n",
    "QUIT": b"221 2.0.0 Bye\r\n",
}


@dataclass
class FakeServer:
    """Answers each command by its rule; records what the client sent.

    ``rules`` maps a verb (``EHLO``, ``MAIL``, ``DATA``, ``.`` for the final dot,
    ``AUTH-RESPONSE`` for a line after a 334...) to its replies, used in turn (the last one
    stays). ``rcpt`` overrides the RCPT reply by address; with ``lmtp`` the final dot gets
    one reply per accepted recipient, from ``final`` by address. A reply starting with 421
    (or ``CLOSE``) closes the connection after it.
    """

    rules: dict[str, list[bytes]] = field(default_factory=dict)
    rcpt: dict[str, bytes] = field(default_factory=dict)
    final: dict[str, bytes] = field(default_factory=dict)
    lmtp: bool = False
    greeting: bytes = b"220 mx.test ESMTP\r\n"

    def __post_init__(self) -> None:
        self.output = bytearray(self.greeting)
        self.closed = self.greeting.startswith(b"421")
        self.received = bytearray()
        self.commands: list[bytes] = []
        #: Each reply sent after the greeting: (verb, address for RCPT and LMTP dots, code).
        self.log: list[tuple[str, str, int | None]] = []
        #: Message content exactly as it came over the wire (dot-stuffed), one per DATA.
        self.wire_messages: list[bytes] = []
        self._buffer = bytearray()
        self._data_mode = False
        self._auth_mode = False
        self._accepted: list[str] = []

    def _rule(self, verb: str) -> bytes:
        replies = self.rules.get(verb)
        if not replies:
            return DEFAULTS.get(verb, b"500 5.5.1 Command unrecognized\r\n")
        return replies.pop(0) if len(replies) > 1 else replies[0]

    def receive(self, data: bytes) -> None:
        assert not self.closed, f"client wrote {data!r} after the server closed"
        self.received += data
        self._buffer += data
        while not self.closed:
            if self._data_mode:
                # RFC 5321 4.1.1.4: the content ends at <CRLF>.<CRLF>, or at once with ".".
                if self._buffer.startswith(b".\r\n"):
                    end, consumed = 0, 3
                else:
                    found = self._buffer.find(b"\r\n.\r\n")
                    if found < 0:
                        return
                    end, consumed = found + 2, found + 5
                self.wire_messages.append(bytes(self._buffer[:end]))
                del self._buffer[:consumed]
                self._data_mode = False
                self._end_of_data()
                continue
            lf = self._buffer.find(b"\n")
            if lf < 0:
                return
            line = bytes(self._buffer[: lf + 1])
            del self._buffer[: lf + 1]
            assert line.endswith(b"\r\n") and b"\r" not in line[:-2], line
            self.commands.append(line[:-2])
            self._command(line[:-2])

    def _command(self, line: bytes) -> None:
        if self._auth_mode:
            reply = self._rule("AUTH-RESPONSE")
            self._reply(reply)
            self._auth_mode = reply.startswith(b"334")
            return
        verb = line.split(b" ", 1)[0].decode().upper()
        address = ""
        if verb == "RCPT":
            address = line.decode().split("<", 1)[1].split(">", 1)[0]
            reply = self.rcpt.get(address) or self._rule("RCPT")
            if reply.startswith(b"2"):
                self._accepted.append(address)
        else:
            reply = self._rule(verb)
        if verb in ("MAIL", "RSET", "STARTTLS"):
            self._accepted = []
        self._reply(reply, verb, address)
        self._data_mode = verb == "DATA" and reply.startswith(b"354")
        self._auth_mode = reply.startswith(b"334")

    def _end_of_data(self) -> None:
        if self.lmtp:
            if not self._accepted:
                self._reply(self._rule("."), ".")
            for address in self._accepted:
                done = b"250 2.0.0 <%s> delivered\r\n" % address.encode()
                self._reply(self.final.get(address, done), ".", address)
        else:
            self._reply(self._rule("."), ".")
        self._accepted = []

    def _reply(self, reply: bytes, verb: str = "", address: str = "") -> None:
        if self.closed:
            return
        self.log.append((verb, address, int(reply[:3]) if reply[:3].isdigit() else None))
        self.output += reply
        if reply == CLOSE or reply.startswith(b"421") or reply.startswith(b"221"):
            self.closed = True

    def messages(self) -> list[bytes]:
        """Each message's content as a mailbox would get it (dot-unstuffed)."""
        out = []
        for raw in self.wire_messages:
            lines = raw.split(b"\r\n")
            out.append(b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines))
        return out


# --- the caller ----------------------------------------------------------------------------------


@dataclass
class Envelope:
    sender: str
    recipients: tuple[str, ...]
    body: tuple[bytes, ...] = (b"Subject: test\r\n\r\nHello\r\n",)
    size: int | None = None
    eight_bit: bool = False
    smtputf8: bool = False
    mail_params: Mapping[str, str | None] | None = None
    rcpt_params: Mapping[str, Mapping[str, str | None]] | None = None


@dataclass
class Plan:
    """What a queue runner does on each event: TLS and AUTH when asked, then each envelope,
    then QUIT (unless ``quit`` is false: the connection is left idle)."""

    envelopes: list[Envelope]
    starttls: bool = False
    require_tls: bool = False
    auth: tuple[str, str, str] | None = None
    quit: bool = True
    reset_first: bool = False
    lmtp: bool = False
    envelopes_sent: list[Envelope] = field(default_factory=list)
    _tls_tried: bool = False
    _auth_tried: bool = False

    def react(self, conn: ClientConnection, event: ClientEvent) -> None:
        if isinstance(event, Greeting | HelloRefused) and conn.state is ClientState.REFUSED:
            conn.quit()
        elif isinstance(event, StartTlsNow):
            conn.tls_started()
        elif isinstance(event, SendData):
            for chunk in self.envelopes_sent[-1].body:
                conn.send_data(chunk)
            conn.end_data()
        elif isinstance(event, StartTlsRefused) and self.require_tls:
            conn.quit()
        elif isinstance(
            event, Ready | AuthResult | TransactionDone | StartTlsRefused | ResetResult
        ):
            self.next(conn)

    def next(self, conn: ClientConnection) -> None:
        if conn.state is not ClientState.READY:
            return
        if self.starttls and not conn.tls and conn.extensions.starttls and not self._tls_tried:
            self._tls_tried = True
            conn.start_tls()
        elif self.auth and conn.tls and not self._auth_tried:
            self._auth_tried = True
            conn.authenticate(*self.auth)
        elif self.reset_first:
            self.reset_first = False
            conn.reset()
        elif self.envelopes:
            env = self.envelopes.pop(0)
            self.envelopes_sent.append(env)
            conn.send_envelope(
                env.sender,
                env.recipients,
                size=env.size,
                eight_bit=env.eight_bit,
                smtputf8=env.smtputf8,
                mail_params=env.mail_params,
                rcpt_params=env.rcpt_params,
            )
        elif self.quit:
            conn.quit()


@dataclass
class Outcome:
    events: list[ClientEvent] = field(default_factory=list)
    #: Each non-empty ``data_to_send()``: what one write would carry.
    writes: list[bytes] = field(default_factory=list)
    server: FakeServer = field(default_factory=FakeServer)
    waits: list[str | None] = field(default_factory=list)

    def comparable(self) -> tuple[object, ...]:
        return (self.events, self.writes, bytes(self.server.received), self.server.wire_messages)

    @property
    def summary(self) -> list[str]:
        return [summarize(e) for e in self.events]

    @property
    def sent(self) -> bytes:
        return b"".join(self.writes)


def summarize(event: ClientEvent) -> str:
    """One short line per event, for tables of expected events."""
    match event:
        case Ready(reply=_, extended=extended):
            return "Ready" if extended else "Ready HELO"
        case RecipientResult(address=address, reply=reply):
            return f"Rcpt {address} {reply.code}"
        case MessageResult(reply=reply, recipients=recipients):
            return f"Message {reply.code} {','.join(recipients)}"
        case TransactionDone(results=results):
            done = " ".join(f"{a}={r.code if r else None}" for a, r in results)
            return f"Done {done}"
        case ProtocolError(description=description):
            return f"ProtocolError {description}"
        case SendData():
            return "SendData"
        case Closed(reply=reply):
            return f"Closed {reply.code if reply else None}"
        case _:
            reply = getattr(event, "reply", None)
            name = type(event).__name__
            return f"{name} {reply.code}" if isinstance(reply, Reply) else name


def play(
    server: FakeServer,
    plan: Plan,
    *,
    cuts: Iterable[int] = (),
    bytewise: bool = False,
    tls: bool = False,
) -> Outcome:
    """Run ``plan`` against ``server``. The server's output (one stream over the whole
    connection) is delivered whole, or cut at the positions ``cuts``, or byte by byte."""
    conn = ClientConnection(HELO, lmtp=plan.lmtp, tls=tls)
    out = Outcome(server=server)
    cut_at = sorted(set(cuts))
    delivered = 0
    eof = False
    while True:
        while True:
            event = conn.next_event()
            out.waits.append(conn.waiting_for)
            if isinstance(event, NeedData | Paused):
                break
            out.events.append(event)
            plan.react(conn, event)
        data = conn.data_to_send()
        if data:
            out.writes.append(data)
            server.receive(data)
            continue
        pending = len(server.output) - delivered
        if pending:
            size = pending
            if bytewise:
                size = 1
            else:
                later = [c - delivered for c in cut_at if c > delivered]
                if later:
                    size = min(size, later[0])
            conn.receive_data(bytes(server.output[delivered : delivered + size]))
            delivered += size
            continue
        if not eof:
            eof = True
            conn.receive_data(b"")
            continue
        return out


def rules(**verbs: bytes | list[bytes]) -> dict[str, list[bytes]]:
    """``rules(MAIL=b"...", DOT=b"...")``: DOT stands for the final dot, AUTH_RESPONSE for
    AUTH-RESPONSE."""
    names = {"DOT": ".", "AUTH_RESPONSE": "AUTH-RESPONSE"}
    return {names.get(k, k): list(v) if isinstance(v, list) else [v] for k, v in verbs.items()}


def envelope(*recipients: str, body: tuple[bytes, ...] | None = None, **kw: object) -> Envelope:
    env = Envelope("sender@client.test", recipients or ("a@mx.test",), **kw)  # type: ignore[arg-type]
    if body is not None:
        env.body = body
    return env


# --- the transcripts -----------------------------------------------------------------------------

MIXED_RCPT = {
    "ok@mx.test": b"250 2.1.5 OK\r\n",
    "later@mx.test": b"450 4.2.1 Mailbox busy, try later\r\n",
    "gone@mx.test": b"550-5.1.1 No such user\r\n550 5.1.1 here\r\n",
}
DOTTY = (b"Subject: dots\r\n\r\n.starts\r\n", b".also at a chunk start\r\nmid.", b"dle\r\n..\r\n")

Scenario = tuple[str, FakeServer, Plan, list[str]]


def scenarios() -> list[Scenario]:
    """Name, server, plan and the expected events (``summarize``), made fresh each time."""
    three = ("ok@mx.test", "later@mx.test", "gone@mx.test")
    return [
        (
            "pipelined, mixed recipients",
            FakeServer(rcpt=dict(MIXED_RCPT)),
            Plan([envelope(*three, body=DOTTY, size=60)]),
            [
                "Greeting 220",
                "Ready",
                "MailResult 250",
                "Rcpt ok@mx.test 250",
                "Rcpt later@mx.test 450",
                "Rcpt gone@mx.test 550",
                "SendData",
                "Message 250 ok@mx.test",
                "Done ok@mx.test=250 later@mx.test=450 gone@mx.test=550",
                "Closed 221",
            ],
        ),
        (
            "one command at a time, mixed recipients",
            FakeServer(rules(EHLO=EHLO_PLAIN), rcpt=dict(MIXED_RCPT)),
            Plan([envelope(*three, body=DOTTY, size=60)]),
            [
                "Greeting 220",
                "Ready",
                "MailResult 250",
                "Rcpt ok@mx.test 250",
                "Rcpt later@mx.test 450",
                "Rcpt gone@mx.test 550",
                "SendData",
                "Message 250 ok@mx.test",
                "Done ok@mx.test=250 later@mx.test=450 gone@mx.test=550",
                "Closed 221",
            ],
        ),
        (
            "HELO fallback",
            FakeServer(rules(EHLO=b"502 5.5.2 Error: command not recognized\r\n")),
            Plan([envelope("a@mx.test")]),
            [
                "Greeting 220",
                "Ready HELO",
                "MailResult 250",
                "Rcpt a@mx.test 250",
                "SendData",
                "Message 250 a@mx.test",
                "Done a@mx.test=250",
                "Closed 221",
            ],
        ),
        (
            "STARTTLS, then AUTH PLAIN",
            FakeServer(rules(EHLO=[EHLO_TLS, EHLO_AUTH])),
            Plan([envelope("a@mx.test")], starttls=True, auth=("PLAIN", "user", "pässword")),
            [
                "Greeting 220",
                "Ready",
                "StartTlsNow 220",
                "Ready",
                "AuthResult 235",
                "MailResult 250",
                "Rcpt a@mx.test 250",
                "SendData",
                "Message 250 a@mx.test",
                "Done a@mx.test=250",
                "Closed 221",
            ],
        ),
        (
            "STARTTLS, then AUTH LOGIN",
            FakeServer(
                rules(
                    EHLO=[EHLO_TLS, EHLO_AUTH],
                    AUTH=b"334 VXNlcm5hbWU6\r\n",
                    AUTH_RESPONSE=[
                        b"334 UGFzc3dvcmQ6\r\n",
                        b"235 2.7.0 Authentication successful\r\n",
                    ],
                )
            ),
            Plan([envelope("a@mx.test")], starttls=True, auth=("login", "user", "secret")),
            [
                "Greeting 220",
                "Ready",
                "StartTlsNow 220",
                "Ready",
                "AuthResult 235",
                "MailResult 250",
                "Rcpt a@mx.test 250",
                "SendData",
                "Message 250 a@mx.test",
                "Done a@mx.test=250",
                "Closed 221",
            ],
        ),
        (
            "AUTH refused, the connection goes on",
            FakeServer(rules(EHLO=[EHLO_TLS, EHLO_AUTH], AUTH=b"535 5.7.8 Bad credentials\r\n")),
            Plan([envelope("a@mx.test")], starttls=True, auth=("PLAIN", "user", "wrong")),
            [
                "Greeting 220",
                "Ready",
                "StartTlsNow 220",
                "Ready",
                "AuthResult 535",
                "MailResult 250",
                "Rcpt a@mx.test 250",
                "SendData",
                "Message 250 a@mx.test",
                "Done a@mx.test=250",
                "Closed 221",
            ],
        ),
        (
            "STARTTLS refused, TLS required",
            FakeServer(rules(EHLO=EHLO_TLS, STARTTLS=b"454 4.7.0 TLS not available\r\n")),
            Plan([envelope("a@mx.test")], starttls=True, require_tls=True),
            ["Greeting 220", "Ready", "StartTlsRefused 454", "Closed 221"],
        ),
        (
            "every recipient refused, pipelined DATA refused",
            FakeServer(
                rules(RCPT=b"550 5.1.1 No such user\r\n", DATA=b"554 5.5.1 No valid recipients\r\n")
            ),
            Plan([envelope("x@mx.test", "y@mx.test"), envelope("a@mx.test")]),
            [
                "Greeting 220",
                "Ready",
                "MailResult 250",
                "Rcpt x@mx.test 550",
                "Rcpt y@mx.test 550",
                "Done x@mx.test=550 y@mx.test=550",
                "MailResult 250",
                "Rcpt a@mx.test 550",
                "Done a@mx.test=550",
                "Closed 221",
            ],
        ),
        (
            "every recipient refused, pipelined DATA accepted anyway",
            FakeServer(
                rules(DOT=[b"554 5.5.1 No valid recipients\r\n", b"250 2.0.0 Queued\r\n"]),
                rcpt={"x@mx.test": b"550 5.1.1 No such user\r\n"},
            ),
            Plan([envelope("x@mx.test"), envelope("a@mx.test")]),
            [
                "Greeting 220",
                "Ready",
                "MailResult 250",
                "Rcpt x@mx.test 550",
                "Done x@mx.test=550",
                "MailResult 250",
                "Rcpt a@mx.test 250",
                "SendData",
                "Message 250 a@mx.test",
                "Done a@mx.test=250",
                "Closed 221",
            ],
        ),
        (
            "every recipient refused, one at a time",
            FakeServer(rules(EHLO=EHLO_PLAIN, RCPT=b"550 5.1.1 No such user\r\n")),
            Plan([envelope("x@mx.test", "y@mx.test"), envelope("z@mx.test")]),
            [
                "Greeting 220",
                "Ready",
                "MailResult 250",
                "Rcpt x@mx.test 550",
                "Rcpt y@mx.test 550",
                "Done x@mx.test=550 y@mx.test=550",
                "MailResult 250",
                "Rcpt z@mx.test 550",
                "Done z@mx.test=550",
                "Closed 221",
            ],
        ),
        (
            "552 at MAIL, pipelined",
            FakeServer(
                rules(
                    MAIL=b"552 5.3.4 Message size exceeds fixed limit\r\n",
                    RCPT=b"503 5.5.1 Need MAIL first\r\n",
                    DATA=b"503 5.5.1 Need MAIL first\r\n",
                )
            ),
            Plan([envelope("a@mx.test", "b@mx.test", size=2_000_000)]),
            [
                "Greeting 220",
                "Ready",
                "MailResult 552",
                "Rcpt a@mx.test 503",
                "Rcpt b@mx.test 503",
                "Done a@mx.test=552 b@mx.test=552",
                "Closed 221",
            ],
        ),
        (
            "552 at MAIL, one at a time",
            FakeServer(rules(EHLO=EHLO_PLAIN, MAIL=b"552 5.3.4 Too big\r\n")),
            Plan([envelope("a@mx.test", "b@mx.test", size=2_000_000)]),
            [
                "Greeting 220",
                "Ready",
                "MailResult 552",
                "Done a@mx.test=552 b@mx.test=552",
                "Closed 221",
            ],
        ),
        (
            "message refused at the dot, then a second transaction",
            FakeServer(rules(DOT=[b"554 5.7.1 Spam\r\n", b"250 2.0.0 Queued\r\n"])),
            Plan([envelope("a@mx.test"), envelope("b@mx.test", "c@mx.test")]),
            [
                "Greeting 220",
                "Ready",
                "MailResult 250",
                "Rcpt a@mx.test 250",
                "SendData",
                "Message 554 a@mx.test",
                "Done a@mx.test=554",
                "MailResult 250",
                "Rcpt b@mx.test 250",
                "Rcpt c@mx.test 250",
                "SendData",
                "Message 250 b@mx.test,c@mx.test",
                "Done b@mx.test=250 c@mx.test=250",
                "Closed 221",
            ],
        ),
        (
            "LMTP, a reply per recipient after the dot",
            FakeServer(
                lmtp=True,
                rcpt={"gone@mx.test": b"550 5.1.1 No such user\r\n"},
                final={
                    "full@mx.test": b"452 4.2.2 Mailbox full\r\n",
                    "bad@mx.test": b"554 5.6.0 Message refused\r\n",
                },
            ),
            Plan(
                [envelope("ok@mx.test", "gone@mx.test", "full@mx.test", "bad@mx.test")],
                lmtp=True,
            ),
            [
                "Greeting 220",
                "Ready",
                "MailResult 250",
                "Rcpt ok@mx.test 250",
                "Rcpt gone@mx.test 550",
                "Rcpt full@mx.test 250",
                "Rcpt bad@mx.test 250",
                "SendData",
                "Message 250 ok@mx.test",
                "Message 452 full@mx.test",
                "Message 554 bad@mx.test",
                "Done ok@mx.test=250 gone@mx.test=550 full@mx.test=452 bad@mx.test=554",
                "Closed 221",
            ],
        ),
        (
            "greeting refused",
            FakeServer(greeting=b"554-mx.test no service for you\r\n554 go away\r\n"),
            Plan([envelope("a@mx.test")]),
            ["Greeting 554", "Closed 221"],
        ),
        (
            "EHLO and HELO refused",
            FakeServer(rules(EHLO=b"500 5.5.1 what\r\n", HELO=b"550 5.7.1 not you\r\n")),
            Plan([envelope("a@mx.test")]),
            ["Greeting 220", "HelloRefused 550", "Closed 221"],
        ),
        (
            "421 at RCPT: every pending recipient gets it",
            FakeServer(rcpt={"b@mx.test": b"421 4.3.2 Shutting down\r\n"}),
            Plan([envelope("a@mx.test", "b@mx.test", "c@mx.test")]),
            [
                "Greeting 220",
                "Ready",
                "MailResult 250",
                "Rcpt a@mx.test 250",
                "Done a@mx.test=421 b@mx.test=421 c@mx.test=421",
                "Closed 421",
            ],
        ),
        (
            "the server closes after refusing every pipelined recipient",
            FakeServer(rules(RCPT=b"550 5.1.1 No\r\n", DATA=CLOSE)),
            Plan([envelope("a@mx.test")]),
            [
                "Greeting 220",
                "Ready",
                "MailResult 250",
                "Rcpt a@mx.test 550",
                "Done a@mx.test=550",
                "Closed None",
            ],
        ),
        (
            "the server closes before the final reply",
            FakeServer(rules(DOT=CLOSE)),
            Plan([envelope("a@mx.test")]),
            [
                "Greeting 220",
                "Ready",
                "MailResult 250",
                "Rcpt a@mx.test 250",
                "SendData",
                "ProtocolError the connection closed while waiting for the end-of-data reply",
                "Done a@mx.test=None",
                "Closed None",
            ],
        ),
        (
            "an explicit RSET, then a transaction; left idle, then EOF",
            FakeServer(),
            Plan([envelope("a@mx.test")], reset_first=True, quit=False),
            [
                "Greeting 220",
                "Ready",
                "ResetResult 250",
                "MailResult 250",
                "Rcpt a@mx.test 250",
                "SendData",
                "Message 250 a@mx.test",
                "Done a@mx.test=250",
                "Closed None",
            ],
        ),
    ]


SCENARIO_NAMES = [s[0] for s in scenarios()]


def scenario(name: str) -> tuple[FakeServer, Plan, list[str]]:
    for s in scenarios():
        if s[0] == name:
            return s[1], s[2], s[3]
    raise KeyError(name)


@pytest.mark.parametrize("name", SCENARIO_NAMES)
def test_scenario_events(name: str) -> None:
    server, plan, expected = scenario(name)
    out = play(server, plan)
    assert out.summary == expected


@pytest.mark.parametrize("name", SCENARIO_NAMES)
def test_scenario_byte_by_byte(name: str) -> None:
    whole = play(*scenario(name)[:2])
    pieces = play(*scenario(name)[:2], bytewise=True)
    assert pieces.comparable() == whole.comparable()


@pytest.mark.parametrize("name", SCENARIO_NAMES)
def test_scenario_every_split_point(name: str) -> None:
    whole = play(*scenario(name)[:2])
    length = len(whole.server.output)
    for cut in range(1, length):
        assert play(*scenario(name)[:2], cuts=[cut]).comparable() == whole.comparable(), cut


# --- what goes over the wire ---------------------------------------------------------------------

WIRE: dict[str, list[bytes]] = {
    # RFC 2920 3.1: MAIL, every RCPT and DATA in one write; the body after 354, stuffed.
    "pipelined, mixed recipients": [
        b"EHLO client.test\r\n",
        b"MAIL FROM:<sender@client.test> SIZE=60\r\nRCPT TO:<ok@mx.test>\r\n"
        b"RCPT TO:<later@mx.test>\r\nRCPT TO:<gone@mx.test>\r\nDATA\r\n",
        b"Subject: dots\r\n\r\n..starts\r\n..also at a chunk start\r\nmid.dle\r\n...\r\n.\r\n",
        b"QUIT\r\n",
    ],
    # Without PIPELINING, one command per write; SIZE offered without a limit still takes SIZE=.
    "one command at a time, mixed recipients": [
        b"EHLO client.test\r\n",
        b"MAIL FROM:<sender@client.test> SIZE=60\r\n",
        b"RCPT TO:<ok@mx.test>\r\n",
        b"RCPT TO:<later@mx.test>\r\n",
        b"RCPT TO:<gone@mx.test>\r\n",
        b"DATA\r\n",
        b"Subject: dots\r\n\r\n..starts\r\n..also at a chunk start\r\nmid.dle\r\n...\r\n.\r\n",
        b"QUIT\r\n",
    ],
    # RFC 5321 3.2: HELO after a 5xx to EHLO; no parameters after HELO.
    "HELO fallback": [
        b"EHLO client.test\r\n",
        b"HELO client.test\r\n",
        b"MAIL FROM:<sender@client.test>\r\n",
        b"RCPT TO:<a@mx.test>\r\n",
        b"DATA\r\n",
        b"Subject: test\r\n\r\nHello\r\n.\r\n",
        b"QUIT\r\n",
    ],
    # RFC 3207 4.2: EHLO again over TLS; RFC 4616: PLAIN as an initial response.
    "STARTTLS, then AUTH PLAIN": [
        b"EHLO client.test\r\n",
        b"STARTTLS\r\n",
        b"EHLO client.test\r\n",
        b"AUTH PLAIN " + base64.b64encode("\0user\0pässword".encode()) + b"\r\n",
        b"MAIL FROM:<sender@client.test>\r\nRCPT TO:<a@mx.test>\r\nDATA\r\n",
        b"Subject: test\r\n\r\nHello\r\n.\r\n",
        b"QUIT\r\n",
    ],
    "STARTTLS, then AUTH LOGIN": [
        b"EHLO client.test\r\n",
        b"STARTTLS\r\n",
        b"EHLO client.test\r\n",
        b"AUTH LOGIN\r\n",
        base64.b64encode(b"user") + b"\r\n",
        base64.b64encode(b"secret") + b"\r\n",
        b"MAIL FROM:<sender@client.test>\r\nRCPT TO:<a@mx.test>\r\nDATA\r\n",
        b"Subject: test\r\n\r\nHello\r\n.\r\n",
        b"QUIT\r\n",
    ],
    # The refused DATA left the server's transaction open: RSET leads the next group.
    "every recipient refused, pipelined DATA refused": [
        b"EHLO client.test\r\n",
        b"MAIL FROM:<sender@client.test>\r\nRCPT TO:<x@mx.test>\r\nRCPT TO:<y@mx.test>\r\nDATA\r\n",
        b"RSET\r\nMAIL FROM:<sender@client.test>\r\nRCPT TO:<a@mx.test>\r\nDATA\r\n",
        b"QUIT\r\n",
    ],
    # RFC 2920 3.1: a 354 with nothing accepted gets a lone dot: no content at all.
    "every recipient refused, pipelined DATA accepted anyway": [
        b"EHLO client.test\r\n",
        b"MAIL FROM:<sender@client.test>\r\nRCPT TO:<x@mx.test>\r\nDATA\r\n",
        b".\r\n",
        b"MAIL FROM:<sender@client.test>\r\nRCPT TO:<a@mx.test>\r\nDATA\r\n",
        b"Subject: test\r\n\r\nHello\r\n.\r\n",
        b"QUIT\r\n",
    ],
    # No DATA without an accepted recipient; RSET before the next MAIL, alone.
    "every recipient refused, one at a time": [
        b"EHLO client.test\r\n",
        b"MAIL FROM:<sender@client.test>\r\n",
        b"RCPT TO:<x@mx.test>\r\n",
        b"RCPT TO:<y@mx.test>\r\n",
        b"RSET\r\n",
        b"MAIL FROM:<sender@client.test>\r\n",
        b"RCPT TO:<z@mx.test>\r\n",
        b"QUIT\r\n",
    ],
    "552 at MAIL, one at a time": [
        b"EHLO client.test\r\n",
        b"MAIL FROM:<sender@client.test> SIZE=2000000\r\n",
        b"QUIT\r\n",
    ],
    "LMTP, a reply per recipient after the dot": [
        b"LHLO client.test\r\n",
        b"MAIL FROM:<sender@client.test>\r\nRCPT TO:<ok@mx.test>\r\nRCPT TO:<gone@mx.test>\r\n"
        b"RCPT TO:<full@mx.test>\r\nRCPT TO:<bad@mx.test>\r\nDATA\r\n",
        b"Subject: test\r\n\r\nHello\r\n.\r\n",
        b"QUIT\r\n",
    ],
    # RFC 5321 3.1: a 554 greeting: no EHLO, only QUIT.
    "greeting refused": [b"QUIT\r\n"],
    # After 421 nothing more is written, not even QUIT (RFC 5321 3.8).
    "421 at RCPT: every pending recipient gets it": [
        b"EHLO client.test\r\n",
        b"MAIL FROM:<sender@client.test>\r\nRCPT TO:<a@mx.test>\r\nRCPT TO:<b@mx.test>\r\n"
        b"RCPT TO:<c@mx.test>\r\nDATA\r\n",
    ],
}


@pytest.mark.parametrize("name", sorted(WIRE))
def test_scenario_wire(name: str) -> None:
    server, plan, _ = scenario(name)
    assert play(server, plan).writes == WIRE[name]


def test_scenario_messages_arrive_unstuffed() -> None:
    server, plan, _ = scenario("pipelined, mixed recipients")
    play(server, plan)
    assert server.messages() == [b"".join(DOTTY)]


def test_multiline_replies_keep_every_line_and_the_enhanced_code() -> None:
    server, plan, _ = scenario("pipelined, mixed recipients")
    out = play(server, plan)
    gone = [e for e in out.events if isinstance(e, RecipientResult)][2]
    assert gone.reply == Reply(550, "5.1.1", ("No such user", "here"))
    (done,) = [e for e in out.events if isinstance(e, TransactionDone)]
    assert done.delivered == ("ok@mx.test",)
    assert done.deferred == ("later@mx.test",)
    assert done.failed == ("gone@mx.test",)
    ready = next(e for e in out.events if isinstance(e, Ready))
    assert ready.extensions.pipelining and ready.extensions.size == 1_000_000
    assert ready.extensions.dsn and ready.extensions.smtputf8 and ready.extensions.eight_bit_mime


def test_waiting_for_names_the_awaited_reply() -> None:
    server, plan, _ = scenario("one command at a time, mixed recipients")
    waits = [w for w in play(server, plan).waits]
    steps = [w for i, w in enumerate(waits) if i == 0 or waits[i - 1] != w]
    assert steps == [
        Waiting.GREETING,
        Waiting.EHLO,
        None,  # Ready: the caller's turn
        Waiting.MAIL,
        Waiting.RCPT,
        Waiting.DATA,
        None,  # SendData: the caller streams the message
        Waiting.END_OF_DATA,
        None,
        Waiting.QUIT,
        None,
    ]
    assert all(isinstance(w, str) or w is None for w in waits)
    assert "end-of-data" in waits
