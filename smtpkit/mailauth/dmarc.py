"""DMARC (RFC 7489): the policy of the From: domain, and whether SPF or DKIM passed for a
domain aligned with it.

A message passes DMARC when SPF passed for a domain aligned with its From: domain, or any DKIM
signature passed for one (RFC 7489 4.2). Aligned is relaxed by default: both domains have the
same organizational domain (the public suffix and one label more, RFC 7489 3.2, from the
Public Suffix List); strict (``aspf=s``, ``adkim=s``) asks for the very same domain.

The policy record is a TXT record at ``_dmarc.<From domain>``, else at ``_dmarc.<organizational
domain>`` (RFC 7489 6.6.3), where ``sp=`` (if given) speaks for subdomains. Its tag=value list
is simple enough to read here (RFC 7489 6.3, 6.4).

When nothing aligned passed but an aligned check could not finish (a DNS failure, the time
limit), the result is ``temperror``, not ``fail``: our own DNS trouble must not turn a
domain's ``p=reject`` against its genuine mail.
"""

from __future__ import annotations

import email.utils
import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver
from publicsuffixlist import PublicSuffixList

from smtpkit.addresses import normalize_domain
from smtpkit.errors import UserError
from smtpkit.mailauth.results import Deadline, DkimResult, DmarcResult, SpfResult

__all__ = [
    "DmarcRecord",
    "aligned",
    "author_domain",
    "check_dmarc",
    "organizational_domain",
    "is_record",
    "parse_record",
]

POLICIES = ("none", "quarantine", "reject")

# RFC 7489 6.4: a record starts with the version tag; anything else at _dmarc is not DMARC's.
_VERSION = re.compile(r"[ \t]*v[ \t]*=[ \t]*DMARC1[ \t]*(?:;|\Z)")
# RFC 3986 3.1: a URI starts with its scheme ("mailto:"); enough to tell an rua= that names
# somewhere to report to from one that does not.
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:\S")


@dataclass(frozen=True, slots=True)
class DmarcRecord:
    """What a DMARC record asks for (RFC 7489 6.3); defaults where a tag is absent."""

    policy: str
    subdomain_policy: str | None = None
    adkim: str = "r"
    aspf: str = "r"
    pct: int = 100


def is_record(text: str) -> bool:
    """Whether a TXT record at ``_dmarc`` is DMARC's: it starts with ``v=DMARC1``."""
    return _VERSION.match(text) is not None


def parse_record(text: str) -> DmarcRecord:
    """Read a DMARC record (``v=DMARC1; p=reject; ...``); ``ValueError`` saying why one is
    unusable.

    Tags are read case-insensitively, unknown tags ignored (RFC 7489 6.3). A record whose
    ``p=`` or ``sp=`` is missing or wrong still counts as ``p=none`` when its ``rua=`` names a
    place to report to (RFC 7489 6.6.3 step 6); otherwise it is unusable. A wrong ``adkim``,
    ``aspf`` or ``pct`` falls back to its default.
    """
    if not is_record(text):
        raise ValueError("not a DMARC1 record")
    tags: dict[str, str] = {}
    for spec in text.split(";"):
        name, equals, value = spec.partition("=")
        if not spec.strip():
            continue
        if not equals:
            raise ValueError(f"{spec.strip()!r} is not tag=value")
        tags.setdefault(name.strip().lower(), value.strip())
    policy = tags.get("p", "").lower()
    subdomain_policy = tags["sp"].lower() if "sp" in tags else None
    if policy not in POLICIES or subdomain_policy not in (None, *POLICIES):
        if any(_URI.match(uri.strip()) for uri in tags.get("rua", "").split(",")):
            return DmarcRecord("none")
        if policy not in POLICIES:
            raise ValueError("no valid p= tag" if not policy else f"p={policy} is not a policy")
        raise ValueError(f"sp={subdomain_policy} is not a policy")
    pct = tags.get("pct", "100")
    return DmarcRecord(
        policy,
        subdomain_policy,
        adkim="s" if tags.get("adkim", "").lower() == "s" else "r",
        aspf="s" if tags.get("aspf", "").lower() == "s" else "r",
        pct=int(pct) if pct.isdigit() and int(pct) <= 100 else 100,
    )


@functools.cache
def _public_suffixes() -> PublicSuffixList:
    """The Public Suffix List bundled with publicsuffixlist, private domains included (a
    github.io site is its own organization). Loaded once, on first use; read-only after."""
    return PublicSuffixList()


def organizational_domain(domain: str) -> str:
    """RFC 7489 3.2: the public suffix of ``domain`` and one label more; a domain that is
    itself a public suffix is its own. A top-level domain the list does not know (such as
    ``test``) counts as a public suffix, by the list's default rule ``*``."""
    name = domain.lower().rstrip(".")
    found = _public_suffixes().privatesuffix(name)
    return found if isinstance(found, str) else name


def aligned(domain: str, from_domain: str, mode: str) -> bool:
    """Whether an authenticated ``domain`` aligns with the From: domain: the same domain in
    strict mode ("s"), the same organizational domain in relaxed mode ("r"). Compared in
    their ASCII form, so a ``d=`` written with U-labels (RFC 8616) still aligns."""
    a = _ascii(domain)
    b = _ascii(from_domain)
    if not a or not b:
        return False
    if mode == "s":
        return a == b
    return organizational_domain(a) == organizational_domain(b)


def _ascii(domain: str) -> str:
    name = domain.strip().rstrip(".")
    try:
        return normalize_domain(name)
    except UserError:
        return name.lower()


def author_domain(from_fields: Sequence[bytes]) -> str | DmarcResult:
    """The From: domain DMARC evaluates (ASCII, lower case), given the values of the header
    section's From: fields; or the result when there is not exactly one.

    RFC 7489 6.6.1: DMARC needs exactly one From: domain. No From: field, or none with a
    domain in it, leaves nothing to evaluate (``none``). Several From: fields, or one with
    addresses in different domains, are forbidden or ambiguous (``permerror``).
    """
    if not from_fields:
        return DmarcResult("none", "", "none", "no From: field")
    if len(from_fields) > 1:
        return DmarcResult("permerror", "", "none", "several From: fields")
    value = re.sub(rb"\r?\n", b"", from_fields[0]).decode("utf-8", "surrogateescape")
    domains = {
        address.rpartition("@")[2].strip().rstrip(".").lower()
        for _, address in email.utils.getaddresses([value])
        if "@" in address
    }
    domains.discard("")
    if not domains:
        return DmarcResult("none", "", "none", "no domain in From:")
    if len(domains) > 1:
        return DmarcResult("permerror", "", "none", "several domains in From:")
    domain = domains.pop()
    try:
        return normalize_domain(domain)
    except UserError:
        return DmarcResult("none", "", "none", "From: domain is not a domain name")


class _LookupFailed(Exception):
    """A policy lookup that failed or did not end in time."""


def check_dmarc(
    from_domain: str,
    spf: SpfResult | None,
    dkim: Sequence[DkimResult],
    resolver: dns.resolver.Resolver,
    deadline: Deadline,
) -> DmarcResult:
    """The DMARC result for mail from ``from_domain`` (as ``author_domain`` gives it), with
    the SPF result of its envelope and the results of its DKIM signatures."""
    organization = organizational_domain(from_domain)
    try:
        records = _records(f"_dmarc.{from_domain}", resolver, deadline)
        at_organization = False
        if not records and organization != from_domain:
            records = _records(f"_dmarc.{organization}", resolver, deadline)
            at_organization = True
    except _LookupFailed as exc:
        return DmarcResult("temperror", from_domain, "none", str(exc))
    if not records:
        return DmarcResult("none", from_domain, "none", "no DMARC record")
    if len(records) > 1:
        # RFC 7489 6.6.3 step 5: no policy then; the domain's mistake, so an error.
        return DmarcResult("permerror", from_domain, "none", "several DMARC records")
    try:
        record = parse_record(records[0])
    except ValueError as exc:
        return DmarcResult("permerror", from_domain, "none", f"unusable DMARC record: {exc}")
    policy = record.policy
    if at_organization and record.subdomain_policy is not None:
        policy = record.subdomain_policy

    def result(word: str, reason: str = "") -> DmarcResult:
        return DmarcResult(word, from_domain, policy, reason, record.pct)

    spf_aligned = spf is not None and aligned(spf.domain, from_domain, record.aspf)
    dkim_aligned = [r for r in dkim if aligned(r.domain, from_domain, record.adkim)]
    if (spf_aligned and spf is not None and spf.result == "pass") or any(
        r.result == "pass" for r in dkim_aligned
    ):
        return result("pass")
    if (spf_aligned and spf is not None and spf.result == "temperror") or any(
        r.result == "temperror" for r in dkim_aligned
    ):
        return result("temperror", "an aligned check could not be completed")
    return result("fail")  # the word says it all: no aligned SPF or DKIM pass


def _records(name: str, resolver: dns.resolver.Resolver, deadline: Deadline) -> list[str]:
    """The DMARC records at ``name``: TXT records that start with ``v=DMARC1``."""
    try:
        qname = dns.name.from_text(name)
    except dns.exception.DNSException:
        return []  # too long a name to have a record
    lifetime = deadline.lifetime(resolver)
    if lifetime <= 0:
        raise _LookupFailed("no time left to look up the DMARC record")
    try:
        answer = resolver.resolve(qname, dns.rdatatype.TXT, lifetime=lifetime)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except dns.exception.Timeout:
        raise _LookupFailed("DMARC record lookup timed out") from None
    except dns.exception.DNSException as exc:
        raise _LookupFailed(f"DMARC record lookup failed: {type(exc).__name__}") from None
    texts = [b"".join(r.strings).decode("utf-8", "replace") for r in answer]
    return [t for t in texts if is_record(t)]
