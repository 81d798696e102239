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

import contextlib
import errno
import os
from collections.abc import Sequence

from smtpkit.delivery.folders import Folders
from smtpkit.delivery.spool import FILE_FLAGS, Spool, delivery_error
from smtpkit.delivery.targets import Delivery, Mailbox, Target, TargetFailed
from smtpkit.errors import DeliveryError
from smtpkit.fsutil import unique_name, write_all

__all__ = ["MaildirStore"]


def _folder(folders: Folders, target: Mailbox, sub: str) -> int:
    """``mailbox/sub`` (``tmp``, ``new``), or ``mailbox/.Folder/sub``, from the data folder
    down without links. A Maildir++ sub-folder that does not exist yet is made first."""
    mailbox = target.path
    users = mailbox.parent
    if not target.folder:
        return folders.get(users.parent, users.name, mailbox.name, sub)
    top = folders.get(users.parent, users.name, mailbox.name)
    _make_subfolder(top, target.folder)
    return folders.get(users.parent, users.name, mailbox.name, target.folder, sub)


def _make_subfolder(mailbox_fd: int, name: str) -> None:
    """Create the Maildir++ folder ``name`` (``.Junk``) of a mailbox when it is missing:
    ``cur``, ``new``, ``tmp`` and the ``maildirfolder`` marker (maildir++ and Dovecot), built
    under a temporary name and renamed, so a reader never sees half a folder. The commit's
    sync makes it durable with the message."""
    try:
        os.stat(name, dir_fd=mailbox_fd, follow_symlinks=False)
        return
    except FileNotFoundError:
        pass
    building = f".{unique_name()}.tmp"
    os.mkdir(building, 0o700, dir_fd=mailbox_fd)
    try:
        fd = os.open(building, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=mailbox_fd)
        try:
            for sub in ("cur", "new", "tmp"):
                os.mkdir(sub, 0o700, dir_fd=fd)
            os.close(os.open("maildirfolder", FILE_FLAGS, 0o600, dir_fd=fd))
        finally:
            os.close(fd)
        os.rename(building, name, src_dir_fd=mailbox_fd, dst_dir_fd=mailbox_fd)
    except OSError as exc:
        _remove_tree(mailbox_fd, building)
        if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
            raise
        # Another worker made it meanwhile.
    except BaseException:
        _remove_tree(mailbox_fd, building)
        raise


def _remove_tree(mailbox_fd: int, building: str) -> None:
    for sub in ("cur", "new", "tmp"):
        with contextlib.suppress(OSError):
            os.rmdir(f"{building}/{sub}", dir_fd=mailbox_fd)
    with contextlib.suppress(OSError):
        os.unlink(f"{building}/maildirfolder", dir_fd=mailbox_fd)
    with contextlib.suppress(OSError):
        os.rmdir(building, dir_fd=mailbox_fd)


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
                new = _folder(folders, target, "new")
                try:
                    spool.place(new, name, consume=take)
                except OSError as exc:
                    if exc.errno != errno.EXDEV:
                        raise
                    _copy_into(spool, folders, target, new, name)
                    if take:
                        spool.remove()
            except DeliveryError as exc:
                raise TargetFailed(target, exc) from None
            except OSError as exc:
                error = delivery_error(exc, f"cannot move message into {target}/new")
                raise TargetFailed(target, error) from None
            delivery.placed.append((new, name))
            delivery.stored.append(f"{target}/new/{name}")


def _copy_into(spool: Spool, folders: Folders, mailbox: Mailbox, new: int, name: str) -> None:
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
