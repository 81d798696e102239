"""The one SMTP reply reader of the tests' raw clients (``tests/e2e/rawclient.py``,
``tests/e2e/faultclient.py``, the TLS and PROXY tests' peers, the relay tests' ``Client``, the
load test's sessions, the LMTP client of the chunking tests).

A reply is one or more lines ``code "-" text CRLF`` ending with ``code [" " text] CRLF``
(RFC 5321 4.2). The reader reads from the socket it is given each time (a client may wrap
its socket in TLS between replies) and keeps in ``pending`` whatever arrived past the reply,
so pipelined replies are read one at a time and a test can see what is still unread.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

__all__ = ["MAX_LINE", "BadReply", "ConnectionClosed", "Reply", "read_reply"]

# RFC 5321 4.5.3.1.5 allows 512 octets; a longer line means the client is out of step.
MAX_LINE = 4096


class ConnectionClosed(ConnectionError, EOFError):
    """The server closed the connection before a whole reply: an EOFError to a test that
    reads until the end, and an OSError to one that treats every socket failure alike."""


class BadReply(ConnectionError):
    """A line that is not part of an SMTP reply."""


@dataclass(frozen=True, slots=True)
class Reply:
    """One reply. Equal to another with the same code and last line, as tests compare them."""

    code: int
    text: bytes  # the last line after the code and separator, e.g. b"4.3.1 Insufficient ..."
    lines: tuple[bytes, ...] = field(default=(), compare=False, repr=False)  # CRLF included

    @property
    def raw(self) -> bytes:
        """Every line exactly as the server sent it."""
        return b"".join(self.lines)

    def __str__(self) -> str:
        return f"{self.code} {self.text.decode(errors='replace')}"


def read_reply(sock: socket.socket, pending: bytearray) -> Reply:
    """Read the next whole reply from ``pending``, then from ``sock`` as needed."""
    lines: list[bytes] = []
    while True:
        end = pending.find(b"\r\n")
        if end < 0:
            if len(pending) > MAX_LINE:
                raise BadReply(f"reply line longer than {MAX_LINE}: {bytes(pending[:80])!r}...")
            data = sock.recv(65536)
            if not data:
                raise ConnectionClosed(f"connection closed; unparsed {bytes(pending)!r}")
            pending += data
            continue
        line = bytes(pending[: end + 2])
        del pending[: end + 2]
        lines.append(line)
        code, separator = line[:3], line[3:4]
        if not code.isdigit() or separator not in (b" ", b"-", b"\r"):
            raise BadReply(f"not a reply line: {line!r}")
        if separator != b"-":
            return Reply(int(code), line[4:-2], tuple(lines))
