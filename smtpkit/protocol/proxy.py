"""The PROXY protocol, receiving side, without I/O (HAProxy's proxy-protocol.txt, v1 and v2).

A TCP load balancer in front of the server connects to it on behalf of a client and names
that client in one header before anything else on the connection: a text line (version 1,
``PROXY TCP4 203.0.113.7 192.0.2.1 40000 25\\r\\n``) or a binary block (version 2). Only
peers the configuration names may send one (``server.proxy_protocol_from``); from them it
is required, from anyone else it is refused (the spec, section 2: a receiver MUST NOT guess
whether a header is there).

``parse(data)`` judges the bytes a connection began with: a ``Header`` (the client it names
and how many octets it took), ``NEED_MORE`` (a valid beginning, not yet whole), or a
``ProxyError`` with the reason. It never looks past the end of the header, so what follows
(the client's SMTP commands, a TLS ClientHello) stays with whoever reads next, and its
answer for a prefix does not depend on how the bytes arrived. Once an answer is an error,
more bytes never turn it into anything else.

``announces(data)`` tells whether an ordinary SMTP session began with a PROXY header.
"""

from __future__ import annotations

import ipaddress
import re
import struct
from dataclasses import dataclass
from typing import Final

__all__ = [
    "MAX_HEADER",
    "NEED_MORE",
    "V1_MAX",
    "V1_PREFIX",
    "V2_SIGNATURE",
    "Header",
    "NeedMore",
    "ProxyError",
    "Result",
    "announces",
    "parse",
]

V1_PREFIX: Final = b"PROXY "
#: Section 2.2: twelve octets no text protocol begins with (a NUL, and QUIT for servers
#: that would read it as commands).
V2_SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"
#: Section 2.1: the longest valid line, CRLF included ("PROXY UNKNOWN" with two full IPv6
#: addresses and ports). Without a CRLF in this many octets the line is invalid.
V1_MAX: Final = 107
#: A version 2 header is 16 octets and an address block (at most 216, for AF_UNIX), then
#: TLVs the balancer chose to add (SSL details, a unique id of up to 128 octets, an
#: authority of up to 255, a cloud's endpoint id). Its length field allows 64 KiB; more than
#: this is refused, so a connection that is still sending its header holds at most this.
MAX_HEADER: Final = 4096

_V2_FIXED = 16
_V1_LINE = re.compile(
    rb"PROXY (TCP4|TCP6) ([0-9A-Fa-f:.]+) ([0-9A-Fa-f:.]+) (0|[1-9][0-9]{0,4}) "
    rb"(0|[1-9][0-9]{0,4})\Z"
)
# Section 2.1: four decimal numbers 0-255, no leading zeros (they would read as octal).
_OCTET = rb"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])"
_IPV4 = re.compile(rb"%s(?:\.%s){3}\Z" % (_OCTET, _OCTET))

# Version 2: the command (low nibble of octet 13), the family and the transport (high and
# low nibble of octet 14).
_LOCAL, _PROXY = 0x0, 0x1
_AF_UNSPEC, _AF_INET, _AF_INET6, _AF_UNIX = 0x0, 0x1, 0x2, 0x3
_STREAM = 0x1
#: Octets of the address block of each family (two addresses, then two ports for IP).
_ADDRESS_LENGTH = {_AF_UNSPEC: 0, _AF_INET: 12, _AF_INET6: 36, _AF_UNIX: 216}

Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Header:
    """A whole, valid header. ``client`` is None when the header names no client (v1
    ``UNKNOWN``, a v2 ``LOCAL`` health check, or a family other than TCP over IPv4/IPv6):
    the connection's own addresses stand, as the spec says. An IPv4 client a dual-stack
    balancer reports as an IPv4-mapped IPv6 address is given as the IPv4 address, the form
    limits, blocklists and trusted networks know it by."""

    version: int
    #: Octets the header took: where the client's own bytes begin.
    length: int
    client: Address | None = None
    server: Address | None = None


@dataclass(frozen=True, slots=True)
class ProxyError:
    """The bytes are not a valid header; ``reason`` says why, for the journal."""

    reason: str


class NeedMore:
    """A valid beginning of a header that is not whole yet."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_MORE"


NEED_MORE: Final = NeedMore()

Result = Header | NeedMore | ProxyError


def parse(data: bytes) -> Result:
    """Judge the first bytes of a connection from a peer that must send a header."""
    if not data:
        return NEED_MORE
    if data[:1] == V1_PREFIX[:1]:
        return _parse_v1(data)
    if data[:1] == V2_SIGNATURE[:1]:
        return _parse_v2(data)
    return ProxyError("not a PROXY header")


def announces(data: bytes) -> bool | None:
    """Whether a stream beginning with ``data`` begins with a PROXY header (of either
    version): True, False, or None while ``data`` is too short to tell."""
    for signature in (V1_PREFIX, V2_SIGNATURE):
        if data.startswith(signature):
            return True
        if signature.startswith(data):
            return None
    return False


def _parse_v1(data: bytes) -> Result:
    window = data[:V1_MAX]
    if not V1_PREFIX.startswith(window[: len(V1_PREFIX)]):
        return ProxyError("not a PROXY header")
    ends = [i for i in (window.find(b"\r"), window.find(b"\n")) if i >= 0]
    if not ends:
        if len(window) >= V1_MAX:
            return ProxyError(f"PROXY v1: no CRLF in the first {V1_MAX} octets")
        return NEED_MORE
    end = min(ends)
    # Section 2.1: a lone CR or LF must not end the line.
    if window[end : end + 1] == b"\n":
        return ProxyError("PROXY v1: a bare LF ends the line")
    if end + 1 == len(window):
        if len(window) >= V1_MAX:
            return ProxyError(f"PROXY v1: no CRLF in the first {V1_MAX} octets")
        return NEED_MORE  # a CR, its LF still to come
    if window[end + 1 : end + 2] != b"\n":
        return ProxyError("PROXY v1: a bare CR in the line")
    line, length = window[:end], end + 2
    if line == b"PROXY UNKNOWN" or line.startswith(b"PROXY UNKNOWN "):
        # Anything after UNKNOWN is to be ignored; the connection's own addresses stand.
        return Header(1, length)
    match = _V1_LINE.match(line)
    if match is None:
        return ProxyError("PROXY v1: not PROXY TCP4|TCP6|UNKNOWN SOURCE DESTINATION PORTS")
    family, source, destination, source_port, destination_port = match.groups()
    ports = int(source_port), int(destination_port)
    if max(ports) > 65535:
        return ProxyError("PROXY v1: a port over 65535")
    read = _v1_ipv4 if family == b"TCP4" else _v1_ipv6
    client, server = read(source), read(destination)
    if client is None or server is None:
        return ProxyError(f"PROXY v1: an address that is not {family.decode()}")
    return Header(1, length, (_plain(client), ports[0]), (_plain(server), ports[1]))


def _v1_ipv4(text: bytes) -> ipaddress.IPv4Address | None:
    return ipaddress.IPv4Address(text.decode("ascii")) if _IPV4.match(text) else None


def _v1_ipv6(text: bytes) -> ipaddress.IPv6Address | None:
    if b":" not in text:
        return None
    try:
        return ipaddress.IPv6Address(text.decode("ascii"))
    except ValueError:
        return None


def _parse_v2(data: bytes) -> Result:
    signature = data[: len(V2_SIGNATURE)]
    if not V2_SIGNATURE.startswith(signature):
        return ProxyError("not a PROXY header")
    if len(data) < _V2_FIXED:
        return NEED_MORE
    version_command, family_transport, size = struct.unpack_from("!BBH", data, 12)
    if version_command >> 4 != 2:
        return ProxyError(f"PROXY v2: version {version_command >> 4}, not 2")
    command = version_command & 0x0F
    if command not in (_LOCAL, _PROXY):
        return ProxyError(f"PROXY v2: unknown command {command:#x}")
    family, transport = family_transport >> 4, family_transport & 0x0F
    if family > _AF_UNIX or transport > 2:
        return ProxyError(f"PROXY v2: unknown family and transport {family_transport:#04x}")
    length = _V2_FIXED + size
    if length > MAX_HEADER:
        return ProxyError(f"PROXY v2: a header of {length} octets (at most {MAX_HEADER})")
    if len(data) < length:
        return NEED_MORE
    if command == _LOCAL:
        # A connection of the balancer's own (a health check): everything after the fixed
        # part is to be skipped, the family included.
        return Header(2, length)
    block = data[_V2_FIXED:length]
    needed = _ADDRESS_LENGTH[family]
    if len(block) < needed:
        return ProxyError(f"PROXY v2: an address block of {len(block)} octets, not {needed}")
    if not _tlvs_fit(block[needed:]):
        return ProxyError("PROXY v2: a TLV runs past the end of the header")
    if transport != _STREAM or family not in (_AF_INET, _AF_INET6):
        # UDP, AF_UNIX, UNSPEC: no TCP client to name; the connection's addresses stand.
        return Header(2, length)
    size_of = 4 if family == _AF_INET else 16
    raw_client, raw_server = block[:size_of], block[size_of : 2 * size_of]
    client_port, server_port = struct.unpack_from("!HH", block, 2 * size_of)
    client, server = ipaddress.ip_address(raw_client), ipaddress.ip_address(raw_server)
    return Header(2, length, (_plain(client), client_port), (_plain(server), server_port))


def _tlvs_fit(data: bytes) -> bool:
    """Whether ``data`` is a whole sequence of TLVs (type, 16-bit length, value). Their
    contents are skipped: none of them changes who the client is. A CRC32C among them is
    not checked (section 2.2.3 asks it only of receivers that support it)."""
    at = 0
    while at < len(data):
        if at + 3 > len(data):
            return False
        at += 3 + int.from_bytes(data[at + 1 : at + 3], "big")
    return at == len(data)


def _plain(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)
