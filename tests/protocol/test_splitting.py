"""However the bytes are cut into reads, the replies and the delivered mail are the same."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smtpkit.limits import BareNewline, Limits
from smtpkit.protocol import DataChunk, EndOfData, ServerConnection
from smtpkit.protocol import replies as r
from smtpkit.protocol.buffer import DataScanner, EndOfDataMarker, ReceiveBuffer
from tests.protocol.protocol_harness import (
    REPLY_BYTES,
    SMALL,
    Outcome,
    reference_data,
    run,
    split_at,
)

START = b"EHLO c.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n"
AGAIN = START[len(b"EHLO c.example\r\n") :]


def _bdat(content: bytes, last: bool = False) -> bytes:
    return b"BDAT %d%s\r\n" % (len(content), b" LAST" if last else b"") + content


TRANSCRIPTS: list[tuple[str, bytes, Limits]] = [
    (
        "pipelined session",
        b"EHLO c\r\nMAIL FROM:<a@example.org> SIZE=30\r\nRCPT TO:<unknown@x.example>\r\n"
        b"RCPT TO:<b@example.net>\r\nDATA\r\n..one\r\n.two\r\nthree.\r\n\r\n.\r\n"
        b"MAIL FROM:<>\r\nRCPT TO:<Postmaster>\r\nDATA\r\n.\r\nNOOP x\r\nQUIT\r\n",
        Limits(),
    ),
    (
        "bad lines",
        b"FOO\r\nNOOP\nHELO\r\nNO\rOP\r\n\r\nVRFY \xff\r\nEHLO a\r\nMAIL FROM:<a@b> FOO=1\r\n"
        b"MAIL FROM:a@b\r\nRCPT TO:<b@c>\r\nDATA\r\nQUIT\r\n",
        Limits(),
    ),
    (
        "long command",
        b"NOOP " + b"x" * 60 + b"\r\nNOOP\r\nNOOP " + b"y" * 40 + b"\nQUIT\r\n",
        SMALL,
    ),
    (
        "smuggling",
        START + b"hi\n.\nMAIL FROM:<x@y>\r\n\r.\r\n.\r\r\n\r\n.\nz\r\n.\r\nRSET\r\n",
        Limits(),
    ),
    ("long text line", START + b"0123456789abcdef\r\nok\r\n.\r\n" + AGAIN + b"x\r\n.\r\n", SMALL),
    (
        "line limit edges",
        b"".join([START, b"." + b"p" * 13, b"\r\n", b"q" * 14, b"\r\n.\r\n"])
        + b"".join([AGAIN, b"r" * 40, b"\r\r\n.\r\n"]),
        SMALL,
    ),
    ("too big", START + b"0123456789\r\n" * 6 + b"..\r\n.\r\nQUIT\r\n", SMALL),
    ("exactly at size", START + b"0123456789\r\n" * 5 + b"..x\r\n.\r\nQUIT\r\n", SMALL),
    ("empty and dots", START + b".\r\n" + AGAIN + b"..\r\n...\r\n.\r\n", Limits()),
    ("eof in data", START + b"unfinished\r\nmessage\r", Limits()),
    ("starttls refused", b"EHLO c\r\nSTARTTLS\r\nNOOP\r\n", Limits()),
    (
        "bdat chunks",
        START[:-6]
        + _bdat(b"one\r\n.\r")
        + _bdat(b"")
        + _bdat(b"\n..two\r\n", last=True)
        + b"NOOP\r\n"
        + AGAIN[:-6]
        + _bdat(b"x\r")
        + b"RSET\r\n"
        + _bdat(b"Q\r\n", last=True)
        + b"QUIT\r\n",
        Limits(),
    ),
    (
        "bdat refused",
        START[:-6]
        + _bdat(b"y" * 60 + b"\r\nQUIT\r\n")
        + _bdat(b"DATA\r\n")
        + _bdat(b".\r\n\r\n", last=True)
        + _bdat(b"MAIL FROM:<x@y>\r\n", last=True)
        + b"BDAT x\r\nNOOP\r\n",
        SMALL,
    ),
    (
        "bdat binarymime",
        b"EHLO c\r\nMAIL FROM:<a@b> BODY=BINARYMIME\r\nRCPT TO:<b@c.example>\r\nDATA\r\n"
        + _bdat(b"\r.\n\x00\r")
        + _bdat(b"\n", last=True)
        + b"QUIT\r\n",
        Limits(),
    ),
]


def assert_same(whole: Outcome, pieces: Outcome) -> None:
    assert pieces.comparable() == whole.comparable()


@pytest.mark.parametrize(
    ("transcript", "limits"), [t[1:] for t in TRANSCRIPTS], ids=[t[0] for t in TRANSCRIPTS]
)
def test_every_single_split_point(transcript: bytes, limits: Limits) -> None:
    whole = run([transcript], limits)
    for cut in range(1, len(transcript)):
        assert_same(whole, run(split_at(transcript, [cut]), limits))


@pytest.mark.parametrize(
    ("transcript", "limits"), [t[1:] for t in TRANSCRIPTS], ids=[t[0] for t in TRANSCRIPTS]
)
def test_byte_by_byte(transcript: bytes, limits: Limits) -> None:
    whole = run([transcript], limits)
    assert_same(whole, run([bytes([b]) for b in transcript], limits))


def test_transcripts_do_what_they_say() -> None:
    results = {name: run([data], limits) for name, data, limits in TRANSCRIPTS}
    assert results["pipelined session"].codes == [
        250, 250, 550, 250, 354, 250, 250, 250, 354, 250, 250, 221,
    ]  # fmt: skip
    assert results["pipelined session"].messages == [b".one\r\ntwo\r\nthree.\r\n\r\n", b""]
    bad = [500, 500, 501, 501, 500, 501, 250, 555, 501, 503, 503, 221]
    assert results["bad lines"].codes == bad
    assert results["long command"].codes == [500, 250, 500, 221]
    assert results["smuggling"].codes == [250, 250, 250, 354, 550, 250]
    assert results["long text line"].codes == [250, 250, 250, 354, 550, 250, 250, 354, 250]
    # 16 octets with the CRLF is exactly the limit; the stuffed period counts.
    assert results["line limit edges"].codes == [250, 250, 250, 354, 250, 250, 250, 354, 550]
    assert results["line limit edges"].messages == [b"p" * 13 + b"\r\n" + b"q" * 14 + b"\r\n"]
    assert results["too big"].codes == [250, 250, 250, 354, 552, 221]
    assert results["exactly at size"].codes == [250, 250, 250, 354, 250, 221]
    assert results["exactly at size"].messages == [b"0123456789\r\n" * 5 + b".x\r\n"]
    assert results["empty and dots"].messages == [b"", b".\r\n..\r\n"]
    assert results["starttls refused"].codes == [250, 454, 250]
    # Chunks are counted octets: a "." line, a CR at a chunk's end, "BDAT" or "QUIT" inside
    # one are content; "BDAT 0" adds nothing; RSET drops the transaction and its chunks.
    assert results["bdat chunks"].codes == [*[250] * 11, 503, 221]
    assert results["bdat chunks"].messages == [b"one\r\n.\r\n..two\r\n"]
    # A chunk over SMALL's size: refused, and the chunks pipelined after it too, never
    # executed; then a malformed BDAT ends the session.
    assert results["bdat refused"].codes == [250, 250, 250, 552, 503, 503, 503, 421]
    assert results["bdat refused"].messages == []
    assert results["bdat binarymime"].codes == [250, 250, 250, 503, 250, 250, 221]
    assert results["bdat binarymime"].messages == [b"\r.\n\x00\r\n"]


# --- hypothesis --------------------------------------------------------------------------------

FRAGMENTS = [
    b"EHLO c\r\n",
    b"HELO c\r\n",
    b"MAIL FROM:<a@b.example>\r\n",
    b"MAIL FROM:<a@b.example> SIZE=9\r\n",
    b"MAIL FROM:<>\r\n",
    b"RCPT TO:<b@c.example>\r\n",
    b"RCPT TO:<unknown@c.example>\r\n",
    b"RCPT TO:<postmaster>\r\n",
    b"DATA\r\n",
    b"RSET\r\n",
    b"NOOP\r\n",
    b"VRFY x\r\n",
    b"QUIT\r\n",
    b"FOO\r\n",
    b".\r\n",
    b"..\r\n",
    b"\r\n.\r\n",
    b"\r\n",
    b"\r",
    b"\n",
    b".",
    b"\x00",
    b"\xff",
    b" ",
    b"x",
    b"text line\r\n",
    b"z" * 17,
    b"w" * 45,
    b"BDAT 3\r\n",
    b"BDAT 0 LAST\r\n",
    b"BDAT 12 LAST\r\n",
    b"MAIL FROM:<a@b.example> BODY=BINARYMIME\r\n",
]

stream = st.one_of(
    st.binary(max_size=300),
    st.lists(st.sampled_from(FRAGMENTS), max_size=40).map(b"".join),
)
limit_sets = st.sampled_from([SMALL, Limits(), Limits(max_command_line=12, max_text_line=3)])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=stream, cuts=st.lists(st.integers(min_value=0, max_value=400)), limits=limit_sets)
def test_any_stream_any_split(data: bytes, cuts: list[int], limits: Limits) -> None:
    whole = run([data], limits)
    pieces = run(split_at(data, [c for c in cuts if c < len(data)]), limits)
    assert_same(whole, pieces)
    for wire in whole.wire:
        assert REPLY_BYTES.fullmatch(wire)


@settings(max_examples=100, deadline=None)
@given(data=stream, limits=limit_sets)
def test_any_stream_byte_by_byte(data: bytes, limits: Limits) -> None:
    assert_same(run([data], limits), run([bytes([b]) for b in data], limits))


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=200), tls=st.booleans())
def test_raw_bytes_after_greeting_never_raise(data: bytes, tls: bool) -> None:
    out = run([START + data], tls=tls)
    assert all(REPLY_BYTES.fullmatch(wire) for wire in out.wire)


CONTENT = st.lists(
    st.sampled_from(
        [b"a", b"b" * 7, b".", b"..", b"\r\n", b"\r\n.", b"\r", b"\n", b"\x00", b"c" * 20]
    ),
    max_size=30,
).map(b"".join)


@settings(max_examples=200, deadline=None)
@given(
    content=CONTENT,
    tail=st.sampled_from([b"\r\n.\r\n", b".\r\n", b"\r\n.\r\nNEXT", b"", b"\r\n.\r"]),
    cuts=st.lists(st.integers(min_value=0, max_value=800)),
    limits=st.sampled_from(
        [
            SMALL,
            Limits(max_text_line=4, max_message_size=30),
            Limits(max_text_line=16, max_message_size=64, bare_newline=BareNewline.NORMALIZE),
            Limits(max_text_line=4, max_message_size=30, bare_newline=BareNewline.NORMALIZE),
        ]
    ),
)
def test_data_scanner_matches_reference(
    content: bytes, tail: bytes, cuts: list[int], limits: Limits
) -> None:
    stream_bytes = content + tail
    expected = reference_data(stream_bytes, limits)
    buf = ReceiveBuffer()
    normalize = limits.bare_newline is BareNewline.NORMALIZE
    scanner = DataScanner(limits.max_text_line, limits.max_message_size, normalize)
    delivered = bytearray()
    ended = False
    for piece in split_at(stream_bytes, [c for c in cuts if c < len(stream_bytes)]):
        buf.feed(piece)
        while (got := scanner.step(buf)) is not None:
            if isinstance(got, EndOfDataMarker):
                ended = True
                break
            assert not scanner.failed
            delivered += got
        if ended:
            break
        # Bounded: a partial line never holds more than the line limit and the kept byte.
        assert len(buf) <= max(limits.max_text_line + 1, len(piece) + limits.max_text_line + 1)
    if expected is None:
        assert not ended
        return
    assert ended
    want_content, want_error, want_size, _rest = expected
    errors = [
        (scanner.bare_newline, r.BARE_NEWLINE_IN_DATA),
        (scanner.too_big, r.MESSAGE_TOO_BIG),
        (scanner.line_too_long, r.DATA_LINE_TOO_LONG),
    ]
    error = next((reply for flag, reply in errors if flag), None)
    assert error == want_error
    assert scanner.size == want_size
    if want_error is None:
        assert bytes(delivered) == want_content
    else:
        assert want_content.startswith(bytes(delivered))


@settings(max_examples=100, deadline=None)
@given(
    content=CONTENT,
    cuts=st.lists(st.integers(min_value=0, max_value=800)),
    bare_newline=st.sampled_from(BareNewline),
)
def test_connection_delivers_reference_content(
    content: bytes, cuts: list[int], bare_newline: BareNewline
) -> None:
    limits = Limits(max_text_line=8, max_message_size=40, bare_newline=bare_newline)
    transcript = START + content + b"\r\n.\r\nNOOP\r\n"
    expected = reference_data(content + b"\r\n.\r\nNOOP\r\n", limits)
    assert expected is not None
    want_content, want_error, want_size, _rest = expected
    out = run(split_at(transcript, [c for c in cuts if c < len(transcript)]), limits)
    ends = [e for e in out.events if isinstance(e, EndOfData)]
    assert ends == [EndOfData(want_error, want_size)]
    assert out.messages == ([want_content] if want_error is None else [])
    assert out.codes[-1] == 250  # the NOOP after the message is a command again


def test_no_empty_data_chunks() -> None:
    conn = ServerConnection(Limits())
    conn.send(r.greeting("mx"))
    conn.receive_data(START)
    for reply in (r.OK, r.OK_SENDER, r.OK_RECIPIENT, r.START_DATA):
        conn.next_event()
        conn.send(reply)
    for piece in (b"\r", b"\n", b".", b"\r", b"\n"):
        conn.receive_data(piece)
        event = conn.next_event()
        assert not (isinstance(event, DataChunk) and not event.data)
