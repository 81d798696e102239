"""The exception hierarchy of smtpkit.

Library code raises these; only ``smtpkit.commands`` turns them into messages and exit codes.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["ConfigError", "DeliveryError", "SmtpkitError", "UserError"]


class SmtpkitError(Exception):
    """Root of every error smtpkit raises on purpose."""


class ConfigError(SmtpkitError):
    """A configuration problem, located by file and key.

    ``str()`` gives one line such as
    ``server -> max_recipients: must be a positive integer (smtpkit.toml)``.
    """

    def __init__(self, message: str, *, path: Path | str | None = None, key: str | None = None):
        self.message = message
        self.path = Path(path) if path is not None else None
        self.key = key
        super().__init__(str(self))

    def __str__(self) -> str:
        text = f"{self.key}: {self.message}" if self.key else self.message
        if self.path is not None:
            text += f" ({self.path})"
        return text


class UserError(SmtpkitError):
    """A bad address or a mailbox that cannot be added or removed as asked."""


class DeliveryError(SmtpkitError):
    """Storing a message failed: always a temporary failure for the sender (4xx), since the
    cause is ours. ``disk_full`` marks ENOSPC and EDQUOT so that the reply can say
    ``452 4.3.1``."""

    def __init__(self, message: str, *, disk_full: bool = False):
        super().__init__(message)
        self.disk_full = disk_full
