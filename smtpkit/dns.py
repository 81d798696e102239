"""Mail-host resolution as RFC 5321 section 5.1 describes it, on top of dnspython.

``resolve_mail_hosts("example.org")`` answers the question a sending server asks: which hosts
receive mail for this domain, in which order, at which addresses. Every DNS outcome is a value
(``MailRoute.kind``), never a dnspython exception, so callers (``smtpkit mx``, and later the
delivery queue) can tell "this domain takes no mail" (bounce) from "DNS is failing" (retry).

Only bad input raises: ``DnsError`` with one line saying what is wrong.
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import math
import re
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import dns.exception
import dns.message
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
from dns.rdtypes.ANY.MX import MX
from dns.rdtypes.IN.A import A
from dns.rdtypes.IN.AAAA import AAAA

from smtpkit.addresses import normalize_domain
from smtpkit.errors import SmtpkitError, UserError

__all__ = [
    "DEADLINE_FACTOR",
    "DEFAULT_TIMEOUT",
    "LOOKUP_THREADS",
    "MAX_MX_HOSTS",
    "DnsError",
    "DnsFailure",
    "HostAddresses",
    "MailHost",
    "MailResolver",
    "MailRoute",
    "Nameserver",
    "RouteKind",
    "RouteOutcome",
    "normalize_mail_domain",
    "parse_nameserver",
    "resolve_mail_hosts",
]

DEFAULT_TIMEOUT = 5.0

# Senders try only the first few MX hosts (Postfix: smtp_mx_address_limit = 5 addresses,
# smtp_mx_session_limit = 2 sessions), so looking up more only costs queries: a zone with
# thousands of MX records would otherwise cost two address queries per record. Ten hosts show
# more than any sender uses, and bound the address queries of one domain at 20.
MAX_MX_HOSTS = 10

# Address queries run concurrently on this many threads: one per host looked up.
LOOKUP_THREADS = MAX_MX_HOSTS

# The default deadline for all the queries of one domain, in multiples of the per-query
# timeout: one for the MX query and two rounds of address queries (A and AAAA of MAX_MX_HOSTS
# hosts on LOOKUP_THREADS threads). DNS that answers at all finishes well within it.
DEADLINE_FACTOR = 3

RouteKind = Literal["mx", "implicit", "null", "nxdomain", "nodata", "servfail", "timeout"]
"""How a domain's mail route was found (or why none was)."""

RouteOutcome = Literal["ok", "no-mail", "dns-failure"]
"""The verdict that matters to a sender: deliver, bounce, or retry later."""

DnsFailure = Literal["servfail", "timeout"]
"""A lookup that failed in a way that may pass: retry later (RFC 5321 5.1, 4.5.4.1)."""

# The outcome of one DNS query, before it is turned into a route or a host problem.
_Status = Literal["answer", "nxdomain", "nodata", "servfail", "timeout"]

# A nameserver given by name: LDH labels (RFC 1123 2.1), one label allowed ("localhost").
_HOSTNAME_RE = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?\Z"
)


class DnsError(SmtpkitError):
    """Bad input to the resolver: a malformed domain, nameserver or timeout."""


@dataclass(frozen=True, slots=True)
class Nameserver:
    """Where to send queries: an IP address (or host name) and a port."""

    host: str
    port: int = 53

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class HostAddresses:
    """The A and AAAA addresses of one host name.

    ``cname_target`` is set when the name is an alias (CNAME) that was followed. ``problem`` is
    a short human reason when the lookup did not fully succeed; ``failure`` is set when that
    reason is a DNS failure that may pass on retry rather than a wrong or missing record;
    ``nxdomain`` when the name does not exist at all.
    """

    name: str
    addresses: tuple[str, ...]
    cname_target: str | None = None
    problem: str | None = None
    failure: DnsFailure | None = None
    nxdomain: bool = False

    @property
    def temporary(self) -> bool:
        """True when the problem is a DNS failure that may pass on retry."""
        return self.failure is not None


@dataclass(frozen=True, slots=True)
class MailHost:
    """One mail exchanger: an MX target, or the domain itself for an implicit MX.

    ``addresses`` lists IPv4 then IPv6, each in numeric order. A host with ``problem`` set and no
    addresses cannot be used; ``temporary`` tells whether the problem is a DNS failure (retry)
    rather than a wrong record (an IP literal as MX target, a host that does not exist).
    """

    preference: int
    host: str
    addresses: tuple[str, ...]
    cname_target: str | None = None
    problem: str | None = None
    temporary: bool = False

    @property
    def usable(self) -> bool:
        """True when a sender can connect to this host: it has at least one address."""
        return bool(self.addresses)


@dataclass(frozen=True, slots=True)
class MailRoute:
    """Where mail for ``domain`` goes, as a sender would find it.

    ``domain`` is the ASCII (IDNA) form without the final dot. ``hosts`` is in the order a
    sender tries them: lowest preference first. Among hosts of equal preference RFC 5321 5.1
    has senders pick at random to spread the load; here they are sorted by name so that the
    output is stable, and ``notes`` says so. ``notes`` also records facts worth telling the
    user that do not change the route (the domain is an alias, a null MX mixed with others).

    Only the first ``MAX_MX_HOSTS`` MX records by preference are looked up and listed;
    ``hosts_left_out`` counts the others. ``deadline_passed`` is set when the deadline for the
    domain cut queries short: those count as timed out.
    """

    domain: str
    kind: RouteKind
    hosts: tuple[MailHost, ...] = ()
    notes: tuple[str, ...] = ()
    hosts_left_out: int = 0
    deadline_passed: bool = False

    @property
    def usable_hosts(self) -> tuple[MailHost, ...]:
        """The hosts a sender can connect to, in order."""
        return tuple(h for h in self.hosts if h.usable)

    @property
    def outcome(self) -> RouteOutcome:
        """``ok`` with a usable host; ``dns-failure`` when retrying may help; else ``no-mail``.

        RFC 5321 5.1: a temporary error means queue and retry, while a non-existent domain or
        MX records none of which are usable must be reported as an error.
        """
        if self.usable_hosts:
            return "ok"
        if self.kind in ("servfail", "timeout"):
            return "dns-failure"
        if any(h.temporary for h in self.hosts):
            return "dns-failure"
        return "no-mail"


def normalize_mail_domain(domain: str) -> str:
    """Return the ASCII (IDNA) lower-case form of a mail domain, without a final dot.

    ``bücher.example`` becomes ``xn--bcher-kva.example``. Raises ``DnsError`` for an empty or
    malformed name, and for an IP address (mail to an address literal needs no DNS).
    """
    text = domain.strip()
    if not text:
        raise DnsError("empty domain name")
    if text.endswith(".") and not text.endswith(".."):
        text = text[:-1]
    if _is_ip_literal(text):
        raise DnsError(f"{domain!r} is an IP address, not a domain name")
    try:
        return normalize_domain(text)
    except UserError:
        raise DnsError(f"{domain!r} is not a valid domain name") from None


def parse_nameserver(spec: str) -> Nameserver:
    """Parse ``HOST``, ``HOST:PORT``, a bare IPv6 address, ``[IPv6]`` or ``[IPv6]:PORT``.

    Raises ``DnsError`` with the reason.
    """
    text = spec.strip()
    usage = f"bad nameserver {spec!r}: expected HOST, HOST:PORT or [IPv6]:PORT"
    port_text = ""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise DnsError(usage)
        port_text = rest[1:] if rest else ""
        if rest and not port_text:
            raise DnsError(usage)
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise DnsError(f"bad nameserver {spec!r}: {host!r} is not an IPv6 address") from None
    elif text.count(":") > 1:
        # More than one colon without brackets can only be a bare IPv6 address.
        host = text
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise DnsError(usage) from None
    else:
        host, sep, port_text = text.partition(":")
        if not host or (sep and not port_text):
            raise DnsError(usage)
        if not _is_ip_literal(host):
            if not _HOSTNAME_RE.match(host):
                raise DnsError(usage)
            host = host.lower()
    port = 53
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise DnsError(f"bad nameserver {spec!r}: port must be 1-65535")
        port = int(port_text)
    return Nameserver(host, port)


class MailResolver:
    """Resolves mail routes through one nameserver (or the system's), within a deadline.

    ``nameserver`` is a ``Nameserver`` or its text form (see ``parse_nameserver``); ``None``
    uses the resolvers in ``/etc/resolv.conf``. ``timeout`` bounds each DNS query in seconds;
    ``deadline`` bounds all the queries for one domain (default ``DEADLINE_FACTOR`` times
    ``timeout``): what has no answer by then counts as timed out. ``max_hosts`` is how many MX
    hosts, by preference, are looked up. Address queries run concurrently, on at most
    ``LOOKUP_THREADS`` threads. Nothing is cached between queries: every answer is what DNS
    says now.
    """

    def __init__(
        self,
        *,
        nameserver: Nameserver | str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        deadline: float | None = None,
        max_hosts: int = MAX_MX_HOSTS,
    ) -> None:
        if not _positive(timeout):
            raise DnsError(f"bad timeout {timeout!r}: must be a positive number of seconds")
        if deadline is not None and not _positive(deadline):
            raise DnsError(f"bad deadline {deadline!r}: must be a positive number of seconds")
        if isinstance(max_hosts, bool) or not isinstance(max_hosts, int) or max_hosts < 1:
            raise DnsError(f"bad host limit {max_hosts!r}: must be a positive integer")
        if nameserver is None:
            try:
                resolver = dns.resolver.Resolver(configure=True)
            except dns.resolver.NoResolverConfiguration:
                raise DnsError(
                    "no system DNS resolver configured (/etc/resolv.conf); give a nameserver"
                ) from None
        else:
            server = parse_nameserver(nameserver) if isinstance(nameserver, str) else nameserver
            resolver = dns.resolver.Resolver(configure=False)
            resolver.nameservers = [
                dns.nameserver.Do53Nameserver(address, server.port)
                for address in _nameserver_addresses(server)
            ]
        resolver.timeout = float(timeout)
        resolver.lifetime = float(timeout)
        resolver.cache = None
        # Names are always absolute: a search list would turn a typo into someone else's domain
        # (RFC 5321 5.1: relays MUST NOT infer FQDNs from partial names).
        resolver.use_search_by_default = False
        # EDNS0 with a modest payload keeps large MX answers on UDP instead of falling back to
        # TCP after a truncated reply.
        resolver.use_edns(0, 0, 1232)
        self.timeout = float(timeout)
        self.deadline = float(deadline) if deadline is not None else DEADLINE_FACTOR * self.timeout
        self.max_hosts = max_hosts
        self._resolver = resolver

    def resolve(self, domain: str) -> MailRoute:
        """Find the mail hosts of ``domain`` (RFC 5321 5.1); see ``resolve_mail_hosts``."""
        ascii_domain = normalize_mail_domain(domain)
        qname = dns.name.from_text(ascii_domain)
        budget = _Budget(self.deadline)
        reply = self._query(qname, dns.rdatatype.MX, budget)
        if reply.status in ("nxdomain", "servfail", "timeout"):
            return MailRoute(ascii_domain, reply.status, deadline_passed=budget.passed)
        notes: list[str] = []
        # RFC 5321 5.1: "If a CNAME record is found, the resulting name is processed as if it
        # were the initial name."
        target = reply.canonical
        if target != qname:
            notes.append(
                f"{ascii_domain} is an alias (CNAME) of {_text(target)}; "
                f"its mail goes where mail for {_text(target)} goes (RFC 5321 5.1)"
            )
        records = [r for r in reply.records if isinstance(r, MX)]
        if not records:
            return self._implicit(ascii_domain, target, notes, budget)
        # RFC 7505 3: a null MX is a single MX record "0 ." and means: no mail, ever.
        null = len(records) == 1 and records[0].exchange == dns.name.root
        if null and records[0].preference == 0:
            return MailRoute(ascii_domain, "null", notes=tuple(notes))
        # The order senders try, then only as many as they would: the rest are never looked up.
        records.sort(key=lambda r: (r.preference, _text(r.exchange)))
        kept = records[: self.max_hosts]
        hosts = self._mx_hosts(kept, _address_map(reply.response), len(records), budget)
        preferences = [h.preference for h in hosts]
        if len(set(preferences)) < len(preferences):
            notes.append(
                "hosts of equal preference are listed by name; "
                "senders pick among them at random (RFC 5321 5.1)"
            )
        return MailRoute(
            ascii_domain,
            "mx",
            tuple(hosts),
            tuple(notes),
            hosts_left_out=len(records) - len(kept),
            deadline_passed=budget.passed,
        )

    def lookup_host(self, name: str) -> HostAddresses:
        """The A and AAAA addresses of a host name; a CNAME is followed and reported."""
        text = name.strip().rstrip(".")
        if not text:
            raise DnsError("empty host name")
        try:
            qname = dns.name.from_text(text)
        except dns.exception.DNSException:
            raise DnsError(f"{name!r} is not a valid host name") from None
        return self._addresses([qname], {}, _Budget(self.deadline))[0]

    def _implicit(
        self, domain: str, target: dns.name.Name, notes: list[str], budget: _Budget
    ) -> MailRoute:
        # RFC 5321 5.1: "If an empty list of MXs is returned, the address is treated as if it
        # was associated with an implicit MX RR, with a preference of 0, pointing to that host."
        found = self._addresses([target], {}, budget)[0]
        passed = budget.passed
        if found.addresses:
            host = MailHost(0, _text(target), found.addresses, problem=found.problem)
            return MailRoute(domain, "implicit", (host,), tuple(notes), deadline_passed=passed)
        if found.failure is not None:
            return MailRoute(domain, found.failure, notes=tuple(notes), deadline_passed=passed)
        if found.nxdomain:
            return MailRoute(domain, "nxdomain", notes=tuple(notes))
        return MailRoute(domain, "nodata", notes=tuple(notes))

    def _mx_hosts(
        self,
        records: Sequence[MX],
        additional: Mapping[tuple[dns.name.Name, int], list[str]],
        count: int,
        budget: _Budget,
    ) -> list[MailHost]:
        """The hosts of ``records`` (in that order), their addresses looked up concurrently."""
        # RFC 5321 5.1: the MX data "MUST contain a domain name"; an IP address there is a
        # misconfiguration that senders refuse, and "." among other MX records (or at a
        # preference other than 0) is not a valid null MX (RFC 7505 3): neither is looked up.
        names = [
            r.exchange
            for r in records
            if r.exchange != dns.name.root and not _is_ip_literal(_text(r.exchange))
        ]
        found = dict(zip(names, self._addresses(names, additional, budget), strict=True))
        hosts = []
        for record in records:
            exchange = record.exchange
            name = _text(exchange)
            if exchange == dns.name.root:
                reason = (
                    "mixed with other MX records" if count > 1 else "at a preference other than 0"
                )
                problem = f"invalid: null MX target '.' {reason} (RFC 7505 3)"
                hosts.append(MailHost(record.preference, name, (), problem=problem))
            elif exchange not in found:
                problem = "invalid: an IP address, not a host name (RFC 5321 5.1)"
                hosts.append(MailHost(record.preference, name, (), problem=problem))
            else:
                lookup = found[exchange]
                hosts.append(
                    MailHost(
                        record.preference,
                        name,
                        lookup.addresses,
                        cname_target=lookup.cname_target,
                        problem=lookup.problem,
                        temporary=lookup.temporary,
                    )
                )
        return hosts

    def _addresses(
        self,
        names: Sequence[dns.name.Name],
        additional: Mapping[tuple[dns.name.Name, int], list[str]],
        budget: _Budget,
    ) -> list[HostAddresses]:
        """The A and AAAA addresses of each of ``names``; the queries run concurrently."""
        # Use the additional section when it holds this record type for this very name: a
        # name that owns A/AAAA records cannot be a CNAME (RFC 1034 3.6.2), so nothing is
        # lost. A missing type there proves nothing, so that type is queried.
        jobs = list(
            dict.fromkeys(
                (name, rdtype)
                for name in names
                for rdtype in _ADDRESS_TYPES
                if (name, rdtype) not in additional
            )
        )
        replies = dict(zip(jobs, self._query_all(jobs, budget), strict=True))
        return [self._host_addresses(name, additional, replies) for name in names]

    def _host_addresses(
        self,
        name: dns.name.Name,
        additional: Mapping[tuple[dns.name.Name, int], list[str]],
        replies: Mapping[tuple[dns.name.Name, dns.rdatatype.RdataType], _Reply],
    ) -> HostAddresses:
        v4: list[str] = []
        v6: list[str] = []
        cname: dns.name.Name | None = None
        statuses: list[_Status] = []
        for rdtype, out in zip(_ADDRESS_TYPES, (v4, v6), strict=True):
            cached = additional.get((name, rdtype))
            if cached is not None:
                out.extend(cached)
                statuses.append("answer")
                continue
            reply = replies[(name, rdtype)]
            statuses.append(reply.status)
            if reply.canonical != name:
                cname = reply.canonical
            out.extend(_rdata_addresses(reply.records))
        addresses = tuple(sorted(set(v4), key=ipaddress.IPv4Address)) + tuple(
            sorted(set(v6), key=ipaddress.IPv6Address)
        )
        problem, failure = _address_problem(statuses, bool(addresses))
        return HostAddresses(
            _text(name),
            addresses,
            cname_target=_text(cname) if cname is not None else None,
            problem=problem,
            failure=failure,
            nxdomain=all(s == "nxdomain" for s in statuses),
        )

    def _query_all(
        self, jobs: Sequence[tuple[dns.name.Name, dns.rdatatype.RdataType]], budget: _Budget
    ) -> list[_Reply]:
        """Run ``jobs`` (name, type) on a bounded pool of threads; replies in the same order."""
        if len(jobs) <= 1:
            return [self._query(name, rdtype, budget) for name, rdtype in jobs]
        pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=min(len(jobs), LOOKUP_THREADS), thread_name_prefix="smtpkit-dns"
        )
        try:
            futures = [pool.submit(self._query, name, rdtype, budget) for name, rdtype in jobs]
            # Each query ends by the deadline on its own (its lifetime is clipped to what is
            # left); the wait is bounded as well, so that nothing here can outlast it by much.
            concurrent.futures.wait(futures, timeout=max(budget.remaining(), 0.0) + _GRACE)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        replies = []
        for future, (name, _rdtype) in zip(futures, jobs, strict=True):
            if future.done() and not future.cancelled():
                replies.append(future.result())
            else:
                budget.passed = True
                replies.append(_Reply("timeout", name))
        return replies

    def _query(
        self, name: dns.name.Name, rdtype: dns.rdatatype.RdataType, budget: _Budget
    ) -> _Reply:
        left = budget.remaining()
        if left <= 0:
            budget.passed = True
            return _Reply("timeout", name)
        wait = min(self.timeout, left)
        try:
            answer = self._resolver.resolve(name, rdtype, raise_on_no_answer=False, lifetime=wait)
        except dns.resolver.NXDOMAIN as exc:
            return _Reply("nxdomain", _nxdomain_canonical(exc, name))
        except dns.exception.Timeout:
            if wait < self.timeout:
                budget.passed = True
            return _Reply("timeout", name)
        except (dns.exception.DNSException, OSError):
            # NoNameservers (SERVFAIL, REFUSED, unreachable server), YXDOMAIN, malformed
            # replies: all mean "DNS could not answer", which RFC 5321 5.1 treats as temporary.
            return _Reply("servfail", name)
        records = tuple(answer.rrset) if answer.rrset is not None else ()
        status: _Status = "answer" if records else "nodata"
        return _Reply(status, answer.canonical_name, records, answer.response)


def resolve_mail_hosts(
    domain: str,
    *,
    nameserver: Nameserver | str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    deadline: float | None = None,
) -> MailRoute:
    """Find where mail for ``domain`` goes, following RFC 5321 section 5.1.

    - MX records, lowest preference first (ties sorted by name; senders randomise them), each
      host with its A and AAAA addresses (from the answer's additional section when present);
    - no MX but an address: the implicit MX, the domain itself at preference 0 (``implicit``);
    - a single ``0 .`` MX (RFC 7505): ``null``, the domain accepts no mail;
    - ``nxdomain``, ``nodata`` (neither MX nor address), ``servfail`` and ``timeout`` as kinds;
    - an MX target that is a CNAME is followed and reported in ``cname_target``; an MX target
      that is an IP address is reported as a ``problem`` and not used.

    Only the first ``MAX_MX_HOSTS`` MX hosts by preference are looked up, concurrently.

    ``domain`` may be internationalised (``bücher.example``). ``nameserver`` is ``HOST``,
    ``HOST:PORT`` or ``[IPv6]:PORT``; ``None`` uses the system resolver. ``timeout`` bounds each
    query in seconds, ``deadline`` all of them (default ``DEADLINE_FACTOR`` times ``timeout``).
    Raises ``DnsError`` only for bad input.
    """
    resolver = MailResolver(nameserver=nameserver, timeout=timeout, deadline=deadline)
    return resolver.resolve(domain)


_ADDRESS_TYPES = (dns.rdatatype.A, dns.rdatatype.AAAA)

# How long past the deadline to wait for a query thread that has not returned: dnspython
# clips its own waits to the lifetime given, so this is only a backstop.
_GRACE = 0.5


class _Budget:
    """The time left for the queries of one domain; shared by the threads that run them."""

    def __init__(self, seconds: float) -> None:
        self._end = time.monotonic() + seconds
        # Set (only ever to True) when a query was cut short or not sent for lack of time.
        self.passed = False

    def remaining(self) -> float:
        return self._end - time.monotonic()


@dataclass(frozen=True, slots=True)
class _Reply:
    status: _Status
    canonical: dns.name.Name
    records: tuple[object, ...] = ()
    response: dns.message.Message | None = None


def _text(name: dns.name.Name) -> str:
    return "." if name == dns.name.root else name.to_text(omit_final_dot=True).lower()


def _positive(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


def _is_ip_literal(text: str) -> bool:
    # Also catches the RFC 5321 4.1.3 forms "[192.0.2.1]" and "[IPv6:2001:db8::1]".
    body = text.strip().rstrip(".")
    if body.startswith("[") and body.endswith("]"):
        body = body[1:-1]
        if body[:5].lower() == "ipv6:":
            body = body[5:]
    try:
        ipaddress.ip_address(body)
    except ValueError:
        return False
    return True


def _nameserver_addresses(server: Nameserver) -> list[str]:
    if _is_ip_literal(server.host):
        return [server.host]
    try:
        infos = socket.getaddrinfo(server.host, server.port, type=socket.SOCK_DGRAM)
    except OSError as exc:
        raise DnsError(f"cannot resolve nameserver {server.host!r}: {exc.strerror}") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _rdata_addresses(records: Iterable[object]) -> list[str]:
    return [r.address for r in records if isinstance(r, A | AAAA)]


def _address_map(
    response: dns.message.Message | None,
) -> dict[tuple[dns.name.Name, int], list[str]]:
    found: dict[tuple[dns.name.Name, int], list[str]] = {}
    if response is None:
        return found
    for rrset in response.additional:
        if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            found.setdefault((rrset.name, rrset.rdtype), []).extend(_rdata_addresses(rrset))
    return found


def _nxdomain_canonical(exc: dns.resolver.NXDOMAIN, name: dns.name.Name) -> dns.name.Name:
    # An alias whose target does not exist: NXDOMAIN carries the name the chain ended at.
    try:
        canonical = exc.canonical_name
    except (TypeError, KeyError):
        return name
    return canonical if isinstance(canonical, dns.name.Name) else name


def _address_problem(
    statuses: list[_Status], have_addresses: bool
) -> tuple[str | None, DnsFailure | None]:
    """A short reason for an address lookup that did not fully succeed, and its failure kind."""
    failed = [
        (rdtype, status)
        for rdtype, status in zip(("A", "AAAA"), statuses, strict=True)
        if status in ("servfail", "timeout")
    ]
    if failed:
        types = " and ".join(rdtype for rdtype, _ in failed)
        if any(status == "timeout" for _, status in failed):
            return f"{types} lookup timed out", "timeout"
        return f"{types} lookup failed (SERVFAIL)", "servfail"
    if have_addresses:
        return None, None
    if all(status == "nxdomain" for status in statuses):
        return "host does not exist (NXDOMAIN)", None
    return "no A or AAAA record", None
