"""The user store: one Maildir per address under ``DIR/users/<address>/``.

Only addresses that pass ``smtpkit.addresses.normalize_address`` become folder names, so no
``/``, ``..``, NUL or control character ever reaches a path.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from smtpkit.addresses import normalize_address
from smtpkit.errors import UserError
from smtpkit.fsutil import fsync_dir, make_dirs

__all__ = ["MAILDIR_SUBDIRS", "UserInfo", "UserStore"]

MAILDIR_SUBDIRS = ("tmp", "new", "cur")


@dataclass(frozen=True, slots=True)
class UserInfo:
    address: str
    path: Path
    new: int
    seen: int


class UserStore:
    """Users of the local domains, stored as Maildir folders."""

    def __init__(self, users_dir: Path, domains: tuple[str, ...]) -> None:
        self.users_dir = users_dir
        self.domains = domains

    def normalize(self, address: str) -> str:
        """Validate a local address; returns its lower-cased form or raises ``UserError``."""
        return normalize_address(address, self.domains)

    def mailbox(self, address: str) -> Path:
        """The Maildir of a (validated) address; it may not exist."""
        return self.users_dir / self.normalize(address)

    def exists(self, address: str) -> bool:
        """True when ``address`` is a valid local address with a mailbox folder (a damaged
        Maildir still exists: delivery then fails with a 4xx, never a permanent 550)."""
        try:
            path = self.mailbox(address)
        except UserError:
            return False
        return path.is_dir()

    def add(self, address: str) -> Path:
        """Create the Maildir for ``address``; refuses an existing user."""
        canonical = self.normalize(address)
        path = self.users_dir / canonical
        if path.exists():
            raise UserError(f"user {canonical} already exists ({path})")
        try:
            make_dirs(self.users_dir, 0o700)
            # Build in a hidden folder and rename, so a crash never leaves half a Maildir that
            # the server would deliver to.
            staging = self.users_dir / f".adding.{canonical}"
            if staging.exists():
                shutil.rmtree(staging)
            staging.mkdir(mode=0o700)
            for sub in MAILDIR_SUBDIRS:
                (staging / sub).mkdir(mode=0o700)
            fsync_dir(staging)
            staging.rename(path)
            fsync_dir(self.users_dir)
        except OSError as exc:
            raise UserError(f"cannot create mailbox {path}: {exc.strerror}") from None
        return path

    def remove(self, address: str, *, force: bool = False) -> None:
        """Delete a user's Maildir; a mailbox holding mail needs ``force``."""
        canonical = self.normalize(address)
        path = self.users_dir / canonical
        if not path.is_dir():
            raise UserError(f"no such user: {canonical}")
        count = sum(self._count(path / sub) for sub in MAILDIR_SUBDIRS)
        if count and not force:
            raise UserError(
                f"mailbox of {canonical} holds {count} message(s); use --force to delete it"
            )
        try:
            # Rename first: the server stops seeing the user at once, and a failure half-way
            # through the deletion leaves no half-mailbox under the user's name.
            doomed = self.users_dir / f".removing.{canonical}"
            path.rename(doomed)
            fsync_dir(self.users_dir)
            shutil.rmtree(doomed)
        except OSError as exc:
            raise UserError(f"cannot remove mailbox {path}: {exc.strerror}") from None

    def list(self) -> list[UserInfo]:
        """All users, sorted by address, with counts of new and seen (``cur/``) messages."""
        try:
            entries = sorted(os.scandir(self.users_dir), key=lambda e: e.name)
        except FileNotFoundError:
            return []
        users = []
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_dir():
                continue
            path = Path(entry.path)
            users.append(
                UserInfo(entry.name, path, self._count(path / "new"), self._count(path / "cur"))
            )
        return users

    @staticmethod
    def _count(folder: Path) -> int:
        try:
            with os.scandir(folder) as it:
                return sum(1 for e in it if not e.name.startswith("."))
        except FileNotFoundError:
            return 0
