"""A scripted LMTP server (RFC 2033) on a Unix socket, for the link and lmtp_verify tests:
LHLO, MAIL, RCPT (a reply per address from the script), DATA with a reply per accepted
recipient after the final dot, RSET, QUIT; one thread per connection; it records the
commands, the connections and what was delivered. Dovecot itself is tests/e2e/test_lmtp.py."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Delivered", "LmtpScript", "LmtpServerThread", "running"]


@dataclass
class LmtpScript:
    #: The reply to RCPT for an address, and to the final dot for each accepted one.
    rcpt: Callable[[str], str] = lambda address: "250 2.1.5 ok"
    dot: Callable[[str], str] = lambda address: "250 2.0.0 saved"


@dataclass
class Delivered:
    sender: str
    recipients: list[str]
    data: bytes


@dataclass
class LmtpServerThread:
    """Answers LMTP on a Unix socket, one thread per connection; records what it got."""

    path: Path
    script: LmtpScript = field(default_factory=LmtpScript)
    connections: int = 0
    commands: list[str] = field(default_factory=list)
    delivered: list[Delivered] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(self.path))
        self.sock.listen(16)
        self.cond = threading.Condition()
        self.open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.sock.close()
        for conn in self.open:
            conn.close()

    def wait_for(self, count: int, timeout: float = 30) -> list[Delivered]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.delivered) >= count, timeout)
            return list(self.delivered)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.cond:
                self.connections += 1
                self.open.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        conn.sendall(b"220 lmtp.test LMTP ready\r\n")
        sender, recipients = "", list[str]()
        try:
            for raw in reader:
                line = raw.decode().rstrip("\r\n")
                verb = line.split(" ", 1)[0].upper()
                with self.cond:
                    self.commands.append(verb)
                if verb == "LHLO":
                    conn.sendall(b"250-lmtp.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
                elif verb == "MAIL":
                    sender, recipients = line[10:].strip("<>"), []
                    conn.sendall(b"250 2.1.0 ok\r\n")
                elif verb == "RCPT":
                    address = line[8:].strip("<>")
                    reply = self.script.rcpt(address)
                    if reply.startswith("2"):
                        recipients.append(address)
                    conn.sendall(reply.encode() + b"\r\n")
                elif verb == "DATA":
                    if not recipients:
                        conn.sendall(b"503 5.5.1 no valid recipients\r\n")
                        continue
                    conn.sendall(b"354 go ahead\r\n")
                    data = b""
                    for body in reader:
                        if body == b".\r\n":
                            break
                        data += body
                    with self.cond:
                        self.delivered.append(Delivered(sender, list(recipients), data))
                        self.cond.notify_all()
                    for address in recipients:
                        conn.sendall(self.script.dot(address).encode() + b"\r\n")
                elif verb == "RSET":
                    sender, recipients = "", []
                    conn.sendall(b"250 2.0.0 ok\r\n")
                elif verb == "QUIT":
                    conn.sendall(b"221 2.0.0 bye\r\n")
                    return
                else:
                    conn.sendall(b"500 5.5.1 unknown\r\n")
        except OSError:
            pass
        finally:
            conn.close()


@contextlib.contextmanager
def running(path: Path) -> Iterator[LmtpServerThread]:
    """A scripted LMTP server listening on the Unix socket ``path`` for the block."""
    server = LmtpServerThread(path)
    try:
        yield server
    finally:
        server.close()
