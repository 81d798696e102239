"""The PROXY header parser (HAProxy's proxy-protocol.txt): exact results, every split point,
malformed and oversized headers, and properties over any input."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtpkit.protocol.proxy import (
    MAX_HEADER,
    NEED_MORE,
    V1_MAX,
    V2_SIGNATURE,
    Header,
    ProxyError,
    Result,
    announces,
    parse,
)

TAIL = b"EHLO client.example\r\n"


def v2(command: int, family_transport: int, block: bytes, version: int = 2) -> bytes:
    """A version 2 header: signature, version and command, family and transport, length."""
    fixed = struct.pack("!BBH", version << 4 | command, family_transport, len(block))
    return V2_SIGNATURE + fixed + block


def tcp(client: str, server: str, ports: tuple[int, int], tlvs: bytes = b"") -> bytes:
    """A version 2 PROXY header for TCP over the clients' family, with ``tlvs`` after."""
    a, b = ipaddress.ip_address(client), ipaddress.ip_address(server)
    family = 0x11 if a.version == 4 else 0x21
    return v2(1, family, a.packed + b.packed + struct.pack("!HH", *ports) + tlvs)


def tlv(kind: int, value: bytes) -> bytes:
    return struct.pack("!BH", kind, len(value)) + value


UNKNOWN_WORST = (
    b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
    b"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"
)

VALID: list[tuple[bytes, Header]] = [
    (
        b"PROXY TCP4 203.0.113.7 192.0.2.1 40000 25\r\n",
        Header(1, 43, ("203.0.113.7", 40000), ("192.0.2.1", 25)),
    ),
    (
        b"PROXY TCP4 255.255.255.255 0.0.0.0 65535 0\r\n",
        Header(1, 44, ("255.255.255.255", 65535), ("0.0.0.0", 0)),
    ),
    (
        b"PROXY TCP6 2001:DB8::7 2001:db8::1 40000 25\r\n",
        Header(1, 45, ("2001:db8::7", 40000), ("2001:db8::1", 25)),
    ),
    (
        # A dual-stack balancer's IPv4 client: known by its IPv4 address here.
        b"PROXY TCP6 ::ffff:203.0.113.7 ::ffff:192.0.2.1 1 2\r\n",
        Header(1, 52, ("203.0.113.7", 1), ("192.0.2.1", 2)),
    ),
    (b"PROXY UNKNOWN\r\n", Header(1, 15)),
    (UNKNOWN_WORST, Header(1, V1_MAX)),
    (b"PROXY UNKNOWN anything at all\r\n", Header(1, 31)),
    (
        tcp("203.0.113.7", "192.0.2.1", (40000, 25)),
        Header(2, 28, ("203.0.113.7", 40000), ("192.0.2.1", 25)),
    ),
    (
        tcp("2001:db8::7", "2001:db8::1", (40000, 25)),
        Header(2, 52, ("2001:db8::7", 40000), ("2001:db8::1", 25)),
    ),
    (
        tcp("::ffff:203.0.113.7", "2001:db8::1", (1, 25)),
        Header(2, 52, ("203.0.113.7", 1), ("2001:db8::1", 25)),
    ),
    (
        # TLVs are skipped: ALPN, authority, a CRC32C (not checked), NOOP, unique id, SSL.
        tcp(
            "203.0.113.7",
            "192.0.2.1",
            (5, 25),
            tlv(0x01, b"smtp")
            + tlv(0x02, b"mx.example.org")
            + tlv(0x03, b"\x00\x00\x00\x00")
            + tlv(0x04, b"")
            + tlv(0x05, bytes(128))
            + tlv(0x20, b"\x01\x00\x00\x00\x00" + tlv(0x21, b"TLSv1.3")),
        ),
        Header(2, 211, ("203.0.113.7", 5), ("192.0.2.1", 25)),
    ),
    # LOCAL (a health check): the connection's own addresses, whatever follows.
    (v2(0, 0x00, b""), Header(2, 16)),
    (v2(0, 0x11, bytes(12)), Header(2, 28)),
    (v2(0, 0x00, b"\xff\xff"), Header(2, 18)),
    # PROXY for what is not TCP over IP: no client named; the connection's addresses stand.
    (v2(1, 0x00, b""), Header(2, 16)),
    (v2(1, 0x12, bytes(12)), Header(2, 28)),
    (v2(1, 0x22, bytes(36)), Header(2, 52)),
    (v2(1, 0x31, bytes(216)), Header(2, 232)),
    (v2(1, 0x10, bytes(12)), Header(2, 28)),
    # The largest header taken.
    (v2(0, 0x00, bytes(MAX_HEADER - 16)), Header(2, MAX_HEADER)),
    (
        tcp("203.0.113.7", "192.0.2.1", (1, 2), tlv(0xEA, bytes(MAX_HEADER - 16 - 12 - 3))),
        Header(2, MAX_HEADER, ("203.0.113.7", 1), ("192.0.2.1", 2)),
    ),
]


@pytest.mark.parametrize(("header", "expected"), VALID, ids=lambda v: repr(v)[:60])
def test_a_valid_header_is_read_exactly(header: bytes, expected: Header) -> None:
    assert parse(header) == expected
    assert parse(header + TAIL) == expected  # what follows is never looked at
    assert expected.length == len(header)


@pytest.mark.parametrize(("header", "expected"), VALID, ids=lambda v: repr(v)[:60])
def test_every_split_point_needs_more_then_gives_the_same_header(
    header: bytes, expected: Header
) -> None:
    stream = header + TAIL
    for cut in range(len(header)):
        assert parse(stream[:cut]) is NEED_MORE, cut
    for cut in range(len(header), len(stream) + 1):
        assert parse(stream[:cut]) == expected, cut
    for first in range(len(stream) + 1):
        assert read_like_the_server(stream, [first]) == (expected, TAIL[: len(stream)])


def read_like_the_server(stream: bytes, cuts: list[int]) -> tuple[Result, bytes]:
    """What ``server/proxy.HeaderReader`` does with ``stream`` arriving in pieces cut at
    ``cuts``: peek at what has arrived, take only the header's octets (or all, while it is
    not whole). Returns the answer and what is left for the session."""
    edges = sorted({c for c in cuts if 0 < c < len(stream)}) + [len(stream)]
    taken = b""
    arrived = 0
    for edge in edges:
        arrived = edge
        while True:
            waiting = stream[len(taken) : arrived][: MAX_HEADER - len(taken)]
            if not waiting:
                break
            got = parse(taken + waiting)
            if isinstance(got, ProxyError):
                return got, stream[len(taken) :]
            if isinstance(got, Header):
                return got, stream[got.length :]
            taken += waiting
    return NEED_MORE, stream[len(taken) :]


MALFORMED: list[tuple[bytes, str]] = [
    (b"EHLO client.example\r\n", "not a PROXY header"),
    (b"GET / HTTP/1.1\r\n", "not a PROXY header"),
    (b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "not a PROXY header"),
    (b"PROXY\r\n", "not a PROXY header"),
    (b"PROXYTCP4 1.2.3.4 5.6.7.8 1 2\r\n", "not a PROXY header"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "bare LF"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX\n", "bare CR"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n", "bare CR"),
    (b"PROXY TCP4 1.2.3.4\n5.6.7.8 1 2\r\n", "bare LF"),
    (b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", "not TCP4"),
    (b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", "not TCP4"),
    (b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", "not TCP4"),
    (b"PROXY TCP4 2001:db8::7 5.6.7.8 1 2\r\n", "not TCP4"),
    (b"PROXY TCP6 1.2.3.4 2001:db8::1 1 2\r\n", "not TCP6"),
    (b"PROXY TCP6 2001:db8:::7 2001:db8::1 1 2\r\n", "not TCP6"),
    (b"PROXY TCP6 fe80::1%eth0 2001:db8::1 1 2\r\n", "not PROXY TCP4|TCP6|UNKNOWN"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", "not PROXY TCP4|TCP6|UNKNOWN"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n", "over 65535"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n", "over 65535"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", "not PROXY TCP4|TCP6|UNKNOWN"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", "not PROXY TCP4|TCP6|UNKNOWN"),
    (b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", "not PROXY TCP4|TCP6|UNKNOWN"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "not PROXY TCP4|TCP6|UNKNOWN"),
    (b"PROXY TCP4\t1.2.3.4 5.6.7.8 1 2\r\n", "not PROXY TCP4|TCP6|UNKNOWN"),
    (b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", "not PROXY TCP4|TCP6|UNKNOWN"),
    (b"PROXY UNKNOWNX\r\n", "not PROXY TCP4|TCP6|UNKNOWN"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\xff\r\n", "not PROXY TCP4|TCP6|UNKNOWN"),
    (b"PROXY " + b"x" * 101, "no CRLF in the first 107"),
    (UNKNOWN_WORST[:-2] + b" \r\n", "no CRLF in the first 107"),
    (b"PROXY UNKNOWN " + b"f" * 92 + b"\r\n", "no CRLF in the first 107"),
    (V2_SIGNATURE[:-1] + b"X" + bytes(4), "not a PROXY header"),
    (v2(1, 0x11, bytes(12), version=1), "version 1, not 2"),
    (v2(1, 0x11, bytes(12), version=3), "version 3, not 2"),
    (v2(2, 0x11, bytes(12)), "unknown command 0x2"),
    (v2(0xF, 0x11, bytes(12)), "unknown command 0xf"),
    (v2(1, 0x41, bytes(12)), "unknown family and transport 0x41"),
    (v2(1, 0x13, bytes(12)), "unknown family and transport 0x13"),
    (v2(1, 0x11, bytes(11)), "an address block of 11 octets, not 12"),
    (v2(1, 0x21, bytes(12)), "an address block of 12 octets, not 36"),
    (v2(1, 0x31, bytes(36)), "an address block of 36 octets, not 216"),
    (v2(1, 0x11, bytes(12) + b"\x01\x00"), "a TLV runs past"),
    (v2(1, 0x11, bytes(12) + b"\x01\x00\x05abcd"), "a TLV runs past"),
    (v2(1, 0x11, bytes(12) + tlv(4, b"") + b"\x04"), "a TLV runs past"),
]


@pytest.mark.parametrize(("data", "reason"), MALFORMED, ids=lambda v: repr(v)[:60])
def test_a_malformed_header_is_an_error_saying_why(data: bytes, reason: str) -> None:
    got = parse(data)
    assert isinstance(got, ProxyError), got
    assert reason in got.reason
    # No more bytes, nor how they were cut, change an error into anything else.
    assert parse(data + TAIL) == got
    assert read_like_the_server(data + TAIL, list(range(len(data) + 1)))[0] == got


def test_oversized_headers_are_refused_before_they_arrive() -> None:
    # Version 1: a line is at most 107 octets with its CRLF; the 107th without one is enough.
    assert parse(b"PROXY " + b"1" * 100) is NEED_MORE
    assert isinstance(parse(b"PROXY " + b"1" * 101), ProxyError)
    assert isinstance(parse(b"PROXY UNKNOWN " + b"f" * 92 + b"\r"), ProxyError)  # no room for LF
    assert parse(b"PROXY UNKNOWN " + b"f" * 91 + b"\r\n") == Header(1, 107)
    # Version 2: the length field is judged as soon as it is there.
    fixed = V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x11, MAX_HEADER - 15)
    assert parse(fixed) == ProxyError(
        f"PROXY v2: a header of {MAX_HEADER + 1} octets (at most 4096)"
    )
    assert isinstance(parse(V2_SIGNATURE + struct.pack("!BBH", 0x20, 0, 0xFFFF)), ProxyError)
    assert parse(V2_SIGNATURE + struct.pack("!BBH", 0x20, 0, MAX_HEADER - 16)) is NEED_MORE


def test_a_truncated_header_only_ever_needs_more() -> None:
    for header, _ in VALID:
        assert parse(header[:-1]) is NEED_MORE
    assert parse(b"") is NEED_MORE
    assert parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r") is NEED_MORE


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", None),
        (b"P", None),
        (b"PROXY", None),
        (b"PROXY ", True),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", True),
        (b"PROXY\r\n", False),
        (b"PRO\r\n", False),
        (b"EHLO x\r\n", False),
        (b"\r", None),
        (b"\r\n", None),
        (V2_SIGNATURE[:11], None),
        (V2_SIGNATURE, True),
        (V2_SIGNATURE[:11] + b"X", False),
        (b"\r\nEHLO x\r\n", False),
    ],
)
def test_announces_tells_whether_a_session_began_with_a_header(
    data: bytes, expected: bool | None
) -> None:
    assert announces(data) is expected


# --- properties ---------------------------------------------------------------------------

addresses4 = st.ip_addresses(v=4).map(str)
addresses6 = st.ip_addresses(v=6).map(str)
ports = st.integers(0, 65535)


def _expected(version: int, length: int, client: str, server: str, p: tuple[int, int]) -> Header:
    def plain(text: str) -> str:
        address = ipaddress.ip_address(text)
        mapped = getattr(address, "ipv4_mapped", None)
        return str(mapped or address)

    return Header(version, length, (plain(client), p[0]), (plain(server), p[1]))


@st.composite
def headers(draw: st.DrawFn) -> tuple[bytes, Header]:
    """A valid header of either version, and what it must parse to."""
    six = draw(st.booleans())
    client, server = draw(st.tuples(*(2 * [addresses6 if six else addresses4])))
    p = draw(st.tuples(ports, ports))
    if draw(st.booleans()):
        family = "TCP6" if six else "TCP4"
        line = f"PROXY {family} {client} {server} {p[0]} {p[1]}\r\n".encode()
        return line, _expected(1, len(line), client, server, p)
    values = draw(st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=300)), max_size=4))
    extra = b"".join(tlv(kind, value) for kind, value in values)
    data = tcp(client, server, p, extra)
    if len(data) > MAX_HEADER:
        data = tcp(client, server, p)
    return data, _expected(2, len(data), client, server, p)


@given(headers(), st.binary(max_size=64), st.lists(st.integers(0, 2000), max_size=8))
def test_any_header_cut_anywhere_reads_the_same_and_leaves_the_rest(
    made: tuple[bytes, Header], tail: bytes, cuts: list[int]
) -> None:
    header, expected = made
    assert read_like_the_server(header + tail, cuts) == (expected, tail)


def _mutations(data: bytes) -> st.SearchStrategy[bytes]:
    """``data`` with one octet changed, cut short, or with octets put in."""
    at = st.integers(0, max(len(data) - 1, 0))
    return st.one_of(
        st.just(data),
        st.tuples(at, st.integers(0, 255)).map(
            lambda p: data[: p[0]] + bytes([p[1]]) + data[p[0] + 1 :]
        ),
        at.map(lambda p: data[:p]),
        st.tuples(at, st.binary(min_size=1, max_size=4)).map(
            lambda p: data[: p[0]] + p[1] + data[p[0] :]
        ),
    )


@given(st.one_of(st.binary(max_size=200), headers().map(lambda h: h[0]).flatmap(_mutations)))
def test_any_input_gets_an_answer_that_only_grows_more_certain(data: bytes) -> None:
    got = parse(data)
    assert got is NEED_MORE or isinstance(got, Header | ProxyError)
    if got is NEED_MORE:
        assert len(data) < MAX_HEADER
    elif isinstance(got, ProxyError):
        assert parse(data + b"\r\n" + bytes(64)) == got
    elif isinstance(got, Header):
        assert got.length <= len(data)
        assert parse(data[: got.length]) == got
        assert all(parse(data[:k]) is NEED_MORE for k in range(got.length))
        if got.client is not None:
            assert 0 <= got.client[1] <= 65535
            assert ipaddress.ip_address(got.client[0])


@given(st.binary(max_size=40))
def test_announces_is_decided_by_a_prefix(data: bytes) -> None:
    verdict = announces(data)
    if verdict is not None:
        assert announces(data + b"more") is verdict
