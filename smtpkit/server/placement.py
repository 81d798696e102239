"""Where a worker's threads run: on one CPU of their own while the server is busy.

A worker's event loop and its delivery thread hand the interpreter lock to each other at
every message. On two CPUs each hand-over is a wake-up across CPUs, costly on virtual
machines; on one CPU it is not, and a busy server loses nothing by it, since every CPU has a
worker's work to do. An idle or nearly idle server is the other way round: a worker fixed
to a CPU that sleeps must wake that CPU for every reply, where the kernel would have run it
on the CPU its client just left. So the threads are fixed only while the server holds at
least two connections per worker, and set free again once it holds fewer connections than
it has workers (ARCHITECTURE.md, "Processes").
"""

from __future__ import annotations

import os

__all__ = ["Placement"]

#: Fixed from this many connections per worker, counted in all workers; set free below one.
BUSY_PER_WORKER = 2


class Placement:
    """Where the threads of one of ``workers`` worker processes run: on ``cpu`` while fixed,
    on ``allowed`` when free; ``pinned`` says which it is now. ``update`` is given the
    connections of every worker (``ConnectionCounts.total``) now and then."""

    def __init__(self, cpu: int, allowed: set[int], workers: int) -> None:
        self.cpu = cpu
        self.allowed = allowed
        self.workers = workers
        self.pinned = False

    @classmethod
    def of_worker(cls, slot: int, workers: int) -> Placement | None:
        """Worker ``slot`` on the ``slot``-th of the CPUs this process may use, round the
        list; None where nothing is to be fixed: one worker, one CPU, or no affinity calls
        (not Linux, a sandbox), and the kernel places the threads."""
        if workers < 2:
            return None
        try:
            allowed = os.sched_getaffinity(0)
        except (AttributeError, OSError):
            return None
        if len(allowed) < 2:
            return None
        return cls(sorted(allowed)[slot % len(allowed)], allowed, workers)

    def update(self, connections: int, *, enabled: bool = True) -> None:
        """``enabled``: ``server.pin_workers``, which a reload may turn off (the threads are
        then set free) or on."""
        if not enabled:
            connections = 0
        if not self.pinned and connections >= BUSY_PER_WORKER * self.workers:
            self.pinned = self._place({self.cpu})
        elif self.pinned and connections < self.workers:
            self.pinned = not self._place(self.allowed)

    @staticmethod
    def _place(cpus: set[int]) -> bool:
        """Every thread of this process on ``cpus``; False if the kernel refused."""
        done = False
        try:
            threads = os.listdir("/proc/self/task")
        except OSError:
            threads = [str(os.getpid())]
        for thread in threads:
            try:
                os.sched_setaffinity(int(thread), cpus)
                done = True
            except OSError:
                pass  # gone meanwhile, or refused: it runs where the kernel puts it
        return done
