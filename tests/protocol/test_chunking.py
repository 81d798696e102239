"""CHUNKING and BINARYMIME (RFC 3030): BDAT chunks are counted octets, never commands.

Every transcript here is also played at every split point and byte by byte: a chunk's end is
its octet count, so how the bytes arrive must never matter. The content rules are those of
DATA (bare CR/LF, line length, size), applied to the whole message across chunk boundaries,
checked against an obviously correct model, byte by byte (``reference_chunks``).
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smtpkit.limits import BareNewline, Limits
from smtpkit.protocol import (
    NEED_DATA,
    BadCommand,
    Bdat,
    ConnectionClosed,
    DataChunk,
    EndOfChunk,
    MailFrom,
    RcptTo,
    RefusedChunk,
    ServerConnection,
    State,
)
from smtpkit.protocol import replies as r
from smtpkit.protocol.buffer import ChunkScanner
from smtpkit.protocol.readers import content_error
from tests.protocol.protocol_harness import Outcome, Reply, run, split_at

START = b"EHLO c.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n"
AGAIN = START[len(b"EHLO c.example\r\n") :]
BINARY = (
    b"EHLO c.example\r\nMAIL FROM:<a@example.org> BODY=BINARYMIME\r\nRCPT TO:<b@example.net>\r\n"
)
NORMALIZE = Limits(bare_newline=BareNewline.NORMALIZE)

SMUGGLED = (
    b"\r\n.\r\nMAIL FROM:<ceo@victim.example>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n"
    b"From: ceo@victim.example\r\n\r\nwire the money\r\n.\r\nQUIT\r\n"
)


def bdat(content: bytes, last: bool = False) -> bytes:
    return b"BDAT %d%s\r\n" % (len(content), b" LAST" if last else b"") + content


def chunks(*contents: bytes) -> bytes:
    """A message in chunks, the last one with LAST."""
    return b"".join(bdat(c, i == len(contents) - 1) for i, c in enumerate(contents))


def assert_split_independent(transcript: bytes, limits: Limits | None = None) -> Outcome:
    whole = run([transcript], limits)
    for cut in range(1, len(transcript)):
        assert run(split_at(transcript, [cut]), limits).comparable() == whole.comparable()
    assert run([bytes([b]) for b in transcript], limits).comparable() == whole.comparable()
    return whole


# --- the basics --------------------------------------------------------------------------------


def test_one_chunk_with_last() -> None:
    out = assert_split_independent(START + bdat(b"Subject: x\r\n\r\nhi\r\n", True) + b"QUIT\r\n")
    assert out.codes == [250, 250, 250, 250, 221]
    assert out.messages == [b"Subject: x\r\n\r\nhi\r\n"]
    assert [e for e in out.events if isinstance(e, (Bdat, EndOfChunk))] == [
        Bdat(18, last=True),
        EndOfChunk(size=18, total=18, last=True),
    ]


def test_chunks_are_answered_one_by_one_and_joined() -> None:
    out = assert_split_independent(START + chunks(b"Sub", b"ject: x\r", b"\n\r\nbody\r\n"))
    assert out.codes == [250, 250, 250, 250, 250, 250]
    assert out.replies[4] == r.chunk_received(3)
    assert str(out.replies[5]) == "250 2.0.0 8 octets received"
    assert out.messages == [b"Subject: x\r\n\r\nbody\r\n"]


def test_bdat_0_last_ends_the_message() -> None:
    out = assert_split_independent(START + bdat(b"hello\r\n") + bdat(b"", True) + b"NOOP\r\n")
    assert out.codes == [250, 250, 250, 250, 250, 250]
    assert out.messages == [b"hello\r\n"]
    empty = run([START + bdat(b"", True)])
    assert empty.codes == [250, 250, 250, 250]
    assert empty.messages == [b""]


def test_syntax_is_lenient_about_case_and_spaces() -> None:
    out = run([START + b"bdat 0002 last\r\nhiNOOP\r\n" + AGAIN + b"BDAT  2  LAST \r\nyo"])
    assert out.codes == [250, 250, 250, 250, 250, 250, 250, 250]
    assert out.messages == [b"hi", b"yo"]


def test_pipelined_session_with_data_and_bdat_transactions() -> None:
    """RFC 3030 2: DATA and BDAT may both be used in one session, not in one transaction."""
    transcript = (
        START
        + chunks(b"one\r\n", b"two\r\n")
        + AGAIN
        + b"DATA\r\nthree\r\n.\r\n"
        + AGAIN
        + chunks(b"four\r\n")
        + b"QUIT\r\n"
    )
    out = assert_split_independent(transcript)
    assert out.codes == [250, 250, 250, 250, 250, 250, 250, 354, 250, 250, 250, 250, 221]
    assert out.messages == [b"one\r\ntwo\r\n", b"three\r\n", b"four\r\n"]


# --- a chunk's bytes are never commands, never unstuffed ------------------------------------------


@pytest.mark.parametrize("limits", [Limits(), NORMALIZE], ids=["reject", "normalize"])
def test_commands_and_end_markers_in_a_chunk_are_content(limits: Limits) -> None:
    content = b"Subject: innocent\r\n\r\nhello" + SMUGGLED + b"..stuffed?\r\n.\r\n"
    out = assert_split_independent(START + chunks(content) + b"NOOP\r\n", limits)
    assert out.codes == [250, 250, 250, 250, 250]
    # Stored exactly: no end found inside, no period removed (RFC 3030 2: no dot-stuffing).
    assert out.messages == [content]
    assert [type(e) for e in out.events].count(MailFrom) == 1
    assert not any(isinstance(e, RcptTo) and "victim" in e.address for e in out.events)


def test_a_chunk_may_hold_what_looks_like_bdat() -> None:
    inner = bdat(b"QUIT\r\n", True)
    out = assert_split_independent(START + chunks(inner, b"\r\n") + b"NOOP\r\n")
    assert out.codes == [250, 250, 250, 250, 250, 250]
    assert out.messages == [inner + b"\r\n"]


def test_pipelined_chunks_after_a_refusal_are_read_never_executed() -> None:
    """A refused chunk fails the transaction (RFC 3030 2); the chunks pipelined after it are
    refused in turn, and their bytes, commands or not, are read and dropped."""
    limits = Limits(max_message_size=10)
    transcript = START + chunks(b"0123456789x", b"RSET\r\n", b"MAIL FROM:<e@x.example>\r\n")
    out = assert_split_independent(transcript + b"NOOP\r\n", limits)
    assert out.codes == [250, 250, 250, 552, 503, 503, 250]
    assert out.replies[4] == r.MESSAGE_TOO_BIG
    assert out.replies[5] == out.replies[6] == r.BAD_SEQUENCE
    assert [e for e in out.events if isinstance(e, RefusedChunk)] == [
        RefusedChunk(r.BAD_SEQUENCE, 6),
        RefusedChunk(r.BAD_SEQUENCE, 25),
    ]
    assert [type(e) for e in out.events].count(MailFrom) == 1
    assert out.messages == []
    # After the refusal the session goes on: a new transaction, a new message.
    again = run([transcript + AGAIN + chunks(b"ok\r\n")], limits)
    assert again.codes[-3:] == [250, 250, 250] and again.messages == [b"ok\r\n"]


@pytest.mark.parametrize(
    ("before", "reply"),
    [
        (b"EHLO c\r\n", r.BAD_SEQUENCE),  # no transaction
        (b"", r.NEED_HELO),
        (b"EHLO c\r\nMAIL FROM:<a@example.org>\r\n", r.NO_VALID_RECIPIENTS),
        (b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<unknown@x.example>\r\n", None),
        (b"HELO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@x.example>\r\n", r.BDAT_NEEDS_EHLO),
    ],
)
def test_bdat_out_of_sequence_is_refused_after_its_chunk(
    before: bytes, reply: Reply | None
) -> None:
    chunk = b"MAIL FROM:<x@x.example>\r\nQUIT\r\n"
    out = assert_split_independent(before + bdat(chunk, True) + b"NOOP\r\n")
    refused = [e for e in out.events if isinstance(e, RefusedChunk)]
    assert refused == [RefusedChunk(reply or r.NO_VALID_RECIPIENTS, len(chunk))]
    assert out.wire[-2].startswith(b"503 5.5.1 ")
    assert out.codes[-1] == 250  # the NOOP after the chunk: a command again
    assert [type(e) for e in out.events].count(MailFrom) == before.count(b"MAIL")
    assert out.messages == []


def test_rset_between_chunks_drops_the_message() -> None:
    transcript = START + bdat(b"first part\r\n") + b"RSET\r\n" + bdat(b"late\r\n", True)
    out = assert_split_independent(transcript + AGAIN + chunks(b"fresh\r\n"))
    assert out.codes == [250, 250, 250, 250, 250, 503, 250, 250, 250]
    assert out.messages == [b"fresh\r\n"]


def test_ehlo_between_chunks_resets() -> None:
    out = run([START + bdat(b"part\r\n") + b"EHLO again\r\n" + bdat(b"x", True)])
    assert out.codes == [250, 250, 250, 250, 250, 503]


def test_bdat_after_last_needs_a_new_transaction() -> None:
    out = assert_split_independent(START + chunks(b"a\r\n") + bdat(b"b\r\n", True) + b"NOOP\r\n")
    assert out.codes == [250, 250, 250, 250, 503, 250]
    assert out.messages == [b"a\r\n"]


@pytest.mark.parametrize(
    ("between", "reply"),
    [
        (b"DATA\r\n", r.DATA_AFTER_BDAT),
        (b"MAIL FROM:<x@example.org>\r\n", r.SENDER_ALREADY),
        (b"RCPT TO:<c@example.net>\r\n", r.BAD_SEQUENCE),
    ],
)
def test_no_data_mail_or_rcpt_between_chunks(between: bytes, reply: Reply) -> None:
    """RFC 3030 2: DATA and BDAT are not mixed in one transaction; the refusal leaves the
    transaction as it was, and the next chunk continues the message."""
    out = assert_split_independent(START + bdat(b"a\r\n") + between + bdat(b"b\r\n", True))
    assert out.codes == [250, 250, 250, 250, 503, 250]
    assert out.replies[5] == reply
    assert out.messages == [b"a\r\nb\r\n"]


def test_data_after_body_binarymime_is_refused() -> None:
    """RFC 3030 3: BINARYMIME content goes with BDAT only."""
    out = assert_split_independent(BINARY + b"DATA\r\n" + chunks(b"\x00\r\xff\n") + b"NOOP\r\n")
    assert out.codes == [250, 250, 250, 503, 250, 250]
    assert out.replies[4] == r.BINARYMIME_NEEDS_BDAT
    assert out.messages == [b"\x00\r\xff\n"]
    # The next transaction, without BODY=BINARYMIME, may use DATA again.
    after = run([BINARY + chunks(b"x") + AGAIN + b"DATA\r\ny\r\n.\r\n"])
    assert after.codes[-3:] == [250, 354, 250] and after.messages == [b"x", b"y\r\n"]


# --- malformed BDAT: the end of its chunk is unknown --------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        b"BDAT\r\n",
        b"BDAT \r\n",
        b"BDAT x\r\n",
        b"BDAT -1\r\n",
        b"BDAT +5\r\n",
        b"BDAT 5X\r\n",
        b"BDAT 0x10\r\n",
        b"BDAT 5 X\r\n",
        b"BDAT 5 LAST X\r\n",
        b"BDAT 5 LASTLY\r\n",
        b"BDAT \xd9\xa5\r\n",
        b"BDAT 5\tLAST\r\n",
        b"BDAT 5 LAST\r\r\n",
        b"BDAT 5\x00\r\n",
        b"BDAT " + b"9" * 21 + b"\r\n",
        b"BDAT 5\n",
        b"BDAT 5 " + b" " * 600 + b"LAST\r\n",
    ],
)
def test_malformed_bdat_closes_the_session(line: bytes) -> None:
    """Nothing tells where such a command's chunk ends: whatever follows could be chunk data
    passing for commands, so the session ends with 421 and nothing after it is read."""
    out = assert_split_independent(START + line + b"MAIL FROM:<x@victim.example>\r\nQUIT\r\n")
    assert out.codes == [250, 250, 250, 421]
    assert out.replies[4] == r.BDAT_UNREADABLE
    assert [type(e) for e in out.events].count(MailFrom) == 1


def test_the_size_bound_is_twenty_digits() -> None:
    conn = ServerConnection(Limits())
    conn.send(r.greeting("mx"))
    conn.receive_data(START + b"BDAT " + b"9" * 20 + b" LAST\r\n" + b"x" * 100)
    for reply in (r.OK, r.OK_SENDER, r.OK_RECIPIENT):
        conn.next_event()
        conn.send(reply)
    assert conn.next_event() == Bdat(int("9" * 20), last=True)
    assert conn.state is State.CHUNK
    assert conn.next_event() == DataChunk(b"x" * 100)
    assert conn.next_event() is NEED_DATA


# --- content rules across chunk boundaries --------------------------------------------------------


@pytest.mark.parametrize(
    ("parts", "codes", "stored"),
    [
        # A CRLF split between two chunks is one line end.
        ([b"a\r", b"\nb\r\n"], [250, 250], b"a\r\nb\r\n"),
        ([b"a\r", b"", b"\nb\r\n"], [250, 250, 250], b"a\r\nb\r\n"),
        # A CR at the end of a chunk and anything but a LF next: refused at that next chunk.
        ([b"a\r", b"b\r\n", b"c"], [250, 550], None),
        ([b"a\r", b"\r\n"], [250, 550], None),
        # A CR at the very end of the message has no LF to come.
        ([b"a\r\n", b"b\r"], [250, 550], None),
        ([b"a\n", b"b"], [550], None),  # refused at the chunk holding it
        ([b"a", b"\n"], [250, 550], None),
        # The last line need not end with CRLF; stored as sent.
        ([b"no line end"], [250], b"no line end"),
        ([b"\x00\xff\x80\r\n"], [250], b"\x00\xff\x80\r\n"),
    ],
)
def test_line_ends_across_chunks(
    parts: list[bytes], codes: list[int], stored: bytes | None
) -> None:
    out = assert_split_independent(START + chunks(*parts) + b"NOOP\r\n")
    assert out.codes[3 : 3 + len(codes)] == codes
    if stored is None:
        assert out.replies[3 + len(codes)] == r.BARE_NEWLINE_IN_DATA
        assert out.messages == []
    else:
        assert out.messages == [stored]
    assert out.codes[-1] == 250  # NOOP


@pytest.mark.parametrize(
    ("parts", "codes"),
    [
        ([b"x" * 998 + b"\r\n"], [250]),
        ([b"x" * 999 + b"\r\n"], [550]),
        ([b"x" * 500, b"x" * 498 + b"\r\n"], [250, 250]),
        ([b"x" * 500, b"x" * 499 + b"\r\n"], [250, 550]),
        ([b"x" * 500, b"x" * 498 + b"\r", b"\n"], [250, 250, 250]),
        # Known to be over before its line end arrives: refused at that chunk.
        ([b"x" * 500, b"x" * 499, b"\r\n"], [250, 550, 503]),
        ([b"short\r\n" + b"x" * 998, b"\r\n"], [250, 250]),
        ([b"short\r\n" + b"x" * 999], [550]),
        ([b"a\r\n" + b"y" * 999 + b"\r\nb\r\n"], [550]),
        ([b"." + b"x" * 997 + b"\r\n"], [250]),  # no stuffing: the period is content
    ],
)
def test_line_length_across_chunks(parts: list[bytes], codes: list[int]) -> None:
    out = run([START + chunks(*parts)])
    assert out.codes[3:] == codes
    if 550 in codes:
        assert out.replies[3 + codes.index(550) + 1] == r.DATA_LINE_TOO_LONG


def test_size_limit_at_the_chunk_that_crosses_it() -> None:
    limits = Limits(max_message_size=100)
    parts = [b"x" * 48 + b"\r\n", b"y" * 48 + b"\r\n", b"z\r\n", b"tail\r\n"]
    out = assert_split_independent(START + chunks(*parts) + b"NOOP\r\n", limits)
    assert out.codes == [250, 250, 250, 250, 250, 552, 503, 250]
    assert out.replies[6] == r.MESSAGE_TOO_BIG
    ends = [e for e in out.events if isinstance(e, EndOfChunk)]
    assert ends[-1] == EndOfChunk(size=3, total=103, last=False, error=r.MESSAGE_TOO_BIG)
    exactly = run([START + chunks(b"x" * 98 + b"\r\n")], limits)
    assert exactly.codes[-1] == 250


def test_error_priority_within_a_chunk() -> None:
    limits = Limits(max_message_size=100, max_text_line=50)
    long = b"x" * 60 + b"\r\n"
    big = b"y\r\n" * 40
    cases = [
        (long + big + b"bare\n\r\n", r.BARE_NEWLINE_IN_DATA),
        (long + big, r.MESSAGE_TOO_BIG),
        (long, r.DATA_LINE_TOO_LONG),
    ]
    for content, error in cases:
        out = run([START + chunks(content)], limits)
        assert out.replies[-1] == error


def test_binarymime_content_is_octets() -> None:
    """RFC 3030 3: no line rules for BINARYMIME (size only), stored exactly."""
    content = bytes(range(256)) * 4 + b"\r" + b"x" * 5000 + b"\n.\n\r.\r"
    out = assert_split_independent(BINARY + chunks(content[:700], content[700:]) + b"NOOP\r\n")
    assert out.codes == [250, 250, 250, 250, 250, 250]
    assert out.messages == [content]
    too_big = run([BINARY + chunks(b"\x00" * 65)], Limits(max_message_size=64))
    assert too_big.replies[-1] == r.MESSAGE_TOO_BIG


# --- bare_newline = "normalize" -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parts", "stored"),
    [
        ([b"a\nb\n"], b"a\r\nb\r\n"),
        ([b"a\r\nb\n"], b"a\r\nb\r\n"),
        ([b"a\r", b"\nb\n", b"\n"], b"a\r\nb\r\n\r\n"),
        ([b"a", b"\n", b"b"], b"a\r\nb"),
        ([b"\n.\n"], b"\r\n.\r\n"),
    ],
)
def test_normalize_stores_a_bare_lf_as_crlf(parts: list[bytes], stored: bytes) -> None:
    out = assert_split_independent(START + chunks(*parts), NORMALIZE)
    assert out.messages == [stored]
    ends = [e for e in out.events if isinstance(e, EndOfChunk)]
    assert ends[-1].total == len(stored)


@pytest.mark.parametrize("parts", [[b"a\rb\r\n"], [b"X: a\r", b"From: forged\r\n"], [b"a\r"]])
def test_normalize_still_refuses_a_bare_cr(parts: list[bytes]) -> None:
    out = run([START + chunks(*parts)], NORMALIZE)
    assert out.replies[-1] == r.BARE_NEWLINE_IN_DATA
    assert out.messages == []


def test_normalize_leaves_binarymime_alone() -> None:
    out = run([BINARY + chunks(b"a\nb\rc")], NORMALIZE)
    assert out.messages == [b"a\nb\rc"]


# --- streaming, memory, the end of the connection ------------------------------------------------


def test_a_big_chunk_streams_in_bounded_memory() -> None:
    """A 10 MB chunk: delivered piece by piece as it arrives, nothing held."""
    read = 65536
    content = (b"m" * 998 + b"\r\n") * 10000
    transcript = START + chunks(content) + b"QUIT\r\n"
    out = run([transcript[i : i + read] for i in range(0, len(transcript), read)])
    assert out.codes == [250, 250, 250, 250, 221]
    assert out.messages == [content]
    assert out.peak_drained == 0
    assert out.peak_fed <= read


def test_chunk_pieces_are_delivered_as_they_arrive() -> None:
    conn = ServerConnection(Limits())
    conn.send(r.greeting("mx"))
    conn.receive_data(START + b"BDAT 10 LAST\r\n0123")
    for reply in (r.OK, r.OK_SENDER, r.OK_RECIPIENT):
        conn.next_event()
        conn.send(reply)
    assert conn.next_event() == Bdat(10, last=True)
    assert conn.next_event() == DataChunk(b"0123")
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"456789QUIT\r\n")
    assert conn.next_event() == DataChunk(b"456789")
    assert conn.next_event() == EndOfChunk(size=10, total=10, last=True)
    assert conn.buffered == len(b"QUIT\r\n")  # waits for the reply


def test_refused_chunk_is_dropped_in_bounded_memory() -> None:
    read = 65536
    transcript = b"EHLO c\r\n" + bdat(b"z" * 3_000_000, True) + b"QUIT\r\n"
    out = run([transcript[i : i + read] for i in range(0, len(transcript), read)])
    assert out.codes == [250, 503, 221]
    assert out.peak_drained == 0


@pytest.mark.parametrize("tail", [b"BDAT 10 LAST\r\nabc", b"BDAT 10\r\n", b"BDAT 3\r\nabcBDAT 4"])
def test_eof_inside_a_message_is_connection_closed(tail: bytes) -> None:
    out = run([START + tail])
    assert isinstance(out.events[-1], ConnectionClosed)
    assert out.messages == []


def test_eof_while_dropping_a_refused_chunk() -> None:
    out = run([b"EHLO c\r\nBDAT 10\r\nabc"])
    assert out.codes == [250]
    assert isinstance(out.events[-1], ConnectionClosed)


def test_421_mid_chunk_closes() -> None:
    conn = ServerConnection(Limits())
    conn.send(r.greeting("mx"))
    conn.receive_data(START + b"BDAT 10 LAST\r\n0123")
    for reply in (r.OK, r.OK_SENDER, r.OK_RECIPIENT):
        conn.next_event()
        conn.send(reply)
    assert isinstance(conn.next_event(), Bdat)
    assert conn.next_event() == DataChunk(b"0123")
    conn.send(r.TIMEOUT)
    assert conn.state is State.CLOSED
    conn.receive_data(b"456789MAIL FROM:<x@y.example>\r\n")
    assert conn.buffered == 0


def test_a_bad_command_line_is_not_mistaken_for_bdat() -> None:
    # Only the word BDAT makes a BDAT command; anything else stays a plain bad command.
    out = run([START + b"BDATX 5\r\nNOOP\r\n"])
    assert out.codes == [250, 250, 250, 500, 250]
    assert isinstance(out.events[3], BadCommand)


# --- a reference model, and hypothesis ------------------------------------------------------------


def reference_chunks(
    parts: list[bytes], limits: Limits, binary: bool = False
) -> tuple[list[Reply | None], bytes | None]:
    """The verdict on each chunk (None: accepted) and the message stored, computed byte by
    byte on the whole content so far: a CR at the end of a chunk that is not the last waits
    for the next octet."""
    normalize = limits.bare_newline is BareNewline.NORMALIZE
    verdicts: list[Reply | None] = []
    content = b""
    for number, part in enumerate(parts):
        content += part
        final = number == len(parts) - 1
        out = bytearray()
        bare = long = False
        line = 0
        i = 0
        while i < len(content) and not binary:
            byte = content[i : i + 1]
            nxt = content[i + 1 : i + 2]
            if byte == b"\r" and nxt == b"\n" or byte == b"\n" and normalize:
                long = long or line + 2 > limits.max_text_line
                out += b"\r\n"
                line = 0
                i += 2 if byte == b"\r" else 1
                continue
            if byte == b"\r" and not nxt and not final:
                out += byte  # its LF may be in the next chunk
            elif byte in (b"\r", b"\n"):
                bare = True
                out += byte
                line += 1
            else:
                out += byte
                line += 1
            i += 1
        long = long or line + 2 > limits.max_text_line
        if binary:
            out = bytearray(content)
        error = None
        if bare:
            error = r.BARE_NEWLINE_IN_DATA
        elif len(out) > limits.max_message_size:
            error = r.MESSAGE_TOO_BIG
        elif long:
            error = r.DATA_LINE_TOO_LONG
        verdicts.append(error)
        if error is not None:
            return verdicts, None
    return verdicts, bytes(out)


PIECES = [b"a", b"bb", b"\r", b"\n", b"\r\n", b".", b"\x00", b"z" * 9, b"\r\n.\r\n", b"BDAT 1\r\n"]
contents = st.lists(
    st.lists(st.sampled_from(PIECES), max_size=8).map(b"".join), min_size=1, max_size=5
)
chunk_limits = st.sampled_from(
    [
        Limits(max_text_line=8, max_message_size=40),
        Limits(max_text_line=4, max_message_size=25, bare_newline=BareNewline.NORMALIZE),
        Limits(max_text_line=16, max_message_size=64),
    ]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    parts=contents, limits=chunk_limits, binary=st.booleans(), cuts=st.lists(st.integers(0, 300))
)
def test_chunked_messages_match_the_reference(
    parts: list[bytes], limits: Limits, binary: bool, cuts: list[int]
) -> None:
    verdicts, stored = reference_chunks(parts, limits, binary)
    head = BINARY if binary else START
    transcript = head + chunks(*parts) + b"NOOP\r\n"
    out = run(split_at(transcript, [c for c in cuts if c < len(transcript)]), limits)
    answered = out.replies[4 : 4 + len(verdicts)]
    assert [reply if reply.code >= 400 else None for reply in answered] == verdicts
    assert out.messages == ([] if stored is None else [stored])
    # Whatever the chunks held, the only commands were the real ones: the pipelined chunks
    # after a refusal were refused in turn, and the NOOP at the end ran.
    assert out.codes[-1] == 250
    refused_after = len(parts) - len(verdicts)
    assert [e for e in out.events if isinstance(e, RefusedChunk)] == [
        RefusedChunk(r.BAD_SEQUENCE, len(p)) for p in parts[len(parts) - refused_after :]
    ]


@settings(max_examples=300, deadline=None)
@given(
    pieces=st.lists(st.sampled_from(PIECES + [b"\r\n" * 3, b"q" * 30]), max_size=20),
    limits=chunk_limits,
)
def test_the_scanner_does_not_care_how_content_is_cut(pieces: list[bytes], limits: Limits) -> None:
    normalize = limits.bare_newline is BareNewline.NORMALIZE
    whole = ChunkScanner(limits.max_text_line, limits.max_message_size, normalize=normalize)
    joined = b"".join(pieces)
    stored_whole = whole.feed(joined) if joined else b""
    whole.end()
    cut = ChunkScanner(limits.max_text_line, limits.max_message_size, normalize=normalize)
    stored = bytearray()
    for piece in pieces:
        if piece:
            got = cut.feed(piece)
            stored += got or b""
    cut.end()
    assert content_error(cut) == content_error(whole)
    assert cut.size == whole.size
    if content_error(whole) is None:
        assert bytes(stored) == stored_whole
