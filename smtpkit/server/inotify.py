"""Watching a folder for files that appear in it (Linux inotify, through ctypes).

``watch(folder)`` returns a non-blocking descriptor that becomes readable when a file is
renamed into the folder or closed after writing, or -1 where inotify is not available (the
caller then looks at the folder on a timer alone). ``names(fd)`` reads what is pending and
returns the file names; ``None`` means events were lost (the kernel's queue overflowed):
look at the whole folder.
"""

from __future__ import annotations

import ctypes
import os
import struct
from pathlib import Path

__all__ = ["names", "watch"]

_IN_CLOSE_WRITE = 0x00000008
_IN_MOVED_TO = 0x00000080
_IN_Q_OVERFLOW = 0x00004000
_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len


def watch(folder: Path) -> int:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = int(libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC))
        if fd < 0:
            return -1
        if libc.inotify_add_watch(fd, str(folder).encode(), _IN_MOVED_TO | _IN_CLOSE_WRITE) < 0:
            os.close(fd)
            return -1
        return fd
    except (OSError, AttributeError):
        return -1


def names(fd: int) -> list[str] | None:
    found: list[str] = []
    overflow = False
    while True:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not data:
            break
        offset = 0
        while offset + _HEADER.size <= len(data):
            _, mask, _, length = _HEADER.unpack_from(data, offset)
            offset += _HEADER.size
            raw = data[offset : offset + length].split(b"\0", 1)[0]
            offset += length
            if mask & _IN_Q_OVERFLOW:
                overflow = True
            elif raw:
                found.append(os.fsdecode(raw))
    return None if overflow else found
