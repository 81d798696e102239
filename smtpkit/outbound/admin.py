"""What ``smtpkit queue flush|delete|bounce`` do to entries: the same steps whether the
command carries them out itself (no server runs) or the queue runner does (on request)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from smtpkit.config import Config
from smtpkit.delivery.queue import (
    FAILED,
    QUEUE_FOLDER,
    QueuedRecipient,
    QueueEntry,
    read_entry,
    read_queue,
)
from smtpkit.delivery.spool import SPOOL_FOLDER, SpoolPool
from smtpkit.fsutil import make_dirs
from smtpkit.journal import Journal
from smtpkit.outbound.control import Request
from smtpkit.outbound.inject import Sign, make_router
from smtpkit.outbound.reports import Reported, send_report
from smtpkit.outbound.schedule import Notice, notify_allows

__all__ = ["ADMIN_BOUNCE", "carry_out", "fail_waiting", "flush_entry", "journal_report"]

#: Status and words of a recipient failed by ``smtpkit queue bounce``.
ADMIN_BOUNCE = ("5.0.0", "returned to the sender by the administrator (smtpkit queue bounce)")

JournalWrite = Callable[..., None]


def flush_entry(entry: QueueEntry, now: float) -> bool:
    """Make every waiting recipient due now; False when none waits."""
    waiting = entry.waiting
    for recipient in waiting:
        recipient.next_attempt = now
    return bool(waiting)


def fail_waiting(entry: QueueEntry, status: str, text: str) -> list[QueuedRecipient]:
    """Fail every waiting recipient with ``status`` and ``text``; returns them."""
    failed = entry.waiting
    for recipient in failed:
        recipient.state = FAILED
        recipient.status = status
        recipient.last_error = text
    return failed


def journal_report(write: JournalWrite, entry: QueueEntry, reported: Reported) -> None:
    """The journal line for a report: where it went, or why none was sent."""
    posted = reported.posted
    fields: dict[str, Any] = {
        "id": entry.id,
        "action": reported.action,
        "to": list(reported.recipients),
    }
    if posted is None:
        reason = "the sender is <>: a report itself"
        write("report_dropped", entry.id, "-", **fields, reason=reason)
    elif posted.dropped:
        write("report_dropped", entry.id, "-", **fields, sender=entry.sender,
              reason="no such local mailbox")  # fmt: skip
    elif posted.error is not None:
        write("report_failed", entry.id, "-", **fields, error=str(posted.error))
    else:
        write("report", entry.id, "-", **fields, sender=entry.sender,
              report=posted.message_id, files=posted.stored)  # fmt: skip


def carry_out(config: Config, request: Request, *, sign: Sign | None = None) -> None:
    """Do ``request`` on the files, holding the queue's lock (no runner runs). ``sign``
    gives the DKIM-Signature fields of the reports posted, as the runner's does (the
    caller loads the keys: ARCHITECTURE.md, "Mail authentication")."""
    queue_dir = config.server.directory / QUEUE_FOLDER
    journal = Journal(config.server.journal_dir)
    try:
        if request.entry_id is None:
            entries = read_queue(queue_dir)
        else:
            found = read_entry(queue_dir, request.entry_id)
            entries = [found] if found is not None else []
        for entry in entries:
            apply_request(config, request.operation, entry, journal.write, _Reporter(config, sign))
    finally:
        journal.close()


class _Reporter:
    """Posts reports from a command: spool files straight in ``users/.spool``, signed with
    ``sign`` when given."""

    def __init__(self, config: Config, sign: Sign | None = None) -> None:
        self.config = config
        self.sign = sign
        self.router = make_router(config)
        folder = config.server.users_dir / SPOOL_FOLDER
        make_dirs(folder, 0o700)
        self.pool = SpoolPool(folder, size=0)

    def __call__(self, entry: QueueEntry, failed: list[QueuedRecipient]) -> Reported:
        return send_report(
            self.config, self.router, self.pool, entry, failed, "failed", sign=self.sign
        )


def apply_request(
    config: Config,
    operation: str,
    entry: QueueEntry,
    write: JournalWrite,
    report: Callable[[QueueEntry, list[QueuedRecipient]], Reported],
) -> None:
    """One request on one entry. ``report`` posts a failure report (blocking)."""
    if operation == "flush":
        if flush_entry(entry, time.time()):
            entry.save()
        write("flushed", entry.id, "-", id=entry.id)
    elif operation == "delete":
        entry.remove()
        write("deleted", entry.id, "-", id=entry.id, sender=entry.sender,
              to=[r.address for r in entry.waiting])  # fmt: skip
    elif operation == "bounce":
        failed = fail_waiting(entry, *ADMIN_BOUNCE)
        write("bounced", entry.id, "-", id=entry.id, sender=entry.sender,
              to=[r.address for r in failed], reason=ADMIN_BOUNCE[1])  # fmt: skip
        wanted = [r for r in failed if notify_allows(r, Notice.FAILED)]
        if wanted:
            journal_report(write, entry, report(entry, wanted))
        entry.remove()
