"""DNS blocklists (RFC 5782): is a client's address listed in a zone such as zen.spamhaus.org?

A client at 192.0.2.7 is listed in ``zone`` when ``7.2.0.192.zone`` has an A record in
127.0.0.0/8 (IPv6: the 32 nibbles of the address, reversed, RFC 5782 2.4); the zone's TXT
record there says why. Blocking lookups, bounded in time: the caller runs them on a thread.

A lookup that fails (timeout, SERVFAIL) does not list anyone: a blocklist that cannot be
asked must not stop mail. Answers outside 127.0.0.0/8, and 127.255.255.0/24 (Spamhaus's
"you may not query us this way" codes), are errors of the list, not listings.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Sequence
from dataclasses import dataclass

import dns.exception
import dns.rdatatype
import dns.resolver

__all__ = ["Listing", "check_blocklists", "query_name"]


@dataclass(frozen=True, slots=True)
class Listing:
    """The first zone that lists the address, the code it answered, and its reason."""

    zone: str
    code: str
    reason: str | None


def query_name(ip: str, zone: str) -> str:
    """The name to look up for ``ip`` in ``zone`` (RFC 5782 2.1 and 2.4)."""
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv4Address):
        labels = reversed(str(address).split("."))
    else:
        labels = reversed(address.exploded.replace(":", ""))
    return ".".join([*labels, zone.rstrip(".")]) + "."


def check_blocklists(
    resolver: dns.resolver.Resolver, ip: str, zones: Sequence[str], *, deadline: float
) -> tuple[Listing | None, list[str]]:
    """The first of ``zones`` that lists ``ip`` (None: none does), and the zones that could
    not be asked (their errors, for the journal). All lookups end within ``deadline``
    seconds."""
    until = time.monotonic() + deadline
    problems: list[str] = []
    for zone in zones:
        left = until - time.monotonic()
        if left <= 0:
            problems.append(f"{zone}: no time left")
            continue
        name = query_name(ip, zone)
        try:
            answer = resolver.resolve(name, dns.rdatatype.A, lifetime=left)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            continue
        except dns.exception.DNSException as exc:
            problems.append(f"{zone}: {type(exc).__name__}")
            continue
        codes = [str(r) for r in answer]
        listed = [c for c in codes if _is_listing(c)]
        if not listed:
            problems.append(f"{zone}: answered {', '.join(codes)}, not a listing")
            continue
        return Listing(zone, listed[0], _reason(resolver, name, until)), problems
    return None, problems


def _is_listing(code: str) -> bool:
    try:
        answer = ipaddress.IPv4Address(code)
    except ValueError:
        return False
    return answer in _LISTED and answer not in _ERRORS


_LISTED = ipaddress.IPv4Network("127.0.0.0/8")
_ERRORS = ipaddress.IPv4Network("127.255.255.0/24")


def _reason(resolver: dns.resolver.Resolver, name: str, until: float) -> str | None:
    left = until - time.monotonic()
    if left <= 0:
        return None
    try:
        answer = resolver.resolve(name, dns.rdatatype.TXT, lifetime=left)
    except dns.exception.DNSException:
        return None
    for record in answer:
        text = b"".join(getattr(record, "strings", ())).decode("ascii", "replace")
        # It goes into an SMTP reply and the journal: one printable line, bounded.
        return "".join(c if " " <= c <= "~" else " " for c in text)[:200].strip() or None
    return None
