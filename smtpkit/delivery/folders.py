"""The folders one commit touches, each opened once through descriptors, following no
symbolic link below the data folder, and closed at the end of the commit."""

from __future__ import annotations

import os
from pathlib import Path

from smtpkit.delivery.spool import delivery_error
from smtpkit.fsutil import open_below

__all__ = ["Folders"]


class Folders:
    """``get(base, *parts)``: a descriptor of ``base/parts...`` (``base`` is the data
    folder, which may be a link; nothing below it is followed)."""

    def __init__(self) -> None:
        self.fds: dict[tuple[Path, tuple[str, ...]], int] = {}
        self.names: dict[int, str] = {}

    def get(self, base: Path, *parts: str) -> int:
        key = (base, parts)
        fd = self.fds.get(key)
        if fd is None:
            where = base.joinpath(*parts)
            try:
                fd = open_below(base, *parts)
            except OSError as exc:
                raise delivery_error(exc, f"cannot open {where}") from None
            self.fds[key] = fd
            self.names[fd] = str(where)
        return fd

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()
        self.names.clear()
