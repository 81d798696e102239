"""The spool: each message streams into one file of its own while DATA arrives, independent
of where it will go; at the end the stores place it (links, a rename) into its targets.

Files come from a pool of empty files created ahead of need (``SpoolPool``), one pool folder
per worker under ``users/.spool/``: on the mailboxes' filesystem, so a link or rename into a
Maildir works. Leftovers (messages never acknowledged) are removed at start-up
(``clean_spools``).
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections import deque
from collections.abc import Sequence
from pathlib import Path

from smtpkit.errors import DeliveryError
from smtpkit.fsutil import open_below, unique_name, write_all

__all__ = ["SPOOL_FOLDER", "FILE_FLAGS", "Spool", "SpoolPool", "clean_spools", "delivery_error"]

SPOOL_FOLDER = ".spool"  # under users/: one pool folder of ready spool files per worker

#: Creating a file: never through a link, never over an existing one.
FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def delivery_error(exc: OSError, what: str) -> DeliveryError:
    """Every OSError on the storage path is temporary (4xx); ENOSPC/EDQUOT say disk full."""
    if exc.errno == errno.ELOOP:
        why = "a symbolic link where a Maildir folder must be (refused)"
    elif exc.errno == errno.ENOTDIR:
        why = "not a folder where a Maildir folder must be"
    else:
        why = exc.strerror or str(exc)
    return DeliveryError(f"{what}: {why}", disk_full=exc.errno in _DISK_FULL)


def _create(path: Path) -> int:
    return os.open(path, FILE_FLAGS, 0o600)


class SpoolPool:
    """Empty spool files created ahead of need by the delivery thread.

    Creating a file waits for the filesystem journal whenever a commit is running, which is
    often under load: taking a ready file keeps that wait off the event loop.
    """

    def __init__(self, folder: Path, size: int = 64) -> None:
        self.folder = folder
        self.size = size
        self._ready: deque[tuple[int, Path]] = deque()
        self._device = -1

    @property
    def device(self) -> int:
        """The filesystem of the folder, so of every spool file made in it (read once)."""
        if self._device < 0:
            self._device = os.stat(self.folder).st_dev
        return self._device

    def take(self) -> tuple[int, Path] | None:
        try:
            return self._ready.popleft()  # deque.popleft is atomic: no lock with the filler
        except IndexError:
            return None

    def fill(self) -> None:
        """Top the pool up (delivery thread). Errors just leave it short: the loop then
        creates files itself, and reports any error there."""
        while len(self._ready) < self.size:
            path = self.folder / unique_name()
            try:
                fd = _create(path)
            except OSError:
                return
            self._ready.append((fd, path))

    def drain(self) -> None:
        while (item := self.take()) is not None:
            os.close(item[0])
            try:
                item[1].unlink()
            except OSError:
                pass


class Spool:
    """One message being received, in a file of the pool folder.

    Write errors are recorded, not raised: the data keeps being read and discarded, and the
    error is reported once at the final dot.
    """

    __slots__ = ("error", "fd", "name", "path", "pool", "size")

    def __init__(self, header: bytes, pool: SpoolPool) -> None:
        self.size = 0
        self.error: DeliveryError | None = None
        self.pool = pool  # its file stays in the pool's folder, rewritten or not
        ready = pool.take()
        if ready is not None:
            self.fd, self.path = ready
        else:
            self.fd = -1
            self.path = pool.folder / unique_name()
            try:
                self.fd = _create(self.path)
            except OSError as exc:
                self.error = delivery_error(exc, f"cannot create {self.path}")
        self.name = self.path.name
        if self.error is None:
            # Written at once, not with the first data: a full disk is then refused at DATA,
            # before the client sends the message (452 4.3.1).
            self.write(header)

    def write(self, data: bytes | memoryview) -> None:
        if self.error is not None:
            return
        try:
            write_all(self.fd, data)
        except OSError as exc:
            self.error = delivery_error(exc, f"cannot write {self.path}")
            self.abort()
            return
        self.size += len(data)

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            try:
                os.close(fd)
            except OSError:
                pass

    def abort(self) -> None:
        """Drop the message: close and remove the file (best effort, never raises)."""
        self.close()
        self.remove()

    def remove(self) -> None:
        try:
            self.path.unlink()
        except OSError:
            pass

    def place(self, folder_fd: int, name: str, *, consume: bool) -> None:
        """Put the file in the folder ``folder_fd`` as ``name``: a hard link, or, when
        nothing else needs the spool file any more (``consume``), a rename."""
        if consume:
            os.rename(self.path, name, dst_dir_fd=folder_fd)
        else:
            os.link(self.path, name, dst_dir_fd=folder_fd)

    def rewrite(self, data: bytes) -> None:
        """Replace the message with ``data``: a new file in the same folder takes the old
        one's place (and its descriptor, which the commit syncs). For the checks that add
        header fields before the commit. Raises OSError; the old file then stays as it was."""
        path = self.path.with_name(unique_name())
        fd = _create(path)
        try:
            write_all(fd, data)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                path.unlink()
            raise
        self.close()
        self.remove()
        self.fd, self.path, self.name, self.size = fd, path, path.name, len(data)

    def open_read(self) -> int:
        """The spool file, opened for reading (to copy it across filesystems)."""
        return os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)


def clean_spools(users_dir: Path, folders: Sequence[Sequence[str]]) -> int:
    """Remove leftovers in spool folders, given as parts below ``users_dir`` (the pool
    folders ``(".spool", N)``, each mailbox's ``(NAME, "tmp")``): messages never
    acknowledged. Returns how many. Run at start-up, before any worker starts. No symbolic
    link is followed below the data folder, so a link planted in a Maildir can never make
    this delete files elsewhere."""
    removed = 0
    for parts in folders:
        try:
            fd = open_below(users_dir.parent, users_dir.name, *parts)
        except OSError:
            continue
        try:
            for entry in list(os.scandir(fd)):
                # Spool files have unique names that never start with a dot; the workers'
                # commit lock (.commit-lock) stays.
                if entry.name.startswith(".") or entry.is_dir(follow_symlinks=False):
                    continue
                try:
                    os.unlink(entry.name, dir_fd=fd)
                    removed += 1
                except OSError:
                    pass
        finally:
            os.close(fd)
    return removed
