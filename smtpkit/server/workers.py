"""Several worker processes sharing the listening sockets, each with its own event loop.

The supervisor forks the workers on the sockets bound before, replaces one that dies, handles
SIGHUP (passed on, or a reload that replaces the workers), and on SIGTERM/SIGINT lets every
worker drain before it exits 0.

Connection limits stay global across workers (``smtpkit.server.counts``): each worker counts
its own connections in its own row of a shared table and reads every row to decide; the
supervisor zeroes the row of a worker that died, so its connections stop counting.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import sys
import time
from collections.abc import Callable

from smtpkit.signals import SERVER_SIGNALS, defer_server_signals

__all__ = ["Supervisor"]

# A worker that keeps dying at once is a bug or a broken config, not bad luck: give up.
MAX_RESTARTS = 5
RESTART_WINDOW = 10.0


class Supervisor:
    """Runs ``work(slot, restarted)`` in ``count`` forked processes until SIGTERM/SIGINT;
    ``restarted`` is true for a worker that replaces one that died.

    SIGHUP is passed on to the workers, unless ``on_reload`` is given: then the supervisor
    asks it first. ``FORWARD``: pass it on (each worker reloads in place); ``REPLACE``: the
    supervisor has reloaded what its workers cannot (root-only keys, new listeners), and a
    new generation of workers starts in free slots (there are ``slots`` of them, at least
    twice ``count``) while the old one drains as on SIGTERM (messages in flight finish) and
    exits; ``FAILED``: nothing changes.
    """

    FORWARD = "forward"
    REPLACE = "replace"
    FAILED = "failed"

    def __init__(
        self,
        count: int,
        work: Callable[[int, bool], None],
        sockets: list[socket.socket],
        *,
        drain_timeout: float = 30.0,
        on_death: Callable[[int], None] = lambda slot: None,
        log: Callable[[str], None] = lambda text: None,
        on_reload: Callable[[], str] | None = None,
        slots: int | None = None,
    ) -> None:
        self.count = count
        self.work = work
        self.sockets = sockets
        self.drain_timeout = drain_timeout
        self.on_death = on_death
        self.log = log
        self.on_reload = on_reload
        self.slots = slots if slots is not None else count
        self.children: dict[int, int] = {}  # pid -> slot
        self.retiring: dict[int, float] = {}  # pid -> when it must be gone
        self.restarts: list[float] = []
        self.stopping = False
        self.reload_waiting = False  # a SIGHUP that came while a generation was draining

    def run(self) -> int:
        """Serve until stopped; returns the exit status for the command."""
        # Blocked for good: sigtimedwait takes them one by one, and one arriving while the
        # supervisor exits must not turn a clean exit 0 into death by its default action.
        defer_server_signals()
        status = 0
        for slot in range(self.count):
            self._spawn(slot)
        deadline = float("inf")
        while self.children:
            info = signal.sigtimedwait(SERVER_SIGNALS, 1.0)
            if info is not None and info.si_signo in (signal.SIGTERM, signal.SIGINT):
                if not self.stopping:
                    self.stopping = True
                    deadline = time.monotonic() + self.drain_timeout
                    self._signal_all(signal.SIGTERM)
            elif info is not None and info.si_signo == signal.SIGHUP and not self.stopping:
                self._reload()
            if not self._reap():
                status = 1
                self.stopping = True
                deadline = min(deadline, time.monotonic() + self.drain_timeout)
                self._signal_all(signal.SIGTERM)
            if self.reload_waiting and not self.stopping and self._free_slots():
                self._reload()
            now = time.monotonic()
            if self.stopping and now > deadline:
                self._signal_all(signal.SIGKILL)
            for pid, gone_by in list(self.retiring.items()):
                if now > gone_by:
                    _kill(pid, signal.SIGKILL)
        return status

    def _reload(self) -> None:
        if self.on_reload is None:
            self._signal_all(signal.SIGHUP)
            return
        current = [pid for pid in self.children if pid not in self.retiring]
        free = self._free_slots()
        if not free:
            # Not lost: it is carried out as soon as the draining generation is gone.
            if not self.reload_waiting:
                self.log("reload waits: the previous generation is still draining")
            self.reload_waiting = True
            return
        self.reload_waiting = False
        decision = self.on_reload()
        if decision == self.FORWARD:
            for pid in current:
                _kill(pid, signal.SIGHUP)
            return
        if decision != self.REPLACE:
            return
        for slot in free[: self.count]:
            self._spawn(slot)
        gone_by = time.monotonic() + self.drain_timeout
        for pid in current:
            self.retiring[pid] = gone_by
            _kill(pid, signal.SIGTERM)

    def _free_slots(self) -> list[int]:
        """Slots enough for a whole new generation, or none."""
        free = sorted(set(range(self.slots)) - set(self.children.values()))
        return free if len(free) >= self.count else []

    def _spawn(self, slot: int, restarted: bool = False) -> None:
        master = os.getpid()
        pid = os.fork()
        if pid == 0:  # the worker
            code = 0
            try:
                # The signals stay blocked (inherited) until the worker's event loop has
                # its handlers: a SIGHUP forwarded to a worker still starting up waits.
                _exit_with_parent(master)
                self.work(slot, restarted)
            except BaseException as exc:  # noqa: BLE001 - a worker must never return
                if not isinstance(exc, SystemExit | KeyboardInterrupt):
                    import traceback

                    traceback.print_exc()
                    code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        self.children[pid] = slot

    def _signal_all(self, signum: int) -> None:
        for pid in self.children:
            _kill(pid, signum)

    def _reap(self) -> bool:
        """Collect dead workers and replace them; False when restarts must stop."""
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return True
            if pid == 0:
                return True
            slot = self.children.pop(pid, None)
            if slot is None:
                continue
            if self.retiring.pop(pid, None) is not None:
                self.on_death(slot)  # a retired worker's connections are all gone
                continue
            if self.stopping:
                continue
            self.log(f"worker {pid} ended ({_describe(status)}); starting a new one")
            now = time.monotonic()
            self.restarts = [t for t in self.restarts if now - t < RESTART_WINDOW] + [now]
            if len(self.restarts) > MAX_RESTARTS:
                self.log(f"workers keep dying ({MAX_RESTARTS} in {RESTART_WINDOW:.0f}s); stopping")
                return False
            self.on_death(slot)  # e.g. forget the dead worker's connection counts
            self._spawn(slot, restarted=True)
        return True


def _kill(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _exit_with_parent(master: int) -> None:
    """Have the kernel send SIGTERM to this worker when the supervisor dies (even by SIGKILL),
    so no orphan keeps serving on the port and blocks a restart (Linux PR_SET_PDEATHSIG)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != master:  # the supervisor died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


_PR_SET_PDEATHSIG = 1


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"
