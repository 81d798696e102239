"""The maildrop pickup's line rules: every line ends in CRLF, long lines are broken."""

from __future__ import annotations

import pytest

from smtpkit.server.pickup import _lines


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        ([b"a\r\nb\r\n"], b"a\r\nb\r\n"),
        ([b"a\nb\n"], b"a\r\nb\r\n"),
        ([b"a\rb\r"], b"a\r\nb\r\n"),
        ([b"a\r", b"\nb"], b"a\r\nb\r\n"),  # a CRLF cut between two reads stays one line end
        ([b"no end"], b"no end\r\n"),
        ([b"x" * 1000 + b"\n"], b"x" * 998 + b"\r\nxx\r\n"),
        ([b"x" * 998 + b"\n"], b"x" * 998 + b"\r\n"),
        ([b"\n\n"], b"\r\n\r\n"),
    ],
)
def test_lines_end_in_crlf_and_stay_within_998_octets(chunks: list[bytes], expected: bytes) -> None:
    assert b"".join(_lines(iter(chunks))) == expected


def test_every_split_of_the_input_gives_the_same_output() -> None:
    data = b"one\r\ntwo\nthree\rfour\r\n" + b"y" * 2100 + b"\r\nlast"
    whole = b"".join(_lines(iter([data])))
    for cut in range(len(data)):
        assert b"".join(_lines(iter([data[:cut], data[cut:]]))) == whole
