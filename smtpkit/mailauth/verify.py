"""Checking mail that arrives: SPF, DKIM and DMARC for one message, as one ``Verdict``.

``check_spf`` checks the envelope alone (usable at RCPT time); ``check_message`` checks a whole
message as stored and whatever DMARC needs. Both are blocking, ask DNS only through the
resolver given, and end within ``time_limit`` seconds: a check the time limit cuts short is
``temperror``, never an exception. ``strip_authentication_results`` removes the
Authentication-Results fields that claim to be ours before the message is stored with our own
(RFC 8601 5).

The order inside ``check_message`` puts what DMARC needs first (SPF of MAIL FROM, DKIM, the
DMARC record) and the separate check of the HELO name last, so that a slow nameserver for the
HELO name costs only that informational result.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

import dns.resolver

from smtpkit.mailauth.dkimverify import verify_dkim
from smtpkit.mailauth.dmarc import author_domain, check_dmarc, organizational_domain
from smtpkit.mailauth.results import Deadline, DkimResult, DmarcResult, SpfResult, Verdict
from smtpkit.mailauth.spf import check_host, spf_domain

__all__ = ["check_message", "check_spf", "preload", "strip_authentication_results"]


def preload() -> None:
    """Read now what the checks would otherwise read from disk on first use: the Public
    Suffix List, and the record types dnspython imports when an answer first holds one. A
    server calls this before it drops its privileges, after which those files may be out of
    reach."""
    import dns.rdtypes.ANY.CNAME
    import dns.rdtypes.ANY.MX
    import dns.rdtypes.ANY.PTR
    import dns.rdtypes.ANY.TXT
    import dns.rdtypes.IN.A
    import dns.rdtypes.IN.AAAA  # noqa: F401

    organizational_domain("example.org")


def check_spf(
    *,
    client_ip: str,
    helo: str,
    mail_from: str,
    resolver: dns.resolver.Resolver,
    time_limit: float = 10.0,
) -> SpfResult:
    """The SPF result of the envelope (RFC 7208).

    ``mail_from`` is the envelope sender, "" for the null sender: then the identity checked
    is the HELO name's (RFC 7208 2.4) and ``scope`` is "helo". Otherwise MAIL FROM's domain
    is checked, and the HELO name too, on its own, as RFC 7208 2.3 recommends (``helo``; None
    when the HELO name is no domain, an address literal for instance). A MAIL FROM or HELO
    domain that is malformed or single-label is ``none`` (RFC 7208 4.3). ``ValueError`` for a
    ``client_ip`` that is not an IP address.
    """
    deadline = Deadline.after(time_limit)
    found = _envelope_spf(client_ip, helo, mail_from, resolver, deadline)
    if mail_from:
        found = dataclasses.replace(found, helo=_helo_spf(client_ip, helo, resolver, deadline))
    return found


def check_message(
    message: bytes,
    *,
    client_ip: str,
    helo: str,
    mail_from: str,
    resolver: dns.resolver.Resolver,
    spf: bool = True,
    dkim: bool = True,
    dmarc: bool = True,
    time_limit: float = 10.0,
    spf_result: SpfResult | None = None,
) -> Verdict:
    """SPF, DKIM and DMARC for ``message``, the whole of it as stored (CRLF line ends).

    ``spf``, ``dkim`` and ``dmarc`` choose what the verdict reports; DMARC needs SPF and DKIM
    results, so with ``dmarc`` they are found even when not reported. ``spf_result`` is what
    ``check_spf`` already found for this envelope (at RCPT time): given, SPF is not checked
    again. From: (RFC 7489 6.6.1) and the DKIM-Signature fields are looked for in the header
    section only; our own Return-Path: and Received: on top change neither result.
    """
    deadline = Deadline.after(time_limit)
    envelope: SpfResult | None = None
    if spf or dmarc:
        envelope = spf_result
        if envelope is None:
            envelope = _envelope_spf(client_ip, helo, mail_from, resolver, deadline)
    signatures: tuple[DkimResult, ...] = ()
    if dkim or dmarc:
        signatures = verify_dkim(message, resolver, deadline)
    policy: DmarcResult | None = None
    if dmarc:
        author = author_domain(
            [message[f.value_start : f.end] for f in _header_fields(message) if f.name == b"from"]
        )
        if isinstance(author, DmarcResult):
            policy = author
        else:
            policy = check_dmarc(author, envelope, signatures, resolver, deadline)
    if spf and spf_result is None and envelope is not None and mail_from:
        envelope = dataclasses.replace(
            envelope, helo=_helo_spf(client_ip, helo, resolver, deadline)
        )
    return Verdict(
        spf=envelope if spf else None,
        dkim=signatures if dkim else (),
        dmarc=policy,
        dkim_checked=dkim,
    )


def _envelope_spf(
    client_ip: str, helo: str, mail_from: str, resolver: dns.resolver.Resolver, deadline: Deadline
) -> SpfResult:
    """SPF for MAIL FROM's domain, or for the HELO name when the sender is null."""
    if not mail_from:
        domain = spf_domain(helo)
        if domain is None:
            return SpfResult("none", helo.strip(), "helo", reason="HELO name is not a domain")
        result, reason = check_host(
            client_ip=client_ip,
            domain=domain,
            sender=f"postmaster@{domain}",
            helo=helo,
            resolver=resolver,
            deadline=deadline,
        )
        return SpfResult(result, domain, "helo", reason=reason)
    _, at, given = mail_from.rpartition("@")
    domain = spf_domain(given if at else mail_from)
    if domain is None:
        return SpfResult(
            "none",
            (given if at else mail_from).lower(),
            "mailfrom",
            reason="MAIL FROM domain is not a domain",
            sender=mail_from,
        )
    result, reason = check_host(
        client_ip=client_ip,
        domain=domain,
        sender=mail_from,
        helo=helo,
        resolver=resolver,
        deadline=deadline,
    )
    return SpfResult(result, domain, "mailfrom", reason=reason, sender=mail_from)


def _helo_spf(
    client_ip: str, helo: str, resolver: dns.resolver.Resolver, deadline: Deadline
) -> str | None:
    """The SPF result of the HELO identity alone (RFC 7208 2.3); None for a HELO name that is
    no domain, which is not checked."""
    domain = spf_domain(helo)
    if domain is None:
        return None
    result, _ = check_host(
        client_ip=client_ip,
        domain=domain,
        sender=f"postmaster@{domain}",
        helo=helo,
        resolver=resolver,
        deadline=deadline,
    )
    return result


# --- the header section -----------------------------------------------------------------------


@dataclass(slots=True)
class _Field:
    """One header field: its name (lower case; empty for a line that is no field), where it
    starts, where its value starts (after the colon) and where it ends (after the line end
    of its last continuation line)."""

    name: bytes
    start: int
    value_start: int
    end: int


# RFC 5322 3.6.8: a field name is printable ASCII but the colon; obsolete syntax (4.5.8)
# allows white space before the colon.
_FIELD_NAME = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")


def _header_fields(message: bytes) -> list[_Field]:
    """The fields of the header section, which ends at the first empty line (or the end)."""
    fields: list[_Field] = []
    position = 0
    while position < len(message):
        newline = message.find(b"\n", position)
        end = len(message) if newline < 0 else newline + 1
        line = message[position:end]
        if line in (b"\r\n", b"\n"):
            break
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1].end = end
        else:
            match = _FIELD_NAME.match(line)
            if match:
                fields.append(_Field(match[1].lower(), position, position + match.end(), end))
            else:
                fields.append(_Field(b"", position, end, end))
        position = end
    return fields


def strip_authentication_results(message: bytes, authserv_id: str) -> tuple[bytes, int]:
    """Remove the Authentication-Results fields of the header section whose authserv-id is
    ours (case-insensitively, whatever comment or version follows it), with their
    continuation lines; returns the message and how many were removed (RFC 8601 5: a field
    that claims our name but did not come from us is a forgery). Other servers' fields, the
    body and every other byte stay as they are."""
    ours = authserv_id.strip().encode("utf-8").lower()
    if not ours:
        return message, 0
    pieces: list[bytes] = []
    kept_from = 0
    removed = 0
    for field in _header_fields(message):
        if field.name != b"authentication-results":
            continue
        if _authserv_id(message[field.value_start : field.end]) != ours:
            continue
        pieces.append(message[kept_from : field.start])
        kept_from = field.end
        removed += 1
    if not removed:
        return message, 0
    pieces.append(message[kept_from:])
    return b"".join(pieces), removed


# RFC 2045 5.1's token (RFC 8601 2.2: the authserv-id is a value); bytes above 127 are let in
# for a UTF-8 name (RFC 8601 2.5).
_TOKEN = re.compile(rb'[^\x00-\x20\x7f()<>@,;:\\"/\[\]?=]+')


def _authserv_id(value: bytes) -> bytes | None:
    """The authserv-id an Authentication-Results value starts with, lower case; None when it
    starts with none."""
    text = re.sub(rb"\r?\n", b"", value)
    position = _skip_cfws(text, 0)
    if text[position : position + 1] == b'"':
        found = bytearray()
        position += 1
        while position < len(text):
            char = text[position : position + 1]
            if char == b"\\":
                found += text[position + 1 : position + 2]
                position += 2
            elif char == b'"':
                return bytes(found).lower()
            else:
                found += char
                position += 1
        return None
    match = _TOKEN.match(text, position)
    return match[0].lower() if match else None


def _skip_cfws(text: bytes, position: int) -> int:
    """The position after any white space and comments (nested, RFC 5322 3.2.2)."""
    depth = 0
    while position < len(text):
        char = text[position : position + 1]
        if char == b"\\" and depth:
            position += 2
            continue
        if char == b"(":
            depth += 1
        elif char == b")" and depth:
            depth -= 1
        elif not depth and char not in (b" ", b"\t"):
            return position
        position += 1
    return position
