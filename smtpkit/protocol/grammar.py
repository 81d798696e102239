"""The syntax of SMTP command arguments: paths and ESMTP parameters (RFC 5321 4.1.2, RFC 6531
3.3 for UTF-8, RFC 1870 SIZE, RFC 6152 and RFC 3030 BODY, RFC 6531 3.4 SMTPUTF8), and BDAT's
(RFC 3030 2).

Pure functions from an argument string to an event or a refusal ``Reply``; the engine in
``connection.py`` decides which command may come when, and this module only whether its
argument is well-formed. Nothing here knows about state, sockets or policy.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final

from smtpkit.protocol.dsn import parse_mail_dsn, parse_rcpt_dsn
from smtpkit.protocol.events import Auth, Bdat, MailFrom, RcptTo
from smtpkit.protocol.replies import (
    SYNTAX_ERROR_ARGS,
    SYNTAX_ERROR_PARAMS,
    UNKNOWN_PARAMETER,
    Reply,
)

__all__ = ["BASE64", "CONTROL", "parse_auth", "parse_bdat", "parse_mail", "parse_rcpt"]

# Control characters have no place in any command argument (RFC 5321 4.1.2 allows none), and
# keeping them out means nothing echoed into a reply or a journal line can break it.
CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")

_NON_ASCII = "\u0080-\U0010ffff"
# RFC 5322 3.2.3 atext, widened with UTF-8 (RFC 6531 3.3) so that policy, not syntax, decides
# about internationalised addresses: refused without the transaction's SMTPUTF8 parameter,
# checked against the mailbox rules of addresses.py with it.
_ATEXT = rf"[A-Za-z0-9!#$%&'*+\-/=?^_`{{|}}~{_NON_ASCII}]"
_DOT_STRING = rf"{_ATEXT}+(?:\.{_ATEXT}+)*"
# RFC 5321 4.1.2 Quoted-string: qtextSMTP or a backslash pair.
_QUOTED_STRING = rf'"(?:[\x20\x21\x23-\x5b\x5d-\x7e{_NON_ASCII}]|\\[\x20-\x7e])*"'
_QUOTED_PAIR: Final = re.compile(r"\\([\x20-\x7e])")
_DOT_STRING_RE: Final = re.compile(_DOT_STRING)
_LET_DIG = rf"[A-Za-z0-9{_NON_ASCII}]"
_SUB_DOMAIN = rf"{_LET_DIG}(?:[A-Za-z0-9\-{_NON_ASCII}]*{_LET_DIG})?"
_DOMAIN = rf"{_SUB_DOMAIN}(?:\.{_SUB_DOMAIN})*"
# Brackets around dcontent (RFC 5321 4.1.3); what is inside is checked by _valid_literal().
_ADDRESS_LITERAL = r"\[[\x21-\x5a\x5e-\x7e]+\]"
# RFC 5321 4.1.2 Path = "<" [ A-d-l ":" ] Mailbox ">". A trailing dot on the domain is not
# RFC syntax but is accepted and kept so that policy can refuse it with a precise reply.
_PATH: Final = re.compile(
    rf"<(?:@{_DOMAIN}(?:,@{_DOMAIN})*:)?"
    rf"(?P<mailbox>(?P<local>{_DOT_STRING}|{_QUOTED_STRING})"
    rf"@(?P<domain>{_DOMAIN}\.?|{_ADDRESS_LITERAL}))>"
)
# RFC 5321 4.1.1.3: the bare postmaster recipient, without a domain, in any case.
_POSTMASTER: Final = re.compile(r"<(?P<mailbox>postmaster)>", re.IGNORECASE)
_FROM: Final = re.compile(r"FROM: *", re.IGNORECASE)
_TO: Final = re.compile(r"TO: *", re.IGNORECASE)
# RFC 5321 4.1.2 esmtp-param = esmtp-keyword ["=" esmtp-value].
_PARAM: Final = re.compile(
    r"(?P<key>[A-Za-z0-9][A-Za-z0-9\-]*)(?:=(?P<value>[\x21-\x3c\x3e-\x7e]+))?"
)
_IPV4: Final = re.compile(r"(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})")
_GENERAL_TAG: Final = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?")

# RFC 5321 4.5.3.1.1-3, counted in octets.
_MAX_LOCAL_PART: Final = 64
_MAX_DOMAIN: Final = 255
_MAX_PATH: Final = 256
# RFC 1870 SIZE is a decimal count of octets; 20 digits already exceed any 64-bit size.
_MAX_SIZE_DIGITS: Final = 20
_BODY_TYPES: Final = frozenset({"7BIT", "8BITMIME", "BINARYMIME"})  # RFC 6152, RFC 3030 3
# RFC 3461 4: the parameters of the DSN extension (whether it is offered is the session's
# business: the engine checks their syntax).
_MAIL_DSN: Final = frozenset({"RET", "ENVID"})
_RCPT_DSN: Final = frozenset({"NOTIFY", "ORCPT"})


def _octets(text: str) -> int:
    return len(text.encode("utf-8"))


def _valid_literal(literal: str) -> bool:
    """RFC 5321 4.1.3 address literal, the brackets removed."""
    ipv4 = _IPV4.fullmatch(literal)
    if ipv4 is not None:
        return all(int(part) <= 255 for part in ipv4.groups())
    tag, colon, rest = literal.partition(":")
    if not colon:
        return False
    if tag.upper() == "IPV6":
        if "%" in rest:  # zone identifiers are not part of RFC 5321 IPv6-addr
            return False
        try:
            ipaddress.IPv6Address(rest)
        except ValueError:
            return False
        return True
    # General-address-literal = Standardized-tag ":" 1*dcontent (dcontent checked by _PATH).
    return bool(rest) and _GENERAL_TAG.fullmatch(tag) is not None


def _parse_path(text: str, *, postmaster: bool) -> tuple[str, str] | Reply:
    """Parse the path at the start of ``text``; return (address, what follows) or a refusal.

    A source route is dropped (RFC 5321 Appendix C); the quotes of a quoted local part are
    kept.
    """
    match = _PATH.match(text)
    if match is None and postmaster:
        match = _POSTMASTER.match(text)
    if match is None:
        return SYNTAX_ERROR_ARGS
    if _octets(match.group(0)) > _MAX_PATH:
        return SYNTAX_ERROR_ARGS
    groups = match.groupdict()
    local, domain = groups.get("local"), groups.get("domain")
    mailbox = match.group("mailbox")
    if local is not None and domain is not None:
        if _octets(local) > _MAX_LOCAL_PART or _octets(domain) > _MAX_DOMAIN:
            return SYNTAX_ERROR_ARGS
        if domain.startswith("[") and not _valid_literal(domain[1:-1]):
            return SYNTAX_ERROR_ARGS
        if local.startswith('"'):
            # RFC 5321 4.1.2: a quoted local part that needs no quoting is the same mailbox
            # as its dot-string ("alice"@x is alice@x); give it in that one form.
            unquoted = _QUOTED_PAIR.sub(r"\1", local[1:-1])
            if _DOT_STRING_RE.fullmatch(unquoted):
                mailbox = f"{unquoted}@{domain}"
    return mailbox, text[match.end() :]


def _split_params(rest: str) -> list[str] | Reply:
    """The space-separated parameters after a path; the path must end before a space."""
    if not rest:
        return []
    if not rest.startswith(" "):
        return SYNTAX_ERROR_ARGS
    return [p for p in rest.split(" ") if p]


def parse_mail(argument: str, extended: bool) -> MailFrom | Reply:
    """``MAIL FROM:<reverse-path> [params]`` (RFC 5321 4.1.1.2)."""
    prefix = _FROM.match(argument)
    if prefix is None:
        return SYNTAX_ERROR_ARGS
    text = argument[prefix.end() :]
    if text.startswith("<>"):
        address, rest = "", text[2:]
    else:
        parsed = _parse_path(text, postmaster=False)
        if isinstance(parsed, Reply):
            return parsed
        address, rest = parsed
    params = _split_params(rest)
    if isinstance(params, Reply):
        return params
    size: int | None = None
    body: str | None = None
    smtputf8 = False
    dsn: dict[str, str | None] = {}
    seen: set[str] = set()
    for param in params:
        match = _PARAM.fullmatch(param)
        if match is None:
            return SYNTAX_ERROR_PARAMS
        if not extended:
            # RFC 5321 4.1.1.2 / RFC 1869: parameters exist only in the EHLO dialogue.
            return UNKNOWN_PARAMETER
        key = match.group("key").upper()
        value = match.group("value")
        if key in seen:
            return SYNTAX_ERROR_PARAMS
        seen.add(key)
        if key == "SIZE":
            # RFC 1870 6: size-value = 1*20DIGIT.
            if value is None or not value.isascii() or not value.isdigit():
                return SYNTAX_ERROR_PARAMS
            if len(value) > _MAX_SIZE_DIGITS:
                return SYNTAX_ERROR_PARAMS
            size = int(value)
        elif key == "BODY":
            # RFC 6152 2: BODY=7BIT or BODY=8BITMIME; RFC 3030 3: BODY=BINARYMIME.
            if value is None or value.upper() not in _BODY_TYPES:
                return SYNTAX_ERROR_PARAMS
            body = value.upper()
        elif key == "SMTPUTF8":
            # RFC 6531 3.4: a keyword without a value.
            if value is not None:
                return SYNTAX_ERROR_PARAMS
            smtputf8 = True
        elif key in _MAIL_DSN:
            dsn[key] = value
        else:
            return UNKNOWN_PARAMETER
    mail_dsn = None
    if dsn:
        try:
            mail_dsn = parse_mail_dsn(dsn)
        except ValueError:
            return SYNTAX_ERROR_PARAMS  # RFC 3461 4: a bad value is 501 5.5.4
    return MailFrom(address, size=size, body=body, dsn=mail_dsn, smtputf8=smtputf8)


def parse_rcpt(argument: str, extended: bool = True) -> RcptTo | Reply:
    """``RCPT TO:<forward-path> [params]`` (RFC 5321 4.1.1.3); the parameters of RFC 3461
    (NOTIFY, ORCPT) only."""
    prefix = _TO.match(argument)
    if prefix is None:
        return SYNTAX_ERROR_ARGS
    parsed = _parse_path(argument[prefix.end() :], postmaster=True)
    if isinstance(parsed, Reply):
        return parsed
    address, rest = parsed
    params = _split_params(rest)
    if isinstance(params, Reply):
        return params
    dsn: dict[str, str | None] = {}
    for param in params:
        # Anything but NOTIFY= or ORCPT= (a second path, a typo) is a parameter we do not
        # know: 555 (RFC 5321 4.1.1.11).
        match = _PARAM.fullmatch(param)
        if match is None or not extended or match.group("key").upper() not in _RCPT_DSN:
            return UNKNOWN_PARAMETER
        key = match.group("key").upper()
        if key in dsn:
            return SYNTAX_ERROR_PARAMS
        dsn[key] = match.group("value")
    if not dsn:
        return RcptTo(address)
    try:
        return RcptTo(address, dsn=parse_rcpt_dsn(dsn))
    except ValueError:
        return SYNTAX_ERROR_PARAMS


# RFC 3030 2: chunk-size = 1*DIGIT. Bounded like SIZE: 20 digits already exceed any 64-bit
# size, and a chunk over the message size limit is read and refused anyway.
_MAX_CHUNK_DIGITS: Final = 20


def parse_bdat(argument: bytes) -> Bdat | None:
    """``BDAT chunk-size [LAST]`` (RFC 3030 2), the argument as received; None when it is
    not that. There is no refusal to pick here: the engine cannot tell where the chunk of a
    BDAT it cannot read ends, so every such one is the same error."""
    words = [word for word in argument.split(b" ") if word]
    if not 1 <= len(words) <= 2:
        return None
    size = words[0]
    if not (size.isdigit() and len(size) <= _MAX_CHUNK_DIGITS):
        return None
    if len(words) == 2 and words[1].upper() != b"LAST":
        return None
    return Bdat(int(size), len(words) == 2)


# RFC 4954 4: auth-type = 1*20 (ALPHA / DIGIT / "-" / "_"); initial-response = base64 / "=".
_MECHANISM: Final = re.compile(r"[A-Za-z0-9_-]{1,20}")
#: A base64 text (RFC 4648 4), or "=" for an empty one (RFC 4954 4).
BASE64: Final = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?|=")


def parse_auth(argument: str) -> Auth | Reply:
    """``AUTH mechanism [initial-response]`` (RFC 4954 4)."""
    mechanism, _, initial = argument.partition(" ")
    if not _MECHANISM.fullmatch(mechanism) or " " in initial:
        return SYNTAX_ERROR_ARGS
    if initial and not BASE64.fullmatch(initial):
        return SYNTAX_ERROR_ARGS
    return Auth(mechanism.upper(), initial or None)
