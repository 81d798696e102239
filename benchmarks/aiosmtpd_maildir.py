"""aiosmtpd with a durable Maildir handler: the fair peer smtpkit is measured against.

Every message is made durable before ``250``, by the same recipe smtpkit follows: a new file in
``tmp/`` (``O_CREAT|O_EXCL``, mode 0600), write, ``fsync``, rename into ``new/``, ``fsync`` the
folder. The blocking part runs in a worker thread (``loop.run_in_executor``), so aiosmtpd's
event loop keeps serving the other sessions while one message waits for the disk.

    python -m benchmarks.aiosmtpd_maildir --port 2526 --maildir /tmp/box

Runs until SIGTERM or SIGINT. Needs the ``bench`` extra: ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

__all__ = ["DurableMaildirHandler", "main"]


class DurableMaildirHandler:
    """aiosmtpd handler: store each message as one fsync'd file in ``maildir/new``."""

    def __init__(self, maildir: Path) -> None:
        self.maildir = maildir
        self.tmp = maildir / "tmp"
        self.new = maildir / "new"
        for sub in ("tmp", "new", "cur"):
            (maildir / sub).mkdir(parents=True, exist_ok=True)
        # maildir(5) names: <seconds>.M<usec>P<pid>Q<counter>.<host>, unique per delivery.
        self._host = socket.gethostname().replace("/", r"\057").replace(":", r"\072")
        self._pid = os.getpid()
        self._counter = itertools.count()

    def _unique_name(self) -> str:
        now = time.time()
        usec = int((now % 1) * 1_000_000)
        return f"{int(now)}.M{usec}P{self._pid}Q{next(self._counter)}.{self._host}"

    def store(self, data: bytes) -> str:
        """Write ``data`` durably into ``new/`` (blocking: call it off the event loop)."""
        name = self._unique_name()
        temporary = self.tmp / name
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(temporary)
            raise
        os.close(fd)
        os.rename(temporary, self.new / name)
        folder = os.open(self.new, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
        return name

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or envelope.content or b""
        if isinstance(content, str):
            content = content.encode("utf-8", "surrogateescape")
        head = f"Return-Path: <{envelope.mail_from or ''}>\r\n".encode("utf-8", "replace")
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, self.store, head + content)
        except OSError:
            return "451 4.3.0 Could not store the message, try again later"
        return "250 2.0.0 Message stored"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="aiosmtpd with a durable Maildir handler")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--maildir", type=Path, required=True)
    parser.add_argument("--hostname", default="bench.test", help="name in the greeting")
    parser.add_argument(
        "--threads", type=int, default=0, help="disk worker threads (default: asyncio's own)"
    )
    args = parser.parse_args(argv)

    handler = DurableMaildirHandler(args.maildir)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    if args.threads > 0:
        loop.set_default_executor(ThreadPoolExecutor(max_workers=args.threads))

    def factory() -> Any:
        # A fixed hostname: otherwise aiosmtpd resolves the machine's FQDN per connection.
        return SMTP(handler, hostname=args.hostname, loop=loop)

    server = loop.run_until_complete(
        loop.create_server(factory, host=args.host, port=args.port, backlog=1024)
    )
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, loop.stop)
    try:
        loop.run_forever()
    finally:
        server.close()
        loop.run_until_complete(server.wait_closed())
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
