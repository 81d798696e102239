"""Durable file writes: the one helper that Maildir delivery, the config writer and (later) the
queue share (ARCHITECTURE.md, "Durability"): create with O_CREAT|O_EXCL, write, fsync, rename,
fsync the folder."""

from __future__ import annotations

import errno
import itertools
import os
import socket
import stat
import time
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "atomic_write",
    "fsync_dir",
    "make_dirs",
    "open_below",
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


_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def open_below(base: Path, *parts: str) -> int:
    """A descriptor of the folder ``base/parts...``, following no symbolic link below
    ``base`` (``base`` itself is the admin's choice and may be one). Raises ``OSError``:
    ``ELOOP`` when a part is a symbolic link, ``ENOTDIR`` when it is no folder."""
    fd = os.open(base, _DIRECTORY_FLAGS)
    try:
        for part in parts:
            try:
                inner = os.open(part, _DIRECTORY_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
            except NotADirectoryError:
                # Linux says ENOTDIR, not ELOOP, for a link opened with O_DIRECTORY: tell
                # the two apart, since a planted link is worth naming as such.
                if stat.S_ISLNK(os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode):
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), part) from None
                raise
            os.close(fd)
            fd = inner
    except BaseException:
        os.close(fd)
        raise
    return fd


def make_dirs(path: Path, mode: int = 0o750) -> None:
    """Create ``path`` and any missing parents with exactly ``mode``, whatever the umask
    (``mkdir`` applies the umask: under umask 000 the default is 0777). Folders that exist
    are left as they are."""
    missing: list[Path] = []
    top = path
    while not os.path.lexists(top):
        missing.append(top)
        top = top.parent
    if not missing and not path.is_dir():
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path))
    for folder in reversed(missing):
        try:
            os.mkdir(folder, mode)
        except FileExistsError:
            if not folder.is_dir():
                raise
            continue
        os.chmod(folder, mode)


def host_part() -> str:
    """The host name as Maildir wants it in file names: '/' and ':' escaped (maildir(5))."""
    return socket.gethostname().replace("/", r"\057").replace(":", r"\072") or "localhost"


_HOST = host_part()
#: This process's id and eight random hex digits, drawn again in a forked child: a name
#: is made for every message, and asking the kernel for the pid each time costs a call.
_PROCESS: tuple[int, str]


def _draw_process() -> None:
    global _PROCESS
    _PROCESS = (os.getpid(), os.urandom(4).hex())


_draw_process()
os.register_at_fork(after_in_child=_draw_process)


def unique_name() -> str:
    """A Maildir-style unique name ``<sec>.M<usec>P<pid>Q<n>R<random>.<host>``.

    The pid and a per-process counter make it unique within this host; the microseconds make
    it unique across restarts that reuse a pid. The random part (maildir(5)'s ``R``) keeps
    it unique across machines that share a host name and pid numbers, as containers of one
    image do: several nodes writing into one store never pick the same name.
    """
    now = time.time()
    sec = int(now)
    usec = int((now - sec) * 1_000_000)
    pid, random_part = _PROCESS
    return f"{sec}.M{usec}P{pid}Q{next(_counter)}R{random_part}.{_HOST}"


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
