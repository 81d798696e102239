"""What the client said, as frozen values produced by ``ServerConnection.next_event()``."""

from __future__ import annotations

from dataclasses import dataclass

from smtpkit.protocol.dsn import MailDsn, RcptDsn
from smtpkit.protocol.replies import Reply

__all__ = [
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
    "MailFrom",
    "Noop",
    "Quit",
    "RcptTo",
    "RefusedChunk",
    "Rset",
    "StartTls",
    "Vrfy",
]


@dataclass(frozen=True, slots=True)
class Hello:
    """HELO (``extended`` false) or EHLO (``extended`` true)."""

    name: str
    extended: bool


@dataclass(frozen=True, slots=True)
class MailFrom:
    """``MAIL FROM:<address>``; ``address`` is "" for the null reverse-path ``<>``.

    ``size`` is the RFC 1870 SIZE= value when given, ``body`` the BODY= value upper-cased
    when given ("7BIT" or "8BITMIME", RFC 6152; "BINARYMIME", RFC 3030 3), ``dsn`` RFC
    3461's RET and ENVID when either is given. ``smtputf8`` is RFC 6531 3.4's SMTPUTF8
    parameter: the transaction may name UTF-8 addresses, in MAIL and in every RCPT.
    """

    address: str
    size: int | None = None
    body: str | None = None
    dsn: MailDsn | None = None
    smtputf8: bool = False


@dataclass(frozen=True, slots=True)
class RcptTo:
    """``RCPT TO:<address>``; a source route (``<@a,@b:user@d>``) is dropped (RFC 5321 C).

    ``address`` is ``postmaster`` (original case kept) for the bare RFC 5321 4.1.1.3 form;
    ``dsn`` holds RFC 3461's NOTIFY and ORCPT when either is given.
    """

    address: str
    dsn: RcptDsn | None = None


@dataclass(frozen=True, slots=True)
class Data:
    """The DATA command, sent with at least one accepted recipient."""


@dataclass(frozen=True, slots=True)
class DataChunk:
    """Message bytes, dot-unstuffed, with CRLF line ends; the final ``.`` line is not included."""

    data: bytes


@dataclass(frozen=True, slots=True)
class EndOfData:
    """``<CRLF>.<CRLF>`` was read. ``error`` is the reply for a message that broke a rule
    (size, bare CR/LF, line length), found while reading and reported once here
    (errors inside DATA are reported once, at the final dot); no DataChunk follows the first
    such error."""

    error: Reply | None = None
    size: int = 0


@dataclass(frozen=True, slots=True)
class Bdat:
    """``BDAT <size> [LAST]`` (RFC 3030 2), accepted by the engine: ``size`` octets of the
    message follow as ``DataChunk`` events, then ``EndOfChunk``. No reply now: the reply to
    the command answers ``EndOfChunk``."""

    size: int
    last: bool = False


@dataclass(frozen=True, slots=True)
class EndOfChunk:
    """The chunk of a BDAT command was read whole: answer the command now.

    ``size`` is this chunk's octet count, ``total`` the content stored so far for the whole
    message. ``error`` is set when the content broke a rule (size, bare CR/LF, line length;
    not for BINARYMIME: size only): the chunk and its transaction are refused with it, and
    no ``DataChunk`` came after the first such error. After the ``last`` chunk the reply is
    the message's final reply (RFC 3030 2), as after ``EndOfData``."""

    size: int
    total: int
    last: bool = False
    error: Reply | None = None


@dataclass(frozen=True, slots=True)
class RefusedChunk:
    """A BDAT command the engine refused (no transaction for it, after DATA, after a refused
    chunk; RFC 3030 2): its chunk of ``size`` octets was still read, and dropped. Send
    ``reply``."""

    reply: Reply
    size: int


@dataclass(frozen=True, slots=True)
class Rset:
    pass


@dataclass(frozen=True, slots=True)
class Noop:
    pass


@dataclass(frozen=True, slots=True)
class Quit:
    pass


@dataclass(frozen=True, slots=True)
class Vrfy:
    argument: str


@dataclass(frozen=True, slots=True)
class Expn:
    argument: str


@dataclass(frozen=True, slots=True)
class Help:
    argument: str


@dataclass(frozen=True, slots=True)
class StartTls:
    pass


@dataclass(frozen=True, slots=True)
class Auth:
    """``AUTH mechanism [initial-response]`` (RFC 4954 4). ``mechanism`` is upper-cased;
    ``initial`` is the base64 text as sent (``=`` for an empty response), or None."""

    mechanism: str
    initial: str | None = None


@dataclass(frozen=True, slots=True)
class AuthResponse:
    """One line the client sent in answer to a ``334`` challenge (RFC 4954 4): base64, or
    ``*`` to cancel. ``refusal`` is set when the line itself broke a rule (too long, a bare
    LF); the exchange then ends with that reply."""

    text: str
    refusal: Reply | None = None


@dataclass(frozen=True, slots=True)
class BadCommand:
    """A line the engine refused by itself (syntax, sequence, length); send ``reply``."""

    reply: Reply
    line: str


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer closed its side (``receive_data(b"")``)."""


Event = (
    Auth
    | AuthResponse
    | Hello
    | MailFrom
    | RcptTo
    | Data
    | DataChunk
    | EndOfData
    | Bdat
    | EndOfChunk
    | RefusedChunk
    | Rset
    | Noop
    | Quit
    | Vrfy
    | Expn
    | Help
    | StartTls
    | BadCommand
    | ConnectionClosed
)
