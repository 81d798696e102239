"""A raw SMTP client for the end-to-end tests: bytes go out exactly as given (no smtplib
quoting or retries), and replies come back exactly as the server sent them."""

from __future__ import annotations

import socket

from tests.conftest import MailServer
from tests.smtpreader import read_reply


class RawClient:
    def __init__(self, server: MailServer, timeout: float = 30) -> None:
        self.timeout = timeout
        self.sock = socket.create_connection((server.host, server.port), timeout=timeout)
        self.buf = bytearray()
        self.greeting = self.reply()

    def reply(self) -> tuple[int, bytes]:
        """(code, text of the last line); the text starts with the enhanced code if any."""
        got = read_reply(self.sock, self.buf)
        return got.code, got.text

    def cmd(self, data: bytes) -> tuple[int, bytes]:
        self.sock.sendall(data + b"\r\n")
        return self.reply()

    def start_message(self, sender: bytes, recipient: bytes, helo: bytes | None = None) -> None:
        """[EHLO,] MAIL, RCPT and DATA, each asserted to succeed: ready for the content."""
        if helo is not None:
            assert self.cmd(b"EHLO " + helo)[0] == 250
        assert self.cmd(b"MAIL FROM:<" + sender + b">")[0] == 250
        assert self.cmd(b"RCPT TO:<" + recipient + b">")[0] == 250
        assert self.cmd(b"DATA")[0] == 354

    def nothing_pending(self) -> bool:
        """No reply beyond those read arrives within a short wait."""
        if self.buf:
            return False
        self.sock.settimeout(0.2)
        try:
            return not self.sock.recv(1, socket.MSG_PEEK)
        except TimeoutError:
            return True
        finally:
            self.sock.settimeout(self.timeout)

    def at_eof(self) -> bool:
        return not self.buf and self.sock.recv(1) == b""

    def close(self) -> None:
        self.sock.close()
