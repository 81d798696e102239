"""Durable Maildir delivery (DESIGN convention 9 and 10).

A message streams into ``tmp/<unique>`` of its first mailbox while DATA arrives (``Spool``);
at the final dot, ``commit()`` makes it durable: fsync the file, hard-link it into the ``new/``
folder of every other mailbox and rename it into the first one's, then fsync each ``new/``
folder touched. Only then may the server say 250. ``commit_batch`` does the same for many
messages with one folder fsync per folder (group commit), and ``DeliveryWorker`` runs it off
the event loop.

Copies for several mailboxes are hard links of one file: the stored bytes are identical
(the Received header names a recipient only when there is one, RFC 5321 7.2), so links save
the copies and Maildir readers treat each link as an independent message.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import queue
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from smtpkit.errors import DeliveryError
from smtpkit.fsutil import fsync_dir, place_durably, unique_name, write_all

__all__ = [
    "SPOOL_FOLDER",
    "DeliveryResult",
    "DeliveryWorker",
    "Spool",
    "SpoolPool",
    "clean_tmp",
    "commit",
    "commit_batch",
    "delivery_error",
]

T = TypeVar("T")

_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
SPOOL_FOLDER = ".spool"  # under users/: the pool of ready spool files


def delivery_error(exc: OSError, what: str) -> DeliveryError:
    """Every OSError on the storage path is temporary (4xx); ENOSPC/EDQUOT say disk full."""
    return DeliveryError(
        f"{what}: {exc.strerror or exc}", temporary=True, disk_full=exc.errno in _DISK_FULL
    )


def _create(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)


class SpoolPool:
    """Empty spool files created ahead of need by the delivery thread.

    Creating a file waits for the filesystem journal whenever a commit is running, which is
    often under load: taking a ready file keeps that wait off the event loop. The files live
    in one hidden folder next to the mailboxes (``users/.spool``, same filesystem, so a rename
    into ``new/`` works); leftovers are removed at start-up like those in ``tmp/``.
    """

    def __init__(self, folder: Path, size: int = 64) -> None:
        self.folder = folder
        self.size = size
        self._ready: deque[tuple[int, Path]] = deque()
        self._device = -1
        self._devices: dict[Path, int] = {}

    def take_for(self, mailbox: Path) -> tuple[int, Path] | None:
        """A ready file, if ``mailbox`` is on the pool's filesystem (a rename cannot cross
        filesystems: a mailbox mounted elsewhere gets its file in its own tmp/)."""
        if not self._ready:
            return None
        device = self._devices.get(mailbox)
        if device is None:
            try:
                device = os.stat(mailbox).st_dev
            except OSError:
                return None
            if len(self._devices) >= 4096:
                self._devices.clear()
            # Remembered: should the mailbox move to another filesystem later, the rename's
            # EXDEV falls back to a copy (_link_all), so a stale entry costs speed only.
            self._devices[mailbox] = device
        return self.take() if device == self._device else None

    def take(self) -> tuple[int, Path] | None:
        try:
            return self._ready.popleft()  # deque.popleft is atomic: no lock with the filler
        except IndexError:
            return None

    def fill(self) -> None:
        """Top the pool up (delivery thread). Errors just leave it short: the loop then
        creates files itself, and reports any error there."""
        try:
            self._device = os.stat(self.folder).st_dev
        except OSError:
            return
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
    """One message being received, streamed into ``tmp/`` of its first mailbox.

    Write errors are recorded, not raised: the data keeps being read and discarded, and the
    error is reported once at the final dot (DESIGN convention 8).
    """

    __slots__ = ("error", "fd", "mailboxes", "name", "size", "tmp_path")

    def __init__(
        self, mailboxes: Sequence[Path], header: bytes, pool: SpoolPool | None = None
    ) -> None:
        self.mailboxes = tuple(mailboxes)
        self.name = unique_name()
        self.size = 0
        self.error: DeliveryError | None = None
        ready = pool.take_for(self.mailboxes[0]) if pool is not None else None
        if ready is not None:
            self.fd, self.tmp_path = ready
        else:
            self.fd = -1
            self.tmp_path = self.mailboxes[0] / "tmp" / self.name
            try:
                self.fd = _create(self.tmp_path)
            except OSError as exc:
                self.error = delivery_error(exc, f"cannot create {self.tmp_path}")
                return
        # Written at once, not with the first data: a full disk is then refused at DATA,
        # before the client sends the message (452 4.3.1).
        self.write(header)

    def write(self, data: bytes | memoryview) -> None:
        if self.error is not None:
            return
        try:
            write_all(self.fd, data)
        except OSError as exc:
            self.error = delivery_error(exc, f"cannot write {self.tmp_path}")
            self.abort()
            return
        self.size += len(data)

    def abort(self) -> None:
        """Drop the message: close and remove the tmp file (best effort, never raises)."""
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            self.tmp_path.unlink(missing_ok=True)
        except OSError:
            pass


@dataclass(slots=True)
class DeliveryResult:
    """What happened to one message: the files now in ``new/``, or the error."""

    spool: Spool
    files: list[Path] = field(default_factory=list)
    error: DeliveryError | None = None


def _link_all(spool: Spool, result: DeliveryResult) -> None:
    # Other mailboxes first (hard links), the first mailbox last (rename of the spool file):
    # if anything fails the spool file still exists and every link made is undone.
    first, *others = spool.mailboxes
    for mailbox in others:
        target = mailbox / "new" / unique_name()
        try:
            os.link(spool.tmp_path, target)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            _copy_into(spool.tmp_path, mailbox, target)  # a mailbox on another filesystem
        result.files.append(target)
    target = first / "new" / spool.name
    try:
        os.rename(spool.tmp_path, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        _copy_into(spool.tmp_path, first, target)
        spool.tmp_path.unlink()
    result.files.append(target)


def _copy_into(source: Path, mailbox: Path, target: Path) -> None:
    """A durable copy for a mailbox on another filesystem, where a link cannot reach: the
    usual recipe (its own tmp/, fsync, rename); the folder is synced with the batch."""

    def copy(fd: int) -> None:
        with open(source, "rb") as src:
            while chunk := src.read(1 << 20):
                write_all(fd, chunk)

    place_durably(mailbox / "tmp" / target.name, target, copy)


def _undo(result: DeliveryResult) -> None:
    for path in result.files:
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass
    result.files.clear()


def _load_syncfs() -> Callable[[int], None] | None:
    """syncfs(2) through libc, or None where there is none (not Linux)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        func = libc.syncfs
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int]

    def syncfs(fd: int) -> None:
        if func(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    return syncfs


_syncfs = _load_syncfs()


def _by_device(items: Sequence[T], device: Callable[[T], int]) -> list[list[T]]:
    groups: dict[int, list[T]] = {}
    for item in items:
        groups.setdefault(device(item), []).append(item)
    return list(groups.values())


def _sync_files(results: Sequence[DeliveryResult]) -> None:
    """Make the data of every spool durable, recording per-message errors.

    One syncfs(2) per filesystem covers a whole batch: one journal commit instead of one per
    file, the lever DESIGN convention 10 measured. Should it fail, per-file fsync tells which
    message the error belongs to.
    """
    for group in _by_device(results, lambda r: os.fstat(r.spool.fd).st_dev):
        if _syncfs is not None and len(group) > 1:
            try:
                _syncfs(group[0].spool.fd)
                continue
            except OSError:
                pass
        for result in group:
            try:
                os.fsync(result.spool.fd)
            except OSError as exc:
                result.error = delivery_error(exc, f"cannot sync {result.spool.tmp_path}")


def _sync_folders(folders: dict[Path, list[DeliveryResult]]) -> None:
    """Make the renames into ``new/`` durable: one fsync per folder, or one syncfs for the
    folders of one filesystem."""
    for group in _by_device(list(folders), lambda folder: os.stat(folder).st_dev):
        if _syncfs is not None and len(group) > 1:
            try:
                fd = os.open(group[0], os.O_RDONLY | os.O_DIRECTORY)
                try:
                    _syncfs(fd)
                finally:
                    os.close(fd)
                continue
            except OSError:
                pass
        for folder in group:
            try:
                fsync_dir(folder)
            except OSError as exc:
                for result in folders[folder]:
                    if result.error is None:
                        result.error = delivery_error(exc, f"cannot sync folder {folder}")
                        _undo(result)


def commit_batch(spools: Sequence[Spool]) -> list[DeliveryResult]:
    """Make every spooled message durable in its mailboxes; one result per spool, in order.

    Three steps, each once for the whole batch (group commit): make the data durable, then
    link/rename every file into ``new/``, then make the folders durable. Only the order
    matters for safety: no name appears in ``new/`` before its data is on disk, so a crash
    never leaves a partial message there. A failure fails only the messages it touched, and
    their files are removed from ``new/`` again, so a 4xx never leaves a file that a retry
    would duplicate.
    """
    results = [DeliveryResult(spool) for spool in spools]
    live = []
    for result in results:
        if result.spool.error is not None:
            result.error = result.spool.error
        else:
            live.append(result)
    _sync_files(live)
    for result in live:
        spool = result.spool
        os.close(spool.fd)
        spool.fd = -1
        if result.error is not None:
            spool.abort()
            continue
        try:
            _link_all(spool, result)
        except OSError as exc:
            result.error = delivery_error(exc, "cannot move message into new/")
            _undo(result)
            spool.abort()
    folders: dict[Path, list[DeliveryResult]] = {}
    for result in live:
        for path in result.files:
            folders.setdefault(path.parent, []).append(result)
    _sync_folders(folders)
    return results


def commit(spool: Spool) -> DeliveryResult:
    """``commit_batch`` for one message."""
    return commit_batch([spool])[0]


def clean_tmp(folders: Sequence[Path]) -> int:
    """Remove leftovers in spool folders (each mailbox's ``tmp/``, the spool pool): messages
    never acknowledged. Returns how many. Run at start-up, before any worker starts."""
    removed = 0
    for folder in folders:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            try:
                os.unlink(entry.path)
                removed += 1
            except OSError:
                pass
    return removed


Completion = Callable[[DeliveryResult], None]


def _complete(pairs: list[tuple[Completion, DeliveryResult]]) -> None:
    for done, result in pairs:
        done(result)


class DeliveryWorker:
    """Commits spools in a background thread, in batches, so fsync never stalls the loop.

    ``submit(spool, done)`` queues a message; ``done(result)`` is handed to ``call_soon``
    (the event loop's thread-safe scheduler) once the message is durable or has failed.
    """

    def __init__(
        self,
        call_soon: Callable[[Callable[[], None]], None],
        max_batch: int = 64,
        pool: SpoolPool | None = None,
    ):
        self._call_soon = call_soon
        self._max_batch = max_batch
        self.pool = pool
        self._queue: queue.SimpleQueue[tuple[Spool, Completion] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="smtpkit-delivery", daemon=True)
        self._thread.start()

    def submit(self, spool: Spool, done: Completion) -> None:
        self._queue.put((spool, done))

    def close(self) -> None:
        """Finish what is queued, then stop the thread."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        pool = self.pool
        if pool is not None:
            pool.fill()
        while True:
            item = self._queue.get()
            stop = item is None
            batch: list[tuple[Spool, Completion]] = [] if item is None else [item]
            while len(batch) < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            if batch:
                results = commit_batch([spool for spool, _ in batch])
                pairs = [(done, result) for (_, done), result in zip(batch, results, strict=True)]
                # One wake-up of the loop for the whole batch.
                self._call_soon(functools.partial(_complete, pairs))
            if pool is not None:
                if stop:
                    pool.drain()
                else:
                    pool.fill()
            if stop:
                return
