"""The client engine reading replies: their syntax, their limits, and the server's mistakes
(garbage, over-long lines, EOF in the middle, 421 at any step), each a ``ProtocolError`` or a
``Closed``, never an exception."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtpkit.protocol.client import PAUSED, ClientConnection, ClientState, NeedData, Paused
from smtpkit.protocol.client_events import (
    ClientEvent,
    Closed,
    Greeting,
    Ready,
    TransactionDone,
)
from smtpkit.protocol.replies import Reply
from smtpkit.protocol.reply_parser import (
    MAX_REPLY_LINE,
    MAX_REPLY_LINES,
    Malformed,
    ReplyBuffer,
    parse_extensions,
)
from tests.protocol.test_client import (
    EHLO_FULL,
    EHLO_PLAIN,
    FakeServer,
    Plan,
    envelope,
    play,
    rules,
    summarize,
)


def feed(conn: ClientConnection, data: bytes) -> list[ClientEvent]:
    conn.receive_data(data)
    events: list[ClientEvent] = []
    while True:
        event = conn.next_event()
        if isinstance(event, NeedData | Paused):
            return events
        events.append(event)


def ready(ehlo: bytes = EHLO_FULL) -> ClientConnection:
    conn = ClientConnection("client.test")
    events = feed(conn, b"220 mx.test ESMTP\r\n" + ehlo)
    assert [type(e) for e in events] == [Greeting, Ready]
    conn.data_to_send()
    return conn


def replies(data: bytes) -> list[Reply | Malformed]:
    buffer = ReplyBuffer()
    buffer.feed(data)
    out: list[Reply | Malformed] = []
    while (got := buffer.next_reply()) is not None:
        out.append(got)
        if isinstance(got, Malformed):
            break
    return out


# --- reply syntax (RFC 5321 4.2, RFC 3463) -------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "reply"),
    [
        (b"250 OK\r\n", Reply(250, None, ("OK",))),
        (b"250 2.1.0 Sender OK\r\n", Reply(250, "2.1.0", ("Sender OK",))),
        (b"250\r\n", Reply(250, None, ("",))),
        (b"250 2.0.0\r\n", Reply(250, "2.0.0", ("",))),
        (b"250-\r\n250 x\r\n", Reply(250, None, ("", "x"))),
        # RFC 2034 3: the code on every line; taken off each line that has it.
        (
            b"550-5.1.1 No such\r\n550-5.1.1 user\r\n550 here\r\n",
            Reply(550, "5.1.1", ("No such", "user", "here")),
        ),
        # The class must repeat the reply's first digit (RFC 3463 2); else it is text.
        (b"250 5.1.1 odd\r\n", Reply(250, None, ("5.1.1 odd",))),
        (b"451 4.3.0x\r\n", Reply(451, None, ("4.3.0x",))),
        (b"452 4.3.1000 big\r\n", Reply(452, None, ("4.3.1000 big",))),
        # A bare LF ends a line too: a reply is never passed on, reading it loses nothing.
        (b"250-a\n250 b\n", Reply(250, None, ("a", "b"))),
        # RFC 6531: an SMTPUTF8 server may send UTF-8; anything else is replaced.
        ("250 Grüße\r\n".encode(), Reply(250, None, ("Grüße",))),
        (b"250 \xff\r\n", Reply(250, None, ("\ufffd",))),
        (b"599 x\r\n", Reply(599, None, ("x",))),
    ],
)
def test_reply_syntax(data: bytes, reply: Reply) -> None:
    assert replies(data) == [reply]


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"hello\r\n", "not a reply line: 'hello'"),
        (b"2500 x\r\n", "not a reply line: '2500 x'"),
        (b"250x\r\n", "not a reply line: '250x'"),
        (b"25 ok\r\n", "not a reply line: '25 ok'"),
        (b"150 ok\r\n", "not a reply line: '150 ok'"),
        (b"650 ok\r\n", "not a reply line: '650 ok'"),
        (b"\r\n", "not a reply line: ''"),
        (b" 250 ok\r\n", "not a reply line: ' 250 ok'"),
        (b"250 a\rb\r\n", "CR inside a reply line: '250 a\\x0db'"),
        (b"250-a\r\n251 b\r\n", "reply line with code '251' in a '250'"),
        (b"\x16\x03\x01\x00\xa5\r\n", "not a reply line: '\\x16\\x03\\x01\\x00\\xa5'"),
    ],
)
def test_garbage_is_malformed(data: bytes, why: str) -> None:
    (got,) = replies(data)
    assert got == Malformed(why)


def test_reply_line_limit() -> None:
    exactly = b"250 " + b"x" * (MAX_REPLY_LINE - 6) + b"\r\n"
    assert len(exactly) == MAX_REPLY_LINE
    assert isinstance(replies(exactly)[0], Reply)
    over = b"250 " + b"x" * (MAX_REPLY_LINE - 5) + b"\r\n"
    assert replies(over) == [Malformed(f"reply line longer than {MAX_REPLY_LINE} octets")]


def test_endless_line_is_an_error_before_memory_grows() -> None:
    buffer = ReplyBuffer()
    piece = b"x" * 1000
    for _ in range(MAX_REPLY_LINE // len(piece)):
        buffer.feed(piece)
        assert buffer.next_reply() is None
    buffer.feed(piece)
    assert buffer.next_reply() == Malformed(f"reply line longer than {MAX_REPLY_LINE} octets")
    assert len(buffer) <= MAX_REPLY_LINE + len(piece)


def test_reply_lines_limit() -> None:
    most = b"250-x\r\n" * (MAX_REPLY_LINES - 1) + b"250 y\r\n"
    (reply,) = replies(most)
    assert isinstance(reply, Reply) and len(reply.lines) == MAX_REPLY_LINES
    over = b"250-x\r\n" * MAX_REPLY_LINES + b"250 y\r\n"
    assert replies(over) == [Malformed(f"reply longer than {MAX_REPLY_LINES} lines")]


@settings(max_examples=200, deadline=None)
@given(
    data=st.one_of(
        st.binary(max_size=200),
        st.lists(
            st.sampled_from(
                [b"250", b"-", b" ", b"2.1.0", b"x", b"\r\n", b"\n", b"\r", b"550", b"4.4.1"]
            ),
            max_size=40,
        ).map(b"".join),
    ),
    cuts=st.lists(st.integers(min_value=1, max_value=199)),
)
def test_reply_buffer_does_not_depend_on_reads(data: bytes, cuts: list[int]) -> None:
    whole = replies(data)
    buffer = ReplyBuffer()
    pieces: list[Reply | Malformed] = []
    edges = [0, *sorted({c for c in cuts if c < len(data)}), len(data)]
    for a, b in zip(edges, edges[1:], strict=False):
        buffer.feed(data[a:b])
        while not (pieces and isinstance(pieces[-1], Malformed)):
            got = buffer.next_reply()
            if got is None:
                break
            pieces.append(got)
    assert pieces == whole


# --- EHLO keywords (RFC 5321 4.1.1.1) ------------------------------------------------------------


def test_extensions() -> None:
    reply = Reply(
        250,
        None,
        (
            "mx.test Hello",
            "pipelining",
            "SIZE 35882577",
            "AUTH PLAIN login XOAUTH2",
            "AUTH=CRAM-MD5",
            "8BITMIME",
            "X-EXPS GSSAPI NTLM",
            "-not-a-keyword",
            "!",
            "",
            "DSN",
            "SMTPUTF8",
            "CHUNKING",
            "STARTTLS",
            "ENHANCEDSTATUSCODES",
        ),
    )
    ext = parse_extensions(reply)
    assert ext.pipelining and ext.eight_bit_mime and ext.dsn and ext.smtputf8
    assert ext.chunking and ext.starttls and ext.enhanced_status_codes
    assert ext.size == 35882577
    assert ext.auth == frozenset({"PLAIN", "LOGIN", "XOAUTH2", "CRAM-MD5"})
    assert "x-exps" in ext and "X-EXPS" in ext and 3 not in ext
    assert ("X-EXPS", "GSSAPI NTLM") in ext.parameters
    assert len(ext.parameters) == 11  # the three lines that are not keywords are skipped


@pytest.mark.parametrize(
    ("line", "size"), [("SIZE", 0), ("SIZE 0", 0), ("SIZE 1000", 1000), ("SIZE big", 0)]
)
def test_size_keyword(line: str, size: int) -> None:
    assert parse_extensions(Reply(250, None, ("mx", line))).size == size


def test_no_size_keyword() -> None:
    assert parse_extensions(Reply(250, None, ("mx",))).size is None


# --- the server's mistakes become events ---------------------------------------------------------


def test_garbage_after_greeting_is_a_protocol_error() -> None:
    conn = ClientConnection("client.test")
    events = feed(conn, b"SSH-2.0-OpenSSH_9.6\r\n")
    assert [summarize(e) for e in events] == [
        "ProtocolError not a reply line: 'SSH-2.0-OpenSSH_9.6'",
        "Closed None",
    ]
    assert conn.state is ClientState.CLOSED
    assert conn.next_event() is PAUSED
    conn.receive_data(b"250 more\r\n")  # ignored after the end
    assert conn.next_event() is PAUSED


def test_garbage_in_a_transaction_ends_it_with_no_reply() -> None:
    out = play(FakeServer(rules(RCPT=b"250 ok\r\nOops\r\n")), Plan([envelope("a@mx.test")]))
    assert out.summary == [
        "Greeting 220",
        "Ready",
        "MailResult 250",
        "Rcpt a@mx.test 250",
        "ProtocolError not a reply line: 'Oops'",
        "Done a@mx.test=None",
        "Closed None",
    ]


def test_over_long_reply_line_in_a_transaction() -> None:
    long_reply = b"250 " + b"x" * MAX_REPLY_LINE + b"\r\n"
    out = play(FakeServer(rules(MAIL=long_reply)), Plan([envelope("a@mx.test")]))
    assert out.summary[-3:] == [
        f"ProtocolError reply line longer than {MAX_REPLY_LINE} octets",
        "Done a@mx.test=None",
        "Closed None",
    ]


def test_eof_in_the_middle_of_a_reply() -> None:
    conn = ready()
    conn.send_envelope("a@client.test", ["b@mx.test"])
    events = feed(conn, b"250-2.1.0 Sender\r\n250 2.1")
    assert events == []
    events = feed(conn, b"")
    assert [summarize(e) for e in events] == [
        "ProtocolError the connection closed in the middle of a reply",
        "Done b@mx.test=None",
        "Closed None",
    ]


def test_eof_while_waiting_for_the_greeting() -> None:
    conn = ClientConnection("client.test")
    assert [summarize(e) for e in feed(conn, b"")] == [
        "ProtocolError the connection closed while waiting for the greeting reply",
        "Closed None",
    ]


def test_eof_while_idle_is_only_closed() -> None:
    conn = ready()
    assert feed(conn, b"") == [Closed(None)]


def test_eof_during_the_message() -> None:
    conn = ready(EHLO_PLAIN)
    conn.send_envelope("a@client.test", ["b@mx.test"])
    feed(conn, b"250 ok\r\n")
    feed(conn, b"250 ok\r\n")
    assert [summarize(e) for e in feed(conn, b"354 go\r\n")] == ["SendData"]
    conn.send_data(b"partial")
    assert [summarize(e) for e in feed(conn, b"")] == [
        "ProtocolError the connection closed during the message",
        "Done b@mx.test=None",
        "Closed None",
    ]


def test_a_reply_when_none_is_due() -> None:
    conn = ready()
    assert [summarize(e) for e in feed(conn, b"250 surprise\r\n")] == [
        "ProtocolError a reply when none was due: 250 surprise",
        "Closed None",
    ]


def test_a_reply_during_the_message() -> None:
    conn = ready()
    conn.send_envelope("a@client.test", ["b@mx.test"])
    feed(conn, b"250 ok\r\n250 ok\r\n354 go\r\n")
    assert [summarize(e) for e in feed(conn, b"552 5.3.4 too big already\r\n")] == [
        "ProtocolError a reply when none was due: 552 5.3.4 too big already",
        "Done b@mx.test=None",
        "Closed None",
    ]


def test_421_while_idle_closes() -> None:
    # RFC 5321 3.8: a server shutting down may say so between transactions.
    conn = ready()
    reply = Reply(421, "4.4.2", ("Idle too long",))
    assert feed(conn, b"421 4.4.2 Idle too long\r\n") == [Closed(reply)]
    assert conn.data_to_send() == b""


def test_421_greeting_closes_without_ehlo() -> None:
    conn = ClientConnection("client.test")
    assert [summarize(e) for e in feed(conn, b"421 mx.test busy\r\n")] == ["Closed 421"]
    assert conn.data_to_send() == b""


SHUTDOWN = b"421 4.3.2 Service shutting down\r\n"

#: For each step: the rule that answers it with 421, the plan, and the events after Ready.
AT_EVERY_STEP: dict[str, tuple[dict[str, list[bytes]], dict[str, object], list[str]]] = {
    "ehlo": (rules(EHLO=SHUTDOWN), {}, []),
    "helo": (rules(EHLO=b"502 5.5.1 no\r\n", HELO=SHUTDOWN), {}, []),
    "starttls": (
        rules(EHLO=b"250-mx\r\n250 STARTTLS\r\n", STARTTLS=SHUTDOWN),
        {"starttls": True},
        ["Ready"],
    ),
    "auth": (
        rules(EHLO=b"250-mx\r\n250 AUTH PLAIN\r\n", AUTH=SHUTDOWN),
        {"auth": ("PLAIN", "u", "p"), "tls": True},
        ["Ready"],
    ),
    "auth response": (
        rules(
            EHLO=b"250-mx\r\n250 AUTH LOGIN\r\n",
            AUTH=b"334 VXNlcm5hbWU6\r\n",
            AUTH_RESPONSE=SHUTDOWN,
        ),
        {"auth": ("LOGIN", "u", "p"), "tls": True},
        ["Ready"],
    ),
    "rset": (rules(RSET=SHUTDOWN), {"reset_first": True}, ["Ready"]),
    "mail": (rules(MAIL=SHUTDOWN), {}, ["Ready", "Done a@mx.test=421 b@mx.test=421"]),
    "rcpt": (
        rules(RCPT=SHUTDOWN),
        {},
        ["Ready", "MailResult 250", "Done a@mx.test=421 b@mx.test=421"],
    ),
    "data": (
        rules(DATA=SHUTDOWN),
        {},
        [
            "Ready",
            "MailResult 250",
            "Rcpt a@mx.test 250",
            "Rcpt b@mx.test 250",
            "Done a@mx.test=421 b@mx.test=421",
        ],
    ),
    "end of data": (
        rules(DOT=SHUTDOWN),
        {},
        [
            "Ready",
            "MailResult 250",
            "Rcpt a@mx.test 250",
            "Rcpt b@mx.test 250",
            "SendData",
            "Done a@mx.test=421 b@mx.test=421",
        ],
    ),
    "quit": (
        rules(QUIT=SHUTDOWN),
        {},
        [
            "Ready",
            "MailResult 250",
            "Rcpt a@mx.test 250",
            "Rcpt b@mx.test 250",
            "SendData",
            "Message 250 a@mx.test,b@mx.test",
            "Done a@mx.test=250 b@mx.test=250",
        ],
    ),
}


@pytest.mark.parametrize("step", sorted(AT_EVERY_STEP))
@pytest.mark.parametrize("bytewise", [False, True])
def test_421_at_every_step(step: str, bytewise: bool) -> None:
    server_rules, options, expected = AT_EVERY_STEP[step]
    options = dict(options)
    tls = bool(options.pop("tls", False))
    plan = Plan([envelope("a@mx.test", "b@mx.test")], **options)  # type: ignore[arg-type]
    out = play(FakeServer(server_rules), plan, bytewise=bytewise, tls=tls)
    assert out.summary == ["Greeting 220", *expected, "Closed 421"]
    closed = out.events[-1]
    assert isinstance(closed, Closed) and closed.reply is not None
    assert closed.reply.enhanced == "4.3.2"
    dones = [e for e in out.events if isinstance(e, TransactionDone)]
    if step in ("mail", "rcpt", "data", "end of data"):
        # Everything pending fails with the 421 itself, text and all.
        assert {r for _, r in dones[0].results} == {closed.reply}
    # Nothing is written after the 421 (not even QUIT).
    assert out.server.received.endswith(out.writes[-1])
    assert not out.server.received.endswith(b"QUIT\r\n") or step == "quit"


def test_421_in_the_middle_of_lmtp_final_replies() -> None:
    server = FakeServer(lmtp=True, final={"b@mx.test": SHUTDOWN})
    out = play(server, Plan([envelope("a@mx.test", "b@mx.test", "c@mx.test")], lmtp=True))
    assert out.summary[-4:] == [
        "SendData",
        "Message 250 a@mx.test",
        "Done a@mx.test=250 b@mx.test=421 c@mx.test=421",
        "Closed 421",
    ]


@pytest.mark.parametrize(
    ("server_rules", "tail"),
    [
        # A 250 to DATA is no verdict on a message that was never sent.
        (
            rules(DATA=b"250 2.0.0 OK\r\n"),
            ["Rcpt a@mx.test 250", "ProtocolError 250 is no reply to data", "Done a@mx.test=None"],
        ),
        (
            rules(MAIL=b"354 go on\r\n"),
            ["Ready", "ProtocolError 354 is no reply to mail", "Done a@mx.test=None"],
        ),
        (
            rules(RCPT=b"334 VXNlcm5hbWU6\r\n"),
            ["MailResult 250", "ProtocolError 334 is no reply to rcpt", "Done a@mx.test=None"],
        ),
        (
            rules(DATA=b"334 what\r\n"),
            ["Rcpt a@mx.test 250", "ProtocolError 334 is no reply to data", "Done a@mx.test=None"],
        ),
        (
            rules(DOT=b"354 more?\r\n"),
            ["SendData", "ProtocolError 354 is no reply to end-of-data", "Done a@mx.test=None"],
        ),
        (rules(EHLO=b"354 hm\r\n"), ["Greeting 220", "ProtocolError 354 is no reply to ehlo"]),
    ],
)
def test_replies_out_of_step(server_rules: dict[str, list[bytes]], tail: list[str]) -> None:
    out = play(FakeServer(server_rules), Plan([envelope("a@mx.test")]))
    assert out.summary[-len(tail) - 1 :] == [*tail, "Closed None"]


def test_greeting_out_of_step() -> None:
    out = play(FakeServer(greeting=b"354 hello?\r\n"), Plan([envelope("a@mx.test")]))
    assert out.summary == ["ProtocolError 354 is no reply to greeting", "Closed None"]
