"""What an attempt's outcome does to a queued recipient: retry when, give up when, and
which notices the sender is owed. Pure functions on the entry: no files, no clock."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from smtpkit.config import QueueConfig
from smtpkit.delivery.queue import (
    DEFERRED,
    DELIVERED,
    FAILED,
    RELAYED,
    QueuedRecipient,
    QueueEntry,
)

__all__ = ["Notice", "Outcome", "Result", "apply_outcome", "delay_notice", "retry_delay"]


class Result(enum.Enum):
    DELIVERED = DELIVERED  # the next hop delivers it (or will report, having DSN)
    RELAYED = RELAYED  # handed to a next hop that does not offer DSN
    DEFERRED = DEFERRED  # try again later
    FAILED = FAILED  # never: tell the sender


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt did for one recipient: the result, the enhanced status code
    (RFC 3463), the reply or problem in words, and the host that answered (if any)."""

    result: Result
    status: str
    text: str
    remote: str | None = None
    #: True when ``text`` is an SMTP reply (the report's Diagnostic-Code is "smtp; ...").
    smtp: bool = False


class Notice(enum.Enum):
    """The notices a sender can be owed (RFC 3464 Action values)."""

    FAILED = "failed"
    DELAYED = "delayed"
    DELIVERED = "delivered"
    RELAYED = "relayed"


def retry_delay(attempts: int, config: QueueConfig) -> float:
    """Seconds until the next try after ``attempts`` tries: ``min_retry``, doubling, at most
    ``max_retry``."""
    doublings = min(max(attempts - 1, 0), 30)
    return min(config.max_retry, config.min_retry * float(2**doublings))


def notify_allows(recipient: QueuedRecipient, notice: Notice) -> bool:
    """Whether the sender's NOTIFY (RFC 3461 4.1) asks for this notice."""
    return recipient.dsn.wants(notice.value)


def apply_outcome(
    entry: QueueEntry,
    recipient: QueuedRecipient,
    outcome: Outcome,
    now: float,
    config: QueueConfig,
) -> Notice | None:
    """Record ``outcome`` in ``recipient`` (an attempt made at ``now``) and return the
    notice the sender is owed for it, if any. A deferral past ``max_age`` is a failure."""
    recipient.attempts += 1
    recipient.last_attempt = now
    success = outcome.result in (Result.DELIVERED, Result.RELAYED)
    recipient.last_error = None if success else outcome.text
    recipient.status = outcome.status
    recipient.remote = outcome.remote
    match outcome.result:
        case Result.DELIVERED | Result.RELAYED:
            recipient.state = outcome.result.value
            notice = Notice.DELIVERED if outcome.result is Result.DELIVERED else Notice.RELAYED
        case Result.FAILED:
            recipient.state = FAILED
            notice = Notice.FAILED
        case Result.DEFERRED:
            if now - entry.arrived >= config.max_age:
                recipient.state = FAILED
                recipient.last_error = (
                    f"{outcome.text} (gave up: in the queue for {_duration(now - entry.arrived)})"
                )
                return Notice.FAILED if notify_allows(recipient, Notice.FAILED) else None
            recipient.state = DEFERRED
            recipient.next_attempt = now + retry_delay(recipient.attempts, config)
            return None
    return notice if notify_allows(recipient, notice) else None


def delay_notice(entry: QueueEntry, now: float, config: QueueConfig) -> list[QueuedRecipient]:
    """The recipients to name in the one "delayed" notice of this entry, when it is due now
    (``delay_warning`` passed, none sent yet); marks the entry as warned. Empty otherwise."""
    if config.delay_warning <= 0 or entry.warned or now - entry.arrived < config.delay_warning:
        return []
    waiting = [r for r in entry.waiting if r.attempts > 0]
    if not waiting:
        return []
    entry.warned = True
    return [r for r in waiting if notify_allows(r, Notice.DELAYED)]


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} hours"
    if seconds >= 60:
        return f"{seconds // 60} minutes"
    return f"{seconds} seconds"
