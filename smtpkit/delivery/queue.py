"""The outbound queue: mail for other domains, durable in ``DIR/queue/`` before the ``250``.

One entry per message, whatever the number of remote recipients:

- ``DIR/queue/<id>``: the message as received (with our trace header), a hard link of the
  spool file, made durable by the group commit like a Maildir copy;
- ``DIR/queue/<id>.env``: its envelope, JSON with a format version, written to a hidden
  temporary name, fsync'd and renamed last: an entry without its envelope was never
  acknowledged and is removed at start-up (``clean_queue``).

The envelope records the sender, each recipient with its own state, the arrival time,
attempts, the next attempt and the last error: everything the queue runner needs, so the
queue on disk is the only state. ``<id>`` is the message id of the ``250`` reply, the
``Received:`` header and the journal, followed by a tag of this host, so that entries of
several hosts never collide (ARCHITECTURE.md, "Adding a delivery target").
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from smtpkit.delivery.folders import Folders
from smtpkit.delivery.spool import FILE_FLAGS, delivery_error
from smtpkit.delivery.targets import Delivery, Remote, Target, TargetFailed
from smtpkit.errors import DeliveryError, SmtpkitError
from smtpkit.fsutil import write_all

__all__ = [
    "ENVELOPE_VERSION",
    "QUEUE_FOLDER",
    "QueueEntry",
    "QueueError",
    "QueueStore",
    "clean_queue",
    "entry_name",
    "read_queue",
]

QUEUE_FOLDER = "queue"  # under the data folder
ENVELOPE_VERSION = 1
_ENVELOPE = ".env"
_TMP = ".tmp."
# A short, stable tag of this host in every entry name.
_HOST_TAG = hashlib.blake2s(socket.gethostname().encode(), digest_size=2).hexdigest()


class QueueError(SmtpkitError):
    """A queue entry that cannot be read."""


def entry_name(message_id: str) -> str:
    return f"{message_id}-{_HOST_TAG}"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class QueueStore:
    """Places messages for remote recipients into the outbound queue."""

    def place(
        self, delivery: Delivery, targets: Sequence[Target], folders: Folders, *, consume: bool
    ) -> None:
        first = targets[0]
        assert isinstance(first, Remote)
        queue_dir = first.queue
        name = entry_name(delivery.message_id or delivery.spool.name)
        try:
            folder = folders.get(queue_dir.parent, queue_dir.name)
            delivery.spool.place(folder, name, consume=consume)
            delivery.placed.append((folder, name))
            envelope = {
                "version": ENVELOPE_VERSION,
                "id": name,
                "sender": delivery.sender,
                "arrived": _now(),
                "size": delivery.spool.size,
                "recipients": [
                    {
                        "address": t.address,
                        "state": "queued",
                        "attempts": 0,
                        "next_attempt": _now(),
                        "last_error": None,
                    }
                    for t in targets
                    if isinstance(t, Remote)
                ],
            }
            _write_envelope(folder, name + _ENVELOPE, envelope)
            delivery.placed.append((folder, name + _ENVELOPE))
        except DeliveryError as exc:  # the folder could not be opened
            raise TargetFailed(first, exc) from None
        except OSError as exc:
            raise TargetFailed(
                first, delivery_error(exc, f"cannot queue into {queue_dir}")
            ) from None
        delivery.stored.append(f"{QUEUE_FOLDER}/{name}")


def _write_envelope(folder: int, name: str, envelope: dict[str, Any]) -> None:
    """Hidden name, write, fsync, rename: the envelope appears whole or not at all. It is
    the entry's commit mark: written after the data file is in place."""
    tmp = _TMP + name
    data = (json.dumps(envelope, ensure_ascii=True, separators=(",", ":")) + "\n").encode()
    fd = os.open(tmp, FILE_FLAGS, 0o600, dir_fd=folder)
    try:
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, name, src_dir_fd=folder, dst_dir_fd=folder)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=folder)
        except OSError:
            pass
        raise


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """One queued message, as its envelope says."""

    id: str
    sender: str
    arrived: str
    size: int
    recipients: tuple[dict[str, Any], ...]
    path: Path

    @property
    def age(self) -> float:
        """Seconds since it arrived."""
        arrived = datetime.strptime(self.arrived, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        return (datetime.now(UTC) - arrived).total_seconds()


def _read_entry(path: Path) -> QueueEntry:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise QueueError(f"{path}: cannot read the envelope: {exc}") from None
    if not isinstance(data, dict) or data.get("version") != ENVELOPE_VERSION:
        raise QueueError(f"{path}: envelope version {data.get('version')!r} is not known")
    try:
        return QueueEntry(
            id=str(data["id"]),
            sender=str(data["sender"]),
            arrived=str(data["arrived"]),
            size=int(data["size"]),
            recipients=tuple(data["recipients"]),
            path=path.with_name(path.name[: -len(_ENVELOPE)]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise QueueError(f"{path}: a field is missing or wrong: {exc}") from None


def read_queue(queue_dir: Path) -> list[QueueEntry]:
    """Every complete entry, oldest first; a missing queue folder is an empty queue."""
    try:
        names = os.listdir(queue_dir)
    except FileNotFoundError:
        return []
    entries = [
        _read_entry(queue_dir / name)
        for name in names
        if name.endswith(_ENVELOPE) and not name.startswith(".")
    ]
    return sorted(entries, key=lambda e: (e.arrived, e.id))


def clean_queue(queue_dir: Path) -> int:
    """Remove what was never acknowledged: temporary envelopes, and data files without an
    envelope. Returns how many files went. Run at start-up, before any worker starts."""
    try:
        names = set(os.listdir(queue_dir))
    except FileNotFoundError:
        return 0
    doomed = [n for n in names if n.startswith(_TMP)]
    doomed += [
        n
        for n in names
        if not n.startswith(".") and not n.endswith(_ENVELOPE) and n + _ENVELOPE not in names
    ]
    for name in doomed:
        try:
            (queue_dir / name).unlink()
        except OSError:
            pass
    return len(doomed)
