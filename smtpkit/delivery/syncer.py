"""One ``syncfs(2)`` for every worker: a group commit shared across processes.

Every worker's delivery thread needs, twice per batch, "a syncfs of the mail filesystem that
started after my writes" (after the data is written, and after the new names are placed).
One syncfs covers every write made to the filesystem before it started, whoever made it; so
when several workers need one at about the same time, one call can serve them all.

The workers share a lock (a POSIX record lock on a file in the spool folder, released by the
kernel if its holder dies) and two counters in shared memory: how many syncs have started,
and the number of the last one finished. A worker notes the started count, takes the lock,
and if a sync that started after its note has finished meanwhile, its writes are durable
already; otherwise it runs the next sync itself and publishes it. While one worker syncs,
the others queue on the lock; the first of them through runs one sync that covers them all.
"""

from __future__ import annotations

import fcntl
import mmap
import os
from collections.abc import Callable
from pathlib import Path

__all__ = ["SharedSyncer"]

_STARTED = 0
_DONE = 1


class SharedSyncer:
    """Create before forking (the counters are shared memory); ``open_lock`` in each process
    that syncs. ``sync(fd)`` returns once a syncfs that started after the call began has
    completed, running one itself only when no other process's covers it."""

    def __init__(self) -> None:
        self._mem = mmap.mmap(-1, 16)  # anonymous, shared across fork()
        self._cells = memoryview(self._mem).cast("Q")
        self._lock_fd = -1
        self._device = -1
        #: How many syncfs calls this process made, and how many it was spared.
        self.calls = 0
        self.shared = 0

    def open_lock(self, folder: Path) -> None:
        """The lock file, in a folder every worker can write (the spool folder)."""
        self._lock_fd = os.open(
            folder / ".commit-lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600
        )
        self._device = os.fstat(self._lock_fd).st_dev

    def sync(self, fd: int, syncfs: Callable[[int], None]) -> None:
        """Make durable every write to ``fd``'s filesystem made before this call. Raises
        what ``syncfs`` raises (the caller falls back to fsync per file)."""
        cells = self._cells
        noted = cells[_STARTED]
        if self._lock_fd < 0 or os.fstat(fd).st_dev != self._device:
            # Shared only for the filesystem of the spool: another one syncs on its own.
            syncfs(fd)
            self.calls += 1
            return
        fcntl.lockf(self._lock_fd, fcntl.LOCK_EX)
        try:
            if cells[_DONE] > noted:
                # A sync that started after our writes has completed: they are durable.
                self.shared += 1
                return
            number = cells[_STARTED] + 1
            cells[_STARTED] = number
            syncfs(fd)
            self.calls += 1
            cells[_DONE] = number
        finally:
            fcntl.lockf(self._lock_fd, fcntl.LOCK_UN)
