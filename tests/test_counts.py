"""The shared connection counts: exact per address (IPv6 by /64), global across workers."""

from __future__ import annotations

import random

import pytest

from smtpkit.server.counts import SharedCounts, address_key


def test_addresses_count_exactly_and_ipv6_by_its_64() -> None:
    assert address_key("192.0.2.1") != address_key("192.0.2.2")
    assert address_key("2001:db8:1:2::1") == address_key("2001:db8:1:2:ffff::9")
    assert address_key("2001:db8:1:2::1") != address_key("2001:db8:1:3::1")
    assert address_key("::ffff:192.0.2.1") == address_key("192.0.2.1")
    # An IPv4 address and an IPv6 /64 with the same number are different keys.
    assert address_key("0.0.0.1") != address_key("0:0:0:1::")


def test_a_bucket_neighbour_does_not_share_the_count() -> None:
    """127.1.140.160 and 127.0.0.2 shared a bucket under the old crc32 % 65536 scheme."""
    counts = SharedCounts(2, 100).slot(0)
    for _ in range(20):
        assert counts.add("127.1.140.160")
    assert counts.for_ip("127.1.140.160") == 20
    assert counts.for_ip("127.0.0.2") == 0


def test_counts_match_a_model_through_adds_and_removes_in_two_workers() -> None:
    """Random connects and disconnects across two workers' rows, checked against a plain
    dict after every step batch: backward-shift deletion never loses or doubles an entry."""
    table = SharedCounts(2, 50)
    workers = [table.slot(0), table.slot(1)]
    ips = [f"10.0.{i // 256}.{i % 256}" for i in range(60)]
    ips += [f"2001:db8:{i:x}::1" for i in range(30)]
    model: dict[tuple[int, int], int] = {}
    held: list[tuple[int, str]] = []
    rng = random.Random(7)
    for step in range(30_000):
        if held and (rng.random() < 0.5 or len(held) >= 90):
            worker, ip = held.pop(rng.randrange(len(held)))
            workers[worker].remove(ip)
            model[address_key(ip)] -= 1
        else:
            worker, ip = rng.randrange(2), rng.choice(ips)
            assert workers[worker].add(ip)
            held.append((worker, ip))
            model[address_key(ip)] = model.get(address_key(ip), 0) + 1
        if step % 499 == 0:
            for ip in ips:
                assert workers[0].for_ip(ip) == model.get(address_key(ip), 0), (step, ip)
            assert workers[1].total() == len(held)


def test_a_dead_workers_row_is_cleared() -> None:
    table = SharedCounts(2, 10)
    table.slot(1).add("192.0.2.1")
    table.slot(0).add("192.0.2.1")
    assert table.slot(0).for_ip("192.0.2.1") == 2
    table.clear(1)
    assert table.slot(0).for_ip("192.0.2.1") == 1
    assert table.total() == 1


@pytest.mark.parametrize("connections", [1, 1000, 5000])
def test_memory_is_bounded_by_the_connection_cap(connections: int) -> None:
    table = SharedCounts(4, connections)
    assert 2 * connections <= table.capacity < 4 * connections + 8
    assert len(table.cells) * 8 == 4 * (1 + table.capacity * 3) * 8
