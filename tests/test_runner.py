"""The queue runner's choice of addresses for a domain (``_candidates``): RFC 5321 5.1's
order, and the cap on how many one attempt tries. Delivery itself is tested end to end in
tests/e2e/test_outbound.py and tests/e2e/test_outbound_paths.py."""

from __future__ import annotations

from smtpkit.dns import MailHost
from smtpkit.outbound.link import Candidate
from smtpkit.outbound.runner import MAX_CANDIDATES, _candidates


def host(preference: int, name: str, *addresses: str) -> MailHost:
    return MailHost(preference, name, addresses)


def test_every_address_of_every_host_in_preference_order() -> None:
    hosts = (
        host(10, "mx1.example.net", "192.0.2.1", "2001:db8::1"),
        host(20, "mx2.example.net", "192.0.2.2", "192.0.2.3", "2001:db8::2"),
    )
    assert _candidates(hosts) == [
        Candidate("mx1.example.net", "192.0.2.1", 25),
        Candidate("mx1.example.net", "2001:db8::1", 25),
        Candidate("mx2.example.net", "192.0.2.2", 25),
        Candidate("mx2.example.net", "192.0.2.3", 25),
        Candidate("mx2.example.net", "2001:db8::2", 25),
    ]


def test_hosts_of_equal_preference_come_in_random_order_each_with_its_addresses() -> None:
    hosts = (
        host(10, "a.example.net", "192.0.2.1", "192.0.2.2"),
        host(10, "b.example.net", "192.0.2.3", "192.0.2.4"),
        host(20, "c.example.net", "192.0.2.5"),
    )
    orders = set()
    for _ in range(64):  # both orders turn up (each run misses one with chance 2**-63)
        got = [(c.host, c.address) for c in _candidates(hosts)]
        firsts = tuple(name for name, _ in got[::2][:2])
        orders.add(firsts)
        by_host = {name: [a for n, a in got if n == name] for name, _ in got}
        assert by_host == {
            "a.example.net": ["192.0.2.1", "192.0.2.2"],
            "b.example.net": ["192.0.2.3", "192.0.2.4"],
            "c.example.net": ["192.0.2.5"],
        }
        assert got[-1] == ("c.example.net", "192.0.2.5")
    assert orders == {("a.example.net", "b.example.net"), ("b.example.net", "a.example.net")}


def test_one_attempt_tries_at_most_ten_addresses() -> None:
    # A domain's DNS decides how many connections each attempt makes: capped, as Postfix
    # caps them (smtp_mx_address_limit); the first ten in order are the ones tried.
    assert MAX_CANDIDATES == 10
    hosts = tuple(
        host(10 * (n + 1), f"h{n}.example.net", *(f"192.0.2.{3 * n + i}" for i in (1, 2, 3)))
        for n in range(4)
    )
    got = _candidates(hosts)
    assert len(got) == 10
    assert [c.address for c in got] == [f"192.0.2.{i}" for i in range(1, 11)]
    assert got[-1].host == "h3.example.net"
