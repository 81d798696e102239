"""Durable file writes: the one helper that Maildir delivery, the config writer and (later) the
queue share (DESIGN convention 9): create with O_CREAT|O_EXCL, write, fsync, rename, fsync the
folder."""

from __future__ import annotations

import itertools
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "atomic_write",
    "fsync_dir",
    "host_part",
    "place_durably",
    "unique_name",
    "write_all",
]

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


def write_all(fd: int, data: bytes | memoryview) -> None:
    """``os.write`` until every byte is written (a write may be short)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def place_durably(
    tmp: Path, target: Path, fill: Callable[[int], None], *, mode: int = 0o600
) -> None:
    """Create ``tmp`` with O_EXCL, let ``fill(fd)`` write it, fsync it and rename it to
    ``target``: readers of ``target`` see the whole file or nothing. On any error ``tmp`` is
    removed and the error raised. The caller fsyncs the folder (alone, or with a batch)."""
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        try:
            fill(fd)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` so that readers see the old or the new file, never half;
    the folder is fsync'd too, so the new file survives a crash."""
    tmp = path.with_name(f".{path.name}.{unique_name()}.tmp")
    place_durably(tmp, path, lambda fd: write_all(fd, data), mode=mode)
    fsync_dir(path.parent)
