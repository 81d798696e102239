"""Durable Maildir delivery (ARCHITECTURE.md, "Durability").

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
from smtpkit.fsutil import open_below, unique_name, write_all

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
    if exc.errno == errno.ELOOP:
        why = "a symbolic link where a Maildir folder must be (refused)"
    elif exc.errno == errno.ENOTDIR:
        why = "not a folder where a Maildir folder must be"
    else:
        why = exc.strerror or str(exc)
    return DeliveryError(f"{what}: {why}", temporary=True, disk_full=exc.errno in _DISK_FULL)


_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _create(path: Path) -> int:
    return os.open(path, _FILE_FLAGS, 0o600)


def open_folder(mailbox: Path, sub: str) -> int:
    """A descriptor of ``mailbox/sub`` (``tmp``, ``new``): no symbolic link is followed from
    the data folder down (``users``, the mailbox, the sub-folder), so a link planted in a
    Maildir can never send a message, or a clean-up, somewhere else."""
    users = mailbox.parent
    return open_below(users.parent, users.name, mailbox.name, sub)


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
    """One message being received, streamed into a ready file of the pool, or else into
    ``tmp/`` of its first mailbox (``folder_fd`` then holds that folder, opened safely).

    Write errors are recorded, not raised: the data keeps being read and discarded, and the
    error is reported once at the final dot.
    """

    __slots__ = ("error", "fd", "folder_fd", "mailboxes", "name", "size", "tmp_path")

    def __init__(
        self, mailboxes: Sequence[Path], header: bytes, pool: SpoolPool | None = None
    ) -> None:
        self.mailboxes = tuple(mailboxes)
        self.name = unique_name()
        self.size = 0
        self.error: DeliveryError | None = None
        self.folder_fd = -1
        ready = pool.take_for(self.mailboxes[0]) if pool is not None else None
        if ready is not None:
            self.fd, self.tmp_path = ready
        else:
            self.fd = -1
            self.tmp_path = self.mailboxes[0] / "tmp" / self.name
            try:
                self.folder_fd = open_folder(self.mailboxes[0], "tmp")
                self.fd = os.open(self.name, _FILE_FLAGS, 0o600, dir_fd=self.folder_fd)
            except OSError as exc:
                self.error = delivery_error(exc, f"cannot create {self.tmp_path}")
                self.close_folder()
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
        self.remove_file()
        self.close_folder()

    def remove_file(self) -> None:
        """Unlink the spool file where it was created (best effort)."""
        try:
            if self.folder_fd >= 0:
                os.unlink(self.name, dir_fd=self.folder_fd)
            else:
                self.tmp_path.unlink()
        except OSError:
            pass

    def rename_into(self, folder_fd: int, name: str) -> None:
        """Move the spool file to ``name`` in the folder ``folder_fd``."""
        if self.folder_fd >= 0:
            os.rename(self.name, name, src_dir_fd=self.folder_fd, dst_dir_fd=folder_fd)
        else:
            os.rename(self.tmp_path, name, dst_dir_fd=folder_fd)

    def open_read(self) -> int:
        """The spool file, opened for reading (to copy it across filesystems)."""
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
        if self.folder_fd >= 0:
            return os.open(self.name, flags, dir_fd=self.folder_fd)
        return os.open(self.tmp_path, flags)

    def link_into(self, folder_fd: int, name: str) -> None:
        """Hard-link the spool file as ``name`` into the folder ``folder_fd``."""
        if self.folder_fd >= 0:
            os.link(self.name, name, src_dir_fd=self.folder_fd, dst_dir_fd=folder_fd)
        else:
            os.link(self.tmp_path, name, dst_dir_fd=folder_fd)

    def close_folder(self) -> None:
        if self.folder_fd >= 0:
            fd, self.folder_fd = self.folder_fd, -1
            try:
                os.close(fd)
            except OSError:
                pass


@dataclass(slots=True)
class DeliveryResult:
    """What happened to one message: the files now in ``new/``, or the error."""

    spool: Spool
    files: list[Path] = field(default_factory=list)
    error: DeliveryError | None = None
    # (folder descriptor, name) of each file placed, to undo them on a later failure.
    placed: list[tuple[int, str]] = field(default_factory=list)


class _Folders:
    """The ``new/`` (and ``tmp/``) folders one batch touches, each opened once, safely
    (``open_folder``), and closed at the end of the batch."""

    def __init__(self) -> None:
        self.fds: dict[tuple[Path, str], int] = {}

    def get(self, mailbox: Path, sub: str) -> int:
        fd = self.fds.get((mailbox, sub))
        if fd is None:
            fd = self.fds[(mailbox, sub)] = open_folder(mailbox, sub)
        return fd

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()


def _link_all(spool: Spool, result: DeliveryResult, folders: _Folders) -> None:
    # Other mailboxes first (hard links), the first mailbox last (rename of the spool file):
    # if anything fails the spool file still exists and every link made is undone.
    first, *others = spool.mailboxes
    for mailbox in others:
        name = unique_name()
        new = _new_folder(folders, mailbox)
        try:
            spool.link_into(new, name)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            _copy_into(spool, folders, mailbox, name)  # a mailbox on another filesystem
        result.placed.append((new, name))
        result.files.append(mailbox / "new" / name)
    new = _new_folder(folders, first)
    try:
        spool.rename_into(new, spool.name)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        _copy_into(spool, folders, first, spool.name)
        spool.remove_file()
    result.placed.append((new, spool.name))
    result.files.append(first / "new" / spool.name)


def _new_folder(folders: _Folders, mailbox: Path) -> int:
    try:
        return folders.get(mailbox, "new")
    except OSError as exc:
        raise delivery_error(exc, f"cannot open {mailbox}/new") from None


def _copy_into(spool: Spool, folders: _Folders, mailbox: Path, name: str) -> None:
    """A durable copy for a mailbox on another filesystem, where a link cannot reach: the
    usual recipe (its own tmp/, fsync, rename into new/); the folder is synced with the
    batch."""
    tmp = folders.get(mailbox, "tmp")
    fd = os.open(name, _FILE_FLAGS, 0o600, dir_fd=tmp)
    try:
        try:
            with os.fdopen(spool.open_read(), "rb") as src:
                while chunk := src.read(1 << 20):
                    write_all(fd, chunk)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(name, name, src_dir_fd=tmp, dst_dir_fd=folders.get(mailbox, "new"))
    except BaseException:
        try:
            os.unlink(name, dir_fd=tmp)
        except OSError:
            pass
        raise


def _undo(result: DeliveryResult) -> None:
    for folder, name in result.placed:
        try:
            os.unlink(name, dir_fd=folder)
        except OSError:
            pass
    result.placed.clear()
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
    file, the lever ARCHITECTURE.md's "Durability" section measures. Should it fail,
    per-file fsync tells which message the error belongs to.
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


def _sync_folders(folders: dict[int, list[DeliveryResult]], names: dict[int, Path]) -> None:
    """Make the renames into ``new/`` durable: one fsync per folder, or one syncfs for the
    folders of one filesystem."""
    for group in _by_device(list(folders), lambda fd: os.fstat(fd).st_dev):
        if _syncfs is not None and len(group) > 1:
            try:
                _syncfs(group[0])
                continue
            except OSError:
                pass
        for fd in group:
            try:
                os.fsync(fd)
            except OSError as exc:
                for result in folders[fd]:
                    if result.error is None:
                        result.error = delivery_error(exc, f"cannot sync folder {names[fd]}")
                        _undo(result)


def commit_batch(spools: Sequence[Spool]) -> list[DeliveryResult]:
    """Make every spooled message durable in its mailboxes; one result per spool, in order.

    Three steps, each once for the whole batch (group commit): make the data durable, then
    link/rename every file into ``new/``, then make the folders durable. Only the order
    matters for safety: no name appears in ``new/`` before its data is on disk, so a crash
    never leaves a partial message there. A failure fails only the messages it touched, and
    their files are removed from ``new/`` again, so a 4xx never leaves a file that a retry
    would duplicate. Every folder is reached without following symbolic links.
    """
    results = [DeliveryResult(spool) for spool in spools]
    live = []
    for result in results:
        if result.spool.error is not None:
            result.error = result.spool.error
        else:
            live.append(result)
    _sync_files(live)
    opened = _Folders()
    try:
        for result in live:
            spool = result.spool
            os.close(spool.fd)
            spool.fd = -1
            if result.error is not None:
                spool.abort()
                continue
            try:
                _link_all(spool, result, opened)
            except (OSError, DeliveryError) as exc:
                result.error = (
                    exc
                    if isinstance(exc, DeliveryError)
                    else delivery_error(exc, "cannot move message into new/")
                )
                _undo(result)
                spool.abort()
                continue
            spool.close_folder()  # the file itself has moved
        folders: dict[int, list[DeliveryResult]] = {}
        names: dict[int, Path] = {}
        for result in live:
            for (fd, _), path in zip(result.placed, result.files, strict=True):
                folders.setdefault(fd, []).append(result)
                names[fd] = path.parent
        _sync_folders(folders, names)
    finally:
        opened.close()
    return results


def commit(spool: Spool) -> DeliveryResult:
    """``commit_batch`` for one message."""
    return commit_batch([spool])[0]


def clean_tmp(users_dir: Path, folders: Sequence[Sequence[str]]) -> int:
    """Remove leftovers in spool folders, given as parts below ``users_dir`` (each
    mailbox's ``(NAME, "tmp")``, the spool pool's ``(".spool", N)``): messages never
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
                if entry.is_dir(follow_symlinks=False):
                    continue
                try:
                    os.unlink(entry.name, dir_fd=fd)
                    removed += 1
                except OSError:
                    pass
        finally:
            os.close(fd)
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
