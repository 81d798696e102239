"""Properties of the engine under hostile input, with a session whose answers hypothesis picks.

``test_splitting.py`` proves that the way bytes are cut into reads never matters, with a
session that always answers the same way. Here the session is adversarial too: it accepts or
refuses each command at random and may drop the connection with a 421 at any moment, and the
client stream may stop (EOF) anywhere. Whatever happens:

* the engine never raises, and ``next_event()`` only ever returns an event, ``NEED_DATA`` or
  ``PAUSED``;
* every reply it writes is a well-formed RFC 5321 4.2 reply (``ddd-text`` lines, then one
  ``ddd text`` line, all with one code, each ending in CRLF, the enhanced code of the same
  class);
* message content reaches the session only between a ``354`` and the final dot, or inside
  an accepted BDAT chunk, never after a refusal (of every recipient, of ``DATA``, of a chunk,
  of the connection), and never after the first bare CR or LF (SMTP smuggling): a smuggled
  transaction never becomes an event;
* once closed (421, 221, EOF) nothing more is parsed, and the buffer stays bounded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from smtpkit.limits import Limits
from smtpkit.protocol import (
    NEED_DATA,
    PAUSED,
    BadCommand,
    Bdat,
    ConnectionClosed,
    Data,
    DataChunk,
    EndOfChunk,
    EndOfData,
    Event,
    Expn,
    Hello,
    Help,
    MailFrom,
    Noop,
    Quit,
    RcptTo,
    RefusedChunk,
    Reply,
    Rset,
    ServerConnection,
    StartTls,
    State,
    Vrfy,
)
from smtpkit.protocol import replies as r
from smtpkit.protocol.state import TRANSITIONS, Verb
from tests.protocol.protocol_harness import SMALL, split_at

# Each test runs in about a second; the bound only catches a hang.
pytestmark = pytest.mark.timeout(60)

HOST = "mx.prop.test"

# One reply line: code, separator, text without CR or LF, CRLF.
_LINE = re.compile(rb"([2-5][0-5]\d)([ -])([^\r\n]*)\r\n")
_ENHANCED = re.compile(rb"([245])\.\d{1,3}\.\d{1,3}(?: |$)")

# Which verb a command event stands for, to check it arrived in a state the table allows.
_VERB_OF: dict[type[object], Verb] = {
    MailFrom: Verb.MAIL,
    RcptTo: Verb.RCPT,
    Data: Verb.DATA,
    Rset: Verb.RSET,
    Noop: Verb.NOOP,
    Quit: Verb.QUIT,
    Vrfy: Verb.VRFY,
    Expn: Verb.EXPN,
    Help: Verb.HELP,
    StartTls: Verb.STARTTLS,
    Bdat: Verb.BDAT,
}

# What a policy or a storage layer may answer, per event; the first one is the happy path.
_HELLO_REFUSALS = [r.SYNTAX_ERROR_ARGS, r.Reply(550, "5.7.1", ("Go away",))]
_MAIL_ANSWERS = [r.OK_SENDER, r.MESSAGE_TOO_BIG, r.LOCAL_ERROR, r.SYNTAX_ERROR_PARAMS]
_RCPT_ANSWERS = [r.OK_RECIPIENT, r.UNKNOWN_USER, r.RELAY_DENIED, r.TOO_MANY_RECIPIENTS]
_DATA_ANSWERS = [r.START_DATA, r.LOCAL_ERROR, r.STORAGE_FULL]
_CHUNK_ANSWERS = [r.chunk_received(1), r.LOCAL_ERROR, r.STORAGE_FULL, r.MESSAGE_TOO_BIG]
_STORE_FAILURES = [r.LOCAL_ERROR, r.STORAGE_FULL]
_CLOSERS = [r.TIMEOUT, r.TOO_MANY_ERRORS, r.SHUTTING_DOWN]


def check_wire(data: bytes) -> None:
    """``data`` is one well-formed reply (RFC 5321 4.2.1, RFC 2034 for enhanced codes)."""
    lines = list(_LINE.finditer(data))
    assert lines, data
    assert b"".join(m.group(0) for m in lines) == data, data
    codes = {m.group(1) for m in lines}
    assert len(codes) == 1, data  # RFC 5321 4.2.1: every line of a reply has the same code
    assert all(m.group(2) == b"-" for m in lines[:-1]) and lines[-1].group(2) == b" ", data
    code = lines[0].group(1)
    for m in lines:
        enhanced = _ENHANCED.match(m.group(3))
        if enhanced is not None:
            assert enhanced.group(1) == code[:1], data  # 5xx carries 5.x.x, 4xx 4.x.x


@dataclass
class Record:
    """What one run showed: the replies, the events and the content that reached the session."""

    wire: list[bytes] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    # (content, reply code to its final dot) per message that reached EndOfData (or whose
    # chunks were all answered: the last, or a refused one).
    messages: list[tuple[bytes, int]] = field(default_factory=list)
    # Which of those came in BDAT chunks.
    chunked: list[bool] = field(default_factory=list)
    closed_by: int | None = None


class AdversarialSession:
    """Answers each event with a reply drawn by hypothesis, checking the invariants as it goes."""

    def __init__(self, draw: st.DataObject, limits: Limits) -> None:
        self.draw = draw
        self.limits = limits
        self.conn = ServerConnection(limits)
        self.out = Record()
        self.content = bytearray()
        self.accepted_rcpt = False
        self._send(r.greeting(HOST))

    def _send(self, reply: Reply) -> None:
        data = self.conn.send(reply)
        check_wire(data)
        self.out.wire.append(data)
        if reply.closes or reply.code == 221:
            self.out.closed_by = reply.code
            assert self.conn.state is State.CLOSED

    def feed(self, data: bytes) -> None:
        self.conn.receive_data(data)
        self.drain()

    def eof(self) -> None:
        self.conn.receive_data(b"")
        self.drain()

    def drain(self) -> None:
        conn = self.conn
        while True:
            state = conn.state
            event = conn.next_event()
            if event is NEED_DATA or event is PAUSED:
                # Bounded memory whatever was fed: an over-long line is dropped as it comes,
                # a partial content line keeps at most the text-line limit.
                if event is NEED_DATA:
                    bound = max(self.limits.max_command_line, self.limits.max_text_line + 1)
                    assert conn.buffered <= bound
                return
            assert isinstance(event, Event)
            self.on_event(state, event)
            if conn.state is State.CLOSED:
                # Closed for good: more bytes and more asking change nothing.
                conn.receive_data(b"MAIL FROM:<late@x.example>\r\n")
                assert conn.next_event() is PAUSED
                assert conn.buffered == 0
                return

    def on_event(self, state: State, event: Event) -> None:
        if isinstance(event, DataChunk):
            # Content only inside DATA (after a 354) or an accepted chunk, never empty.
            assert state in (State.DATA, State.CHUNK) and event.data
            self.content += event.data
            return
        self.out.events.append(event)
        if isinstance(event, ConnectionClosed):
            assert self.conn.state is State.CLOSED
            return
        verb = _VERB_OF.get(type(event))
        if verb is not None:
            # A command event only ever arrives where the one transition table allows it.
            assert (state, verb) in TRANSITIONS
        if isinstance(event, (Data, Bdat)):
            # RFC 5321 4.1.1.4, RFC 3030 2: no content without an accepted recipient in this
            # transaction.
            assert self.accepted_rcpt
        if isinstance(event, Bdat):
            # Answered at its chunk's end; a 421 may still come at any moment.
            assert self.conn.state is State.CHUNK
            if self.draw.draw(st.integers(0, 40), label="drop in chunk") == 7:
                self._send(r.TIMEOUT)
            return
        if self.draw.draw(st.integers(0, 40), label="drop") == 7:
            self._send(self.draw.draw(st.sampled_from(_CLOSERS), label="421"))
            return
        self._send(self.answer(event))

    def pick(self, choices: list[Reply], label: str) -> Reply:
        # The happy path (the first choice) four times in five, so that whole transactions
        # happen often; any of the answers otherwise.
        if self.draw.draw(st.integers(0, 4), label=f"{label} ok") != 4:
            return choices[0]
        return self.draw.draw(st.sampled_from(choices), label=label)

    def answer(self, event: Event) -> Reply:
        if isinstance(event, Hello):
            if self.draw.draw(st.integers(0, 4), label="hello ok") != 4:
                # RFC 5321 4.1.4: an accepted HELO/EHLO resets the transaction; a refused
                # one leaves it as it was.
                self.accepted_rcpt = False
                ext = ("PIPELINING", "SIZE 1000", "8BITMIME")
                return r.ehlo(HOST, event.name, ext) if event.extended else r.helo(HOST, event.name)
            return self.pick(_HELLO_REFUSALS, "hello")
        if isinstance(event, MailFrom):
            self.accepted_rcpt = False
            return self.pick(_MAIL_ANSWERS, "mail")
        if isinstance(event, RcptTo):
            reply = self.pick(_RCPT_ANSWERS, "rcpt")
            self.accepted_rcpt = self.accepted_rcpt or reply.code == 250
            return reply
        if isinstance(event, Data):
            # A refused DATA keeps the transaction and its recipients: DATA may come again.
            self.content = bytearray()
            return self.pick(_DATA_ANSWERS, "data")
        if isinstance(event, EndOfChunk) and not event.last and event.error is None:
            reply = self.pick(_CHUNK_ANSWERS, "chunk")
            if reply.code >= 400:
                # A refused chunk ends the transaction (RFC 3030 2).
                self.accepted_rcpt = False
                self.out.messages.append((bytes(self.content), reply.code))
                self.out.chunked.append(True)
                self.content = bytearray()
            return reply
        if isinstance(event, RefusedChunk):
            return event.reply
        if isinstance(event, (EndOfData, EndOfChunk)):
            self.accepted_rcpt = False
            if event.error is not None:
                reply = event.error
            elif self.draw.draw(st.integers(0, 4), label="stored") != 4:
                reply = r.stored(f"Q{len(self.out.messages)}")
            else:
                reply = self.pick(_STORE_FAILURES, "store")
            self.out.messages.append((bytes(self.content), reply.code))
            self.out.chunked.append(isinstance(event, EndOfChunk))
            self.content = bytearray()
            return reply
        if isinstance(event, Rset):
            self.accepted_rcpt = False
            return r.OK
        if isinstance(event, Quit):
            return r.closing(HOST)
        if isinstance(event, StartTls):
            return r.TLS_NOT_AVAILABLE
        if isinstance(event, BadCommand):
            return event.reply
        if isinstance(event, Vrfy):
            return r.CANNOT_VRFY
        if isinstance(event, Expn):
            return r.EXPN_DISABLED
        if isinstance(event, Help):
            return r.help_text()
        return r.OK  # Noop


# --- streams ------------------------------------------------------------------------------------

COMMANDS = [
    b"EHLO c.example\r\n",
    b"HELO c\r\n",
    b"EHLO \xc3\xa9t\xc3\xa9\r\n",
    b"EHLO a\x00b\r\n",
    b"MAIL FROM:<a@b.example>\r\n",
    b"MAIL FROM:<> SIZE=10 BODY=8BITMIME\r\n",
    b"MAIL FROM:<../../etc/passwd@x>\r\n",
    b"RCPT TO:<b@c.example>\r\n",
    b"RCPT TO:<user%other.example@c.example>\r\n",
    b"RCPT TO:<@a,@b:user@other.example>\r\n",
    b'RCPT TO:<"x@y"@c.example>\r\n',
    b"RCPT TO:<postmaster>\r\n",
    b"DATA\r\n",
    b"BDAT 12\r\n",
    b"BDAT 3 LAST\r\n",
    b"BDAT 0 LAST\r\n",
    b"BDAT x\r\n",
    b"RSET\r\n",
    b"NOOP\r\n",
    b"STARTTLS\r\n",
    b"VRFY x\r\n",
    b"QUIT\r\n",
]
NOISE = [b"\r\n", b"\r", b"\n", b".", b"\r\n.\r\n", b"\r\n.\n", b"\n.\r\n", b"\x00", b"\xff"]
TEXT = [b"line\r\n", b"..dot\r\n", b"x" * 30, b"y" * 70 + b"\r\n", b"Subject: s\r\n\r\n"]

# Whole transactions, whose content may hold anything, then maybe more commands.
transactions = st.lists(
    st.tuples(
        st.sampled_from([b"", b"EHLO c\r\n", b"HELO c\r\n", b"RSET\r\n"]),
        st.just(b"MAIL FROM:<a@b.example>\r\n"),
        st.lists(st.sampled_from(COMMANDS[7:12]), min_size=1, max_size=3).map(b"".join),
        st.one_of(
            st.tuples(
                st.just(b"DATA\r\n"),
                st.lists(st.sampled_from(TEXT), max_size=6).map(b"".join),
                st.lists(st.sampled_from(NOISE + [b"QUIT\r\n"]), max_size=2).map(b"".join),
                st.sampled_from([b"\r\n.\r\n", b".\r\n", b"\n.\n"]),
            ).map(b"".join),
            # The same content in BDAT chunks (RFC 3030), the last one with LAST.
            st.lists(
                st.lists(st.sampled_from(TEXT + NOISE + [b"QUIT\r\n"]), max_size=4).map(b"".join),
                min_size=1,
                max_size=3,
            ).map(
                lambda parts: b"".join(
                    b"BDAT %d%s\r\n" % (len(p), b" LAST" if i == len(parts) - 1 else b"") + p
                    for i, p in enumerate(parts)
                )
            ),
        ),
    ).map(b"".join),
    min_size=1,
    max_size=4,
).map(lambda ts: b"EHLO c\r\n" + b"".join(ts))

# Half whole transactions, half anything (raw bytes, fragments, commands then garbage).
streams = st.one_of(
    transactions,
    st.one_of(
        st.binary(max_size=400),
        st.lists(st.sampled_from(COMMANDS + NOISE + TEXT), max_size=50).map(b"".join),
        st.tuples(
            st.lists(st.sampled_from(COMMANDS), max_size=12).map(b"".join),
            st.binary(max_size=200),
            st.lists(st.sampled_from(COMMANDS + NOISE + TEXT), max_size=20).map(b"".join),
        ).map(b"".join),
    ),
)
LIMITS = st.sampled_from([Limits(), SMALL, Limits(max_command_line=20, max_text_line=6)])


def play(draw: st.DataObject, stream: bytes, cuts: list[int], limits: Limits, eof: bool) -> Record:
    session = AdversarialSession(draw, limits)
    for piece in split_at(stream, [c for c in cuts if 0 < c < len(stream)]):
        session.feed(piece)
    if eof:
        session.eof()
    return session.out


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    draw=st.data(),
    stream=streams,
    cuts=st.lists(st.integers(min_value=0, max_value=600), max_size=12),
    limits=LIMITS,
    eof=st.booleans(),
)
def test_any_stream_any_answers_never_raises_and_replies_are_well_formed(
    draw: st.DataObject, stream: bytes, cuts: list[int], limits: Limits, eof: bool
) -> None:
    out = play(draw, stream, cuts, limits, eof)
    event(f"closed by {out.closed_by}")
    event(f"messages stored: {min(sum(c == 250 for _, c in out.messages), 2)}")
    if out.closed_by is not None:
        # Nothing follows a reply that closed the session.
        assert out.wire[-1].startswith(str(out.closed_by).encode())
    for (content, code), chunked in zip(out.messages, out.chunked, strict=True):
        assert code in (250, 451, 452, 550, 552)
        if code != 250:
            continue
        # A message the engine let through (no error at the dot) breaks no rule: CRLF lines
        # only, none over the text-line limit, the whole within the size limit. Only a
        # message sent in chunks may end without a line end, stored as it came.
        lines = content.split(b"\r\n")
        assert lines[-1] == b"" or chunked
        assert not any(b"\r" in line or b"\n" in line for line in lines)
        assert all(len(line) + 2 <= limits.max_text_line for line in lines[:-1])
        assert len(content) <= limits.max_message_size


# --- nothing after a rejection ------------------------------------------------------------------

MARK = b"SMUGGLED-7f3a"
# Published end-of-data look-alikes (bare CR or LF), with and without NUL bytes.
FAKE_ENDS = [
    b"\n.\n",
    b"\n.\r\n",
    b"\r.\r",
    b"\r.\n",
    b"\r\n.\n",
    b"\r\n.\r",
    b"\r\n.\r\r\n",
    b"\n\x00.\n",
    b"\n.\x00\r\n",
    b"\r\x00.\r",
    b"\r\n\x00.\n",
    b"\r\n.\x00\r",
]
SMUGGLED = (
    b"MAIL FROM:<evil@" + MARK + b".example>\r\nRCPT TO:<victim@c.example>\r\nDATA\r\n"
    b"From: ceo@c.example\r\nSubject: " + MARK + b"\r\n\r\npay now\r\n"
)
CLEAN_LINES = st.lists(
    st.sampled_from([b"a", b"Subject: hi", b"", b"..", b"..x", b" .", b"z" * 12]), max_size=8
).map(b"\r\n".join)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    before=CLEAN_LINES,
    fake_end=st.sampled_from(FAKE_ENDS),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=10),
    nul_before_mark=st.booleans(),
)
def test_nothing_after_a_bare_newline_is_delivered_or_executed(
    before: bytes, fake_end: bytes, cuts: list[int], nul_before_mark: bool
) -> None:
    head = b"EHLO c\r\nMAIL FROM:<a@c.example>\r\nRCPT TO:<b@c.example>\r\nDATA\r\n"
    smuggled = (b"\x00" if nul_before_mark else b"") + SMUGGLED
    transcript = head + b"Subject: real\r\n\r\n" + before + fake_end + smuggled + b".\r\nNOOP\r\n"
    # A plain session that accepts everything: the engine alone must hold the line.
    out = play_accepting(transcript, cuts)
    ends = [e for e in out.events if isinstance(e, EndOfData)]
    assert ends == [EndOfData(r.BARE_NEWLINE_IN_DATA, ends[0].size)]
    assert [type(e) for e in out.events].count(MailFrom) == 1
    assert [type(e) for e in out.events].count(Data) == 1
    assert not any(isinstance(e, RcptTo) and "victim" in e.address for e in out.events)
    assert all(MARK not in content for content, _ in out.messages)
    assert out.events[-2:] == [Noop(), ConnectionClosed()]


def play_accepting(transcript: bytes, cuts: list[int]) -> Record:
    conn = ServerConnection(Limits())
    out = Record()
    content = bytearray()
    conn.send(r.greeting(HOST))
    pieces = split_at(transcript, [c for c in cuts if 0 < c < len(transcript)])
    for piece in [*pieces, b""]:
        conn.receive_data(piece)
        while (event := conn.next_event()) is not NEED_DATA and event is not PAUSED:
            if isinstance(event, DataChunk):
                content += event.data
                continue
            out.events.append(event)
            if isinstance(event, ConnectionClosed):
                break
            if isinstance(event, EndOfData):
                reply = event.error or r.stored("Q1")
                out.messages.append((bytes(content), reply.code))
                content = bytearray()
            elif isinstance(event, BadCommand):
                reply = event.reply
            elif isinstance(event, Data):
                reply = r.START_DATA
            elif isinstance(event, Hello):
                reply = r.ehlo(HOST, event.name, ())
            else:
                reply = r.OK
            check_wire(conn.send(reply))
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    refusal=st.sampled_from(["every rcpt", "data", "421 in data", "421 after dot"]),
    body=st.lists(st.sampled_from(COMMANDS + TEXT + [b".\r\n", b"\r\n"]), max_size=12).map(
        b"".join
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=500), max_size=8),
)
def test_no_content_reaches_the_session_after_a_refusal(
    refusal: str, body: bytes, cuts: list[int]
) -> None:
    """The client pipelines a whole message, but the transaction (or the connection) was
    refused: the message bytes are read as commands or not at all, never as content."""
    transcript = (
        b"EHLO c\r\nMAIL FROM:<a@c.example>\r\nRCPT TO:<b@c.example>\r\nDATA\r\n"
        + MARK
        + b"\r\n"
        + body
        + b"\r\n.\r\n"
    )
    conn = ServerConnection(Limits())
    conn.send(r.greeting(HOST))
    chunks: list[bytes] = []
    closed = False
    data_answered = False
    for piece in split_at(transcript, [c for c in cuts if 0 < c < len(transcript)]):
        conn.receive_data(piece)
        while (event := conn.next_event()) is not NEED_DATA and event is not PAUSED:
            assert not closed
            if isinstance(event, DataChunk):
                chunks.append(event.data)
                if refusal == "421 in data":
                    check_wire(conn.send(r.TIMEOUT))
                    closed = True
                continue
            if isinstance(event, Bdat):
                continue  # a BDAT among the message bytes: answered at its chunk's end
            if isinstance(event, RcptTo) and refusal == "every rcpt":
                reply: Reply = r.RELAY_DENIED
            elif isinstance(event, Data) and not data_answered:
                data_answered = True
                reply = r.LOCAL_ERROR if refusal == "data" else r.START_DATA
            elif isinstance(event, Data):
                reply = r.START_DATA  # a later DATA, read from the message bytes
            elif isinstance(event, EndOfData) and refusal == "421 after dot":
                reply = r.SHUTTING_DOWN
                closed = True
            elif isinstance(event, EndOfData):
                reply = event.error or r.stored("Q1")
            elif isinstance(event, EndOfChunk):
                reply = event.error or r.chunk_received(event.size)
            elif isinstance(event, (RefusedChunk, BadCommand)):
                reply = event.reply
            elif isinstance(event, Hello):
                reply = r.ehlo(HOST, event.name, ())
            else:
                reply = r.OK
            check_wire(conn.send(reply))
            if reply.code == 221:
                closed = True
    delivered = b"".join(chunks)
    if refusal in ("every rcpt", "data"):
        # DATA was refused (503 by the engine, or the session's 451): not one byte of the
        # message is content; its lines were commands (a BDAT among them takes the octets
        # it counts, as any BDAT does, but never the first line).
        assert MARK not in delivered
    if refusal == "421 in data":
        # The first chunk may have been read, but after the 421 nothing more was.
        assert len(chunks) <= 1
    if closed:
        assert conn.state is State.CLOSED
        conn.receive_data(b"\r\n.\r\nMAIL FROM:<x@y.example>\r\n")
        assert conn.next_event() is PAUSED


def test_every_catalogued_reply_is_well_formed() -> None:
    """The catalogue itself, and the replies built from values (host names, client names)."""
    catalogue = [v for v in vars(r).values() if isinstance(v, Reply)]
    assert len(catalogue) > 30
    built = [
        r.greeting(HOST),
        r.ehlo(HOST, "client", ("SIZE 1", "PIPELINING")),
        r.helo(HOST, "[192.0.2.1]"),
        r.closing(HOST),
        r.help_text(),
        r.stored("abc.1"),
    ]
    for reply in catalogue + built:
        conn = ServerConnection(Limits())
        if reply.closes:
            check_wire(conn.send(reply))
            continue
        check_wire(conn.send(r.greeting(HOST)))
        conn.receive_data(b"NOOP\r\n")
        assert conn.next_event() == Noop()
        check_wire(conn.send(reply))
        # RFC 3463 / Postfix practice: every 4xx/5xx carries an enhanced code.
        if reply.code >= 400:
            assert reply.enhanced is not None and reply.enhanced[0] == str(reply.code)[0]
