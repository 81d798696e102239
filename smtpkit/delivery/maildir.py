"""The Maildir store: places a spooled message into the ``new/`` folder of each local mailbox.

Placing is one step of the group commit in ``commit.py`` (ARCHITECTURE.md, "Durability"):
the spool file's data is already durable when it is linked (or, for the last copy, renamed)
into ``new/``, and the commit makes the folders durable before any ``250``. Copies for
several mailboxes are hard links of one file: the stored bytes are identical (the Received
header names a recipient only when there is one, RFC 5321 7.2), and Maildir readers treat
each link as an independent message. A mailbox on another filesystem, where no link
reaches, gets a copy made the usual way (its own ``tmp/``, fsync, rename).

Every folder is opened through descriptors from the data folder down, following no symbolic
link (``Folders``): a link planted in a Maildir is refused, never followed.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from pathlib import Path

from smtpkit.delivery.folders import Folders
from smtpkit.delivery.spool import FILE_FLAGS, Spool, delivery_error
from smtpkit.delivery.targets import Delivery, Mailbox, Target, TargetFailed
from smtpkit.errors import DeliveryError
from smtpkit.fsutil import unique_name, write_all

__all__ = ["MaildirStore"]


def _folder(folders: Folders, mailbox: Path, sub: str) -> int:
    """``mailbox/sub`` (``tmp``, ``new``), from the data folder down without links."""
    users = mailbox.parent
    return folders.get(users.parent, users.name, mailbox.name, sub)


class MaildirStore:
    """Places messages into local Maildirs."""

    def place(
        self,
        delivery: Delivery,
        targets: Sequence[Target],
        folders: Folders,
        *,
        consume: bool,
    ) -> None:
        """Link the spool file into each target's ``new/``; the last one may take the file
        itself (``consume``). Records what it placed on ``delivery`` (for undo, the folder
        sync and the journal). Raises ``TargetFailed``."""
        spool = delivery.spool
        last = len(targets) - 1
        for i, target in enumerate(targets):
            assert isinstance(target, Mailbox)
            take = consume and i == last
            name = spool.name if take else unique_name()
            try:
                new = _folder(folders, target.path, "new")
                try:
                    spool.place(new, name, consume=take)
                except OSError as exc:
                    if exc.errno != errno.EXDEV:
                        raise
                    _copy_into(spool, folders, target.path, new, name)
                    if take:
                        spool.remove()
            except DeliveryError as exc:
                raise TargetFailed(target, exc) from None
            except OSError as exc:
                error = delivery_error(exc, f"cannot move message into {target}/new")
                raise TargetFailed(target, error) from None
            delivery.placed.append((new, name))
            delivery.stored.append(f"{target}/new/{name}")


def _copy_into(spool: Spool, folders: Folders, mailbox: Path, new: int, name: str) -> None:
    """A durable copy for a mailbox on another filesystem: its own tmp/, fsync, rename into
    new/ (the folder is synced with the commit)."""
    tmp = _folder(folders, mailbox, "tmp")
    fd = os.open(name, FILE_FLAGS, 0o600, dir_fd=tmp)
    try:
        try:
            with os.fdopen(spool.open_read(), "rb") as src:
                while chunk := src.read(1 << 20):
                    write_all(fd, chunk)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(name, name, src_dir_fd=tmp, dst_dir_fd=new)
    except BaseException:
        try:
            os.unlink(name, dir_fd=tmp)
        except OSError:
            pass
        raise
