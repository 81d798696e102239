"""The Maildir store: places a spooled message into the ``new/`` folder of each local mailbox.

Placing is one step of the group commit in ``commit.py`` (ARCHITECTURE.md, "Durability"):
the spool file's data is already durable when it is linked (or, for the last copy, renamed)
into ``new/``, and the commit makes the folders durable before any ``250``. Copies for
several mailboxes are hard links of one file: the stored bytes are identical (the Received
header names a recipient only when there is one, RFC 5321 7.2), and Maildir readers treat
each link as an independent message. A mailbox on another filesystem, where no link
reaches, gets a copy made the usual way (its own ``tmp/``, fsync, rename).

Every folder is opened through descriptors from the data folder down, following no symbolic
link (``open_folder``): a link planted in a Maildir is refused, never followed.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from pathlib import Path

from smtpkit.delivery.spool import FILE_FLAGS, Spool, delivery_error
from smtpkit.delivery.targets import Mailbox, TargetFailed
from smtpkit.errors import DeliveryError
from smtpkit.fsutil import open_below, unique_name, write_all

__all__ = ["Folders", "MaildirStore", "Placed", "open_folder"]

#: (folder descriptor, file name) of a file placed, so that it can be undone.
Placed = tuple[int, str]


def open_folder(mailbox: Path, sub: str) -> int:
    """A descriptor of ``mailbox/sub`` (``tmp``, ``new``): no symbolic link is followed from
    the data folder down (``users``, the mailbox, the sub-folder)."""
    users = mailbox.parent
    return open_below(users.parent, users.name, mailbox.name, sub)


class Folders:
    """The folders one commit touches, each opened once, safely, and closed at its end."""

    def __init__(self) -> None:
        self.fds: dict[tuple[Path, str], int] = {}
        self.names: dict[int, str] = {}

    def get(self, mailbox: Path, sub: str) -> int:
        fd = self.fds.get((mailbox, sub))
        if fd is None:
            try:
                fd = open_folder(mailbox, sub)
            except OSError as exc:
                raise delivery_error(exc, f"cannot open {mailbox}/{sub}") from None
            self.fds[(mailbox, sub)] = fd
            self.names[fd] = f"{mailbox}/{sub}"
        return fd

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()
        self.names.clear()


class MaildirStore:
    """Places messages into local Maildirs."""

    def place(
        self,
        spool: Spool,
        targets: Sequence[Mailbox],
        folders: Folders,
        placed: list[Placed],
        stored: list[str],
        *,
        consume: bool,
    ) -> None:
        """Link the spool file into each target's ``new/``; the last one may take the file
        itself (``consume``). Appends what it placed to ``placed`` (for undo and the folder
        sync) and ``stored`` (for the journal). Raises ``TargetFailed``."""
        last = len(targets) - 1
        for i, mailbox in enumerate(targets):
            take = consume and i == last
            name = spool.name if take else unique_name()
            try:
                new = folders.get(mailbox.path, "new")
                try:
                    spool.place(new, name, consume=take)
                except OSError as exc:
                    if exc.errno != errno.EXDEV:
                        raise
                    _copy_into(spool, folders, mailbox.path, new, name)
                    if take:
                        spool.remove()
            except DeliveryError as exc:
                raise TargetFailed(mailbox, exc) from None
            except OSError as exc:
                error = delivery_error(exc, f"cannot move message into {mailbox}/new")
                raise TargetFailed(mailbox, error) from None
            placed.append((new, name))
            stored.append(f"{mailbox}/new/{name}")


def _copy_into(spool: Spool, folders: Folders, mailbox: Path, new: int, name: str) -> None:
    """A durable copy for a mailbox on another filesystem: its own tmp/, fsync, rename into
    new/ (the folder is synced with the commit)."""
    tmp = folders.get(mailbox, "tmp")
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
