"""Who may change the queue, and how commands reach a running queue runner.

One process at a time changes queue entries: the one holding ``DIR/queue/.lock``. The
runner holds it for as long as it runs; ``smtpkit queue`` takes it for a moment when no
runner does, and changes the files itself. When a runner holds it, the command writes a
request (``DIR/queue/.request-<random>``, JSON, renamed into place whole); the runner sees it
at once (inotify), carries it out, and removes the file; the command waits for that.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from smtpkit.errors import SmtpkitError
from smtpkit.fsutil import atomic_write

__all__ = [
    "LOCK_NAME",
    "REQUEST_PREFIX",
    "Request",
    "RequestError",
    "open_lock",
    "pending_requests",
    "queue_lock",
    "read_request",
    "send_request",
]

LOCK_NAME = ".lock"
REQUEST_PREFIX = ".request-"
#: What a request may ask.
OPERATIONS = ("flush", "delete", "bounce")


class RequestError(SmtpkitError):
    """A request that the runner did not carry out in time."""


@dataclass(frozen=True, slots=True)
class Request:
    operation: str  # one of OPERATIONS
    entry_id: str | None  # None: every entry (flush only)


def open_lock(queue_dir: Path) -> int:
    """The lock file's descriptor (created when missing)."""
    return os.open(
        queue_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600
    )


def try_lock(fd: int) -> bool:
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


@contextlib.contextmanager
def queue_lock(queue_dir: Path) -> Iterator[bool]:
    """Yields True holding the lock (no runner is running), False when a runner holds it."""
    fd = open_lock(queue_dir)
    try:
        yield try_lock(fd)
    finally:
        os.close(fd)  # closing releases the lock


def send_request(queue_dir: Path, request: Request, timeout: float = 30.0) -> None:
    """Hand ``request`` to the running runner and wait until it is done."""
    name = REQUEST_PREFIX + secrets.token_hex(8)
    path = queue_dir / name
    body = {"operation": request.operation, "id": request.entry_id}
    atomic_write(path, (json.dumps(body) + "\n").encode(), mode=0o600)
    deadline = time.monotonic() + timeout
    delay = 0.01
    while path.exists():
        if time.monotonic() > deadline:
            with contextlib.suppress(OSError):
                path.unlink()
            raise RequestError(
                f"the running server did not take the request within {timeout:g}s "
                "(is it stuck? see `smtpkit journal tail`)"
            )
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def pending_requests(queue_dir: Path) -> list[Path]:
    try:
        names = os.listdir(queue_dir)
    except FileNotFoundError:
        return []
    return sorted(queue_dir / n for n in names if n.startswith(REQUEST_PREFIX))


def read_request(path: Path) -> Request | None:
    """The request in ``path``, or None for one that is not well-formed."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("operation") not in OPERATIONS:
        return None
    entry_id = data.get("id")
    if entry_id is not None and not isinstance(entry_id, str):
        return None
    return Request(str(data["operation"]), entry_id)
