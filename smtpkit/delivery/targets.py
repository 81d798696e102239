"""Where an accepted recipient's copy goes: a small closed set of frozen target types.

The router turns each accepted recipient into targets; the session collects them; at the end
of the message the commit step hands each target to the store of its type (``STORES`` in
``commit.py``). A new kind of target (the outbound queue, LMTP) is a new frozen type here,
its store module, and a row in ``STORES``: see ARCHITECTURE.md, "Adding a delivery target".
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from smtpkit.errors import DeliveryError
from smtpkit.protocol.dsn import MailDsn, RcptDsn

if TYPE_CHECKING:
    from smtpkit.delivery.spool import Spool

__all__ = [
    "JUNK",
    "Delivery",
    "DsnRequest",
    "Mailbox",
    "Placed",
    "Remote",
    "Target",
    "TargetFailed",
]


#: The Maildir++ folder for mail that failed its checks (Dovecot shows it as "Junk").
JUNK = ".Junk"


@dataclass(frozen=True, slots=True)
class Mailbox:
    """A local user's Maildir, ``DIR/users/<address>`` (the address validated, never raw);
    ``folder``: one of its Maildir++ sub-folders (``JUNK``), "" for the inbox."""

    path: Path
    folder: str = ""

    def __str__(self) -> str:
        # The address (how the journal names a mailbox), and the folder when not the inbox.
        return f"{self.path.name}/{self.folder}" if self.folder else self.path.name


@dataclass(frozen=True, slots=True)
class Remote:
    """A recipient in another domain: the message waits in the outbound queue, the folder
    ``queue`` (``DIR/queue``)."""

    address: str
    queue: Path
    #: The recipient as given at RCPT when it differs from ``address`` (a local user's mailbox
    #: reached through an alias, a subaddress or another spelling, queued for LMTP): the DSN
    #: request of that RCPT is this recipient's. Not part of the identity: two RCPTs that
    #: reach one mailbox make one queue recipient.
    rcpt: str = field(default="", compare=False)

    def __str__(self) -> str:
        return self.address


#: Every kind of target there is.
Target = Mailbox | Remote

#: (folder descriptor, file name) of a file placed, so that it can be undone.
Placed = tuple[int, str]


class TargetFailed(Exception):
    """A store could not place a message into ``target``; ``error`` says why."""

    def __init__(self, target: Target, error: DeliveryError) -> None:
        super().__init__(str(error))
        self.target = target
        self.error = error


@dataclass(frozen=True, slots=True)
class DsnRequest:
    """What the sender asked of delivery status notifications (RFC 3461): ``RET`` and
    ``ENVID`` from MAIL, ``NOTIFY`` and ``ORCPT`` from each RCPT (by recipient address).
    The queue keeps them with the message; reports and next hops use them."""

    mail: MailDsn = field(default_factory=MailDsn)
    rcpt: Mapping[str, RcptDsn] = field(default_factory=dict)
    #: Local recipients (as given at RCPT) whose NOTIFY asks for SUCCESS: once the message
    #: is in their mailboxes, the sender is told it was delivered.
    delivered_here: tuple[str, ...] = ()


@dataclass(slots=True)
class Delivery:
    """One message and where it goes; after the commit, what happened to it."""

    spool: Spool
    targets: tuple[Target, ...]
    #: The envelope sender ("" for the null sender) and the message's id (the 250 reply,
    #: the Received header, the journal): what a queue entry records.
    sender: str = ""
    message_id: str = ""
    #: The sender's DSN parameters, when any were given.
    dsn: DsnRequest | None = None
    #: The transaction said SMTPUTF8 (RFC 6531), and its BODY= value (RFC 6152, RFC 3030):
    #: what a next hop must offer to take the message as it is.
    smtputf8: bool = False
    body: str | None = None
    #: The error of each target that failed (the message then failed as a whole).
    errors: dict[Target, DeliveryError] = field(default_factory=dict)
    #: Where each copy went, as the journal shows it (``a@example.org/new/NAME``).
    stored: list[str] = field(default_factory=list)
    placed: list[Placed] = field(default_factory=list)
    failure: DeliveryError | None = None

    @property
    def error(self) -> DeliveryError | None:
        """Why the message failed, if it did: SMTP has one reply for all its recipients."""
        if self.failure is not None:
            return self.failure
        return next(iter(self.errors.values()), None)

    def fail(self, error: DeliveryError) -> None:
        if self.failure is None:
            self.failure = error
        self.undo()

    def undo(self) -> None:
        for folder, name in self.placed:
            try:
                os.unlink(name, dir_fd=folder)
            except OSError:
                pass
        self.placed.clear()
        self.stored.clear()
