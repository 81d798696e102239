"""Delivery reports (RFC 3464) for queued messages, posted to their senders: failures,
the one delay notice, and the success notices RFC 3461 NOTIFY=SUCCESS asks for.

A report is built from the entry (envelope and message file) with ``smtpkit.bounce`` and
posted from the null sender (``inject.post``): a local sender's copy lands in its Maildir,
a remote sender's goes through the queue like any mail. A message from the null sender is
itself a report: it never gets one (RFC 5321 6.1); the caller journals the drop.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from smtpkit.bounce import OriginalEnvelope, RecipientStatus, build_report
from smtpkit.config import Config
from smtpkit.delivery.queue import QueuedRecipient, QueueEntry
from smtpkit.delivery.router import Router
from smtpkit.delivery.spool import SpoolPool
from smtpkit.delivery.syncer import SharedSyncer
from smtpkit.delivery.targets import Delivery, DsnRequest
from smtpkit.outbound.inject import Posted, Sign, make_router, post

__all__ = ["DeliveredHere", "Reported", "send_report"]


@dataclass(frozen=True, slots=True)
class Reported:
    """What a report did: ``posted`` (None when none could be sent: the null sender)."""

    action: str
    recipients: tuple[str, ...]
    posted: Posted | None


def _when(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _status(recipient: QueuedRecipient, action: str) -> str:
    """The RFC 3463 code of the right class for the action (RFC 3464 2.3.4)."""
    status = recipient.status or ""
    wanted = {"failed": "45", "delayed": "4", "delivered": "2", "relayed": "2"}[action]
    if status and status[0] in wanted:
        return status
    return {"failed": "5.0.0", "delayed": "4.0.0"}.get(action, "2.0.0")


def send_report(
    config: Config,
    router: Router,
    pool: SpoolPool,
    entry: QueueEntry,
    recipients: Sequence[QueuedRecipient],
    action: str,
    *,
    diagnostics: dict[str, str] | None = None,
    retry_until: float | None = None,
    syncer: SharedSyncer | None = None,
    sign: Sign | None = None,
) -> Reported:
    """Report ``action`` for ``recipients`` of ``entry`` to its sender; blocks until the
    report is durable (call it off the event loop)."""
    addresses = tuple(r.address for r in recipients)
    if not entry.sender:
        return Reported(action, addresses, None)
    diagnostics = diagnostics or {}
    statuses = [
        RecipientStatus(
            address=r.address,
            action=action,  # type: ignore[arg-type]
            status=_status(r, action),
            remote_mta=r.remote or None,
            diagnostic=diagnostics.get(r.address, r.last_error),
            original_recipient=r.dsn.orcpt,
            last_attempt=_when(r.last_attempt) if r.last_attempt else None,
            will_retry_until=_when(retry_until) if action == "delayed" and retry_until else None,
        )
        for r in recipients
    ]
    envelope = OriginalEnvelope(
        sender=entry.sender,
        arrival=_when(entry.arrived),
        envid=entry.dsn.envid,
        ret=entry.dsn.ret,
    )
    with open(entry.path, "rb") as original:
        message = build_report(config.server.hostname, envelope, statuses, original)
    report_id = f"{os.urandom(6).hex()}.report"
    posted = post(config, router, pool, message, entry.sender, report_id, syncer=syncer,
                  sign=sign)  # fmt: skip
    return Reported(action, addresses, posted)


class DeliveredHere:
    """Success notices for local delivery (RFC 3461 NOTIFY=SUCCESS, action "delivered"):
    called on the delivery thread with each batch of messages just made durable; posts one
    report per message whose sender asked, and hands the journal lines to the loop."""

    def __init__(
        self,
        config: Config,
        pool: SpoolPool,
        syncer: SharedSyncer | None,
        journal: Callable[[str, str, dict[str, Any]], None],
        sign: Sign | None = None,
    ) -> None:
        self.config = config
        self.sign = sign
        self.router = make_router(config)
        self.pool = pool
        self.syncer = syncer
        self.journal = journal

    def __call__(self, deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            dsn = delivery.dsn
            if dsn is None or not dsn.delivered_here or not delivery.stored:
                continue
            try:
                self._report(delivery, dsn)
            except (OSError, ValueError) as exc:
                self.journal("report_failed", delivery.message_id,
                             {"id": delivery.message_id, "error": str(exc)})  # fmt: skip

    def _report(self, delivery: Delivery, dsn: DsnRequest) -> None:
        fields: dict[str, Any] = {
            "id": delivery.message_id,
            "action": "delivered",
            "to": list(dsn.delivered_here),
        }
        if not delivery.sender:
            self.journal("report_dropped", delivery.message_id,
                         {**fields, "reason": "the sender is <>: a report itself"})  # fmt: skip
            return
        now = datetime.now(UTC)
        statuses = [
            RecipientStatus(
                address=address,
                action="delivered",
                status="2.0.0",
                diagnostic="delivered to the mailbox",
                original_recipient=dsn.rcpt[address].orcpt if address in dsn.rcpt else None,
                last_attempt=now,
            )
            for address in dsn.delivered_here
        ]
        envelope = OriginalEnvelope(
            sender=delivery.sender, arrival=now, envid=dsn.mail.envid, ret=dsn.mail.ret
        )
        # The copy just placed (``user/new/NAME`` under users/) is the original reported on.
        with open(self.config.server.users_dir / delivery.stored[0], "rb") as original:
            message = build_report(self.config.server.hostname, envelope, statuses, original)
        report_id = f"{os.urandom(6).hex()}.report"
        posted = post(self.config, self.router, self.pool, message, delivery.sender, report_id,
                      syncer=self.syncer, sign=self.sign)  # fmt: skip
        if posted.dropped:
            self.journal("report_dropped", delivery.message_id,
                         {**fields, "sender": delivery.sender,
                          "reason": "no such local mailbox"})  # fmt: skip
        elif posted.error is not None:
            self.journal("report_failed", delivery.message_id,
                         {**fields, "error": str(posted.error)})  # fmt: skip
        else:
            self.journal("report", delivery.message_id,
                         {**fields, "sender": delivery.sender, "report": report_id,
                          "files": posted.stored})  # fmt: skip
