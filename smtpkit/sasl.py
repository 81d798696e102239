"""SASL mechanisms for AUTH (RFC 4954): PLAIN (RFC 4616) and LOGIN, without I/O.

An ``Exchange`` is fed the initial response and then each response line; it answers with
the next challenge (base64 text for a ``334`` reply) or, at the end, the ``Credentials`` to
check. Anything malformed raises ``SaslError`` with the reply to send. Checking the
password is the caller's business (slow, off the event loop).

User names and passwords are UTF-8 (RFC 4954 4, RFC 4616 2), so an international address
logs in as it is written; bytes that are no UTF-8 are a response that cannot be decoded
(``501 5.5.2``), never guessed at.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from smtpkit.addresses import normalize_address
from smtpkit.auth import MAX_PASSWORD_BYTES
from smtpkit.errors import UserError
from smtpkit.protocol import replies
from smtpkit.protocol.replies import Reply

__all__ = ["MECHANISMS", "Credentials", "Exchange", "SaslError"]

#: What smtpkit offers, in the order EHLO lists them.
MECHANISMS = ("PLAIN", "LOGIN")

# RFC 4616 2: a server must accept an authcid and a passwd of 255 octets of UTF-8 each; a
# password may be as long as `smtpkit user passwd` lets one be set.
_MAX_FIELD = 255
_MAX_PASSWORD = max(_MAX_FIELD, MAX_PASSWORD_BYTES)
_USERNAME = base64.b64encode(b"Username:").decode()
_PASSWORD = base64.b64encode(b"Password:").decode()


class SaslError(Exception):
    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


@dataclass(frozen=True, slots=True)
class Credentials:
    user: str
    password: str

    def __repr__(self) -> str:  # never print a password, not even in a traceback
        return f"Credentials(user={self.user!r}, password=<hidden>)"


def _decode(text: str) -> bytes:
    if text == "=":  # RFC 4954 4: an empty initial response
        return b""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SaslError(replies.AUTH_BAD_RESPONSE) from None


def _text(data: bytes, most: int = _MAX_FIELD) -> str:
    if len(data) > most or b"\0" in data:
        raise SaslError(replies.AUTH_BAD_RESPONSE)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise SaslError(replies.AUTH_BAD_RESPONSE) from None


class Exchange:
    """One AUTH exchange: ``feed(initial)`` first (None when there was none), then
    ``feed(line)`` for each response; each returns a challenge or the credentials."""

    def __init__(self, mechanism: str) -> None:
        if mechanism not in MECHANISMS:
            raise SaslError(replies.AUTH_UNKNOWN_MECHANISM)
        self.mechanism = mechanism
        self._user: str | None = None
        self._started = False

    def feed(self, response: str | None) -> str | Credentials:
        first = not self._started
        self._started = True
        if response == "*":
            # RFC 4954 4: the client cancels the exchange.
            raise SaslError(replies.AUTH_CANCELLED)
        if self.mechanism == "PLAIN":
            if response is None:
                return ""  # RFC 4616: the client sends everything in its response
            return self._plain(_decode(response))
        if first and response is None:
            return _USERNAME
        if self._user is None:
            self._user = _text(_decode(response or "="))
            return _PASSWORD
        return Credentials(self._user, _text(_decode(response or "="), _MAX_PASSWORD))

    @staticmethod
    def _plain(message: bytes) -> Credentials:
        # RFC 4616 2: [authzid] NUL authcid NUL passwd.
        parts = message.split(b"\0")
        if len(parts) != 3 or not parts[1]:
            raise SaslError(replies.AUTH_BAD_RESPONSE)
        authzid, user = _text(parts[0]) if parts[0] else "", _text(parts[1])
        if authzid and not _same_user(authzid, user):
            # Acting as another user (a proxy login) is not offered.
            raise SaslError(replies.AUTH_FAILED)
        return Credentials(user, _text(parts[2], _MAX_PASSWORD))


def _same_user(authzid: str, user: str) -> bool:
    """True when the authzid names the user logging in: the same string, or another spelling
    of the same address (NFC and NFD, case, U-label and A-label domain)."""
    if authzid == user:
        return True
    try:
        return normalize_address(authzid, utf8=True) == normalize_address(user, utf8=True)
    except UserError:
        return False
