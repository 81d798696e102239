"""Password checks for AUTH, off the event loop, and the counts that stop brute force.

Checking a password is slow and memory-hungry on purpose (argon2id): it runs in a small
thread pool, and at most ``MAX_PENDING`` checks wait for it; beyond that, AUTH is answered
``454`` (try later) instead of queueing without bound, so a flood of AUTH commands can stall
neither the event loop nor the memory.

Failures are counted per client address (an IPv6 client by its /64, like the connection
limits) and per user name. ``limits.max_auth_failures`` failures within
``limits.auth_window`` block AUTH (``454 4.7.0``): from that address, or for that user name
from any address. A block lasts a minute after the last failure and doubles with each
further failure, at most an hour; the count is forgotten only once it has been quiet (no
failure) for ``_QUIET`` after its block ended, so a steady attacker reaches the hour and
stays there (about one guess an hour), instead of starting over with fresh guesses.

A blocked user name does not lock its owner out: an address (IPv6: its /64) from which that
user logged in before may still try, as long as the address itself is not blocked. The
password is then checked as always and a failure counts as always. An attacker who shares
that address with the user gets the same pass; one anywhere else gets none.

The counts live in this worker process: with N workers an attacker spread over them gets at
most N times the budget, and a user's known addresses are known to the worker that saw the
login.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from smtpkit import metrics
from smtpkit.addresses import normalize_address
from smtpkit.auth import PasswordFile, PasswordFileError
from smtpkit.errors import UserError
from smtpkit.limits import Limits
from smtpkit.server.counts import address_key

__all__ = ["MAX_PENDING", "UNAVAILABLE", "PasswordChecker"]

#: What ``check`` answers when it could not check at all (the password file cannot be read,
#: too many checks waiting): the client gets 454 and tries later.
UNAVAILABLE = ""

#: Password checks waiting for the pool at most; more are refused for now.
MAX_PENDING = 16
_POOL = 2
#: Distinct addresses and users remembered; the oldest are forgotten first.
_REMEMBERED = 4096
_BLOCK_FIRST = 60.0
_BLOCK_MOST = 3600.0
#: A count over the limit is forgotten this long after its block ended, with no failure since.
_QUIET = 3600.0


@dataclass(slots=True)
class _Failures:
    count: int
    first: float
    last: float


class PasswordChecker:
    """The ``Authenticator`` of a worker: passwords from ``DIR/passwd``, checked in a pool,
    answered on the event loop through ``call_soon`` (thread-safe)."""

    def __init__(
        self,
        passwords: PasswordFile,
        domains: tuple[str, ...],
        limits: Limits,
        call_soon: Callable[[Callable[[], None]], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.passwords = passwords
        self.domains = domains
        self.limits = limits
        self._call_soon = call_soon
        self._clock = clock
        self._pool = ThreadPoolExecutor(max_workers=_POOL, thread_name_prefix="smtpkit-auth")
        self._pending = 0
        self._lock = threading.Lock()
        self._by_address: OrderedDict[tuple[int, int], _Failures] = OrderedDict()
        self._by_user: OrderedDict[str, _Failures] = OrderedDict()
        # (user, address key) of each login that succeeded: who may try despite a user block.
        self._known: OrderedDict[tuple[str, tuple[int, int]], None] = OrderedDict()
        self._sent: OrderedDict[str, list[float]] = OrderedDict()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    # --- checking --------------------------------------------------------------------------
    def check(
        self, user: str, password: str, done: Callable[[str | None], None], peer: str = ""
    ) -> None:
        """Check a password in the pool; ``done`` gets the answer on the loop. ``peer``, the
        client's address, is remembered with the user when the password is right."""
        with self._lock:
            busy = self._pending >= MAX_PENDING
            if not busy:
                self._pending += 1
        if busy:
            done(UNAVAILABLE)  # too many checks waiting: try later, not "wrong password"
            return
        self._pool.submit(self._verify, user, password, done, peer)

    def _verify(
        self, user: str, password: str, done: Callable[[str | None], None], peer: str
    ) -> None:
        answer: str | None
        try:
            canonical = self._canonical(user)
            # An unknown user still costs one hash check inside verify: no timing oracle.
            ok = self.passwords.verify(canonical or user, password) and canonical is not None
            answer = canonical if ok else None
        except PasswordFileError:
            answer = UNAVAILABLE  # the file cannot be read: our fault, try later
        except Exception:  # noqa: BLE001 - anything else must fail the login only
            answer = None
        finally:
            with self._lock:
                self._pending -= 1
        if answer and peer:
            self._call_soon(lambda: self._logged_in(answer, peer))
        self._call_soon(lambda: done(answer))

    def _logged_in(self, user: str, peer: str) -> None:
        try:
            key = (user, address_key(peer))
        except ValueError:
            return  # not an IP address (a test's peer): nothing to remember
        self._known[key] = None
        self._known.move_to_end(key)
        while len(self._known) > _REMEMBERED:
            self._known.popitem(last=False)

    def _canonical(self, user: str) -> str | None:
        """The user's canonical address: an international one too (RFC 4954: the SASL
        authcid is UTF-8), in any spelling that names the same mailbox (NFC or NFD, any
        case, a U-label or A-label domain); None for a look-alike (U+212A KELVIN SIGN,
        fullwidth letters), which is refused, never mapped onto the user it resembles."""
        try:
            return normalize_address(user, self.domains, utf8=True)
        except UserError:
            return None

    # --- brute force -------------------------------------------------------------------------
    def blocked(self, peer: str, user: str | None = None) -> bool:
        """Whether AUTH from ``peer`` is refused for now; with ``user``, also whether that
        user name is, unless ``peer`` is an address the user logged in from before."""
        now = self._clock()
        key = address_key(peer)
        if self._blocking(self._by_address.get(key), now):
            return True
        if user is None:
            return False
        name = self._user_key(user)
        return self._blocking(self._by_user.get(name), now) and (name, key) not in self._known

    def _blocking(self, seen: _Failures | None, now: float) -> bool:
        if seen is None:
            return False
        return now < seen.last + _block(seen.count, self.limits.max_auth_failures)

    def failed(self, peer: str, user: str) -> None:
        metrics.record.auth_failed()
        now = self._clock()
        limits = self.limits
        _count(self._by_address, address_key(peer), now, limits)
        _count(self._by_user, self._user_key(user), now, limits)

    def user_failures(self, user: str) -> int:
        seen = self._by_user.get(self._user_key(user))
        return 0 if seen is None else seen.count

    def _user_key(self, user: str) -> str:
        """Whose failures a user name counts to: every spelling of one address counts to
        that address, so that none buys more attempts (NFD, upper case, the A-label); any
        other name counts lower-cased, as it always did."""
        try:
            canonical = self._canonical(user)
        except Exception:  # noqa: BLE001 - counting runs on the event loop: it must not fail
            canonical = None
        return canonical or user.lower()

    # --- the sending limit -------------------------------------------------------------------
    def sent(self, user: str) -> None:
        times = self._sent.setdefault(user, [])
        self._sent.move_to_end(user)
        times.append(self._clock())
        if len(self._sent) > _REMEMBERED:
            self._sent.popitem(last=False)

    def sent_this_hour(self, user: str) -> int:
        times = self._sent.get(user)
        if not times:
            return 0
        cut = self._clock() - 3600.0
        while times and times[0] < cut:
            times.pop(0)
        return len(times)


K = TypeVar("K")


def _block(count: int, most_failures: int) -> float:
    """How long AUTH is refused after the last of ``count`` failures: nothing below the
    limit, then a minute, doubling with each failure over it, at most an hour."""
    if count < most_failures:
        return 0.0
    over = count - most_failures
    return min(_BLOCK_MOST, _BLOCK_FIRST * float(2 ** min(over, 16)))


def _forgotten(seen: _Failures, now: float, limits: Limits) -> bool:
    """Whether a count starts over: below the limit, when its first failure left the window;
    over it, only once its block ended and ``_QUIET`` passed with no failure."""
    block = _block(seen.count, limits.max_auth_failures)
    if block == 0.0:
        return now - seen.first > limits.auth_window
    return now > seen.last + block + _QUIET


def _count(table: OrderedDict[K, _Failures], key: K, now: float, limits: Limits) -> None:
    seen = table.get(key)
    if seen is None or _forgotten(seen, now, limits):
        seen = _Failures(0, now, now)
        table[key] = seen
    seen.count += 1
    seen.last = now
    table.move_to_end(key)
    while len(table) > _REMEMBERED:
        table.popitem(last=False)
