"""The outbound queue: mail for other domains, durable in ``DIR/queue/`` before the ``250``.

One entry per message, whatever the number of remote recipients:

- ``DIR/queue/<id>``: the message as received (with our trace header), a hard link of the
  spool file, made durable by the group commit like a Maildir copy;
- ``DIR/queue/<id>.env``: its envelope, JSON with a format version, written to a hidden
  temporary name, fsync'd and renamed last: an entry without its envelope was never
  acknowledged and is removed at start-up (``clean_queue``).

The envelope records the sender, each recipient with its own state, the arrival time,
attempts, the next attempt and the last error: everything the queue runner needs, so the
queue on disk is the only state. ``<id>`` is the message's id (random per session) followed
by a tag of this node's ``server.hostname`` (``set_node``), so that the entries of several
nodes never collide, also when they run on one machine (ARCHITECTURE.md, "Adding a delivery
target"); a session names its messages so (``entry_name``), and the ``250`` reply, the
``Received:`` header and the journal give the name ``smtpkit queue list`` shows. One node's
entries moved into another's queue (``outbound/transfer.py``) keep their names, or get new
ones when taken.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from smtpkit.delivery.folders import Folders
from smtpkit.delivery.spool import FILE_FLAGS, delivery_error
from smtpkit.delivery.targets import Delivery, Remote, Target, TargetFailed
from smtpkit.errors import DeliveryError, SmtpkitError
from smtpkit.fsutil import write_all
from smtpkit.protocol.dsn import MailDsn, RcptDsn

__all__ = [
    "ENVELOPE_SUFFIX",
    "ENVELOPE_VERSION",
    "QUEUE_FOLDER",
    "QueueEntry",
    "QueueError",
    "QueueStore",
    "QueuedRecipient",
    "TMP_PREFIX",
    "clean_queue",
    "entry_name",
    "read_entry",
    "read_envelope",
    "read_queue",
    "set_node",
    "write_envelope",
]

QUEUE_FOLDER = "queue"  # under the data folder
ENVELOPE_VERSION = 1
ENVELOPE_SUFFIX = ".env"
TMP_PREFIX = ".tmp."


def _tag(name: str) -> str:
    return hashlib.blake2s(name.lower().encode(), digest_size=2).hexdigest()


# A short, stable tag of this node in every entry name: the machine's host name until the
# server (or a command) names the node after its server.hostname with set_node.
_node_tag = _tag(socket.gethostname())


class QueueError(SmtpkitError):
    """A queue entry that cannot be read."""


def set_node(hostname: str) -> None:
    """Tag entry names with ``hostname`` (``server.hostname``) from now on. Nodes of one
    cluster have names of their own even on one machine, where the machine's host name is
    the same for all of them."""
    global _node_tag
    _node_tag = _tag(hostname)


# A node's tag at the end of a name: "-" and four hex digits (_tag). The ids smtpkit makes
# (session.N, local....N, ....report) have no "-".
_TAGGED = re.compile(r"-[0-9a-f]{4}\Z")


def entry_name(message_id: str) -> str:
    """The queue entry name of a message: its id with this node's tag after it. An id that
    has a tag already (``4f1c2a9b0e3d.1-7a2c``: the session names its messages with this
    function, so that its reply, its ``Received:`` field and its journal lines give the
    entry's name) is kept as it is, also when the node was renamed in between (a reload
    with another ``server.hostname``)."""
    if _TAGGED.search(message_id):
        return message_id
    return f"{message_id}-{_node_tag}"


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
            now = time.time()
            dsn = delivery.dsn
            entry = QueueEntry(
                id=name,
                sender=delivery.sender,
                arrived=now,
                size=delivery.spool.size,
                recipients=[
                    QueuedRecipient(
                        t.address,
                        next_attempt=now,
                        dsn=dsn.rcpt.get(t.rcpt or t.address, RcptDsn()) if dsn else RcptDsn(),
                    )
                    for t in targets
                    if isinstance(t, Remote)
                ],
                path=queue_dir / name,
                dsn=dsn.mail if dsn else MailDsn(),
                smtputf8=delivery.smtputf8,
                body=delivery.body,
            )
            write_envelope(folder, name + ENVELOPE_SUFFIX, entry.to_json())
            delivery.placed.append((folder, name + ENVELOPE_SUFFIX))
        except DeliveryError as exc:  # the folder could not be opened
            raise TargetFailed(first, exc) from None
        except OSError as exc:
            raise TargetFailed(
                first, delivery_error(exc, f"cannot queue into {queue_dir}")
            ) from None
        delivery.stored.append(f"{QUEUE_FOLDER}/{name}")


def write_envelope(folder: int, name: str, envelope: dict[str, Any]) -> None:
    """Hidden name, write, fsync, rename: the envelope appears whole or not at all. It is
    the entry's commit mark: written after the data file is in place."""
    tmp = TMP_PREFIX + name
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


#: Recipient states: waiting (never tried, or tried and deferred) and final.
QUEUED = "queued"
DEFERRED = "deferred"
DELIVERED = "delivered"  # accepted by a server that delivers it, or stored here
RELAYED = "relayed"  # handed to a next hop that does not offer DSN (RFC 3461 "relayed")
FAILED = "failed"
FINAL_STATES = frozenset({DELIVERED, RELAYED, FAILED})

_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def format_time(when: float) -> str:
    """Seconds since the epoch as the envelope writes them (UTC, whole seconds)."""
    return datetime.fromtimestamp(when, UTC).strftime(_TIME_FORMAT)


def parse_time(text: str) -> float:
    return datetime.strptime(text, _TIME_FORMAT).replace(tzinfo=UTC).timestamp()


@dataclass(slots=True)
class QueuedRecipient:
    """One recipient of a queued message and what became of it so far."""

    address: str
    state: str = QUEUED
    attempts: int = 0
    next_attempt: float = 0.0
    #: When it was last tried (0: never).
    last_attempt: float = 0.0
    #: The last reply or problem, as a person reads it ("550 5.1.1 no such user").
    last_error: str | None = None
    #: The enhanced status code (RFC 3463) of the last outcome, "4.4.1" or "5.1.1".
    status: str | None = None
    #: The host that gave the last reply, by name as a report's Remote-MTA gives it.
    remote: str | None = None
    #: RFC 3461 NOTIFY and ORCPT as given at RCPT (none: the defaults).
    dsn: RcptDsn = field(default_factory=RcptDsn)

    @property
    def waiting(self) -> bool:
        return self.state not in FINAL_STATES

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "state": self.state,
            "attempts": self.attempts,
            "next_attempt": format_time(self.next_attempt),
            "last_attempt": format_time(self.last_attempt) if self.last_attempt else None,
            "last_error": self.last_error,
            "status": self.status,
            "remote": self.remote,
            **self.dsn.to_dict(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> QueuedRecipient:
        return cls(
            address=str(data["address"]),
            state=str(data["state"]),
            attempts=int(data["attempts"]),
            next_attempt=parse_time(str(data["next_attempt"])),
            last_attempt=parse_time(str(data["last_attempt"])) if data.get("last_attempt") else 0.0,
            last_error=_optional(data.get("last_error")),
            status=_optional(data.get("status")),
            remote=_optional(data.get("remote")),
            dsn=RcptDsn.from_dict({k: data.get(k) for k in ("notify", "orcpt")}),
        )


def _optional(value: Any) -> str | None:
    return None if value is None else str(value)


@dataclass(slots=True)
class QueueEntry:
    """One queued message, as its envelope says; ``path`` is the message file (the envelope
    is beside it, ``<path>.env``)."""

    id: str
    sender: str
    arrived: float
    size: int
    recipients: list[QueuedRecipient]
    path: Path
    #: RFC 3461 RET and ENVID as given at MAIL.
    dsn: MailDsn = field(default_factory=MailDsn)
    #: True once the sender was told that delivery is delayed (one notice per message).
    warned: bool = False
    #: The transaction said SMTPUTF8 (RFC 6531): UTF-8 addresses or header fields may need
    #: a next hop that offers it.
    smtputf8: bool = False
    #: The BODY= value it came with ("8BITMIME", "BINARYMIME"; None: not given).
    body: str | None = None

    @property
    def age(self) -> float:
        """Seconds since it arrived."""
        return time.time() - self.arrived

    @property
    def envelope_path(self) -> Path:
        return self.path.with_name(self.path.name + ENVELOPE_SUFFIX)

    @property
    def waiting(self) -> list[QueuedRecipient]:
        return [r for r in self.recipients if r.waiting]

    @property
    def next_attempt(self) -> float | None:
        """When the earliest waiting recipient is due, or None when none waits."""
        return min((r.next_attempt for r in self.waiting), default=None)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": ENVELOPE_VERSION,
            "id": self.id,
            "sender": self.sender,
            "arrived": format_time(self.arrived),
            "size": self.size,
            **self.dsn.to_dict(),
            "warned": self.warned,
            # Written only when set: envelopes without them read as before.
            **({"smtputf8": True} if self.smtputf8 else {}),
            **({"body": self.body} if self.body else {}),
            "recipients": [r.to_json() for r in self.recipients],
        }

    def copy(self) -> QueueEntry:
        """A copy whose recipients are copies too: what a file writer on another thread may
        hold while this one changes."""
        return dataclasses.replace(
            self, recipients=[dataclasses.replace(r) for r in self.recipients]
        )

    def save(self) -> None:
        """Write the envelope anew (hidden name, fsync, rename): readers see the old one or
        the new one, never a mix."""
        fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            write_envelope(fd, self.path.name + ENVELOPE_SUFFIX, self.to_json())
        finally:
            os.close(fd)

    def remove(self) -> None:
        """Take the entry out of the queue: the envelope first (the entry's commit mark), then
        the message; a crash between the two leaves a data file that start-up removes."""
        for path in (self.envelope_path, self.path):
            try:
                path.unlink()
            except FileNotFoundError:
                pass


def read_envelope(path: Path) -> QueueEntry:
    """The entry whose envelope is ``path`` (``<id>.env``); raises ``QueueError`` when it
    is not one this version can read."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise QueueError(f"{path}: cannot read the envelope: {exc}") from None
    if not isinstance(data, dict) or data.get("version") != ENVELOPE_VERSION:
        version = data.get("version") if isinstance(data, dict) else None
        raise QueueError(f"{path}: envelope version {version!r} is not known")
    try:
        return QueueEntry(
            id=str(data["id"]),
            sender=str(data["sender"]),
            arrived=parse_time(str(data["arrived"])),
            size=int(data["size"]),
            recipients=[QueuedRecipient.from_json(r) for r in data["recipients"]],
            path=path.with_name(path.name[: -len(ENVELOPE_SUFFIX)]),
            dsn=MailDsn.from_dict({k: data.get(k) for k in ("ret", "envid")}),
            warned=bool(data.get("warned", False)),
            smtputf8=data.get("smtputf8", False) is True,
            body=_optional(data.get("body")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise QueueError(f"{path}: a field is missing or wrong: {exc}") from None


def read_entry(queue_dir: Path, entry_id: str) -> QueueEntry | None:
    """The entry ``entry_id``, or None when there is none (an id is a plain file name: one
    with a slash or a leading dot is never looked up)."""
    if not entry_id or "/" in entry_id or entry_id.startswith(".") or "\0" in entry_id:
        return None
    try:
        return read_envelope(queue_dir / (entry_id + ENVELOPE_SUFFIX))
    except QueueError:
        if not (queue_dir / (entry_id + ENVELOPE_SUFFIX)).exists():
            return None
        raise


def read_queue(queue_dir: Path) -> list[QueueEntry]:
    """Every complete entry, oldest first; a missing queue folder is an empty queue. An
    entry removed while the folder is read is left out."""
    try:
        names = os.listdir(queue_dir)
    except FileNotFoundError:
        return []
    entries = []
    for name in names:
        if name.endswith(ENVELOPE_SUFFIX) and not name.startswith("."):
            entry = read_entry(queue_dir, name[: -len(ENVELOPE_SUFFIX)])
            if entry is not None:
                entries.append(entry)
    return sorted(entries, key=lambda e: (e.arrived, e.id))


def clean_queue(queue_dir: Path) -> int:
    """Remove what was never acknowledged: temporary envelopes, and data files without an
    envelope. Returns how many files went. Run at start-up, before any worker starts.
    Raises ``QueueError`` when the folder cannot be read (a root-owned ``queue/``)."""
    try:
        names = set(os.listdir(queue_dir))
    except FileNotFoundError:
        return 0
    except OSError as exc:
        raise QueueError(f"cannot read {queue_dir}: {exc.strerror or exc}") from None
    doomed = [n for n in names if n.startswith(TMP_PREFIX)]
    doomed += [
        n
        for n in names
        if not n.startswith(".")
        and not n.endswith(ENVELOPE_SUFFIX)
        and n + ENVELOPE_SUFFIX not in names
    ]
    for name in doomed:
        try:
            (queue_dir / name).unlink()
        except OSError:
            pass
    return len(doomed)
