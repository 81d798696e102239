"""What the server accepts: decisions, never strings (ARCHITECTURE.md, "Adding a policy rule").

The default policy receives mail for local mailboxes only: no relaying for anyone (outbound
relay is a later feature), recipients must resolve to an existing Maildir, and declared sizes
must fit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from smtpkit.delivery.router import Router
from smtpkit.limits import Limits
from smtpkit.protocol import replies
from smtpkit.protocol.events import Hello, MailFrom, RcptTo
from smtpkit.protocol.replies import Reply

__all__ = ["Accept", "Decision", "LocalPolicy", "Policy", "Reject", "TempFail"]


@dataclass(frozen=True, slots=True)
class Accept:
    """Go ahead; for RCPT, ``mailboxes`` are the Maildirs the recipient reaches."""

    mailboxes: tuple[Path, ...] = ()


@dataclass(frozen=True, slots=True)
class Reject:
    reply: Reply


@dataclass(frozen=True, slots=True)
class TempFail:
    reply: Reply


Decision = Accept | Reject | TempFail


class Policy(Protocol):
    def check_helo(self, event: Hello) -> Decision: ...

    def check_mail(self, event: MailFrom) -> Decision: ...

    def check_rcpt(self, event: RcptTo) -> Decision: ...


class LocalPolicy:
    """Accept mail for existing local mailboxes; refuse relaying and unknown users."""

    def __init__(self, router: Router, limits: Limits) -> None:
        self.router = router
        self.limits = limits

    def check_helo(self, event: Hello) -> Decision:
        return Accept()

    def check_mail(self, event: MailFrom) -> Decision:
        if not event.address.isascii():
            return Reject(replies.NON_ASCII_ADDRESS)
        # RFC 1870 6: a declared size over our maximum is refused at once, 552 5.3.4.
        if event.size is not None and event.size > self.limits.max_message_size:
            return Reject(replies.MESSAGE_TOO_BIG)
        return Accept()

    def check_rcpt(self, event: RcptTo) -> Decision:
        address = event.address
        # Anything not in one of our domains would be relaying: refused for everyone, whatever
        # the form (percent hack, source route already stripped, IP literal, trailing dot).
        if not self.router.is_local_domain(address):
            return Reject(replies.RELAY_DENIED)
        mailboxes = self.router.resolve(address)
        if not mailboxes:
            return Reject(replies.UNKNOWN_USER)
        return Accept(mailboxes)
