"""A receiving SMTP server for delivery tests that answers what the test wants.

``ScriptedServer(host, port)`` listens (loopback, often port 25 of 127.0.0.2, 127.0.0.3 ...
as the MX host of a test domain) in a thread of its own, speaks enough SMTP for a sender
(EHLO with chosen extensions, STARTTLS with a given context, MAIL, RCPT, DATA with
dot-unstuffing, RSET, QUIT), and records every transaction. What it answers is a
``Script``: the greeting, a reply per recipient address, the reply to the final dot, and
faults: close the connection at a step, or stall there (never answer) until stopped.

Tests wait on ``wait_for(count)`` (a condition, with a deadline), never on a sleep.
"""

from __future__ import annotations

import base64
import contextlib
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import need_program

__all__ = ["Script", "ScriptedServer", "Transaction", "make_certificate", "server_context"]


@dataclass
class Script:
    greeting: str = "220 scripted.test ESMTP"
    extensions: tuple[str, ...] = ("PIPELINING", "8BITMIME", "SIZE 10485760")
    #: The reply to RCPT for an address (default: 250).
    rcpt: Callable[[str], str] = lambda address: "250 2.1.5 ok"
    mail: str = "250 2.1.0 ok"
    #: The reply to the final dot (default: 250).
    data_end: str = "250 2.0.0 queued as 1"
    #: Close the connection when this step comes ("connect", "ehlo", "mail", "rcpt", "data",
    #: "dot"), or stall there without answering.
    drop_at: str | None = None
    stall_at: str | None = None
    tls: ssl.SSLContext | None = None  # offer STARTTLS with this context
    #: What AUTH PLAIN credentials are good (user, password); None: AUTH not offered.
    auth: tuple[str, str] | None = None


@dataclass
class Transaction:
    helo: str = ""
    sender: str = ""
    mail_params: str = ""
    recipients: list[str] = field(default_factory=list)
    rcpt_params: list[str] = field(default_factory=list)
    data: bytes = b""
    tls: bool = False
    authenticated: str | None = None


class ScriptedServer:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, script: Script | None = None):
        self.script = script or Script()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(64)
        self.host = host
        self.port = self.sock.getsockname()[1]
        self.transactions: list[Transaction] = []
        self.auth_attempts: list[list[bytes]] = []
        self.connections = 0
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._open: list[socket.socket] = []
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    # --- test side ------------------------------------------------------------------------
    def wait_for(self, count: int, timeout: float = 60.0) -> list[Transaction]:
        """Wait until ``count`` transactions completed (the final dot answered 250)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.transactions) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"{self.host}:{self.port}: {len(self.transactions)} of {count} "
                        f"transactions after {timeout:g}s"
                    )
                self._cond.wait(left)
            return list(self.transactions)

    def wait_connections(self, count: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.connections < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{self.connections} of {count} connections")
                self._cond.wait(left)

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        for conn in list(self._open):
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._acceptor.join(5)
        for thread in self._threads:
            thread.join(5)

    def __enter__(self) -> ScriptedServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- server side ----------------------------------------------------------------------
    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self._cond:
                self.connections += 1
                self._cond.notify_all()
            self._open.append(conn)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            _Session(self, conn).run()
        except (OSError, ssl.SSLError, _Stop):
            pass
        finally:
            with contextlib.suppress(OSError):
                conn.close()


class _Stop(Exception):
    pass


class _Session:
    def __init__(self, server: ScriptedServer, conn: socket.socket) -> None:
        self.server = server
        self.script = server.script
        self.conn: socket.socket = conn
        self.buf = b""
        self.tx = Transaction()

    def step(self, name: str) -> None:
        if self.script.drop_at == name:
            raise _Stop
        if self.script.stall_at == name:
            self.server._stop.wait()
            raise _Stop

    def send(self, line: str) -> None:
        self.conn.sendall(line.encode() + b"\r\n")

    def raw_line(self) -> bytes:
        while b"\r\n" not in self.buf:
            data = self.conn.recv(65536)
            if not data:
                raise _Stop
            self.buf += data
        raw, self.buf = self.buf.split(b"\r\n", 1)
        return raw

    def line(self) -> str:
        return self.raw_line().decode("utf-8", "replace")

    def run(self) -> None:
        self.step("connect")
        self.send(self.script.greeting)
        if not self.script.greeting.startswith("220"):
            self.line()  # QUIT
            self.send("221 bye")
            return
        while True:
            line = self.line()
            verb = line.split(" ", 1)[0].upper()
            arg = line[len(verb) + 1 :]
            if verb in ("EHLO", "HELO"):
                self.step("ehlo")
                self.tx.helo = arg
                ext = list(self.script.extensions)
                if self.script.tls is not None and not self.tx.tls:
                    ext.append("STARTTLS")
                if self.script.auth is not None and self.tx.tls:
                    ext.append("AUTH PLAIN")
                lines = ["scripted.test", *ext]
                for text in lines[:-1]:
                    self.send(f"250-{text}")
                self.send(f"250 {lines[-1]}")
            elif verb == "STARTTLS" and self.script.tls is not None:
                self.send("220 2.0.0 go ahead")
                self.conn = self.script.tls.wrap_socket(self.conn, server_side=True)
                self.tx = Transaction(tls=True)
                self.buf = b""
            elif verb == "AUTH" and self.script.auth is not None:
                parts = arg.split(" ")
                blob = base64.b64decode(parts[1]).split(b"\0") if len(parts) > 1 else []
                user, password = self.script.auth
                self.server.auth_attempts.append(blob)
                if blob[1:] == [user.encode(), password.encode()]:
                    self.tx.authenticated = user
                    self.send("235 2.7.0 ok")
                else:
                    self.send("535 5.7.8 bad credentials")
            elif verb == "MAIL":
                self.step("mail")
                address, _, params = arg[5:].partition(">")
                self.tx.sender = address.lstrip("<")
                self.tx.mail_params = params.strip()
                self.send(self.script.mail)
            elif verb == "RCPT":
                self.step("rcpt")
                address, _, params = arg[3:].partition(">")
                address = address.lstrip("<")
                reply = self.script.rcpt(address)
                if reply.startswith("2"):
                    self.tx.recipients.append(address)
                    self.tx.rcpt_params.append(params.strip())
                self.send(reply)
            elif verb == "DATA":
                self.step("data")
                if not self.tx.recipients:
                    self.send("554 5.5.1 no valid recipients")
                    continue
                self.send("354 go ahead")
                self.tx.data = self._data()
                self.step("dot")
                reply = self.script.data_end
                if reply.startswith("2"):
                    with self.server._cond:
                        self.server.transactions.append(self.tx)
                        self.server._cond.notify_all()
                self.send(reply)
                self.tx = Transaction(tls=self.tx.tls, helo=self.tx.helo,
                                      authenticated=self.tx.authenticated)  # fmt: skip
            elif verb == "RSET":
                self.tx = Transaction(tls=self.tx.tls, helo=self.tx.helo,
                                      authenticated=self.tx.authenticated)  # fmt: skip
                self.send("250 2.0.0 ok")
            elif verb == "NOOP":
                self.send("250 2.0.0 ok")
            elif verb == "QUIT":
                self.send("221 2.0.0 bye")
                return
            else:
                self.send("502 5.5.2 not implemented")

    def _data(self) -> bytes:
        lines = []
        while True:
            line = self.raw_line()
            if line == b".":
                return b"".join(lines)
            lines.append((line[1:] if line.startswith(b".") else line) + b"\r\n")


def make_certificate(folder: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for ``name`` (its own CA: a client may trust exactly it)
    and its key, made with the real ``openssl``."""
    openssl = need_program("openssl", "openssl")
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "2", "-subj", f"/CN={name}", "-addext",
         f"subjectAltName=DNS:{name}", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context
