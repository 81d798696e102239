"""Load: 200 concurrent sessions sending for a bounded time against a real ``smtpkit serve``.

Every message carries a unique id. At the end the ids acknowledged with 250 must be exactly
the ids found in the mailboxes' ``new/`` folders (none lost, none stored twice), and every
reply the clients saw must be the expected one.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import make_server
from tests.smtpreader import read_reply

SESSIONS = int(os.environ.get("SMTPKIT_LOAD_SESSIONS", "200"))
SECONDS = float(os.environ.get("SMTPKIT_LOAD_SECONDS", "15"))
USERS = ("alice@example.org", "bob@example.org")
ID_HEADER = b"X-Load-Id: "


class Go:
    """The start signal, carrying the common deadline."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.deadline = 0.0

    def set(self, deadline: float) -> None:
        self.deadline = deadline
        self._event.set()

    def wait(self) -> float:
        if not self._event.wait(timeout=60):
            raise TimeoutError("no start signal")
        return self.deadline


@dataclass
class Tally:
    acked: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    replies: int = 0


class Session:
    """One pipelining client: MAIL, RCPT and DATA in one write, then the message."""

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port), timeout=60)
        self.pending = bytearray()  # pipelined replies not read yet

    def reply(self) -> bytes:
        """The last line of the next reply, without its CRLF."""
        return read_reply(self.sock, self.pending).lines[-1][:-2]


def run_session(index: int, host: str, port: int, ready: threading.Barrier, go: Go) -> Tally:
    tally = Tally()

    def expect(got: bytes, prefix: bytes, step: str) -> bool:
        tally.replies += 1
        if not got.startswith(prefix):
            tally.unexpected.append(f"session {index} {step}: {got!r}")
            return False
        return True

    rcpt = USERS[index % len(USERS)].encode()
    try:
        s = Session(host, port)
        expect(s.reply(), b"220 ", "greeting")
        s.sock.sendall(b"EHLO load%d.example\r\n" % index)
        expect(s.reply(), b"250 ", "EHLO")
        ready.wait(timeout=60)  # every session is open before the first message
        stop = go.wait()
        n = 0
        while time.monotonic() < stop:
            n += 1
            msg_id = f"{index}.{n}"
            s.sock.sendall(b"MAIL FROM:<load@remote.example>\r\nRCPT TO:<%s>\r\nDATA\r\n" % rcpt)
            ok = expect(s.reply(), b"250 2.1.0 ", "MAIL")
            ok = expect(s.reply(), b"250 2.1.5 ", "RCPT") and ok
            ok = expect(s.reply(), b"354 ", "DATA") and ok
            if not ok:
                break
            s.sock.sendall(
                ID_HEADER
                + msg_id.encode()
                + b"\r\nSubject: load\r\n\r\n"
                + b"line of the message body\r\n" * 8
                + b".\r\n"
            )
            if expect(s.reply(), b"250 2.0.0 OK: message stored as ", "final dot"):
                tally.acked.append(msg_id)
            else:
                break
        s.sock.sendall(b"QUIT\r\n")
        expect(s.reply(), b"221 ", "QUIT")
        s.sock.close()
    except (OSError, EOFError, TimeoutError, threading.BrokenBarrierError) as exc:
        tally.unexpected.append(f"session {index}: {exc!r}")
        ready.abort()  # the others need not wait for this one
    return tally


def stored_ids(folder: Path) -> list[str]:
    ids = []
    for path in folder.iterdir():
        data = path.read_bytes()
        start = data.index(ID_HEADER) + len(ID_HEADER)
        ids.append(data[start : data.index(b"\r\n", start)].decode())
    return ids


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_200_concurrent_sessions_lose_nothing(tmp_path: Path) -> None:
    server = make_server(
        tmp_path, extra_config=f"\n[limits]\nmax_connections_per_ip = {SESSIONS + 50}\n"
    )
    server.start()
    try:
        results: list[Tally] = [Tally() for _ in range(SESSIONS)]
        ready = threading.Barrier(SESSIONS + 1)
        go = Go()

        def work(i: int) -> None:
            results[i] = run_session(i, server.host, server.port, ready, go)

        threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(SESSIONS)]
        for t in threads:
            t.start()
        try:
            ready.wait(timeout=60)  # every session connected and greeted
        except threading.BrokenBarrierError:
            pass  # a session failed to start: it says why in its tally
        began = time.monotonic()
        go.set(began + SECONDS)
        for t in threads:
            t.join(timeout=SECONDS + 60)
        elapsed = time.monotonic() - began
        assert not any(t.is_alive() for t in threads), "a session hung"
    finally:
        server.stop()
    acked = [i for r in results for i in r.acked]
    unexpected = [u for r in results for u in r.unexpected]
    replies = sum(r.replies for r in results)
    found = [i for u in USERS for i in stored_ids(server.maildir(u) / "new")]
    print(
        f"\nload: {SESSIONS} concurrent sessions for {elapsed:.1f}s: {len(acked)} messages "
        f"acknowledged ({len(acked) / elapsed:.0f} msgs/s), {len(found)} in new/, "
        f"{replies} replies, {len(unexpected)} unexpected"
    )
    assert unexpected == []
    assert len(acked) > SESSIONS  # every session got through more than one message
    assert sorted(found) == sorted(acked)  # none lost, none twice
    assert len(set(found)) == len(found)
