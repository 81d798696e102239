"""The brute-force counts and the bounded check pool of ``PasswordChecker``, on a fake clock
(ARCHITECTURE.md, "Modules": server/authn.py)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from smtpkit.auth import PasswordFile
from smtpkit.limits import Limits
from smtpkit.server.authn import MAX_PENDING, UNAVAILABLE, PasswordChecker

DOMAINS = ("example.org",)
ALICE = "alice@example.org"
HOUR = 3600.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def passwd(tmp_path: Path) -> PasswordFile:
    made = PasswordFile(tmp_path / "passwd", DOMAINS)
    made.set(ALICE, "alice-pass")
    return made


@pytest.fixture
def checker(passwd: PasswordFile, clock: Clock) -> Iterator[PasswordChecker]:
    made = PasswordChecker(passwd, DOMAINS, Limits(), lambda call: call(), clock=clock)
    yield made
    made.close()


def check(checker: PasswordChecker, user: str, password: str, peer: str = "") -> str | None:
    """What the checker answers, waiting for its pool."""
    answered = threading.Event()
    answers: list[str | None] = []

    def done(answer: str | None) -> None:
        answers.append(answer)
        answered.set()

    checker.check(user, password, done, peer)
    assert answered.wait(30)
    (answer,) = answers
    return answer


def block_length(checker: PasswordChecker, clock: Clock, blocked: Callable[[], bool]) -> float:
    """How long the block that starts now lasts (to the second), leaving the clock at its end."""
    start = clock.now
    assert blocked()
    while blocked():
        clock.now += 1.0
    return clock.now - start


# --- per address -----------------------------------------------------------------------------


def test_the_block_doubles_up_to_an_hour_while_failures_go_on(
    checker: PasswordChecker, clock: Clock
) -> None:
    """An attacker who guesses again as soon as each block ends: the blocks are 1, 2, 4 ...
    minutes and then an hour each, however long ago the first failure was."""
    peer = "192.0.2.7"
    for _ in range(5):
        assert not checker.blocked(peer)
        checker.failed(peer, ALICE)
        clock.now += 1.0
    clock.now -= 1.0
    lengths = []
    for _ in range(9):
        lengths.append(block_length(checker, clock, lambda: checker.blocked(peer)))
        checker.failed(peer, f"guess-{len(lengths)}@example.org")
    assert lengths == [60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]


def test_a_steady_attack_gets_one_guess_an_hour(checker: PasswordChecker, clock: Clock) -> None:
    peer = "2001:db8:1:2::99"
    start = clock.now
    guesses: list[float] = []
    while clock.now < start + 24 * HOUR:
        if not checker.blocked(peer):
            checker.failed(peer, ALICE)
            guesses.append(clock.now)
        clock.now += 10.0
    # 5 free guesses, then one after each block: 1+2+4+...+32 minutes, then one an hour.
    assert len(guesses) < 5 + 6 + 24
    last_hours = [t for t in guesses if t >= start + 20 * HOUR]
    assert len(last_hours) <= 4
    # Another address of the same /64 is the same client.
    assert checker.blocked("2001:db8:1:2::1")
    assert not checker.blocked("2001:db8:1:3::1")


def test_an_address_is_forgotten_only_after_an_hour_of_quiet(
    checker: PasswordChecker, clock: Clock
) -> None:
    peer = "198.51.100.3"
    for _ in range(6):  # the sixth failure makes the block 2 minutes
        checker.failed(peer, ALICE)
    assert block_length(checker, clock, lambda: checker.blocked(peer)) == 120
    # Well within the quiet hour: the next failure blocks again, for 4 minutes.
    clock.now += HOUR - 10
    checker.failed(peer, ALICE)
    assert block_length(checker, clock, lambda: checker.blocked(peer)) == 240
    # After an hour of quiet the count starts over: 4 more failures are allowed.
    clock.now += HOUR + 1
    for _ in range(4):
        checker.failed(peer, ALICE)
        assert not checker.blocked(peer)
    checker.failed(peer, ALICE)
    assert checker.blocked(peer)


def test_below_the_limit_failures_count_within_the_window_only(
    checker: PasswordChecker, clock: Clock
) -> None:
    peer = "203.0.113.9"
    for _ in range(4):
        checker.failed(peer, ALICE)
    clock.now += Limits().auth_window + 1
    for _ in range(4):
        checker.failed(peer, ALICE)
        assert not checker.blocked(peer)
    checker.failed(peer, ALICE)
    assert checker.blocked(peer)


# --- per user name ---------------------------------------------------------------------------


def spread_failures(checker: PasswordChecker, user: str, count: int) -> None:
    """``count`` failures for ``user``, each from an address of its own."""
    for i in range(count):
        checker.failed(f"192.0.2.{100 + i}", user)


def test_failures_for_one_name_from_many_addresses_block_that_name(
    checker: PasswordChecker, clock: Clock
) -> None:
    spread_failures(checker, ALICE, 4)
    assert not checker.blocked("203.0.113.1", ALICE)
    spread_failures(checker, "Alice@Example.ORG", 1)  # any spelling of the name counts
    assert checker.blocked("203.0.113.1", ALICE)
    assert checker.blocked("203.0.113.1", "ALICE@example.org")
    # Only the name: the address may log in as anyone else, and none of them is blocked.
    assert not checker.blocked("203.0.113.1")
    assert not checker.blocked("203.0.113.1", "bob@example.org")
    assert not checker.blocked("192.0.2.100", "bob@example.org")
    # Bounded: a minute, doubling while the attack goes on, never more than an hour.
    lengths = []
    for _ in range(9):
        lengths.append(block_length(checker, clock, lambda: checker.blocked("203.0.113.1", ALICE)))
        spread_failures(checker, ALICE, 1)
    assert lengths == [60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]


def test_a_blocked_name_lets_its_user_in_from_an_address_it_logged_in_from(
    checker: PasswordChecker, clock: Clock
) -> None:
    home = "2001:db8:aaaa:1::10"
    assert check(checker, ALICE, "alice-pass", home) == ALICE
    spread_failures(checker, ALICE, 8)
    assert checker.blocked("198.51.100.77", ALICE)
    # The user's own network (its /64) may still try; the password is checked as always.
    assert not checker.blocked(home, ALICE)
    assert not checker.blocked("2001:db8:aaaa:1::11", ALICE)
    assert check(checker, ALICE, "alice-pass", home) == ALICE
    # A failure from there counts like any other, and blocks that address in its turn.
    for _ in range(5):
        assert check(checker, ALICE, "wrong", home) is None
        checker.failed(home, ALICE)
    assert checker.blocked(home, ALICE)
    assert checker.blocked(home)


def test_a_failed_login_makes_no_address_known(checker: PasswordChecker, clock: Clock) -> None:
    peer = "198.51.100.8"
    assert check(checker, ALICE, "wrong", peer) is None
    assert check(checker, "nobody@example.org", "alice-pass", peer) is None
    spread_failures(checker, ALICE, 5)
    assert checker.blocked(peer, ALICE)


# --- the bounded pool ------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_an_auth_flood_beyond_the_pool_is_refused_at_once_and_stalls_nothing(
    passwd: PasswordFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checks stuck in the pool (a slow hash) hold MAX_PENDING places at most; every check
    beyond them is answered "try later" at once, on the loop, and the loop goes on serving
    other sessions meanwhile. Once the pool frees up, checks work again."""
    release = threading.Event()
    real_verify = PasswordFile.verify

    def slow_verify(self: PasswordFile, address: str, password: str | bytes) -> bool:
        assert release.wait(30)
        return real_verify(self, address, password)

    monkeypatch.setattr(PasswordFile, "verify", slow_verify)
    flood = MAX_PENDING + 40

    async def main() -> None:
        loop = asyncio.get_running_loop()
        checker = PasswordChecker(passwd, DOMAINS, Limits(), loop.call_soon_threadsafe)
        answers: dict[int, str | None] = {}
        try:
            for i in range(flood):
                checker.check(ALICE, "alice-pass", lambda a, i=i: answers.__setitem__(i, a))
            # Everything past MAX_PENDING is refused before check() returned.
            assert sorted(answers) == list(range(MAX_PENDING, flood))
            assert set(answers.values()) == {UNAVAILABLE}
            # Another session's work runs while the pool is stuck: the loop is free.
            other = loop.create_future()
            loop.call_later(0.01, other.set_result, "served")
            assert await asyncio.wait_for(other, 10) == "served"
            assert len(answers) == flood - MAX_PENDING
            release.set()

            async def all_answered() -> None:
                while len(answers) < flood:
                    await asyncio.sleep(0.01)

            await asyncio.wait_for(all_answered(), 60)
            assert [answers[i] for i in range(MAX_PENDING)] == [ALICE] * MAX_PENDING
            # The places are given back: a check after the flood is checked again.
            after = loop.create_future()
            checker.check(ALICE, "alice-pass", after.set_result)
            assert await asyncio.wait_for(after, 30) == ALICE
        finally:
            release.set()
            checker.close()

    asyncio.run(main())
