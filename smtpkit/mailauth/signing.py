"""DKIM signing of outgoing mail (RFC 6376) with the keys in ``DIR/dkim`` (``keys.py``).

A message is signed as the domain of its From: header, because that is the domain DMARC
(RFC 7489 3.1.1) compares a signature's ``d=`` with: a signature for any other domain does
nothing for the author's domain. When that domain has no key of its own, the keys of its
closest parent domain that has some sign instead, as long as the parent is within the same
organizational domain: DMARC's relaxed alignment (RFC 7489 3.1.1) accepts such a ``d=``.
That is what signs the reports this server writes, whose From: is MAILER-DAEMON at
``server.hostname`` (mx.example.org), with the key of the mail domain (example.org). Every key
of the chosen domain signs, so a domain holding an RSA and an Ed25519 key sends both
signatures, as RFC 8463 suggests while Ed25519 is not verified everywhere. The cryptography is
dkimpy's; this module only chooses what it signs and how.

Deciding who may send with which From: is the caller's policy; the signer signs whatever it
is given for a domain it holds a key of.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from email.headerregistry import AddressHeader, HeaderRegistry
from pathlib import Path

import dkim

from smtpkit.addresses import normalize_domain
from smtpkit.errors import SmtpkitError, UserError
from smtpkit.mailauth.dmarc import organizational_domain
from smtpkit.mailauth.keys import DkimKey, load_keys

__all__ = ["SIGNED_HEADERS", "SigningError", "Signer", "from_domain", "signing_domain"]

#: The header fields signed when present: RFC 6376 5.4.1's list, plus List-Unsubscribe-Post,
#: which RFC 8058 3.1 requires a one-click unsubscription to have signed. Fields a relay
#: adds or rewrites (Received, Return-Path, ...) are left out: signing them breaks the
#: signature on its way.
SIGNED_HEADERS = frozenset(
    {
        b"from",
        b"sender",
        b"reply-to",
        b"subject",
        b"date",
        b"message-id",
        b"to",
        b"cc",
        b"mime-version",
        b"content-type",
        b"content-transfer-encoding",
        b"content-id",
        b"content-description",
        b"resent-date",
        b"resent-from",
        b"resent-sender",
        b"resent-to",
        b"resent-cc",
        b"resent-message-id",
        b"in-reply-to",
        b"references",
        b"list-id",
        b"list-help",
        b"list-unsubscribe",
        b"list-unsubscribe-post",
        b"list-subscribe",
        b"list-post",
        b"list-owner",
        b"list-archive",
    }
)

# relaxed/relaxed (RFC 6376 3.4): survives the re-folding and whitespace changes of relays
# that simple canonicalization does not.
_CANONICALIZATION = (b"relaxed", b"relaxed")

_ALGORITHMS = {"rsa": b"rsa-sha256", "ed25519": b"ed25519-sha256"}

# The end of the header section: an empty line, at the very start or after a line end. The
# line ends are dkimpy's (CRLF or LF), so that both read the same fields.
_HEADER_END = re.compile(rb"(?:\A|\n)\r?\n")
_LINE_END = re.compile(rb"\r?\n")
# A field name as dkimpy reads it: printable characters up to the first colon.
_FIELD_NAME = re.compile(rb"([\x21-\x7e]+?):")

_HEADERS = HeaderRegistry()


class SigningError(SmtpkitError):
    """dkimpy could not sign a message (most often: a header section it cannot parse). The
    message is not lost: the caller decides whether it goes on unsigned or is refused."""


def _from_fields(message: bytes) -> list[bytes]:
    """The unfolded values of every From: field of the header section."""
    end = _HEADER_END.search(message)
    header = message[: end.start()] if end is not None else message
    fields: list[list[bytes]] = []
    current: list[bytes] | None = None  # the lines of the From: field being read, if any
    for line in _LINE_END.split(header):
        if line[:1] in (b" ", b"\t"):
            if current is not None:
                current.append(line)
            continue
        match = _FIELD_NAME.match(line)
        if match is not None and match.group(1).lower() == b"from":
            current = [line[match.end() :]]
            fields.append(current)
        else:
            current = None
    # Unfolding (RFC 5322 2.2.3) removes the line ends and keeps the white space after them.
    return [b"".join(lines) for lines in fields]


def from_domain(message: bytes) -> str | None:
    """The domain of the single author address in the From: header, lower-cased, an
    internationalised domain in its IDNA ASCII form (as ``server.domains`` and the key
    folders name it). None unless the message has exactly one From: field holding exactly
    one address that parses without defects: a From: that readers could take two ways is
    never signed for either."""
    fields = _from_fields(message)
    if len(fields) != 1:
        return None
    try:
        value = fields[0].decode("utf-8")  # RFC 6532: UTF-8 header fields
    except UnicodeDecodeError:
        return None
    header = _HEADERS("from", value.strip())
    if not isinstance(header, AddressHeader) or header.defects or len(header.addresses) != 1:
        return None
    domain = header.addresses[0].domain
    if not domain:
        return None
    try:
        return normalize_domain(domain)
    except UserError:  # an address literal, or no domain name at all
        return None


def signing_domain(domain: str, candidates: Collection[str]) -> str | None:
    """Which of ``candidates`` (lower case, ASCII) signs mail from ``domain``: ``domain``
    itself, else its closest parent domain among them that is within its organizational
    domain (so that DMARC's relaxed alignment passes); None when none is."""
    name = domain.lower().rstrip(".")
    if name in candidates:
        return name
    if not candidates:
        return None
    organizational = organizational_domain(name)
    if name == organizational or not name.endswith("." + organizational):
        return None  # an organizational domain (or a public suffix) has no parent to use
    labels = name.split(".")
    for start in range(1, len(labels)):
        parent = ".".join(labels[start:])
        if parent in candidates:
            return parent
        if parent == organizational:
            break
    return None


@dataclass(frozen=True, slots=True)
class _Key:
    """A key in the form dkimpy takes it, prepared once rather than for every message."""

    domain: bytes
    selector: bytes
    algorithm: bytes
    private: bytes
    name: str  # for error messages


def _prepare(key: DkimKey) -> _Key:
    return _Key(
        key.domain.encode("ascii"),
        key.selector.encode("ascii"),
        _ALGORITHMS[key.algorithm],
        key.signing_key(),
        f"{key.selector}._domainkey.{key.domain}",
    )


def _order(key: DkimKey) -> tuple[bool, str]:
    # RSA first: the topmost signature is the one some verifiers check alone, and every
    # verifier knows RSA; then in selector order, which is stable from one message to the next.
    return (key.algorithm != "rsa", key.selector)


def _one_line(text: str) -> str:
    return " ".join(text.split())


class Signer:
    """Signs messages with every key of their From: domain, or of its closest parent domain
    that has keys, within the same organizational domain.

    Mail from ``news.example.org`` (or the reports of ``mx.example.org``), when that domain
    has no keys of its own, is signed with the keys of ``example.org``: the signature aligns
    under DMARC's relaxed mode, the default (RFC 7489 6.3, ``adkim``), which is all DMARC
    asks of it. A
    parent beyond the organizational domain never signs: ``example.org`` is not signed by a
    key of ``org``, nor ``ann.github.io`` by one of ``github.io``, a public suffix of its own
    (the organizational domain is the Public Suffix List's, as in ``mailauth/dmarc``).
    """

    def __init__(self, keys: Mapping[str, Sequence[DkimKey]]) -> None:
        self._keys = {
            domain.lower(): tuple(_prepare(key) for key in sorted(found, key=_order))
            for domain, found in keys.items()
            if found
        }
        if self._keys:
            # The Public Suffix List is read on first use: read it now, while the files of
            # the library can still be read (see server/checks.load_mailauth).
            organizational_domain("example.org")

    @classmethod
    def from_directory(cls, directory: Path) -> Signer:
        """The keys of the data folder ``directory``; a key file that cannot be read is a
        ``ConfigError`` naming it, so that a broken key is found at start-up."""
        return cls(load_keys(directory))

    def __bool__(self) -> bool:
        """Whether any key exists: with none, the caller need not even read the message."""
        return bool(self._keys)

    def keys_for(self, domain: str) -> str | None:
        """The domain whose keys sign mail from ``domain`` (lower case, ASCII), as
        ``signing_domain`` chooses it among the domains with keys; None when there is none."""
        return signing_domain(domain, self._keys)

    def _keys_for(self, domain: str) -> tuple[_Key, ...]:
        found = self.keys_for(domain)
        return self._keys[found] if found is not None else ()

    def sign(self, message: bytes) -> bytes:
        """The DKIM-Signature header fields to put in front of ``message`` (a whole message,
        header section and body, CRLF line ends), ending in CRLF; ``b""`` when there is no
        key for the domain of its From: address (see ``from_domain``) or a parent of it
        (``signing_domain``).

        One signature per key of the domain, RSA first. Each covers the fields of
        ``SIGNED_HEADERS`` that are present, with From: listed once more than it appears
        (RFC 6376 8.15), so that a From: added on the way breaks the signature instead of
        being shown to the reader as the author. ``SigningError`` when dkimpy fails.
        """
        domain = from_domain(message)
        keys = self._keys_for(domain) if domain is not None else ()
        if not keys:
            return b""
        try:
            # One parse of the message for all the signatures.
            signer = dkim.DKIM(message, linesep=b"\r\n")
        except dkim.DKIMException as exc:
            reason = _one_line(str(exc))
            raise SigningError(f"cannot DKIM-sign mail from {domain}: {reason}") from None
        except IndexError:  # dkimpy's parser, on a continuation line with no field before it
            raise SigningError(
                f"cannot DKIM-sign mail from {domain}: the header section starts with a "
                "continuation line"
            ) from None
        present = [name.lower() for name, _ in signer.headers]
        include = [name for name in present if name in SIGNED_HEADERS] + [b"from"]
        fields: list[bytes] = []
        for key in keys:
            try:
                field: bytes = signer.sign(
                    key.selector,
                    key.domain,
                    key.private,
                    signature_algorithm=key.algorithm,
                    canonicalize=_CANONICALIZATION,
                    include_headers=include,
                )
            except (dkim.DKIMException, ValueError) as exc:
                reason = _one_line(str(exc))
                raise SigningError(f"cannot DKIM-sign with {key.name}: {reason}") from None
            fields.append(field)
        return b"".join(fields)
