"""``smtpkit queue import DIR``: a dead node's queue entries moved into this node's queue.

Mail a node acknowledged waits in its own ``DIR/queue`` until that node sends it; when the
node is gone for longer than its mail may wait, its queue folder (from its disk, or a
backup) is moved into a live node's queue, whose runner then delivers it. This module does
the moving, entry by entry, so that nothing is lost and nothing is overwritten:

- Only complete entries move: an envelope this version reads (format, fields, addresses that
  parse, an id that is its file name) and its message beside it, a regular file of the size
  the envelope gives. Anything else stays where it is, and is reported.
- No id is ever overwritten: the message takes its name with link(2), which fails when the
  name is taken; the entry then gets a new name, ``<id>-<4 hex digits>``, which its envelope
  says. An entry already here with the same message (an import cut short after the copy)
  is not copied again.
- Durable before the source goes: the message (a hard link on the same filesystem and
  owner, else a copy, fsync'd), then its envelope (the entry's commit mark: written, fsync'd,
  renamed), then one fsync of the folder per batch; only then are the source's envelopes and
  messages removed, and its folder fsync'd. A crash in between leaves an entry in both
  queues: delivered at least once, never lost.
- Waiting recipients are due at once: the dead node's retry times say nothing about now.
- The source queue's lock is taken for the whole import: a node still running there (its
  runner holds the lock) makes the import refuse.

A server may run meanwhile or not: adding entries is what receiving does without the lock,
and the runner finds each new envelope through inotify (or at its next look).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from smtpkit.delivery.queue import (
    ENVELOPE_SUFFIX,
    TMP_PREFIX,
    QueueEntry,
    QueueError,
    read_envelope,
    write_envelope,
)
from smtpkit.errors import SmtpkitError
from smtpkit.fsutil import write_all
from smtpkit.outbound import control
from smtpkit.protocol.grammar import parse_mail, parse_rcpt
from smtpkit.protocol.replies import Reply

__all__ = ["BATCH", "Imported", "ImportReport", "Skipped", "TransferError", "import_queue"]

#: Entries placed between two fsyncs of the folders (and before their sources go).
BATCH = 64
_CHUNK = 1 << 20
_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


class TransferError(SmtpkitError):
    """The import cannot start (no such folder, a node still running there)."""


@dataclass(frozen=True, slots=True)
class Imported:
    """An entry now in this queue: its id there (``old_id`` at the source), and how many of
    its recipients wait. ``already``: it was here from an earlier, interrupted import."""

    old_id: str
    new_id: str
    waiting: int
    already: bool = False


@dataclass(frozen=True, slots=True)
class Skipped:
    """A file of the source that was left where it is, and why."""

    name: str
    reason: str


@dataclass(slots=True)
class ImportReport:
    imported: list[Imported] = field(default_factory=list)
    #: Entries that are not whole or not well-formed: left in the source for a person.
    skipped: list[Skipped] = field(default_factory=list)
    #: Messages without an envelope: never acknowledged (their node died committing them),
    #: so nobody is owed them; the dead node would have removed them at its next start.
    ignored: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Move:
    """An entry read and checked at the source, on its way."""

    entry: QueueEntry
    data_fd: int


def import_queue(source: Path, queue_dir: Path, now: float | None = None) -> ImportReport:
    """Move every complete entry of the queue folder ``source`` into ``queue_dir``.
    Raises ``TransferError`` when it cannot begin; problems with single entries are in the
    report's ``skipped`` (those entries stay in ``source``)."""
    now = time.time() if now is None else now
    if not source.is_dir():
        raise TransferError(f"{source} is not a folder")
    if source.resolve() == queue_dir.resolve():
        raise TransferError(f"{source} is this node's own queue")
    report = ImportReport()
    with _source_lock(source):
        names = set(os.listdir(source))
        envelopes = sorted(n for n in names if n.endswith(ENVELOPE_SUFFIX) and n[0] != ".")
        for name in sorted(names):
            if name[0] == "." or name.endswith(ENVELOPE_SUFFIX):
                continue
            if name + ENVELOPE_SUFFIX not in names:
                report.ignored.append(name)
        src_fd = os.open(source, _DIRECTORY)
        dst_fd = os.open(queue_dir, _DIRECTORY)
        try:
            for start in range(0, len(envelopes), BATCH):
                _batch(source, src_fd, queue_dir, dst_fd, envelopes[start : start + BATCH],
                       now, report)  # fmt: skip
        finally:
            os.close(src_fd)
            os.close(dst_fd)
    return report


@contextlib.contextmanager
def _source_lock(source: Path) -> Iterator[None]:
    try:
        fd = control.open_lock(source)
    except OSError as exc:
        raise TransferError(f"cannot open the lock of {source}: {exc.strerror}") from None
    try:
        if not control.try_lock(fd):
            raise TransferError(
                f"a queue runner holds {source / control.LOCK_NAME}: that node is running "
                "(stop it first; its mail is not lost while it is down)"
            )
        yield
    finally:
        os.close(fd)


def _batch(
    source: Path,
    src_fd: int,
    queue_dir: Path,
    dst_fd: int,
    envelopes: list[str],
    now: float,
    report: ImportReport,
) -> None:
    done: list[Imported] = []
    here = set(os.listdir(dst_fd))
    for envelope in envelopes:
        move = _check(source, envelope, report)
        if move is None:
            continue
        try:
            imported = _place(move, src_fd, queue_dir, dst_fd, here, now)
        except OSError as exc:
            name = move.entry.id
            report.skipped.append(Skipped(name, f"cannot place it here: {exc.strerror}"))
            continue
        finally:
            os.close(move.data_fd)
        done.append(imported)
    if not done:
        return
    os.fsync(dst_fd)  # every new name durable before any source goes
    for imported in done:
        report.imported.append(imported)
        # The envelope first: it is the entry's commit mark, as in QueueEntry.remove.
        for name in (imported.old_id + ENVELOPE_SUFFIX, imported.old_id):
            try:
                os.unlink(name, dir_fd=src_fd)
            except FileNotFoundError:
                pass
            except OSError as exc:
                # Here now, and still there: that node would send it again if it ran.
                reason = f"imported, but not removed there ({exc.strerror}): remove it by hand"
                report.skipped.append(Skipped(name, reason))
                break
    with contextlib.suppress(OSError):
        os.fsync(src_fd)  # a read-only source said so above, entry by entry


def _check(source: Path, envelope: str, report: ImportReport) -> _Move | None:
    """The entry of ``envelope``, with its message open, or None (reported) when it is not
    a complete, well-formed entry."""
    name = envelope[: -len(ENVELOPE_SUFFIX)]
    try:
        entry = read_envelope(source / envelope)
    except QueueError as exc:
        report.skipped.append(Skipped(name, str(exc).removeprefix(f"{source / envelope}: ")))
        return None
    problem = _problem(entry, name)
    if problem is not None:
        report.skipped.append(Skipped(name, problem))
        return None
    try:
        fd = os.open(source / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        report.skipped.append(Skipped(name, f"cannot open the message: {exc.strerror}"))
        return None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_size != entry.size:
        os.close(fd)
        what = "not a regular file" if not stat.S_ISREG(info.st_mode) else (
            f"{info.st_size} bytes, its envelope says {entry.size}"
        )  # fmt: skip
        report.skipped.append(Skipped(name, f"the message is {what}"))
        return None
    return _Move(entry, fd)


def _problem(entry: QueueEntry, name: str) -> str | None:
    if entry.id != name:
        return f"its envelope names another id, {entry.id!r}"
    if not entry.recipients:
        return "its envelope has no recipient"
    if entry.sender and isinstance(parse_mail(f"FROM:<{entry.sender}>", True), Reply):
        return f"not a sender address: {entry.sender!r}"
    for recipient in entry.recipients:
        if isinstance(parse_rcpt(f"TO:<{recipient.address}>"), Reply):
            return f"not a recipient address: {recipient.address!r}"
    return None


def _place(
    move: _Move, src_fd: int, queue_dir: Path, dst_fd: int, here: set[str], now: float
) -> Imported:
    """The message and its envelope in this queue (not yet their folder's fsync); ``here``:
    the names in the queue when the batch began."""
    entry = move.entry
    old_id = entry.id
    waiting = len(entry.waiting)
    same = _same_here(move, dst_fd, old_id, here)
    if same is not None:
        return Imported(old_id, same, waiting, already=True)
    os.fsync(move.data_fd)  # a copy from a backup may never have been synced
    info = os.fstat(move.data_fd)
    linkable = info.st_uid == os.geteuid()  # a link keeps the owner; the runner must read it
    tmp = None
    if not linkable:
        tmp = _copy(move.data_fd, dst_fd)
    try:
        new_id = _take_name(old_id, dst_fd, src_fd, tmp)
    except OSError as exc:
        if tmp is None and exc.errno in _NO_LINK:
            tmp = _copy(move.data_fd, dst_fd)  # another filesystem: copy after all
            new_id = _take_name(old_id, dst_fd, src_fd, tmp)
        else:
            raise
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dst_fd)
    entry.id = new_id
    entry.path = queue_dir / new_id
    for recipient in entry.waiting:
        recipient.next_attempt = now
    try:
        write_envelope(dst_fd, new_id + ENVELOPE_SUFFIX, entry.to_json())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(new_id, dir_fd=dst_fd)
        raise
    return Imported(old_id, new_id, waiting)


#: link(2) errors that mean "copy instead": another filesystem, or links not allowed there.
_NO_LINK = frozenset({errno.EXDEV, errno.EPERM, errno.EMLINK})


def _copy(data_fd: int, dst_fd: int) -> str:
    """A copy of the message under a hidden temporary name in the queue, fsync'd; start-up
    removes such names should the import stop before it is linked into place."""
    tmp = f"{TMP_PREFIX}import.{secrets.token_hex(8)}"
    out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600, dir_fd=dst_fd)
    try:
        offset = 0
        while chunk := os.pread(data_fd, _CHUNK, offset):
            write_all(out, chunk)
            offset += len(chunk)
        os.fsync(out)
    except BaseException:
        os.close(out)
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dst_fd)
        raise
    os.close(out)
    return tmp


def _take_name(wanted: str, dst_fd: int, src_fd: int, tmp: str | None) -> str:
    """Link the message (the source's file, or the copy ``tmp``) into the queue under
    ``wanted``, or a new name when that one is taken; link(2) never replaces a name."""
    name = wanted
    while True:
        try:
            if tmp is None:
                os.link(wanted, name, src_dir_fd=src_fd, dst_dir_fd=dst_fd, follow_symlinks=False)
            else:
                os.link(tmp, name, src_dir_fd=dst_fd, dst_dir_fd=dst_fd, follow_symlinks=False)
        except FileExistsError:
            name = f"{wanted}-{secrets.token_hex(2)}"
            continue
        if _exists(name + ENVELOPE_SUFFIX, dst_fd):
            # An envelope without its message (being removed): the name is not free either.
            os.unlink(name, dir_fd=dst_fd)
            name = f"{wanted}-{secrets.token_hex(2)}"
            continue
        return name


def _exists(name: str, folder: int) -> bool:
    try:
        os.stat(name, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _same_here(move: _Move, dst_fd: int, old_id: str, here: set[str]) -> str | None:
    """The id of an entry already in this queue holding this very message (under its id,
    or one given on a collision), from an import that stopped before removing the source."""
    prefix = old_id + "-"
    for name in here:
        if name != old_id and not (name.startswith(prefix) and len(name) == len(prefix) + 4):
            continue
        if name + ENVELOPE_SUFFIX not in here:
            continue
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dst_fd)
        except OSError:
            continue
        try:
            if _same_file(move.data_fd, fd):
                return name
        finally:
            os.close(fd)
    return None


def _same_file(a: int, b: int) -> bool:
    first, second = os.fstat(a), os.fstat(b)
    if (first.st_dev, first.st_ino) == (second.st_dev, second.st_ino):
        return True
    if first.st_size != second.st_size:
        return False
    offset = 0
    while True:
        left, right = os.pread(a, _CHUNK, offset), os.pread(b, _CHUNK, offset)
        if left != right:
            return False
        if not left:
            return True
        offset += len(left)
