"""Helpers of the fault tests: a raw-socket SMTP client, self-checking test messages, the
journal read tolerantly, and killing a server with all its worker processes.

Raw sockets rather than smtplib: the fault tests need the exact reply to every step
(including a 4xx to DATA or to the final dot), and to pause between DATA and the final dot.

A test message starts with ``X-Fault-Id:`` and carries ``X-Fault-Sha256:``, the SHA-256 of
its body, so a stored copy proves on its own whether it is complete: the server only prepends
its trace header (``Return-Path:``, ``Received:``), so everything from ``X-Fault-Id:`` on is
the message exactly as sent.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.smtpreader import Reply, read_reply

__all__ = [
    "Reply",
    "SmtpClient",
    "StoredMessage",
    "alive",
    "descendants",
    "journal_records",
    "kill_tree",
    "listeners",
    "make_body",
    "make_message",
    "parse_stored",
    "port_closed",
    "spool_files",
    "stuff",
]

ID_HEADER = b"X-Fault-Id: "
SUM_HEADER = b"X-Fault-Sha256: "


class SmtpClient:
    """One SMTP session over a plain socket; every method returns the server's reply."""

    def __init__(self, host: str, port: int, timeout: float = 15.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.pending = bytearray()  # bytes received past the last reply read
        self.greeting = self.read_reply()

    def __enter__(self) -> SmtpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def read_reply(self) -> Reply:
        """The next reply; a ConnectionError when the server closed or sent no reply."""
        return read_reply(self.sock, self.pending)

    def command(self, line: str) -> Reply:
        self.sock.sendall(line.encode("ascii") + b"\r\n")
        return self.read_reply()

    def send_body(self, message: bytes) -> Reply:
        """After a 354: the message (CRLF lines), dot-stuffed, then ``<CRLF>.<CRLF>``."""
        self.sock.sendall(stuff(message) + b".\r\n")
        return self.read_reply()

    def send_mail(self, sender: str, recipients: list[str], message: bytes) -> Reply:
        """One transaction; the first reply that is not positive, else the final one."""
        reply = self.command(f"MAIL FROM:<{sender}>")
        if reply.code != 250:
            return reply
        for rcpt in recipients:
            reply = self.command(f"RCPT TO:<{rcpt}>")
            if reply.code != 250:
                self.command("RSET")
                return reply
        reply = self.command("DATA")
        if reply.code != 354:
            return reply
        return self.send_body(message)


def stuff(message: bytes) -> bytes:
    """Dot-stuffing (RFC 5321 4.5.2); the message must end with CRLF."""
    assert message.endswith(b"\r\n")
    stuffed = message.replace(b"\r\n.", b"\r\n..")
    return b"." + stuffed if stuffed.startswith(b".") else stuffed


def make_body(rng: random.Random, size: int) -> bytes:
    """About ``size`` bytes of CRLF text lines (at most 120 octets), some starting with a dot
    so that dot-stuffing is exercised."""
    raw = base64.b64encode(rng.randbytes(size * 3 // 4 + 3))
    lines = []
    pos = 0
    while pos < size:
        width = rng.randint(0, 118)
        line = raw[pos : pos + width]
        pos += width + 2
        if rng.random() < 0.05:
            line = b"." + line
        lines.append(line)
    return b"\r\n".join(lines) + b"\r\n"


def make_message(msg_id: str, recipients: list[str], body: bytes) -> bytes:
    digest = hashlib.sha256(body).hexdigest()
    head = (
        f"X-Fault-Id: {msg_id}\r\n"
        f"X-Fault-Sha256: {digest}\r\n"
        f"From: <fault@remote.test>\r\n"
        f"To: {', '.join(f'<{r}>' for r in recipients)}\r\n"
        f"Subject: fault test {msg_id}\r\n"
        "\r\n"
    )
    return head.encode("ascii") + body


@dataclass(frozen=True)
class StoredMessage:
    msg_id: str
    message: bytes  # from X-Fault-Id: on: the message as the client sent it
    body_ok: bool  # the body matches X-Fault-Sha256


_TRACE = re.compile(rb"\AReturn-Path: <[^>\r\n]*>\r\nReceived: ")


def parse_stored(data: bytes) -> StoredMessage | None:
    """Split a file from ``new/`` into trace header and test message; None when the file is
    not a well-formed test message (a partial file, or not ours)."""
    if not _TRACE.match(data):
        return None
    start = data.find(b"\r\n" + ID_HEADER)
    if start < 0:
        return None
    message = data[start + 2 :]
    head, sep, body = message.partition(b"\r\n\r\n")
    if not sep:
        return None
    lines = head.split(b"\r\n")
    if not lines[0].startswith(ID_HEADER) or not lines[1].startswith(SUM_HEADER):
        return None
    msg_id = lines[0][len(ID_HEADER) :].decode("ascii", "replace")
    digest = lines[1][len(SUM_HEADER) :].decode("ascii", "replace")
    return StoredMessage(msg_id, message, hashlib.sha256(body).hexdigest() == digest)


def journal_records(directory: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Every journal record under ``directory/journal``, and the lines that are not JSON (a
    line cut short by a crash or a full disk is reported, never silently dropped)."""
    records: list[dict[str, Any]] = []
    broken: list[str] = []
    folder = directory / "journal"
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        for line in path.read_bytes().decode("utf-8", "replace").splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                broken.append(line)
                # A cut line followed by a whole one on the same line: keep the whole one.
                cut = line.rfind('{"time":')
                if cut > 0:
                    try:
                        records.append(json.loads(line[cut:]))
                    except ValueError:
                        pass
    return records, broken


def spool_files(directory: Path) -> list[Path]:
    """Every file under ``directory/users`` that is not a delivered message: each mailbox's
    ``tmp/`` and the server's own spool folders (``users/.spool``, the pool of ready spool
    files). Delivered messages are the files in a mailbox's ``new/`` and ``cur/``."""
    users = directory / "users"
    found = []
    for path in users.rglob("*"):
        inside = path.relative_to(users).parts
        delivered = len(inside) == 3 and inside[1] in ("new", "cur")
        # A Maildir's own tmp/new/cur entry, even when a test has turned it into a file.
        structural = len(inside) == 2 and inside[1] in ("new", "cur", "tmp")
        # The workers' locks beside the pool folders (commit, maildrop) are no messages.
        lock = len(inside) == 2 and inside[0] == ".spool" and inside[1].endswith("-lock")
        if not delivered and not structural and not lock and not path.is_dir():
            found.append(path)
    return sorted(found)


def _parents() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, state letter) of every process, from /proc."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces: split after the last ')'.
        fields = stat[stat.rfind(b")") + 2 :].split()
        table[int(name)] = (int(fields[1]), fields[0].decode())
    return table


def descendants(pid: int) -> list[int]:
    """Every living process below ``pid`` (its workers, theirs, ...)."""
    table = _parents()
    found: list[int] = []
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        children = [p for p, (pp, state) in table.items() if pp == parent and state != "Z"]
        found += children
        frontier += children
    return found


def _state(pid: int) -> str:
    """The process state letter from /proc (``R``, ``S``, ``T`` stopped, ``Z`` zombie), or
    ``""`` when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return ""
    return stat[stat.rfind(b")") + 2 :].split()[0].decode()


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (an orphan's zombie may never be reaped
    in a container whose init does not reap). A killed process whose main thread is already
    a zombie still holds its descriptors (the listening socket) until its other threads have
    exited too: it counts as alive until then."""
    state = _state(pid)
    if state == "":
        return False
    if state != "Z":
        return True
    try:
        return len(os.listdir(f"/proc/{pid}/task")) > 1
    except OSError:
        return False


def kill_tree(process: subprocess.Popen[bytes], timeout: float = 10.0) -> list[int]:
    """SIGKILL a server and all its workers, as a crash would; returns the workers' pids.

    The parent is stopped first (SIGSTOP), so that it cannot fork a replacement for a worker
    while the tree is listed and killed, and is killed last: workers that outlived it even
    for a moment would be told to shut down gracefully (PR_SET_PDEATHSIG), not crash."""
    deadline = time.monotonic() + timeout
    process.send_signal(signal.SIGSTOP)
    while _state(process.pid) not in ("T", "t", "Z", ""):
        if time.monotonic() > deadline:
            break
        time.sleep(0.001)
    workers = descendants(process.pid)
    for pid in workers:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=timeout)
    while any(alive(pid) for pid in workers):
        if time.monotonic() > deadline:
            raise RuntimeError(f"workers {workers} survive SIGKILL")
        time.sleep(0.02)
    return workers


def listeners(port: int) -> str:
    """Who listens on or talks to ``port`` (``ss``), for an assertion message."""
    try:
        out = subprocess.run(
            ["ss", "-tanp", f"( sport = :{port} or dport = :{port} )"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"(ss failed: {exc})"
    return out.stdout[-3000:]


def port_closed(host: str, port: int, wait: float = 0.0) -> bool:
    """True when nothing accepts connections on ``host:port`` (within ``wait`` seconds)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            with socket.create_connection((host, port), timeout=2):
                pass
        except ConnectionRefusedError:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
