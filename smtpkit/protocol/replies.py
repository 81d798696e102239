"""The one catalogue of replies the server can send.

Every reply carries an RFC 3463 enhanced status code (RFC 2034) except the greeting, the EHLO
response and HELP, where RFC 2034 section 3 says none is used. Replies that need a value
(host name, size) are built by the functions at the end; nowhere else builds reply text.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

__all__ = [
    "AUTH_UNAVAILABLE",
    "BAD_DESTINATION",
    "FROM_NOT_OWNED",
    "SENDER_NOT_OWNED",
    "SENDING_LIMIT",
    "TOO_MANY_AUTH_FAILURES",
    "AUTH_OK",
    "AUTH_THROTTLED",
    "AUTH_CANCELLED",
    "AUTH_BAD_RESPONSE",
    "AUTH_NOT_OFFERED",
    "AUTH_ALREADY",
    "AUTH_IN_TRANSACTION",
    "AUTH_UNKNOWN_MECHANISM",
    "AUTH_REQUIRED",
    "AUTH_FAILED",
    "AUTH_NEEDS_TLS",
    "TLS_REQUIRED",
    "challenge",
    "BAD_SEQUENCE",
    "BARE_NEWLINE_IN_DATA",
    "BDAT_NEEDS_EHLO",
    "BDAT_UNREADABLE",
    "BINARYMIME_NEEDS_BDAT",
    "BARE_NEWLINE_IN_COMMAND",
    "CANNOT_VRFY",
    "COMMAND_TOO_LONG",
    "DATA_AFTER_BDAT",
    "DATA_LINE_TOO_LONG",
    "EXPN_DISABLED",
    "LOCAL_ERROR",
    "MESSAGE_TOO_BIG",
    "NEED_HELO",
    "NON_ASCII_ADDRESS",
    "NON_ASCII_HELO",
    "NO_VALID_RECIPIENTS",
    "OK",
    "OK_RECIPIENT",
    "OK_SENDER",
    "PROXY_NOT_ALLOWED",
    "RELAY_DENIED",
    "Reply",
    "SENDER_ALREADY",
    "SESSION_TOO_LONG",
    "SHUTTING_DOWN",
    "START_DATA",
    "STORAGE_FULL",
    "SYNTAX_ERROR_ARGS",
    "SYNTAX_ERROR_PARAMS",
    "TIMEOUT",
    "TOO_MANY_CONNECTIONS",
    "TOO_MANY_CONNECTIONS_FROM_IP",
    "TOO_MANY_ERRORS",
    "TOO_MANY_RECIPIENTS",
    "TLS_NOT_AVAILABLE",
    "TLS_ALREADY_ACTIVE",
    "TLS_READY",
    "UNKNOWN_COMMAND",
    "UNKNOWN_PARAMETER",
    "UNKNOWN_USER",
    "MAILBOX_REFUSED",
    "MAILBOX_SERVER_UNAVAILABLE",
    "MAILBOX_UNAVAILABLE",
    "chunk_received",
    "closing",
    "ehlo",
    "greeting",
    "helo",
    "help_text",
    "stored",
]


@dataclass(frozen=True, slots=True)
class Reply:
    """One SMTP reply: a code, an optional enhanced status code and one or more text lines."""

    code: int
    enhanced: str | None
    lines: tuple[str, ...]
    # The bytes on the wire, made once: most replies are constants sent again and again.
    _wire: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        out = []
        last = len(self.lines) - 1
        for i, line in enumerate(self.lines):
            sep = " " if i == last else "-"
            text = f"{self.enhanced} {line}" if self.enhanced else line
            out.append(f"{self.code}{sep}{text}\r\n" if text else f"{self.code}{sep}\r\n")
        object.__setattr__(self, "_wire", "".join(out).encode("utf-8", "replace"))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def is_positive(self) -> bool:
        """2xx and 3xx: the command (or DATA's intermediate step) succeeded."""
        return self.code < 400

    @property
    def closes(self) -> bool:
        """421 always ends the session (RFC 5321 3.8)."""
        return self.code == 421

    def to_bytes(self) -> bytes:
        return self._wire

    def __str__(self) -> str:
        return self.to_bytes().decode("utf-8", "replace").rstrip("\r\n").replace("\r\n", " | ")


def _r(code: int, enhanced: str | None, *lines: str) -> Reply:
    return Reply(code, enhanced, lines)


# --- 2xx / 3xx -----------------------------------------------------------------------------
OK = _r(250, "2.0.0", "OK")
OK_SENDER = _r(250, "2.1.0", "Sender OK")
OK_RECIPIENT = _r(250, "2.1.5", "Recipient OK")
CANNOT_VRFY = _r(252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery")
START_DATA = _r(354, None, "End data with <CR><LF>.<CR><LF>")
TLS_READY = _r(220, "2.0.0", "Ready to start TLS")

# --- 4xx: try again later ------------------------------------------------------------------
SHUTTING_DOWN = _r(421, "4.3.2", "Service shutting down, closing connection")
TIMEOUT = _r(421, "4.4.2", "Timeout exceeded, closing connection")
TOO_MANY_ERRORS = _r(421, "4.7.0", "Too many errors, closing connection")
SESSION_TOO_LONG = _r(421, "4.7.0", "Session time limit exceeded, closing connection")
# RFC 3030 2: a BDAT command is followed by its chunk; when its size cannot be read, nothing
# tells where that chunk ends, and no byte after it can be trusted to be a command.
BDAT_UNREADABLE = _r(421, "4.5.0", "Malformed BDAT command, closing connection")
TOO_MANY_CONNECTIONS = _r(421, "4.7.0", "Too many connections, try again later")
TOO_MANY_CONNECTIONS_FROM_IP = _r(421, "4.7.0", "Too many connections from your address")
# A PROXY header from a peer not in server.proxy_protocol_from: a balancer left out of the
# list, or a client passing for another. Closing makes the mistake loud, where answering a
# bad command would let what follows run as the balancer's own session.
PROXY_NOT_ALLOWED = _r(421, "4.7.0", "PROXY header not accepted from your address")
LOCAL_ERROR = _r(451, "4.3.0", "Local error in processing, try again later")
STORAGE_FULL = _r(452, "4.3.1", "Insufficient system storage, try again later")
# [delivery] lmtp_verify: the LMTP server holding the mailboxes cannot be asked about a
# recipient now (RFC 3463 4.4.3, a directory server unavailable); never a guess either way.
MAILBOX_SERVER_UNAVAILABLE = _r(451, "4.4.3", "Mailbox server unavailable, try again later")
# ... it was asked, and answered with a temporary failure (a full mailbox, a lock).
MAILBOX_UNAVAILABLE = _r(450, "4.2.0", "Mailbox unavailable, try again later")
TOO_MANY_RECIPIENTS = _r(452, "4.5.3", "Too many recipients")
TLS_NOT_AVAILABLE = _r(454, "4.7.0", "TLS not available")

# --- 5xx: permanent ------------------------------------------------------------------------
UNKNOWN_COMMAND = _r(500, "5.5.1", "Command unrecognized")
COMMAND_TOO_LONG = _r(500, "5.5.6", "Command line too long")
BARE_NEWLINE_IN_COMMAND = _r(500, "5.5.2", "Command lines must end with <CR><LF>")
SYNTAX_ERROR_ARGS = _r(501, "5.5.4", "Syntax error in parameters or arguments")
EXPN_DISABLED = _r(502, "5.5.1", "EXPN is not supported")
BAD_SEQUENCE = _r(503, "5.5.1", "Bad sequence of commands")
NEED_HELO = _r(503, "5.5.1", "Send HELO or EHLO first")
SENDER_ALREADY = _r(503, "5.5.1", "Sender already specified")
NO_VALID_RECIPIENTS = _r(503, "5.5.1", "No valid recipients")
TLS_ALREADY_ACTIVE = _r(503, "5.5.1", "TLS already active")
# RFC 3030 2: DATA and BDAT are not mixed in one transaction; BINARYMIME content can only be
# sent with BDAT (RFC 3030 3); BDAT is an ESMTP extension, offered in reply to EHLO only.
DATA_AFTER_BDAT = _r(503, "5.5.1", "DATA not allowed after BDAT")
BINARYMIME_NEEDS_BDAT = _r(503, "5.5.1", "BODY=BINARYMIME requires BDAT, not DATA")
BDAT_NEEDS_EHLO = _r(503, "5.5.1", "Send EHLO first: BDAT is an ESMTP extension")
SYNTAX_ERROR_PARAMS = _r(501, "5.5.4", "Syntax error in MAIL or RCPT parameters")
NON_ASCII_HELO = _r(501, "5.5.2", "HELO/EHLO name must be ASCII")
# RFC 6531 3.5 / RFC 6533 3: a UTF-8 address needs SMTPUTF8, which is not offered.
NON_ASCII_ADDRESS = _r(553, "5.6.7", "Non-ASCII addresses are not permitted without SMTPUTF8")
UNKNOWN_PARAMETER = _r(
    555, "5.5.4", "MAIL FROM/RCPT TO parameter not recognized or not implemented"
)
UNKNOWN_USER = _r(550, "5.1.1", "No such user here")
# [delivery] lmtp_verify: the LMTP server refused the mailbox for another reason than an
# unknown user (over its quota for good, disabled).
MAILBOX_REFUSED = _r(550, "5.2.0", "Mailbox unavailable")
RELAY_DENIED = _r(550, "5.7.1", "Relaying denied")
MESSAGE_TOO_BIG = _r(552, "5.3.4", "Message size exceeds fixed maximum message size")
# RFC 5321 2.3.8: lines end only in CRLF; a bare CR or LF is how SMTP smuggling starts.
BARE_NEWLINE_IN_DATA = _r(550, "5.6.0", "Message refused: bare <CR> or <LF> in data")
DATA_LINE_TOO_LONG = _r(550, "5.6.0", "Message refused: text line longer than 1000 octets")


# --- AUTH (RFC 4954 6, RFC 3463) ------------------------------------------------------------
AUTH_OK = _r(235, "2.7.0", "Authentication successful")
TOO_MANY_AUTH_FAILURES = _r(421, "4.7.0", "Too many authentication failures, closing connection")
AUTH_THROTTLED = _r(454, "4.7.0", "Too many authentication failures, try again later")
AUTH_UNAVAILABLE = _r(454, "4.7.0", "Temporary authentication failure, try again later")
AUTH_CANCELLED = _r(501, "5.7.0", "Authentication cancelled")
AUTH_BAD_RESPONSE = _r(501, "5.5.2", "Cannot decode the response")
AUTH_NOT_OFFERED = _r(503, "5.5.1", "Authentication not enabled here")
AUTH_ALREADY = _r(503, "5.5.1", "Already authenticated")
AUTH_IN_TRANSACTION = _r(503, "5.5.1", "AUTH not allowed during a mail transaction")
AUTH_UNKNOWN_MECHANISM = _r(504, "5.5.4", "Unrecognized authentication type")
AUTH_REQUIRED = _r(530, "5.7.0", "Authentication required")
AUTH_FAILED = _r(535, "5.7.8", "Authentication credentials invalid")
AUTH_NEEDS_TLS = _r(538, "5.7.11", "Encryption required for requested authentication mechanism")
TLS_REQUIRED = _r(530, "5.7.0", "Must issue a STARTTLS command first")
SENDER_NOT_OWNED = _r(553, "5.7.1", "Sender address not owned by the authenticated user")
FROM_NOT_OWNED = _r(550, "5.7.1", "From: header address not owned by the authenticated user")
SENDING_LIMIT = _r(451, "4.7.1", "Sending limit reached, try again later")
BAD_DESTINATION = _r(501, "5.1.3", "Bad destination mailbox address syntax")
SEVERAL_AUTHORS = _r(550, "5.7.1", "Several From: domains: DMARC cannot be applied")


# --- replies with values -------------------------------------------------------------------
# The replies below that depend only on the server's name, or on it and the client's, are
# made once and kept (a few hundred): every session sends them.
@functools.lru_cache(maxsize=16)
def greeting(hostname: str) -> Reply:
    """RFC 5321 4.2: ``220 <domain> ESMTP``; no enhanced code before EHLO (RFC 2034 3)."""
    return _r(220, None, f"{hostname} ESMTP smtpkit")


def _printable(text: str, limit: int = 300) -> str:
    """Text from elsewhere (DNS, a scanner) made safe for one reply line."""
    return "".join(c if " " <= c <= "~" else " " for c in text)[:limit].strip()


def blocklisted(ip: str, zone: str, reason: str | None) -> Reply:
    """RFC 5321 3.1: a 554 greeting refuses the session; the blocklist and its reason tell
    a wrongly listed sender where to go."""
    why = f": {_printable(reason)}" if reason else ""
    return _r(554, "5.7.1", f"Service unavailable; client [{ip}] listed by {zone}{why}")


def spf_failed(domain: str, ip: str) -> Reply:
    """RFC 7372 3.2: 5.7.23, the SPF validation of the sender's domain failed."""
    return _r(550, "5.7.23", f"SPF check failed: {_printable(domain)} does not authorize [{ip}]")


def dmarc_rejected(domain: str) -> Reply:
    """RFC 7489 6.7 (p=reject): refused during the SMTP transaction, 5.7.1."""
    return _r(550, "5.7.1", f"DMARC policy of {_printable(domain)} rejects this message")


def spam_rejected(text: str | None) -> Reply:
    """The content scanner said reject; its own words when it gave some."""
    return _r(550, "5.7.1", _printable(text) if text else "Message rejected as spam")


def scan_deferred(text: str | None) -> Reply:
    """The content scanner said try later (greylisting, a soft reject), or could not be
    asked and the admin chose to fail closed."""
    return _r(451, "4.7.1", _printable(text) if text else "Message deferred, try again later")


# RFC 5321 4.5.3.1.5: a reply line is at most 512 octets with its code and CRLF.
_MAX_REPLY_LINE = 512


def _hello_line(hostname: str, client: str) -> str:
    """``<hostname> Hello <client>``, the client's name cut so the line fits 512 octets."""
    room = _MAX_REPLY_LINE - len("250-") - len(hostname) - len(" Hello ") - len("\r\n")
    return f"{hostname} Hello {client[: max(0, room)]}"


@functools.lru_cache(maxsize=256)
def ehlo(hostname: str, client: str, extensions: tuple[str, ...]) -> Reply:
    """RFC 5321 4.1.1.1: first line greets, one extension keyword per following line."""
    return _r(250, None, _hello_line(hostname, client), *extensions)


@functools.lru_cache(maxsize=256)
def helo(hostname: str, client: str) -> Reply:
    return _r(250, None, _hello_line(hostname, client))


@functools.lru_cache(maxsize=16)
def closing(hostname: str) -> Reply:
    return _r(221, "2.0.0", f"{hostname} Service closing transmission channel")


def help_text() -> Reply:
    return _r(
        214,
        "2.0.0",
        "Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP",
        "See RFC 5321 for details",
    )


def challenge(text: str) -> Reply:
    """RFC 4954 4: ``334`` and the base64 challenge (or an empty one); no enhanced code."""
    return _r(334, None, text)


def chunk_received(size: int) -> Reply:
    """RFC 3030 2: each chunk but the last is answered once it was read whole."""
    return _r(250, "2.0.0", f"{size} octets received")


def stored(queue_id: str) -> Reply:
    return _r(250, "2.0.0", f"OK: message stored as {queue_id}")
