"""The data folder's owner: the one user every file under the data folder belongs to.

``smtpkit init DIR --owner NAME`` makes NAME the owner of DIR. From then on, whoever runs a
command, files under DIR are written *as* that user: a command run by root first takes the
owner's identity (``as_owner``), so root never creates a file the service cannot use and
never follows a link the service user could have planted; ``smtpkit serve`` started by root
binds its ports and then runs its workers as the owner (``drop_to``). The owner is simply
whoever owns DIR (``stat``), so there is nothing to configure twice.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from smtpkit.errors import SmtpkitError

__all__ = [
    "Owner",
    "OwnerError",
    "as_owner",
    "drop_to",
    "group_name",
    "lookup_user",
    "owner_of",
]


class OwnerError(SmtpkitError):
    """No such user, or the identity could not be taken."""


@dataclass(frozen=True, slots=True)
class Owner:
    uid: int
    gid: int
    name: str

    @property
    def is_root(self) -> bool:
        return self.uid == 0


def _name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def lookup_user(name: str) -> Owner:
    """The user ``name`` (a name or a numeric uid) with its primary group."""
    try:
        entry = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except (KeyError, OverflowError):
        raise OwnerError(
            f"no such user: {name!r} (create it first, e.g. useradd --system {name})"
        ) from None
    return Owner(entry.pw_uid, entry.pw_gid, entry.pw_name)


def owner_of(directory: Path) -> Owner:
    """Who owns the data folder ``directory`` (uid and gid of the folder itself)."""
    info = os.stat(directory)
    return Owner(info.st_uid, info.st_gid, _name(info.st_uid))


def group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


@contextlib.contextmanager
def as_owner(directory: Path) -> Iterator[Owner]:
    """Within the block, act as the owner of ``directory`` (effective uid and gid, no
    supplementary groups) when running as root; otherwise change nothing. Root's identity
    comes back at the end, so a command can still write root's own files (the config in
    /etc) afterwards."""
    owner = owner_of(directory)
    if os.geteuid() != 0 or owner.is_root:
        yield owner
        return
    groups = os.getgroups()
    egid = os.getegid()
    try:
        os.setgroups([])
        os.setegid(owner.gid)
        os.seteuid(owner.uid)
    except OSError as exc:
        _restore(egid, groups)
        raise OwnerError(f"cannot act as {owner.name}: {exc.strerror}") from None
    try:
        yield owner
    finally:
        _restore(egid, groups)


def _restore(egid: int, groups: list[int]) -> None:
    os.seteuid(0)
    os.setegid(egid)
    os.setgroups(groups)


def drop_to(owner: Owner) -> None:
    """Become ``owner`` for good (real, effective and saved ids; no supplementary groups),
    as a worker does once root has bound the ports."""
    try:
        os.setgroups([])
        os.setresgid(owner.gid, owner.gid, owner.gid)
        os.setresuid(owner.uid, owner.uid, owner.uid)
    except OSError as exc:
        raise OwnerError(f"cannot run as {owner.name}: {exc.strerror}") from None
