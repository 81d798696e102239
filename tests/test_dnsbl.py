"""mailauth/dnsbl.py against a blocklist zone served by the real DNS server (NSD)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from smtpkit.dns import make_resolver
from smtpkit.mailauth.dnsbl import Listing, check_blocklists, query_name
from tests.dnsserver import DnsServer, run_nsd, silent_nameserver  # noqa: F401

# RFC 5782 5: 127.0.0.2 is every list's test entry, 127.0.0.1 never listed.
BL_ZONE = """\
$ORIGIN bl.test.
$TTL 60
@                   IN SOA   ns hostmaster 1 3600 600 86400 60
@                   IN NS    ns
ns                  IN A     127.0.0.1
2.0.0.127           IN A     127.0.0.2
2.0.0.127           IN TXT   "Listed for testing: see https://bl.test/q?127.0.0.2"
7.2.0.192           IN A     127.0.0.4
9.2.0.192           IN A     127.255.255.254
1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2 IN A 127.0.0.3
"""
OTHER_ZONE = """\
$ORIGIN other.test.
$TTL 60
@                   IN SOA   ns.bl.test. hostmaster.bl.test. 1 3600 600 86400 60
@                   IN NS    ns.bl.test.
7.2.0.192           IN A     127.0.0.10
"""


@pytest.fixture(scope="module")
def blocklists() -> Iterator[DnsServer]:
    with run_nsd({"bl.test": BL_ZONE, "other.test": OTHER_ZONE}) as server:
        yield server


@pytest.mark.parametrize(
    ("ip", "name"),
    [
        ("192.0.2.7", "7.2.0.192.bl.test."),
        ("2001:db8::1", "1." + "0." * 23 + "8.b.d.0.1.0.0.2.bl.test."),
    ],
)
def test_query_name(ip: str, name: str) -> None:
    assert query_name(ip, "bl.test") == name


def test_listed_with_reason(blocklists: DnsServer) -> None:
    resolver = make_resolver(blocklists.nameserver, 2)
    found = check_blocklists(resolver, "127.0.0.2", ["bl.test"], deadline=5)
    assert found == (
        Listing("bl.test", "127.0.0.2", "Listed for testing: see https://bl.test/q?127.0.0.2"),
        [],
    )


def test_first_listing_zone_wins(blocklists: DnsServer) -> None:
    resolver = make_resolver(blocklists.nameserver, 2)
    listing, problems = check_blocklists(
        resolver, "192.0.2.7", ["other.test", "bl.test"], deadline=5
    )
    assert listing == Listing("other.test", "127.0.0.10", None)
    assert problems == []


def test_ipv6(blocklists: DnsServer) -> None:
    resolver = make_resolver(blocklists.nameserver, 2)
    listing, _ = check_blocklists(resolver, "2001:db8::1", ["bl.test"], deadline=5)
    assert listing == Listing("bl.test", "127.0.0.3", None)


def test_not_listed(blocklists: DnsServer) -> None:
    resolver = make_resolver(blocklists.nameserver, 2)
    assert check_blocklists(resolver, "127.0.0.1", ["bl.test"], deadline=5) == (None, [])


def test_an_error_code_is_not_a_listing(blocklists: DnsServer) -> None:
    resolver = make_resolver(blocklists.nameserver, 2)
    listing, problems = check_blocklists(resolver, "192.0.2.9", ["bl.test"], deadline=5)
    assert listing is None
    assert problems == ["bl.test: answered 127.255.255.254, not a listing"]


def test_an_unanswered_list_lists_nobody(silent_nameserver: str) -> None:  # noqa: F811
    resolver = make_resolver(silent_nameserver, 0.2)
    listing, problems = check_blocklists(resolver, "127.0.0.2", ["bl.test"], deadline=1)
    assert listing is None
    assert problems == ["bl.test: LifetimeTimeout"]
