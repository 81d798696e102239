"""Mail address and domain validation: the only way an address becomes a folder name.

A user's Maildir is ``users/<address>/``, so this module is the gate that keeps ``/``, ``..``,
NUL, control characters and anything else odd out of paths: only a dot-atom local part
(RFC 5322 3.2.3, restricted further to characters safe in a file name) at a domain of
letters, digits and hyphens passes.
"""

from __future__ import annotations

import re

import idna

from smtpkit.errors import UserError

__all__ = [
    "host_port",
    "is_valid_domain",
    "normalize_address",
    "normalize_domain",
    "normalize_hostname",
    "split_address",
]

# RFC 5322 atext minus "/" (a path separator), "|", "`", "{", "}" (shell and quoting trouble in
# Maildir tooling) and "%", "!" (the percent hack and bang paths of old relays: a mailbox named
# like a route would invite relay confusion). RFC 5321 4.5.3.1.1 caps the local part at 64.
_ATOM = r"[A-Za-z0-9#$&'*+=?^_~-]+"
_LOCAL_RE = re.compile(rf"{_ATOM}(?:\.{_ATOM})*\Z")
# RFC 1035 2.3.1 / RFC 5321 4.1.2 Domain: LDH labels, each 1-63 octets, no leading or
# trailing hyphen.
_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f]")
_LABEL_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")


def is_valid_domain(domain: str) -> bool:
    """True for a lower-case LDH domain name of at least two labels, at most 253 octets."""
    if not domain or len(domain) > 253 or not domain.isascii():
        return False
    labels = domain.split(".")
    return len(labels) >= 2 and all(_LABEL_RE.match(label) for label in labels)


def normalize_domain(domain: str) -> str:
    """Lower-case a domain, turning an internationalised name into its IDNA ASCII form.

    Raises ``UserError`` for anything that is not a valid domain name.
    """
    text = domain.strip().lower()
    if not text.isascii():
        # IDNA 2008 with the UTS #46 non-transitional mapping (RFC 5891), as current mail
        # software does: "faß.example" is its own domain, where Python's built-in IDNA 2003
        # codec would turn it into "fass.example".
        try:
            text = idna.encode(text, uts46=True, transitional=False).decode("ascii")
        except UnicodeError as exc:  # idna.IDNAError is one
            raise UserError(f"{domain!r} is not a valid domain name") from exc
    if not is_valid_domain(text):
        raise UserError(f"{domain!r} is not a valid domain name")
    return text


def normalize_hostname(name: str) -> str:
    """Return the ASCII lower-case form of a host name, without a final dot.

    The one host-name rule of smtpkit (nameservers, certificate names, ``server.hostname``
    lookups): LDH labels of 1-63 octets, no hyphen at either end (RFC 1123 2.1), at most 253
    octets, one label allowed (``localhost``). An internationalised name is turned into its
    IDNA form with the same rule as ``normalize_domain`` (IDNA 2008, UTS #46 non-transitional):
    ``faß.example`` becomes ``xn--fa-hia.example``, never ``fass.example``. Raises ``UserError``
    for anything else.
    """
    text = name.strip()
    if text.endswith("."):
        text = text[:-1]
    text = text.lower()
    if not text.isascii():
        try:
            text = idna.encode(text, uts46=True, transitional=False).decode("ascii")
        except UnicodeError:  # idna.IDNAError is one
            raise UserError(f"{name!r} is not a valid host name") from None
    if not text or len(text) > 253 or not all(_LABEL_RE.match(part) for part in text.split(".")):
        raise UserError(f"{name!r} is not a valid host name")
    return text


def split_address(address: str) -> tuple[str, str]:
    """Split and validate ``local@domain``; returns (local part, lower-cased domain).

    Raises ``UserError`` naming the address when it is not a plain dot-atom address.
    """
    if _CONTROL_OR_SPACE.search(address):
        raise UserError(f"{address!r} is not a valid address: spaces or control characters")
    local, sep, domain = address.rpartition("@")
    if not sep or not local:
        raise UserError(f"{address!r} is not a valid address: expected local-part@domain")
    if len(local) > 64 or not _LOCAL_RE.match(local):
        raise UserError(f"{address!r} is not a valid address: bad local part {local!r}")
    try:
        domain = normalize_domain(domain)
    except UserError:
        raise UserError(f"{address!r} is not a valid address: bad domain {domain!r}") from None
    return local, domain


def normalize_address(address: str, domains: tuple[str, ...] | None = None) -> str:
    """Return the canonical, lower-cased form of ``address``.

    With ``domains``, the address must also be in one of them (a local address).
    """
    local, domain = split_address(address)
    if domains is not None and domain not in domains:
        raise UserError(
            f"{address!r} is not in a local domain (configured: {', '.join(domains) or 'none'})"
        )
    return f"{local.lower()}@{domain}"


def host_port(host: str, port: int) -> str:
    """``host:port``, with an IPv6 address in brackets (``[::1]:25``) so the port stays
    unambiguous, as listen addresses, nameservers and peers are written everywhere."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
