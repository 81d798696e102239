"""DKIM verification (RFC 6376) through dkimpy, one result per DKIM-Signature field.

dkimpy does the work: it parses the signature, canonicalizes, hashes and checks the signature
with the key. It asks DNS for the key through the ``dnsfunc`` it is given, which here asks our
resolver within the deadline and remembers how the lookup went. That matters because dkimpy's
``verify`` answers only True or False (or raises): the lookup's outcome is what tells a
signature that does not verify (``fail``) from a key that does not exist (``permerror``, RFC
6376 6.1.2: "no key for signature") and from a key that could not be fetched (``temperror``).

Results (RFC 8601 2.7.1): ``pass``; ``fail`` when the body hash or the signature does not
match; ``neutral`` for a signature that cannot be used (bad syntax, expired, a ``t=`` in the
future); ``permerror`` for a key that does not exist or is unusable; ``temperror`` for a key
lookup that failed or did not end in time; ``policy`` for ``rsa-sha1``, which RFC 8301 3.1 no
longer accepts.

At most ``MAX_SIGNATURES`` signatures are verified, the topmost (RFC 6376 6.1 lets verifiers
limit them): each costs a DNS query, and anyone can add signatures. The others are left out
of the results.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import NoReturn

import dkim
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver
from dkim.util import DuplicateTag, InvalidTagValueList, parse_tag_value

from smtpkit.mailauth.results import Deadline, DkimResult

__all__ = ["MAX_SIGNATURES", "verify_dkim"]

MAX_SIGNATURES = 10

# dkimpy logs every failure at error level; what happened is in the result instead.
_LOG = logging.getLogger("smtpkit.mailauth.dkimverify")

# The start of a DKIM-Signature field, and the empty line that ends the header section.
_SIGNATURE_FIELD = re.compile(rb"(?:\A|\n)dkim-signature[ \t]*:", re.IGNORECASE)
_EMPTY_LINE = re.compile(rb"(?:\A|\n)\r?\n")


@dataclass(slots=True)
class _KeyLookup:
    """dkimpy's ``dnsfunc(name, timeout=...)``: the TXT record of a key, or None when there
    is none; raises ``dkim.DnsTimeoutError`` for a lookup that failed. ``problem`` keeps what
    went wrong, ``record`` what was found."""

    resolver: dns.resolver.Resolver
    deadline: Deadline
    record: bytes | None = None
    problem: str = ""
    temporary: bool = False

    def __call__(self, name: bytes, timeout: float = 5) -> bytes | None:
        try:
            qname = dns.name.from_text(name.decode("ascii"))
        except (UnicodeDecodeError, dns.exception.DNSException):
            self.problem = "no key for signature: the key's name is not a DNS name"
            return None
        lifetime = self.deadline.lifetime(self.resolver)
        if lifetime <= 0:
            self._failed("no time left to look up the key")
        try:
            answer = self.resolver.resolve(qname, dns.rdatatype.TXT, lifetime=lifetime)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            self.problem = "no key for signature"
            return None
        except dns.exception.Timeout:
            self._failed("key lookup timed out")
        except dns.exception.DNSException as exc:
            self._failed(f"key lookup failed: {type(exc).__name__}")
        records = [b"".join(r.strings) for r in answer]
        if not records:
            self.problem = "no key for signature"
            return None
        # RFC 6376 3.6.2.2: with several records the result is undefined; take the first.
        self.record = records[0]
        return self.record

    def _failed(self, problem: str) -> NoReturn:
        self.problem = problem
        self.temporary = True
        raise dkim.DnsTimeoutError(problem)


def verify_dkim(
    message: bytes, resolver: dns.resolver.Resolver, deadline: Deadline
) -> tuple[DkimResult, ...]:
    """One result per DKIM-Signature field of ``message`` (top first, at most
    ``MAX_SIGNATURES``); empty for an unsigned message. Never raises for a bad signature,
    key or DNS trouble."""
    end = _EMPTY_LINE.search(message)
    if not _SIGNATURE_FIELD.search(message[: end.start() if end else len(message)]):
        return ()  # unsigned: dkimpy need not read the body at all
    try:
        verifier = dkim.DKIM(message, logger=_LOG, minkey=1024)
    except dkim.DKIMException as exc:
        # dkimpy could not split the header section into fields (a line without a colon).
        return (DkimResult("permerror", "", "", "", f"header section unusable: {_short(exc)}"),)
    fields = [v for n, v in verifier.headers if n.lower() == b"dkim-signature"]
    return tuple(
        _verify_one(verifier, index, value, resolver, deadline)
        for index, value in enumerate(fields[:MAX_SIGNATURES])
    )


def _verify_one(
    verifier: dkim.DKIM,
    index: int,
    value: bytes,
    resolver: dns.resolver.Resolver,
    deadline: Deadline,
) -> DkimResult:
    try:
        tags = parse_tag_value(value)
    except InvalidTagValueList as exc:
        return DkimResult("neutral", "", "", "", f"signature unusable: {_short(exc)}")
    domain = _tag(tags, b"d").lower()
    selector = _tag(tags, b"s")
    algorithm = _tag(tags, b"a").lower()

    def result(word: str, reason: str = "") -> DkimResult:
        return DkimResult(word, domain, selector, algorithm, reason)

    if algorithm == "rsa-sha1":
        return result("policy", "rsa-sha1 is not accepted (RFC 8301)")
    if deadline.left() <= 0:
        return result("temperror", "no time left to look up the key")
    lookup = _KeyLookup(resolver, deadline)
    try:
        verified = verifier.verify(idx=index, dnsfunc=lookup)
    except dkim.ValidationError as exc:
        # Raised before the key lookup: the signature's fields are unusable. After it: the
        # body hash did not match.
        if lookup.record is None:
            return result("neutral", f"signature unusable: {_short(exc)}")
        return result("fail", _short(exc))
    except dkim.MessageFormatError as exc:
        return result("neutral", f"signature unusable: {_short(exc)}")
    except dkim.DKIMException as exc:
        return result("permerror", f"unusable key: {_short(exc)}")
    except Exception as exc:
        # dkimpy parses keys and signatures anyone can publish; whatever else it trips over
        # in one is that signature's fault, and must not end the caller's work.
        return result("permerror", f"verification failed: {type(exc).__name__}")
    if verified:
        return result("pass")
    if lookup.temporary:
        return result("temperror", lookup.problem)
    if lookup.record is None:
        return result("permerror", lookup.problem or "no key for signature")
    problem = _key_problem(lookup.record)
    if problem:
        return result("permerror", problem)
    return result("fail", "signature did not verify")


def _key_problem(record: bytes) -> str:
    """Why a key record cannot verify anything, or "" when it can (and the signature simply
    did not match)."""
    try:
        tags = parse_tag_value(record)
    except InvalidTagValueList as exc:
        return f"unusable key: {_short(exc)}"
    if not re.sub(rb"\s+", b"", tags.get(b"p", b"x")):
        return "key revoked"  # RFC 6376 3.6.1: an empty p= revokes the key
    try:
        dkim.evaluate_pk(b"", record)
    except Exception as exc:
        return f"unusable key: {_short(exc)}"
    return ""


def _tag(tags: dict[bytes, bytes], name: bytes) -> str:
    return re.sub(rb"\s+", b"", tags.get(name, b"")).decode("utf-8", "replace")


def _short(exc: Exception) -> str:
    """dkimpy's message for a person: without the data it appends in parentheses (hashes,
    keys), and bytes shown as text (``missing b=``, not ``missing b'b'=``)."""
    if isinstance(exc, DuplicateTag):
        return f"duplicate tag {_text(exc)}"
    if isinstance(exc, InvalidTagValueList):
        return f"malformed tag {_text(exc)}"
    return _text(exc).split(" (", 1)[0]


def _text(exc: Exception) -> str:
    return re.sub(r"""\bb(['"])(.*?)\1""", r"\2", str(exc))
