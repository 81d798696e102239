"""Durable file writes: the one helper that Maildir delivery, the config writer and (later) the
queue share (DESIGN convention 9): create with O_CREAT|O_EXCL, write, fsync, rename, fsync the
folder."""

from __future__ import annotations

import itertools
import os
import socket
import time
from pathlib import Path

__all__ = ["atomic_write", "fsync_dir", "host_part", "unique_name"]

_counter = itertools.count()


def fsync_dir(path: Path | str) -> None:
    """fsync a folder so that a rename or create inside it survives a crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def host_part() -> str:
    """The host name as Maildir wants it in file names: '/' and ':' escaped (maildir(5))."""
    return socket.gethostname().replace("/", r"\057").replace(":", r"\072") or "localhost"


_HOST = host_part()


def unique_name() -> str:
    """A Maildir-style unique name ``<sec>.M<usec>P<pid>Q<n>.<host>``.

    The pid and a per-process counter make it unique within this host; the microseconds make
    it unique across restarts that reuse a pid.
    """
    now = time.time()
    sec = int(now)
    usec = int((now - sec) * 1_000_000)
    return f"{sec}.M{usec}P{os.getpid()}Q{next(_counter)}.{_HOST}"


def atomic_write(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` so that readers see the old or the new file, never half.

    The temporary file is created next to ``path`` with O_EXCL, fsync'd, renamed over ``path``,
    and the folder is fsync'd. On any error the temporary file is removed and the error raised.
    """
    tmp = path.with_name(f".{path.name}.{unique_name()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
