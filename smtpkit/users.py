"""The user store: one Maildir per address under ``DIR/users/<address>/``.

Only addresses that pass ``smtpkit.addresses.normalize_address`` become folder names, so no
``/``, ``..``, NUL or control character ever reaches a path. A folder is named by the
canonical address: lower-case, the domain as its A-label, and an international local part in
NFC (``müller@xn--bcher-kva.example``), so each spelling of an address finds the one folder.

A mailbox is a Maildir++ tree, as Dovecot and mutt keep it: the inbox (``new/``, ``cur/``,
``tmp/``) and one hidden sub-folder per IMAP folder (``.Archive/``, ``.Sent/``, ...), each
with its own ``new/`` and ``cur/``. Counts cover the whole tree.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from smtpkit.addresses import normalize_address
from smtpkit.errors import UserError
from smtpkit.fsutil import fsync_dir, make_dirs

__all__ = [
    "INBOX",
    "MAILDIR_SUBDIRS",
    "FolderCount",
    "MailCount",
    "MailboxNotEmpty",
    "NoUsersFolder",
    "UserInfo",
    "UserStore",
    "is_seen",
]

MAILDIR_SUBDIRS = ("tmp", "new", "cur")
INBOX = "INBOX"  # the name IMAP gives the Maildir's top folder
# A message file's name is "<unique>:2,<flags>" once a client has looked at it (maildir(5));
# the flags are letters in ASCII order, "S" meaning seen.
_INFO = ":2,"


def is_seen(name: str) -> bool:
    """True when a Maildir file name carries the ``S`` (seen) flag in its info part."""
    _, sep, flags = name.rpartition(_INFO)
    return bool(sep) and "S" in flags


@dataclass(frozen=True, slots=True)
class FolderCount:
    """Messages in one folder of a mailbox: ``new`` have no S flag (unread, whether still in
    ``new/`` or already in ``cur/``), ``seen`` have it."""

    name: str
    new: int
    seen: int

    @property
    def total(self) -> int:
        return self.new + self.seen


@dataclass(frozen=True, slots=True)
class MailCount:
    """Messages in a whole mailbox, per folder (the inbox first, then by name)."""

    folders: tuple[FolderCount, ...]

    @property
    def new(self) -> int:
        return sum(f.new for f in self.folders)

    @property
    def seen(self) -> int:
        return sum(f.seen for f in self.folders)

    @property
    def total(self) -> int:
        return self.new + self.seen

    def describe(self) -> str:
        """``3 messages (1 in INBOX, 2 in Archive)``: the folders that hold any."""
        where = ", ".join(f"{f.total} in {f.name}" for f in self.folders if f.total)
        noun = "message" if self.total == 1 else "messages"
        return f"{self.total} {noun} ({where})" if where else f"no {noun}"


@dataclass(frozen=True, slots=True)
class UserInfo:
    address: str
    path: Path
    new: int
    seen: int
    folders: tuple[FolderCount, ...] = ()


class NoUsersFolder(UserError):
    """The data folder has no ``users/``: it was never set up with ``smtpkit init``."""

    def __init__(self, users_dir: Path) -> None:
        super().__init__(f"no users folder at {users_dir} (run `smtpkit init` first)")
        self.users_dir = users_dir


class MailboxNotEmpty(UserError):
    """A mailbox holding mail was to be removed without ``force``."""

    def __init__(self, address: str, count: MailCount) -> None:
        super().__init__(
            f"not removing {address}: its mailbox holds {count.describe()} "
            "(use --force to remove it anyway)"
        )
        self.address = address
        self.count = count


class UserStore:
    """Users of the local domains, stored as Maildir folders."""

    def __init__(self, users_dir: Path, domains: tuple[str, ...]) -> None:
        self.users_dir = users_dir
        self.domains = domains

    def normalize(self, address: str) -> str:
        """Validate a local address; returns its canonical form or raises ``UserError``.

        UTF-8 addresses are taken (``utf8=True``): the store names their mailboxes whoever
        asks. Whether a client may name one is decided before this: the router refuses any
        non-ASCII recipient outside a transaction whose MAIL said SMTPUTF8.
        """
        return normalize_address(address, self.domains, utf8=True)

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

    def require_folder(self) -> None:
        """Raise ``NoUsersFolder`` unless ``users/`` exists. Nothing here creates it: that is
        ``smtpkit init``'s job, which gives it its owner and mode."""
        if not self.users_dir.is_dir():
            raise NoUsersFolder(self.users_dir)

    def add(self, address: str) -> Path:
        """Create the Maildir for ``address``; refuses an existing user."""
        canonical = self.normalize(address)
        path = self.users_dir / canonical
        self.require_folder()
        if os.path.lexists(path):
            raise UserError(f"user {canonical} already exists ({path})")
        try:
            # Build in a hidden folder and rename, so a crash never leaves half a Maildir that
            # the server would deliver to.
            staging = self.users_dir / f".adding.{canonical}"
            _remove_tree(staging)
            make_dirs(staging, 0o700)
            for sub in MAILDIR_SUBDIRS:
                make_dirs(staging / sub, 0o700)
            fsync_dir(staging)
            staging.rename(path)
            fsync_dir(self.users_dir)
        except OSError as exc:
            raise UserError(f"cannot create mailbox {path}: {exc.strerror}") from None
        return path

    def count(self, address: str) -> MailCount:
        """The messages in every folder of ``address``'s mailbox."""
        return _count_mailbox(self.users_dir / self.normalize(address))

    def remove(self, address: str, *, force: bool = False) -> MailCount:
        """Delete a user's Maildir and return what it held; a mailbox holding mail in any
        folder needs ``force`` (else ``MailboxNotEmpty``)."""
        canonical = self.normalize(address)
        path = self.users_dir / canonical
        if path.is_symlink() or not path.is_dir():
            raise UserError(f"no such user: {canonical}")
        if not force:
            held = _count_mailbox(path)
            if held.total:
                raise MailboxNotEmpty(canonical, held)
        doomed = self.users_dir / f".removing.{canonical}"
        try:
            _remove_tree(doomed)  # left by a removal that crashed half-way
            # Rename first: the server stops seeing the user at once, and a failure half-way
            # through the deletion leaves no half-mailbox under the user's name.
            path.rename(doomed)
            fsync_dir(self.users_dir)
            # Counted again once out of the server's sight: the count reported is what is
            # deleted, and mail that arrived since the check above is not lost silently.
            held = _count_mailbox(doomed)
            if held.total and not force:
                doomed.rename(path)
                fsync_dir(self.users_dir)
                raise MailboxNotEmpty(canonical, held)
            shutil.rmtree(doomed)
        except OSError as exc:
            raise UserError(f"cannot remove mailbox {path}: {exc.strerror}") from None
        return held

    def addresses(self) -> list[str]:
        """The addresses that have a mailbox, sorted, without reading any mailbox."""
        return [name for name, _ in self._entries()]

    def list(self) -> list[UserInfo]:
        """All users, sorted by address, with counts of unread (``new``) and seen messages
        over every folder of their mailbox."""
        users = []
        for name, path in self._entries():
            count = _count_mailbox(path)
            users.append(UserInfo(name, path, count.new, count.seen, count.folders))
        return users

    def _entries(self) -> Iterator[tuple[str, Path]]:
        """Mailbox folders: hidden ones (the spool, mailboxes being added or removed) and
        anything that is not a folder named by a plain address (``lost+found``) left out."""
        try:
            with os.scandir(self.users_dir) as it:
                entries = sorted(it, key=lambda e: e.name)
        except FileNotFoundError:
            return
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
                continue
            try:
                if normalize_address(entry.name, utf8=True) != entry.name:
                    continue
            except UserError:
                continue
            yield entry.name, Path(entry.path)


def _remove_tree(path: Path) -> None:
    """Remove a leftover file or folder (a crashed add or remove), following no link."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def _folders(mailbox: Path) -> Iterator[tuple[str, Path]]:
    """The inbox, then each Maildir++ sub-folder (``.Name/``, never through a symbolic link),
    as (IMAP name, path)."""
    yield INBOX, mailbox
    try:
        with os.scandir(mailbox) as it:
            subs = sorted(
                e.name
                for e in it
                if e.name.startswith(".") and len(e.name) > 1 and e.is_dir(follow_symlinks=False)
            )
    except FileNotFoundError:
        return
    for name in subs:
        yield name[1:], mailbox / name


def _count_mailbox(mailbox: Path) -> MailCount:
    folders = []
    for name, path in _folders(mailbox):
        new = seen = 0
        for sub in ("new", "cur"):
            for message in _messages(path / sub):
                if is_seen(message):
                    seen += 1
                else:
                    new += 1
        folders.append(FolderCount(name, new, seen))
    return MailCount(tuple(folders))


def _messages(folder: Path) -> list[str]:
    """Names of the message files in one ``new/`` or ``cur/`` (no hidden file, no folder)."""
    if folder.is_symlink():
        return []
    try:
        with os.scandir(folder) as it:
            return [
                e.name
                for e in it
                if not e.name.startswith(".") and not e.is_dir(follow_symlinks=False)
            ]
    except (FileNotFoundError, NotADirectoryError):
        return []
