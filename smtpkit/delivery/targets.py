"""Where an accepted recipient's copy goes: a small closed set of frozen target types.

The router turns each accepted recipient into targets; the session collects them; at the end
of the message the commit step hands each target to the store of its type (``STORES`` in
``commit.py``). A new kind of target (the outbound queue, LMTP) is a new frozen type here,
its store module, and a row in ``STORES``: see ARCHITECTURE.md, "Adding a delivery target".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from smtpkit.errors import DeliveryError

__all__ = ["Mailbox", "Target", "TargetFailed"]


@dataclass(frozen=True, slots=True)
class Mailbox:
    """A local user's Maildir, ``DIR/users/<address>`` (the address validated, never raw)."""

    path: Path

    def __str__(self) -> str:
        return self.path.name  # the address: how the journal names a mailbox


#: Every kind of target there is.
Target = Mailbox


class TargetFailed(Exception):
    """A store could not place a message into ``target``; ``error`` says why."""

    def __init__(self, target: Target, error: DeliveryError) -> None:
        super().__init__(str(error))
        self.target = target
        self.error = error
