"""The group commit: many messages made durable in their targets with a few calls, off the
event loop, before any of their ``250`` replies (ARCHITECTURE.md, "Durability").

Three steps, each once for a whole batch: make every spool file's data durable (one
``syncfs(2)`` per filesystem, or an fsync per file), then let each target's store place the
messages (links and renames into ``new/``), then make the folders holding the new names
durable. Only the order matters for safety: no name appears in a mailbox before its data is
on disk, so a crash never leaves a partial message there. A failure fails only the messages
it touched; their placed files are removed again, so a 4xx never leaves a copy that the
sender's retry would duplicate.
"""

from __future__ import annotations

import ctypes
import functools
import os
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from smtpkit.delivery.folders import Folders
from smtpkit.delivery.maildir import MaildirStore
from smtpkit.delivery.queue import QueueStore
from smtpkit.delivery.spool import Spool, SpoolPool, delivery_error
from smtpkit.delivery.syncer import SharedSyncer
from smtpkit.delivery.targets import Delivery, Mailbox, Remote, Target, TargetFailed

__all__ = ["STORES", "Delivery", "DeliveryWorker", "Store", "commit", "commit_batch"]

T = TypeVar("T")


class Store(Protocol):
    """Places spooled messages into targets of one type (step two of the commit)."""

    def place(
        self, delivery: Delivery, targets: Sequence[Target], folders: Folders, *, consume: bool
    ) -> None:
        """Record what it placed on ``delivery``; raise ``TargetFailed`` for the first
        target it could not place."""


#: The store of each target type, in the order they place a message; the last one with
#: targets for a message may consume its spool file (a rename instead of a link).
STORES: dict[type[Target], Store] = {Mailbox: MaildirStore(), Remote: QueueStore()}


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


def _syncfs_via(syncer: SharedSyncer | None) -> Callable[[int], None] | None:
    """The syncfs to use: shared with the other workers through ``syncer``, or this
    process's own; None where there is no syncfs."""
    if _syncfs is None:
        return None
    if syncer is None:
        return _syncfs
    syncfs = _syncfs
    return lambda fd: syncer.sync(fd, syncfs)


def _sync_data(deliveries: Sequence[Delivery], syncfs: Callable[[int], None] | None) -> None:
    """Make the data of every spool durable, recording per-message errors. One syncfs(2)
    per filesystem covers a whole batch: one journal commit instead of one per file. Should
    it fail, per-file fsync tells which message the error belongs to."""
    for group in _by_device(deliveries, lambda d: d.spool.pool.device):
        if syncfs is not None and len(group) > 1:
            try:
                syncfs(group[0].spool.fd)
                continue
            except OSError:
                pass
        for delivery in group:
            try:
                os.fsync(delivery.spool.fd)
            except OSError as exc:
                delivery.fail(delivery_error(exc, f"cannot sync {delivery.spool.path}"))


def _sync_folders(
    folders: Folders, deliveries: Sequence[Delivery], syncfs: Callable[[int], None] | None
) -> None:
    """Make the new names durable: one fsync per folder, or one syncfs for the folders of
    one filesystem."""
    users: dict[int, list[Delivery]] = {}
    for delivery in deliveries:
        for fd, _ in delivery.placed:
            users.setdefault(fd, []).append(delivery)
    for group in _by_device(list(users), lambda fd: os.fstat(fd).st_dev):
        if syncfs is not None and len(group) > 1:
            try:
                syncfs(group[0])
                continue
            except OSError:
                pass
        for fd in group:
            try:
                os.fsync(fd)
            except OSError as exc:
                error = delivery_error(exc, f"cannot sync folder {folders.names[fd]}")
                for delivery in users[fd]:
                    delivery.fail(error)


def _place(delivery: Delivery, folders: Folders) -> None:
    by_store: dict[type[Target], list[Target]] = {}
    for target in delivery.targets:
        by_store.setdefault(type(target), []).append(target)
    kinds = [kind for kind in STORES if kind in by_store]
    for i, kind in enumerate(kinds):
        targets = by_store[kind]
        try:
            STORES[kind].place(delivery, targets, folders, consume=i == len(kinds) - 1)
        except TargetFailed as exc:
            # SMTP has one reply for the message: all its copies go, or none.
            delivery.errors[exc.target] = exc.error
            delivery.undo()
            return


def commit_batch(
    deliveries: Sequence[Delivery], syncer: SharedSyncer | None = None
) -> list[Delivery]:
    """Make every message durable in all its targets, or fail it; returns ``deliveries``.
    With ``syncer``, the syncfs calls are shared with the other workers' commits."""
    syncfs = _syncfs_via(syncer)
    live = [d for d in deliveries if d.spool.error is None]
    for delivery in deliveries:
        if delivery.spool.error is not None:
            delivery.failure = delivery.spool.error
    _sync_data(live, syncfs)
    folders = Folders()
    try:
        for delivery in live:
            delivery.spool.close()
            if delivery.error is None:
                _place(delivery, folders)
        _sync_folders(folders, live, syncfs)
    finally:
        folders.close()
        for delivery in deliveries:
            spool = delivery.spool
            spool.close()
            if delivery.error is not None or not delivery.stored:
                spool.remove()  # failed: nothing of it stays
    return list(deliveries)


def commit(spool: Spool, targets: Sequence[Target]) -> Delivery:
    """``commit_batch`` for one message."""
    return commit_batch([Delivery(spool, tuple(targets))])[0]


Completion = Callable[[Delivery], None]


def _complete(pairs: list[tuple[Completion, Delivery]]) -> None:
    for done, delivery in pairs:
        done(delivery)


class DeliveryWorker:
    """Commits messages in a background thread, in batches, so fsync never stalls the loop.

    ``submit(delivery, done)`` queues a message; ``done(delivery)`` is handed to
    ``call_soon`` (the event loop's thread-safe scheduler) once it is durable or has failed.
    """

    def __init__(
        self,
        call_soon: Callable[[Callable[[], None]], None],
        max_batch: int = 64,
        pool: SpoolPool | None = None,
        syncer: SharedSyncer | None = None,
        after: Callable[[list[Delivery]], None] | None = None,
    ):
        self._call_soon = call_soon
        # Run on this thread after each batch, with the messages now durable (what the
        # server does next with them, off the loop: success notices).
        self.after = after
        self._max_batch = max_batch
        self.pool = pool
        self.syncer = syncer
        self._queue: queue.SimpleQueue[tuple[Delivery, Completion] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="smtpkit-delivery", daemon=True)
        self._thread.start()

    def submit(self, delivery: Delivery, done: Completion) -> None:
        self._queue.put((delivery, done))

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
            batch: list[tuple[Delivery, Completion]] = [] if item is None else [item]
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
                commit_batch([delivery for delivery, _ in batch], self.syncer)
                pairs = [(done, delivery) for delivery, done in batch]
                # One wake-up of the loop for the whole batch.
                self._call_soon(functools.partial(_complete, pairs))
                if self.after is not None:
                    self.after([delivery for delivery, _ in batch if delivery.error is None])
            if pool is not None:
                if stop:
                    pool.drain()
                else:
                    pool.fill()
            if stop:
                return
