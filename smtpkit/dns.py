"""Mail-host resolution as RFC 5321 section 5.1 describes it, on top of dnspython.

``MailResolver().resolve("example.org")`` answers the question a sending server asks: which
hosts receive mail for this domain, in which order, at which addresses. Every DNS outcome is a
value, never a dnspython exception and never a sentence: ``MailRoute.kind`` (a ``RouteKind``),
``MailHost.problem`` (a ``HostProblem``) and their data (a CNAME target, the address queries
that failed). Callers word them (``smtpkit mx``) or act on them (the delivery queue): the
verdict ``MailRoute.outcome`` tells "this domain takes no mail" (bounce) from "DNS is failing"
(retry).

Only bad input raises: ``DnsError`` (``NameserverError`` for a nameserver that cannot be used)
with one line saying what is wrong.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import enum
import ipaddress
import math
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import assert_never

import dns.exception
import dns.message
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
from dns.rdtypes.ANY.MX import MX
from dns.rdtypes.IN.A import A
from dns.rdtypes.IN.AAAA import AAAA

from smtpkit.addresses import host_port, normalize_domain, normalize_hostname
from smtpkit.errors import SmtpkitError, UserError

__all__ = [
    "DEADLINE_FACTOR",
    "DEFAULT_TIMEOUT",
    "LOOKUP_THREADS",
    "MAX_MX_HOSTS",
    "AddressType",
    "DnsError",
    "HostProblem",
    "MailHost",
    "MailResolver",
    "MailRoute",
    "Nameserver",
    "NameserverError",
    "RouteKind",
    "RouteOutcome",
    "make_resolver",
    "normalize_mail_domain",
    "parse_nameserver",
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


class DnsError(SmtpkitError):
    """Bad input to the resolver: a malformed domain, nameserver or timeout."""


class NameserverError(DnsError):
    """A nameserver that is malformed or whose name does not resolve."""


class RouteKind(enum.Enum):
    """How a domain's mail route was found, or why none was. The values are stable: scripts
    read them (``smtpkit mx --json``)."""

    MX = "mx"  # MX records (RFC 5321 5.1)
    IMPLICIT = "implicit"  # no MX but an address: the domain itself at preference 0
    NULL = "null"  # a single MX "0 ." (RFC 7505): the domain accepts no mail
    NXDOMAIN = "nxdomain"  # the domain does not exist
    NODATA = "nodata"  # neither MX nor A/AAAA records
    SERVFAIL = "servfail"  # SERVFAIL, REFUSED, an unreachable server: retry later
    TIMEOUT = "timeout"  # no answer in time: retry later


class RouteOutcome(enum.Enum):
    """The verdict that matters to a sender: deliver, bounce, or retry later."""

    OK = "ok"
    NO_MAIL = "no-mail"
    DNS_FAILURE = "dns-failure"


class AddressType(enum.Enum):
    """The two address queries made for a host."""

    A = "A"
    AAAA = "AAAA"


class HostProblem(enum.Enum):
    """Why a mail host cannot be used, or not fully."""

    # The MX record itself is wrong; such a host is never looked up.
    NULL_MX_MIXED = "null-mx-mixed"  # "." among other MX records (RFC 7505 3)
    NULL_MX_PREFERENCE = "null-mx-preference"  # a lone "." at a preference other than 0
    IP_LITERAL = "ip-literal"  # an IP address where a host name must be (RFC 5321 5.1)
    # The address lookup found nothing.
    NXDOMAIN = "nxdomain"  # the host does not exist
    NO_ADDRESS = "no-address"  # the host exists without A or AAAA records
    # An address query failed (``MailHost.failed`` says which); the host may still have
    # addresses from the other one.
    SERVFAIL = "servfail"
    TIMEOUT = "timeout"  # at least one of the failed queries timed out

    @property
    def temporary(self) -> bool:
        """True for a DNS failure, which may pass on retry; false for a wrong or missing record."""
        match self:
            case HostProblem.SERVFAIL | HostProblem.TIMEOUT:
                return True
            case (
                HostProblem.NULL_MX_MIXED
                | HostProblem.NULL_MX_PREFERENCE
                | HostProblem.IP_LITERAL
                | HostProblem.NXDOMAIN
                | HostProblem.NO_ADDRESS
            ):
                return False
            case _:
                assert_never(self)


@dataclass(frozen=True, slots=True)
class Nameserver:
    """Where to send queries: an IP address (or host name) and a port."""

    host: str
    port: int = 53

    def __str__(self) -> str:
        return host_port(self.host, self.port)


@dataclass(frozen=True, slots=True)
class MailHost:
    """A host name and its addresses, as a sender finds them.

    ``preference`` is the MX record's; 0 for an implicit MX (RFC 5321 5.1) and for a name
    looked up on its own (``MailResolver.lookup_host``). ``host`` is the ASCII name without the
    final dot (``.`` for a null MX target, the address for an IP literal). ``addresses`` lists
    IPv4 then IPv6, each in numeric order. ``cname_target`` is set when the name is an alias
    (CNAME) that was followed. ``problem`` says why the host cannot be used, or not fully;
    for ``SERVFAIL`` and ``TIMEOUT``, ``failed`` names the address queries that failed.
    """

    preference: int
    host: str
    addresses: tuple[str, ...] = ()
    cname_target: str | None = None
    problem: HostProblem | None = None
    failed: tuple[AddressType, ...] = ()

    @property
    def usable(self) -> bool:
        """True when a sender can connect to this host: it has at least one address."""
        return bool(self.addresses)

    @property
    def temporary(self) -> bool:
        """True when the problem is a DNS failure that may pass on retry."""
        return self.problem is not None and self.problem.temporary


@dataclass(frozen=True, slots=True)
class MailRoute:
    """Where mail for ``domain`` goes, as a sender would find it.

    ``domain`` is the ASCII (IDNA) form without the final dot. ``hosts`` is in the order a
    sender tries them: lowest preference first. Among hosts of equal preference (``ties``)
    RFC 5321 5.1 has senders pick at random to spread the load; here they are sorted by name so
    that the result is stable. ``alias_of`` is set when the domain is an alias (CNAME): its
    mail goes where mail for that name goes (RFC 5321 5.1).

    Only the first ``MAX_MX_HOSTS`` MX records by preference are looked up and listed;
    ``hosts_left_out`` counts the others. ``deadline_passed`` is set when the deadline for the
    domain cut queries short: those count as timed out.
    """

    domain: str
    kind: RouteKind
    hosts: tuple[MailHost, ...] = ()
    alias_of: str | None = None
    hosts_left_out: int = 0
    deadline_passed: bool = False

    @property
    def usable_hosts(self) -> tuple[MailHost, ...]:
        """The hosts a sender can connect to, in order."""
        return tuple(h for h in self.hosts if h.usable)

    @property
    def ties(self) -> bool:
        """True when some hosts share a preference (senders pick among those at random)."""
        preferences = [h.preference for h in self.hosts]
        return len(set(preferences)) < len(preferences)

    @property
    def outcome(self) -> RouteOutcome:
        """``OK`` with a usable host; ``DNS_FAILURE`` when retrying may help; else ``NO_MAIL``.

        RFC 5321 5.1: a temporary error means queue and retry, while a non-existent domain or
        MX records none of which are usable must be reported as an error.
        """
        if self.usable_hosts:
            return RouteOutcome.OK
        match self.kind:
            case RouteKind.SERVFAIL | RouteKind.TIMEOUT:
                return RouteOutcome.DNS_FAILURE
            case (
                RouteKind.MX
                | RouteKind.IMPLICIT
                | RouteKind.NULL
                | RouteKind.NXDOMAIN
                | RouteKind.NODATA
            ):
                if any(h.temporary for h in self.hosts):
                    return RouteOutcome.DNS_FAILURE
                return RouteOutcome.NO_MAIL
            case _:
                assert_never(self.kind)


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

    Raises ``NameserverError`` with the reason. A host name is not looked up here.
    """
    text = spec.strip()
    usage = f"bad nameserver {spec!r}: expected HOST, HOST:PORT or [IPv6]:PORT"
    port_text = ""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise NameserverError(usage)
        port_text = rest[1:] if rest else ""
        if rest and not port_text:
            raise NameserverError(usage)
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise NameserverError(
                f"bad nameserver {spec!r}: {host!r} is not an IPv6 address"
            ) from None
    elif text.count(":") > 1:
        # More than one colon without brackets can only be a bare IPv6 address.
        host = text
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise NameserverError(usage) from None
    else:
        host, sep, port_text = text.partition(":")
        if not host or (sep and not port_text):
            raise NameserverError(usage)
        if not _is_ip_literal(host):
            try:
                host = normalize_hostname(host)
            except UserError:
                raise NameserverError(usage) from None
    port = 53
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise NameserverError(f"bad nameserver {spec!r}: port must be 1-65535")
        port = int(port_text)
    return Nameserver(host, port)


def make_resolver(
    nameserver: Nameserver | str | Sequence[Nameserver | str] | None, timeout: float
) -> dns.resolver.Resolver:
    """A dnspython resolver asking ``nameserver`` (one, or a list asked in order; None: the
    system's, from ``/etc/resolv.conf``), each query bounded by ``timeout`` seconds, with no
    cache and no search list. ``DnsError`` (``NameserverError``) when it cannot be built."""
    if nameserver is None:
        try:
            resolver = dns.resolver.Resolver(configure=True)
        except dns.resolver.NoResolverConfiguration:
            raise DnsError(
                "no system DNS resolver configured (/etc/resolv.conf); give a nameserver"
            ) from None
    else:
        given = [nameserver] if isinstance(nameserver, str | Nameserver) else nameserver
        servers = [parse_nameserver(n) if isinstance(n, str) else n for n in given]
        if not servers:
            raise DnsError("an empty list of nameservers")
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [
            dns.nameserver.Do53Nameserver(address, server.port)
            for server in servers
            for address in _nameserver_addresses(server)
        ]
    resolver.timeout = float(timeout)
    resolver.lifetime = float(timeout)
    resolver.cache = None
    # Names are always absolute: a search list would turn a typo into someone else's domain
    # (RFC 5321 5.1: relays MUST NOT infer FQDNs from partial names).
    resolver.use_search_by_default = False
    # EDNS0 with a modest payload keeps large answers on UDP instead of falling back to TCP
    # after a truncated reply.
    resolver.use_edns(0, 0, 1232)
    return resolver


class MailResolver:
    """Resolves mail routes through one nameserver (or the system's), within a deadline.

    Build one and use it for every domain: it holds the dnspython resolver, and a nameserver
    given by name is looked up once, here (``NameserverError`` when that fails).

    ``nameserver`` is a ``Nameserver`` or its text form (see ``parse_nameserver``), or a list
    of them, asked in order; ``None`` uses the resolvers in ``/etc/resolv.conf``. ``timeout``
    bounds each DNS query in seconds; ``deadline`` bounds all the queries for one domain
    (default ``DEADLINE_FACTOR`` times ``timeout``): what has no answer by then counts as
    timed out. ``max_hosts`` is how many MX hosts, by preference, are looked up. Address
    queries run concurrently, on at most ``LOOKUP_THREADS`` threads. Nothing is cached
    between queries: every answer is what DNS says now.
    """

    def __init__(
        self,
        *,
        nameserver: Nameserver | str | Sequence[Nameserver | str] | None = None,
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
        resolver = make_resolver(nameserver, timeout)
        self.timeout = float(timeout)
        self.deadline = float(deadline) if deadline is not None else DEADLINE_FACTOR * self.timeout
        self.max_hosts = max_hosts
        self._resolver = resolver

    @property
    def resolver(self) -> dns.resolver.Resolver:
        """The dnspython resolver it asks, for a command's other queries: one per command."""
        return self._resolver

    def resolve(self, domain: str) -> MailRoute:
        """Find where mail for ``domain`` goes, following RFC 5321 section 5.1.

        - MX records, lowest preference first (ties sorted by name; senders randomise them),
          the first ``max_hosts`` of them each with its A and AAAA addresses (from the answer's
          additional section when present);
        - no MX but an address: the implicit MX, the domain itself at preference 0;
        - a single ``0 .`` MX (RFC 7505): ``NULL``, the domain accepts no mail;
        - ``NXDOMAIN``, ``NODATA`` (neither MX nor address), ``SERVFAIL`` and ``TIMEOUT``;
        - an MX target that is a CNAME is followed and reported in ``cname_target``; an MX
          target that is an IP address is reported as a problem and not looked up.

        ``domain`` may be internationalised (``bücher.example``). Raises ``DnsError`` only for
        a malformed domain.
        """
        ascii_domain = normalize_mail_domain(domain)
        qname = dns.name.from_text(ascii_domain)
        budget = _Budget(self.deadline)
        reply = self._query(qname, dns.rdatatype.MX, budget)
        match reply.status:
            case _Status.NXDOMAIN:
                return MailRoute(ascii_domain, RouteKind.NXDOMAIN)
            case _Status.SERVFAIL:
                return MailRoute(ascii_domain, RouteKind.SERVFAIL)
            case _Status.TIMEOUT:
                return MailRoute(ascii_domain, RouteKind.TIMEOUT, deadline_passed=budget.passed)
            case _Status.ANSWER | _Status.NODATA:
                pass
            case _:
                assert_never(reply.status)
        # RFC 5321 5.1: "If a CNAME record is found, the resulting name is processed as if it
        # were the initial name."
        target = reply.canonical
        alias_of = _text(target) if target != qname else None
        records = [r for r in reply.records if isinstance(r, MX)]
        if not records:
            return self._implicit(ascii_domain, target, alias_of, budget)
        # RFC 7505 3: a null MX is a single MX record "0 ." and means: no mail, ever.
        null = len(records) == 1 and records[0].exchange == dns.name.root
        if null and records[0].preference == 0:
            return MailRoute(ascii_domain, RouteKind.NULL, alias_of=alias_of)
        # The order senders try, then only as many as they would: the rest are never looked up.
        records.sort(key=lambda r: (r.preference, _text(r.exchange)))
        kept = records[: self.max_hosts]
        hosts = self._mx_hosts(kept, _address_map(reply.response), len(records), budget)
        return MailRoute(
            ascii_domain,
            RouteKind.MX,
            tuple(hosts),
            alias_of=alias_of,
            hosts_left_out=len(records) - len(kept),
            deadline_passed=budget.passed,
        )

    def lookup_host(self, name: str) -> MailHost:
        """The A and AAAA addresses of a host name, within the deadline; a CNAME is followed
        and reported. Raises ``DnsError`` for a malformed name."""
        try:
            ascii_name = normalize_hostname(name)
        except UserError as exc:
            raise DnsError(str(exc)) from None
        return self._lookup([dns.name.from_text(ascii_name)], {}, _Budget(self.deadline))[0]

    def _implicit(
        self, domain: str, target: dns.name.Name, alias_of: str | None, budget: _Budget
    ) -> MailRoute:
        # RFC 5321 5.1: "If an empty list of MXs is returned, the address is treated as if it
        # was associated with an implicit MX RR, with a preference of 0, pointing to that host."
        host = self._lookup([target], {}, budget)[0]
        if host.usable:
            return MailRoute(
                domain, RouteKind.IMPLICIT, (host,), alias_of, deadline_passed=budget.passed
            )
        kind = _kind_without_address(host.problem)
        return MailRoute(domain, kind, alias_of=alias_of, deadline_passed=budget.passed)

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
        found = dict(zip(names, self._lookup(names, additional, budget), strict=True))
        hosts = []
        for record in records:
            exchange = record.exchange
            if exchange in found:
                hosts.append(dataclasses.replace(found[exchange], preference=record.preference))
                continue
            if exchange == dns.name.root:
                mixed = count > 1
                problem = HostProblem.NULL_MX_MIXED if mixed else HostProblem.NULL_MX_PREFERENCE
            else:
                problem = HostProblem.IP_LITERAL
            hosts.append(MailHost(record.preference, _text(exchange), problem=problem))
        return hosts

    def _lookup(
        self,
        names: Sequence[dns.name.Name],
        additional: Mapping[tuple[dns.name.Name, int], list[str]],
        budget: _Budget,
    ) -> list[MailHost]:
        """The A and AAAA addresses of each of ``names`` (at preference 0), concurrently."""
        # Use the additional section when it holds this record type for this very name: a
        # name that owns A/AAAA records cannot be a CNAME (RFC 1034 3.6.2), so nothing is
        # lost. A missing type there proves nothing, so that type is queried.
        jobs = list(
            dict.fromkeys(
                (name, rdtype)
                for name in names
                for _, rdtype in _ADDRESS_QUERIES
                if (name, rdtype) not in additional
            )
        )
        replies = dict(zip(jobs, self._query_all(jobs, budget), strict=True))
        return [_host(name, additional, replies) for name in names]

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
                replies.append(_Reply(_Status.TIMEOUT, name))
        return replies

    def _query(
        self, name: dns.name.Name, rdtype: dns.rdatatype.RdataType, budget: _Budget
    ) -> _Reply:
        left = budget.remaining()
        if left <= 0:
            budget.passed = True
            return _Reply(_Status.TIMEOUT, name)
        wait = min(self.timeout, left)
        try:
            answer = self._resolver.resolve(name, rdtype, raise_on_no_answer=False, lifetime=wait)
        except dns.resolver.NXDOMAIN as exc:
            return _Reply(_Status.NXDOMAIN, _nxdomain_canonical(exc, name))
        except dns.exception.Timeout:
            if wait < self.timeout:
                budget.passed = True
            return _Reply(_Status.TIMEOUT, name)
        except (dns.exception.DNSException, OSError):
            # NoNameservers (SERVFAIL, REFUSED, unreachable server), YXDOMAIN, malformed
            # replies: all mean "DNS could not answer", which RFC 5321 5.1 treats as temporary.
            return _Reply(_Status.SERVFAIL, name)
        records = tuple(answer.rrset) if answer.rrset is not None else ()
        status = _Status.ANSWER if records else _Status.NODATA
        return _Reply(status, answer.canonical_name, records, answer.response)


class _Status(enum.Enum):
    """The outcome of one DNS query, before it becomes a route kind or a host problem."""

    ANSWER = enum.auto()
    NODATA = enum.auto()
    NXDOMAIN = enum.auto()
    SERVFAIL = enum.auto()
    TIMEOUT = enum.auto()


@dataclass(frozen=True, slots=True)
class _Reply:
    status: _Status
    canonical: dns.name.Name
    records: tuple[object, ...] = ()
    response: dns.message.Message | None = None


_ADDRESS_QUERIES = ((AddressType.A, dns.rdatatype.A), (AddressType.AAAA, dns.rdatatype.AAAA))

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


def _host(
    name: dns.name.Name,
    additional: Mapping[tuple[dns.name.Name, int], list[str]],
    replies: Mapping[tuple[dns.name.Name, dns.rdatatype.RdataType], _Reply],
) -> MailHost:
    """One host from the additional section and the replies to its own queries."""
    found: dict[AddressType, list[str]] = {}
    statuses: dict[AddressType, _Status] = {}
    cname: dns.name.Name | None = None
    for address_type, rdtype in _ADDRESS_QUERIES:
        cached = additional.get((name, rdtype))
        if cached is not None:
            found[address_type] = cached
            statuses[address_type] = _Status.ANSWER
            continue
        reply = replies[(name, rdtype)]
        statuses[address_type] = reply.status
        if reply.canonical != name:
            cname = reply.canonical
        found[address_type] = _rdata_addresses(reply.records)
    addresses = tuple(sorted(set(found.get(AddressType.A, ())), key=ipaddress.IPv4Address)) + (
        tuple(sorted(set(found.get(AddressType.AAAA, ())), key=ipaddress.IPv6Address))
    )
    failed = tuple(t for t, status in statuses.items() if _failed(status))
    return MailHost(
        0,
        _text(name),
        addresses,
        cname_target=_text(cname) if cname is not None else None,
        problem=_address_problem(statuses, failed, bool(addresses)),
        failed=failed,
    )


def _failed(status: _Status) -> bool:
    """True for a query that DNS could not answer (as opposed to an answer of "nothing")."""
    match status:
        case _Status.SERVFAIL | _Status.TIMEOUT:
            return True
        case _Status.ANSWER | _Status.NODATA | _Status.NXDOMAIN:
            return False
        case _:
            assert_never(status)


def _address_problem(
    statuses: Mapping[AddressType, _Status], failed: Sequence[AddressType], have_addresses: bool
) -> HostProblem | None:
    """Why an address lookup did not fully succeed, if it did not."""
    if failed:
        timed_out = any(statuses[t] is _Status.TIMEOUT for t in failed)
        return HostProblem.TIMEOUT if timed_out else HostProblem.SERVFAIL
    if have_addresses:
        return None
    if all(status is _Status.NXDOMAIN for status in statuses.values()):
        return HostProblem.NXDOMAIN
    return HostProblem.NO_ADDRESS


def _kind_without_address(problem: HostProblem | None) -> RouteKind:
    """The route of a domain without MX records whose own address lookup found none."""
    match problem:
        case HostProblem.TIMEOUT:
            return RouteKind.TIMEOUT
        case HostProblem.SERVFAIL:
            return RouteKind.SERVFAIL
        case HostProblem.NXDOMAIN:
            return RouteKind.NXDOMAIN
        case (
            HostProblem.NO_ADDRESS
            | HostProblem.NULL_MX_MIXED
            | HostProblem.NULL_MX_PREFERENCE
            | HostProblem.IP_LITERAL
            | None
        ):
            # Only NO_ADDRESS comes from an address lookup; each of these means "no address".
            return RouteKind.NODATA
        case _:
            assert_never(problem)


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
        reason = exc.strerror or str(exc)
        raise NameserverError(f"cannot resolve nameserver {server.host!r}: {reason}") from None
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
