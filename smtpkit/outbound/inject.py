"""Posting a message this server writes itself (a delivery report) from the null sender:
to a local mailbox through the router, or to the outbound queue for anyone else, durable
through the same commit as received mail."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

from smtpkit.config import Config
from smtpkit.delivery.commit import commit_batch
from smtpkit.delivery.queue import QUEUE_FOLDER, entry_name
from smtpkit.delivery.router import Router
from smtpkit.delivery.spool import Spool, SpoolPool
from smtpkit.delivery.syncer import SharedSyncer
from smtpkit.delivery.targets import Delivery, Remote, Target
from smtpkit.errors import DeliveryError
from smtpkit.users import UserStore

__all__ = ["Posted", "Sign", "lmtp_queue", "make_router", "post"]

#: DKIM-Signature fields for a message, b"" when there are none (it is not signed).
Sign = Callable[[bytes], bytes]


class Posted:
    """What became of a posted message: ``stored`` (where it went) or ``error``; ``dropped``
    names a local recipient that does not exist (nothing was written)."""

    def __init__(
        self,
        message_id: str,
        stored: list[str],
        error: DeliveryError | None = None,
        dropped: bool = False,
    ) -> None:
        self.message_id = message_id
        self.stored = stored
        self.error = error
        self.dropped = dropped


def make_router(config: Config) -> Router:
    """The router ``config`` describes: local mail into the Maildirs, or, with ``[delivery]
    lmtp``, into the queue for the LMTP server."""
    users = UserStore(config.server.users_dir, config.server.domains)
    return Router(
        users,
        config.aliases,
        config.server.domains,
        lmtp_queue(config),
        delimiters=config.server.recipient_delimiter,
    )


def lmtp_queue(config: Config) -> Path | None:
    """Where local mail waits for the LMTP server (the queue), or None without one."""
    return config.server.directory / QUEUE_FOLDER if config.delivery.lmtp is not None else None


def post(
    config: Config,
    router: Router,
    pool: SpoolPool,
    message: bytes,
    recipient: str,
    message_id: str,
    *,
    syncer: SharedSyncer | None = None,
    sign: Sign | None = None,
) -> Posted:
    """Deliver ``message`` (a whole RFC 5322 message, CRLF line ends) from ``<>`` to
    ``recipient``, behind our trace header; ``sign`` gives the DKIM-Signature fields to put
    in front (b"": none). Blocks until it is durable: call it off the event loop. The
    message is known by its queue entry's name everywhere (``entry_name``)."""
    message_id = entry_name(message_id)
    targets: tuple[Target, ...]
    if router.is_local_domain(recipient):
        targets = router.resolve(recipient)
        if not targets:
            return Posted(message_id, [], dropped=True)
    else:
        targets = (Remote(recipient, config.server.directory / QUEUE_FOLDER),)
    stamp = format_datetime(datetime.now(UTC))
    trace = (
        "Return-Path: <>\r\n"
        f"Received: by {config.server.hostname} (smtpkit)\r\n"
        f"\tid {message_id}; {stamp}\r\n"
    ).encode("ascii", "replace")
    if sign is not None:
        message = sign(message) + message
    spool = Spool(trace, pool)
    spool.write(message)
    delivery = Delivery(spool, targets, sender="", message_id=message_id)
    commit_batch([delivery], syncer)
    return Posted(message_id, list(delivery.stored), delivery.error)
