"""DATA: the end of content, dot-unstuffing, smuggling, line and size limits, memory."""

from __future__ import annotations

import pytest

from smtpkit.limits import BareNewline, Limits
from smtpkit.protocol import (
    NEED_DATA,
    ConnectionClosed,
    Data,
    DataChunk,
    EndOfData,
    MailFrom,
    ServerConnection,
    State,
)
from smtpkit.protocol import replies as r
from tests.protocol.protocol_harness import Outcome, run

START = b"EHLO client.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n"
ACCEPTED = [250, 250, 250, 354, 250]


def message(content: bytes, limits: Limits | None = None, after: bytes = b"QUIT\r\n") -> Outcome:
    return run([START + content + after], limits)


# --- the end of the content and dot-unstuffing (RFC 5321 4.1.1.4, 4.5.2) -----------------------


@pytest.mark.parametrize(
    ("sent", "delivered"),
    [
        (b".\r\n", b""),
        (b"\r\n.\r\n", b"\r\n"),
        (b"hello\r\n.\r\n", b"hello\r\n"),
        (b"a\r\nb\r\n\r\nc\r\n.\r\n", b"a\r\nb\r\n\r\nc\r\n"),
        (b"..\r\n.\r\n", b".\r\n"),
        (b"...\r\n.\r\n", b"..\r\n"),
        (b"..hidden\r\n.\r\n", b".hidden\r\n"),
        (b"x\r\n..\r\n.\r\n", b"x\r\n.\r\n"),
        (b"x\r\n..\r\n..\r\n.\r\n", b"x\r\n.\r\n.\r\n"),
        (b"x\r\n...x\r\n.\r\n", b"x\r\n..x\r\n"),
        # A client that forgot to stuff: the leading period still goes (RFC 5321 4.5.2).
        (b".x\r\n.\r\n", b"x\r\n"),
        (b"a\r\n.b\r\n.\r\n", b"a\r\nb\r\n"),
        (b"a.b\r\n. \r\n.\r\n", b"a.b\r\n \r\n"),
        (b"trailing.\r\n.\r\n", b"trailing.\r\n"),
        (b"\x00\x01\xff\r\n.\r\n", b"\x00\x01\xff\r\n"),
        (b"MAIL FROM:<x@y>\r\nQUIT\r\n.\r\n", b"MAIL FROM:<x@y>\r\nQUIT\r\n"),
    ],
)
def test_content_exact(sent: bytes, delivered: bytes) -> None:
    out = run([START + sent + b"QUIT\r\n"])
    assert out.codes == [*ACCEPTED, 221]
    assert out.messages == [delivered]
    end = [e for e in out.events if isinstance(e, EndOfData)]
    assert end == [EndOfData(None, len(delivered))]


def test_data_lines_are_not_commands() -> None:
    # Everything pipelined after DATA is content until the dot.
    content = b"QUIT\r\nRSET\r\nMAIL FROM:<evil@example.org>\r\n"
    out = run([START + content + b".\r\nNOOP\r\n"])
    assert out.codes == [*ACCEPTED, 250]
    assert out.messages == [content]


def test_whole_session_in_one_packet() -> None:
    # RFC 2920 pipelining: every command answered, in order.
    transcript = (
        b"EHLO c\r\nMAIL FROM:<a@example.org> SIZE=20\r\nRCPT TO:<b@example.net>\r\n"
        b"RCPT TO:<unknown@example.net>\r\nRCPT TO:<c@example.net>\r\nDATA\r\n"
        b"one\r\n.\r\nMAIL FROM:<>\r\nRCPT TO:<d@example.net>\r\nDATA\r\ntwo\r\n.\r\nQUIT\r\n"
    )
    out = run([transcript])
    assert out.codes == [250, 250, 250, 550, 250, 354, 250, 250, 250, 354, 250, 221]
    assert out.messages == [b"one\r\n", b"two\r\n"]


def test_size_counts_unstuffed_octets() -> None:
    out = message(b"..\r\n..a\r\nb\r\n.\r\n")
    end = [e for e in out.events if isinstance(e, EndOfData)]
    assert end == [EndOfData(None, len(b".\r\n.a\r\nb\r\n"))]


# --- SMTP smuggling: only <CRLF>.<CRLF> ends the content -------------------------------------

SMUGGLED = b"MAIL FROM:<admin@victim.example>\r\nRCPT TO:<b@example.net>\r\nDATA\r\nforged\r\n"


@pytest.mark.parametrize(
    "fake_end",
    [
        b"\n.\n",
        b"\n.\r\n",
        b"\r.\r",
        b"\r.\n",
        b"\r.\r\n",
        b"\r\n.\n",
        b"\r\n.\r",
        b"\n.\r",
        b"\n\x00.\r\n",
        b"\r\n\x00.\n",
        b"\r\n.\x00\n",
        b"\n.\x00\r\n",
        b"\r\x00.\r\n",
    ],
)
def test_smuggling_variants_do_not_end_data(fake_end: bytes) -> None:
    content = b"Subject: hi\r\n\r\nhello" + fake_end + SMUGGLED
    out = run([START + content + b"\r\n.\r\nQUIT\r\n"])
    # One message, refused once at the real dot; nothing after the fake end was executed.
    assert out.codes == [250, 250, 250, 354, 550, 221]
    assert out.replies[5] == r.BARE_NEWLINE_IN_DATA
    assert not any(isinstance(e, MailFrom) and "victim" in e.address for e in out.events)
    assert out.messages == []


@pytest.mark.parametrize("fake_end", [b"\r\n\x00.\r\n", b"\r\n.\x00\r\n", b"\r\n .\r\n"])
def test_nul_variants_without_bare_newlines_are_plain_content(fake_end: bytes) -> None:
    content = b"hello" + fake_end + SMUGGLED
    out = run([START + content + b".\r\nQUIT\r\n"])
    assert out.codes == [*ACCEPTED, 221]
    # Still one message; a line starting with a period loses it (RFC 5321 4.5.2).
    assert out.messages == [content.replace(b"\r\n.", b"\r\n")]


@pytest.mark.parametrize(
    "content",
    [b"bare\nlf", b"bare\rcr", b"\n.", b"\r", b"\n", b"x\r\n\n.", b"ends with cr\r", b"line\n"],
)
def test_bare_newlines_refused_at_the_dot(content: bytes) -> None:
    out = message(content + b"\r\n.\r\n")
    assert out.codes == [250, 250, 250, 354, 550, 221]
    assert out.replies[5] == r.BARE_NEWLINE_IN_DATA


# --- line length (RFC 5321 4.5.3.1.6) ----------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b"x" * 998 + b"\r\n.\r\n", 250),
        (b"x" * 999 + b"\r\n.\r\n", 550),
        (b"short\r\n" + b"x" * 998 + b"\r\nshort\r\n.\r\n", 250),
        (b"short\r\n" + b"x" * 999 + b"\r\nshort\r\n.\r\n", 550),
        (b"short\r\n" + b"x" * 999 + b"\r\n.\r\n", 550),
        # A stuffed period counts: the line on the wire is what RFC 5321 limits.
        (b"." + b"x" * 998 + b"\r\n.\r\n", 550),
        (b"." + b"x" * 997 + b"\r\n.\r\n", 250),
        (b"y" * 100000 + b"\r\n.\r\n", 550),
    ],
)
def test_text_line_limit(content: bytes, code: int) -> None:
    out = message(content)
    assert out.codes == [250, 250, 250, 354, code, 221]
    if code == 550:
        assert out.replies[5] == r.DATA_LINE_TOO_LONG


def test_text_line_limit_from_limits() -> None:
    limits = Limits(max_text_line=10)
    assert message(b"12345678\r\n.\r\n", limits).codes[4] == 250
    assert message(b"123456789\r\n.\r\n", limits).codes[4] == 550


# --- message size (RFC 1870) -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "code", "size"),
    [
        (b"x" * 98 + b"\r\n.\r\n", 250, 100),
        (b"x" * 99 + b"\r\n.\r\n", 552, 101),
        # Stuffing periods are not content: 100 octets once unstuffed.
        (b".." + b"x" * 97 + b"\r\n.\r\n", 250, 100),
        ((b"x" * 8 + b"\r\n") * 50 + b".\r\n", 552, 500),
    ],
)
def test_message_size_limit(content: bytes, code: int, size: int) -> None:
    out = message(content, Limits(max_message_size=100))
    assert out.codes[4] == code
    end = [e for e in out.events if isinstance(e, EndOfData)]
    assert end[0].size == size
    if code == 552:
        assert end[0].error == r.MESSAGE_TOO_BIG
        assert out.replies[5].enhanced == "5.3.4"


def test_error_priority_is_fixed() -> None:
    limits = Limits(max_message_size=100, max_text_line=50)
    long = b"x" * 60 + b"\r\n"
    big = b"y\r\n" * 40
    cases = [
        (long + big + b"bare\n\r\n", r.BARE_NEWLINE_IN_DATA),
        (b"bare\r \r\n" + long + big, r.BARE_NEWLINE_IN_DATA),
        (long + big, r.MESSAGE_TOO_BIG),
        (big + long, r.MESSAGE_TOO_BIG),
        (long, r.DATA_LINE_TOO_LONG),
    ]
    for content, error in cases:
        out = message(content + b".\r\n", limits)
        end = [e for e in out.events if isinstance(e, EndOfData)]
        assert end[0].error == error


def test_no_chunk_after_an_error() -> None:
    conn = ServerConnection(Limits(max_message_size=10))
    conn.send(r.greeting("mx"))
    conn.receive_data(START)
    for reply in (r.OK, r.OK_SENDER, r.OK_RECIPIENT, r.START_DATA):
        conn.next_event()
        conn.send(reply)
    conn.receive_data(b"12345678\r\n")
    assert conn.next_event() == DataChunk(b"12345678\r\n")
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"more\r\n")
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"and more\r\n.\r\n")
    assert conn.next_event() == EndOfData(r.MESSAGE_TOO_BIG, 10 + 6 + 10)


# --- the session goes on after a refused message ----------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [b"x" * 2000 + b"\r\n", b"bare\nline\r\n", b"z" * 200 + b"\r\n"],
)
def test_second_message_after_refused_one(bad: bytes) -> None:
    limits = Limits(max_message_size=150)
    transcript = START + bad + b".\r\n" + START[21:] + b"good\r\n.\r\nQUIT\r\n"
    out = run([transcript], limits)
    assert out.codes[:4] == [250, 250, 250, 354]
    assert out.codes[4] in (550, 552)
    assert out.codes[5:] == [250, 250, 354, 250, 221]
    assert out.messages == [b"good\r\n"]


def test_rset_and_new_transaction_after_message() -> None:
    transcript = START + b"one\r\n.\r\nRCPT TO:<b@example.net>\r\nRSET\r\n" + START[21:]
    out = run([transcript + b"two\r\n.\r\n"])
    # After the dot the transaction is over: RCPT needs a new MAIL (RFC 5321 4.1.1.4).
    assert out.codes == [*ACCEPTED, 503, 250, 250, 250, 354, 250]
    assert out.messages == [b"one\r\n", b"two\r\n"]


# --- EOF and memory ----------------------------------------------------------------------------


def test_eof_inside_data_is_connection_closed() -> None:
    out = run([START + b"partial\r\nmessage without end"])
    assert out.codes == [250, 250, 250, 354]
    assert isinstance(out.events[-1], ConnectionClosed)
    assert not any(isinstance(e, EndOfData) for e in out.events)
    assert out.messages == []


def test_eof_right_after_data_command() -> None:
    out = run([START])
    assert isinstance(out.events[-1], ConnectionClosed)
    assert isinstance(out.events[-2], Data)


@pytest.mark.parametrize("chunk", [1000, 4096, 65536])
def test_memory_bounded_while_discarding_a_huge_line(chunk: int) -> None:
    limits = Limits(max_message_size=10 * 1024 * 1024)
    data = START + b"h" * (3 * 1024 * 1024) + b"\r\n.\r\nQUIT\r\n"
    out = run([data[i : i + chunk] for i in range(0, len(data), chunk)], limits)
    assert out.codes == [250, 250, 250, 354, 550, 221]
    assert out.peak_drained <= 1001
    assert out.peak_fed <= 1001 + chunk


@pytest.mark.parametrize("chunk", [997, 65536])
def test_memory_bounded_while_discarding_an_oversized_message(chunk: int) -> None:
    limits = Limits(max_message_size=1000)
    data = START + (b"l" * 78 + b"\r\n") * 40000 + b".\r\nQUIT\r\n"
    out = run([data[i : i + chunk] for i in range(0, len(data), chunk)], limits)
    assert out.codes == [250, 250, 250, 354, 552, 221]
    assert out.peak_drained <= 1001
    end = [e for e in out.events if isinstance(e, EndOfData)]
    assert end[0].size == 80 * 40000


def test_memory_bounded_when_delivering() -> None:
    chunk = 65536
    content = (b"m" * 998 + b"\r\n") * 3000
    data = START + content + b".\r\n"
    out = run([data[i : i + chunk] for i in range(0, len(data), chunk)])
    assert out.messages == [content]
    assert out.peak_drained <= 1000


def test_large_chunks_not_per_line() -> None:
    conn = ServerConnection(Limits())
    conn.send(r.greeting("mx"))
    conn.receive_data(START)
    for reply in (r.OK, r.OK_SENDER, r.OK_RECIPIENT, r.START_DATA):
        conn.next_event()
        conn.send(reply)
    assert conn.state is State.DATA
    body = b"line\r\n" * 10000
    conn.receive_data(body + b".\r\n")
    assert conn.next_event() == DataChunk(body)
    assert conn.next_event() == EndOfData(None, len(body))


# --- bare_newline = "normalize" ----------------------------------------------------------------

NORMALIZE = Limits(bare_newline=BareNewline.NORMALIZE)


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        (b"a\nb\n\r\n.\r\n", b"a\r\nb\r\n\r\n"),
        (b"a\r\nb\nc\r\n.\r\n", b"a\r\nb\r\nc\r\n"),
        # A bare LF starts a line: a leading period there is unstuffed, as after CRLF.
        (b"a\n..b\r\n.\r\n", b"a\r\n.b\r\n"),
        (b"\n.x\r\n.\r\n", b"\r\nx\r\n"),
        # Look-alikes of the end are content lines: a "." line loses its period.
        (b"x\n.\ny\r\n.\r\n", b"x\r\n\r\ny\r\n"),
        (b"x\n.\r\ny\r\n.\r\n", b"x\r\n\r\ny\r\n"),
        (b"x\r\n.\ny\r\n.\r\n", b"x\r\n\r\ny\r\n"),
        (b"x\n.\r\n.\r\n", b"x\r\n\r\n"),
        (b".\n\r\n.\r\n", b"\r\n\r\n"),
        # After a bare LF even ".<CRLF>" is a content line: the end needs a CRLF before it.
        (b".\n.\r\n\r\n.\r\n", b"\r\n\r\n\r\n"),
        (b"x\n\r\n.\r\n", b"x\r\n\r\n"),
        (b"\n\n\n.\r\n.\r\n", b"\r\n\r\n\r\n\r\n"),
    ],
)
def test_normalize_stores_bare_lf_as_crlf(sent: bytes, stored: bytes) -> None:
    out = message(sent, NORMALIZE)
    assert out.codes == [*ACCEPTED, 221]
    assert out.messages == [stored]
    end = [e for e in out.events if isinstance(e, EndOfData)]
    assert end == [EndOfData(None, len(stored))]


@pytest.mark.parametrize(
    "content",
    [b"bare\rcr", b"X: a\rFrom: forged", b"\r", b"ends with cr\r", b"x\r\r\n", b"a\n\rb"],
)
def test_normalize_still_refuses_a_bare_cr(content: bytes) -> None:
    """Turning ``X: a<CR>From: forged`` into two header lines would let a client add
    headers a filter never saw as such; a bare CR stays an error."""
    out = message(content + b"\r\n.\r\n", NORMALIZE)
    assert out.codes == [250, 250, 250, 354, 550, 221]
    assert out.replies[5] == r.BARE_NEWLINE_IN_DATA


@pytest.mark.parametrize(
    "fake_end",
    [
        b"\n.\n",
        b"\n.\r\n",
        b"\r.\r",
        b"\r.\n",
        b"\r.\r\n",
        b"\r\n.\n",
        b"\r\n.\r",
        b"\n.\r",
        b"\n\x00.\r\n",
        b"\r\n\x00.\n",
        b"\r\n.\x00\n",
        b"\n.\x00\r\n",
        b"\r\x00.\r\n",
    ],
)
def test_normalize_smuggling_variants_do_not_end_data(fake_end: bytes) -> None:
    """Under normalize a look-alike with bare LFs only is content: one message, stored with
    the smuggled commands as text lines; with a bare CR it is refused as before. Either way
    nothing after the look-alike is executed."""
    content = b"Subject: hi\r\n\r\nhello" + fake_end + SMUGGLED
    out = run([START + content + b"\r\n.\r\nQUIT\r\n"], NORMALIZE)
    assert not any(isinstance(e, MailFrom) and "victim" in e.address for e in out.events)
    assert [type(e) for e in out.events].count(EndOfData) == 1
    if b"\r" in fake_end.replace(b"\r\n", b""):
        assert out.codes == [250, 250, 250, 354, 550, 221]
        assert out.messages == []
        return
    assert out.codes == [250, 250, 250, 354, 250, 221]
    (stored,) = out.messages
    assert b"\n" not in stored.replace(b"\r\n", b"")
    assert stored.endswith(b"\r\n" + SMUGGLED + b"\r\n")


def test_normalize_line_limit_counts_the_stored_line() -> None:
    assert message(b"x" * 998 + b"\n\r\n.\r\n", NORMALIZE).codes[4] == 250
    assert message(b"x" * 999 + b"\n\r\n.\r\n", NORMALIZE).codes[4] == 550
    # Two lines of 600 are fine whatever ends them; the size counts the stored CRLFs.
    out = message(
        b"y" * 600 + b"\n" + b"y" * 600 + b"\r\n.\r\n",
        Limits(max_message_size=1204, bare_newline=BareNewline.NORMALIZE),
    )
    assert out.codes[4] == 250
    assert [e for e in out.events if isinstance(e, EndOfData)][0].size == 1204
