"""SPF (RFC 7208) through pyspf, asking our resolver within a deadline.

pyspf evaluates the record: its syntax, macros, the limits of RFC 7208 4.6.4 (ten mechanisms
and modifiers that query DNS, ten MX or PTR names each, two void lookups), all enforced by its
strict mode, which is used here. It does its DNS through one module-level function,
``spf.DNSLookup``, and has no parameter for another. So this module replaces that function,
once, when it is imported, with one that asks the resolver of the check running on the current
thread (a thread-local), bounded by that check's deadline. Checks on several threads at once
each use their own resolver and deadline; a thread that runs pyspf outside ``check_host`` gets
pyspf's own lookup, as before.

``check_host`` never raises for DNS trouble or a bad record: a query that fails or does not end
in time is ``temperror``, a broken record ``permerror``.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Callable
from dataclasses import dataclass

import dns.exception
import dns.name
import dns.resolver
import spf

from smtpkit.addresses import normalize_domain
from smtpkit.errors import UserError
from smtpkit.mailauth.results import Deadline

__all__ = ["check_host", "spf_domain"]

_Lookup = Callable[[str, str], list[tuple[tuple[str, str], object]]]

_PYSPF_LOOKUP = spf.DNSLookup
_current = threading.local()


def _lookup(name: str, qtype: str, strict: object = True, timeout: object = 20) -> object:
    """pyspf's ``DNSLookup(name, qtype, strict, timeout)``: answered by the running check's
    resolver, or by pyspf's own lookup on a thread that is running none."""
    asker: _Lookup | None = getattr(_current, "asker", None)
    if asker is None:
        return _PYSPF_LOOKUP(name, qtype, strict, timeout)
    return asker(name, qtype)


spf.DNSLookup = _lookup


@dataclass(slots=True)
class _Asker:
    """Answers pyspf's queries for one check, in the shape pyspf's dnspython lookup gives:
    a list of ``((name, type), data)``, empty for a name or type that does not exist."""

    resolver: dns.resolver.Resolver
    deadline: Deadline

    def __call__(self, name: str, qtype: str) -> list[tuple[tuple[str, str], object]]:
        try:
            qname = dns.name.from_text(name)
        except dns.exception.DNSException:
            return []  # not a DNS name (a macro expanded into nonsense): nothing there
        lifetime = self.deadline.lifetime(self.resolver)
        if lifetime <= 0:
            raise spf.TempError(f"no time left to look up {name} {qtype}")
        try:
            answer = self.resolver.resolve(qname, qtype, lifetime=lifetime)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.exception.Timeout:
            raise spf.TempError(f"DNS timeout for {name} {qtype}") from None
        except dns.exception.DNSException as exc:
            raise spf.TempError(f"DNS error for {name} {qtype}: {type(exc).__name__}") from None
        key = (name, qtype)
        found: list[tuple[tuple[str, str], object]] = []
        for record in answer:
            if qtype in ("A", "AAAA"):
                found.append((key, record.address))
            elif qtype == "MX":
                found.append((key, (record.preference, record.exchange.to_text(True))))
            elif qtype == "PTR":
                found.append((key, record.target.to_text(True)))
            elif qtype in ("TXT", "SPF"):
                found.append((key, tuple(record.strings)))
        return found


def spf_domain(domain: str) -> str | None:
    """The ASCII lower-case form of a domain SPF can check, or None: RFC 7208 4.3 gives
    ``none`` at once for a malformed name or one that is not multi-label."""
    text = domain.strip()
    if text.endswith("."):
        text = text[:-1]
    try:
        return normalize_domain(text)
    except UserError:
        return None


def check_host(
    *,
    client_ip: str,
    domain: str,
    sender: str,
    helo: str,
    resolver: dns.resolver.Resolver,
    deadline: Deadline,
) -> tuple[str, str]:
    """RFC 7208 4: ``check_host(client_ip, domain, sender)`` -> (result, reason).

    ``domain`` is the ASCII form ``spf_domain`` gives; ``sender`` the mailbox whose domain it
    is (``postmaster@HELO`` for the HELO identity, RFC 7208 2.3), which macros expand. The
    reason is empty for pass, fail, softfail and neutral (the result says it), and says what
    went wrong otherwise. ``ValueError`` for a client address that is not an IP address.
    """
    ipaddress.ip_address(client_ip)
    if deadline.left() <= 0:
        return "temperror", "no time left"
    local, _, _ = sender.rpartition("@")
    query = spf.query(
        i=client_ip,
        s=f"{local or 'postmaster'}@{domain}",
        h=helo,
        strict=True,
        timeout=max(deadline.left(), 0.001),
    )
    _current.asker = _Asker(resolver, deadline)
    try:
        result, _code, explanation = query.check()
    except Exception as exc:
        # pyspf reads records anyone can publish; whatever else it trips over in one is that
        # record's fault, and must not end the caller's work.
        return "permerror", f"SPF evaluation failed: {type(exc).__name__}"
    finally:
        _current.asker = None
    if result == "none":
        return "none", "no SPF record"
    if result == "permerror":
        return "permerror", str(explanation).removeprefix("SPF Permanent Error: ")
    if result == "temperror":
        return "temperror", str(explanation).removeprefix("SPF Temporary Error: ")
    if result in ("pass", "fail", "softfail", "neutral"):
        return result, ""
    return "permerror", f"unexpected SPF result {result!r}"
