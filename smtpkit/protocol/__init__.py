"""The sans-I/O SMTP server protocol: bytes in, events out; replies in, bytes out.

Nothing in this package touches a socket, file, clock or TLS object (ARCHITECTURE.md,
"Invariants"); a test enforces what it imports.
"""

from __future__ import annotations

from smtpkit.protocol.connection import (
    NEED_DATA,
    PAUSED,
    LocalProtocolError,
    NeedData,
    Paused,
    ServerConnection,
)
from smtpkit.protocol.events import (
    Auth,
    AuthResponse,
    BadCommand,
    Bdat,
    ConnectionClosed,
    Data,
    DataChunk,
    EndOfChunk,
    EndOfData,
    Event,
    Expn,
    Hello,
    Help,
    MailFrom,
    Noop,
    Quit,
    RcptTo,
    RefusedChunk,
    Rset,
    StartTls,
    Vrfy,
)
from smtpkit.protocol.replies import Reply
from smtpkit.protocol.state import State

__all__ = [
    "NEED_DATA",
    "PAUSED",
    "Auth",
    "AuthResponse",
    "BadCommand",
    "Bdat",
    "ConnectionClosed",
    "Data",
    "DataChunk",
    "EndOfChunk",
    "EndOfData",
    "Event",
    "Expn",
    "Hello",
    "Help",
    "LocalProtocolError",
    "MailFrom",
    "NeedData",
    "Noop",
    "Paused",
    "Quit",
    "RcptTo",
    "RefusedChunk",
    "Reply",
    "Rset",
    "ServerConnection",
    "StartTls",
    "State",
    "Vrfy",
]
