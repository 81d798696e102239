"""Fuzz the PROXY header parser (``smtpkit.protocol.proxy``): arbitrary bytes, read whole and
in pieces the way the server reads them, with its invariants checked on every input.

    python fuzz/fuzz_proxy.py                      # 60 s; atheris if installed, else hypothesis
    python fuzz/fuzz_proxy.py --seconds 3600       # longer
    python fuzz/fuzz_proxy.py --engine hypothesis  # no atheris needed
    python fuzz/fuzz_proxy.py --seconds 600 -- fuzz/corpus-proxy -jobs=2   # libFuzzer arguments

One input is: a cut count, cut bytes, then the stream (a header byte picks whether the
stream starts with a valid v1 or v2 header, so libFuzzer need not find the signature
first). Exit status 0 when no input broke an invariant, non-zero with the input shown.

Invariants (any exception is a crash, hence a bug):

* ``parse`` answers every input with a ``Header``, ``NEED_MORE`` or a ``ProxyError``;
* a header is judged by its own octets: ``parse(data[:length])`` is the same header, and
  every shorter prefix needs more;
* an error stays an error whatever follows; more octets only ever make an answer certain;
* while it needs more, fewer than ``MAX_HEADER`` octets are held;
* a header names a valid IP address and port, never an IPv4-mapped IPv6 address;
* reading the stream in pieces (peek, take only the header's octets) gives the same answer
  as reading it whole, and leaves exactly the octets after the header.
"""

from __future__ import annotations

import ipaddress
import sys
from typing import Any

from driver import instrumented, main

with instrumented():
    from smtpkit.protocol import proxy

SEEDS = [
    b"",
    b"PROXY TCP4 203.0.113.7 192.0.2.1 40000 25\r\n",
    # v2, TCP over IPv6 from [::7]:5 to [::]:25
    proxy.V2_SIGNATURE + b"\x21\x21\x00\x24" + bytes(15) + b"\x07" + bytes(16) + b"\0\5\0\x19",
]


class Broken(AssertionError):
    """An invariant did not hold."""


def read_in_pieces(stream: bytes, cuts: list[int]) -> tuple[proxy.Result, bytes]:
    """As ``server/proxy.HeaderReader`` reads: peek at what has arrived, take the header's
    octets only (all of them while it is not whole)."""
    edges = sorted({c for c in cuts if 0 < c < len(stream)}) + [len(stream)]
    taken = b""
    for edge in edges:
        while True:
            waiting = stream[len(taken) : edge][: proxy.MAX_HEADER - len(taken)]
            if not waiting:
                break
            got = proxy.parse(taken + waiting)
            if isinstance(got, proxy.ProxyError):
                return got, stream[len(taken) :]
            if isinstance(got, proxy.Header):
                return got, stream[got.length :]
            taken += waiting
    return proxy.NEED_MORE, stream[len(taken) :]


def check_answer(data: bytes, got: proxy.Result) -> None:
    if isinstance(got, proxy.ProxyError):
        if not got.reason:
            raise Broken("an error without a reason")
        if proxy.parse(data + b"\r\nEHLO x\r\n" + bytes(20)) != got:
            raise Broken("more octets changed an error")
        return
    if got is proxy.NEED_MORE:
        if len(data) >= proxy.MAX_HEADER:
            raise Broken(f"needs more after {len(data)} octets")
        return
    if not isinstance(got, proxy.Header):
        raise Broken(f"answered {got!r}")
    if not 0 < got.length <= len(data) or proxy.parse(data[: got.length]) != got:
        raise Broken(f"the header is not judged by its own {got.length} octets")
    for k in range(got.length):
        if proxy.parse(data[:k]) is not proxy.NEED_MORE:
            raise Broken(f"a prefix of {k} octets is not NEED_MORE")
    for named in (got.client, got.server):
        if named is None:
            continue
        address = ipaddress.ip_address(named[0])
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            raise Broken(f"an IPv4-mapped address {named[0]}")
        if not 0 <= named[1] <= 65535:
            raise Broken(f"port {named[1]}")


def check(data: bytes) -> None:
    """One fuzz input: seed choice, cut count, cut bytes, then the stream."""
    if len(data) < 2:
        return
    seed, ncuts = SEEDS[data[0] % len(SEEDS)], data[1] % 16
    cut_bytes, stream = data[2 : 2 + ncuts], seed + data[2 + ncuts :]
    whole = proxy.parse(stream)
    check_answer(stream, whole)
    cuts = [b * len(stream) // 256 for b in cut_bytes]
    got, rest = read_in_pieces(stream, cuts)
    if got != whole:
        raise Broken(f"reading in pieces at {sorted(set(cuts))} gave {got!r}, not {whole!r}")
    if isinstance(got, proxy.Header) and rest != stream[got.length :]:
        raise Broken("reading in pieces took octets after the header")


def inputs() -> Any:
    """Hypothesis's inputs: random bytes, and runs of fragments that reach deeper."""
    from hypothesis import strategies as st

    fragments = st.sampled_from(
        [
            b"PROXY ", b"TCP4 ", b"TCP6 ", b"UNKNOWN", b"1.2.3.4 ", b"::1 ", b"::ffff:1.2.3.4 ",
            b"255.255.255.255", b"65535 ", b"0", b"\r\n", b"\r", b"\n", b" ", b"\x00",
            proxy.V2_SIGNATURE, b"\x21", b"\x20", b"\x11", b"\x21\x11\x00\x0c", b"\x00\x24",
            b"\xff\xff", bytes(12), bytes(36),
        ]
    )  # fmt: skip
    return st.tuples(
        st.binary(min_size=2, max_size=18),
        st.one_of(st.binary(max_size=300), st.lists(fragments, max_size=30).map(b"".join)),
    ).map(b"".join)


def run(argv: list[str] | None = None) -> int:
    return main(__doc__ or "", check, inputs, max_examples=1000, argv=argv)


if __name__ == "__main__":
    sys.exit(run())
