"""``smtpkit mx``: show where mail for a domain goes, and check that ours comes here.

``smtpkit.dns`` finds the routes as values; every word the user reads is chosen here.

Exit status (documented in README.md, section "Checking your MX records"; cron scripts rely on
it):

====  ===================================================================================
0     every domain has at least one mail host with an address (``--check``: every
      configured domain has a mail host that resolves to this server)
1     error: unreadable config, no system resolver, ...
2     usage error: bad option, bad DOMAIN, bad --nameserver (also one whose name does not
      resolve), DOMAIN together with --check
3     a domain accepts no mail or does not exist: null MX, NXDOMAIN, no MX and no address,
      or MX hosts none of which has an address
4     DNS failure or timeout (also a deadline that passed): retrying later may give an answer
5     ``--check`` only: a domain's mail goes to hosts that are not this server
====  ===================================================================================

When domains fail in different ways the first code that applies in the order 3, 5, 4 wins: a
permanent finding is reported ahead of a DNS failure, which retrying may clear.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, assert_never

import click

from smtpkit.commands import App, pass_app, reports_errors
from smtpkit.config import Config
from smtpkit.dns import (
    DEADLINE_FACTOR,
    DEFAULT_TIMEOUT,
    DnsError,
    HostProblem,
    MailHost,
    MailResolver,
    MailRoute,
    Nameserver,
    NameserverError,
    RouteKind,
    RouteOutcome,
    normalize_mail_domain,
    parse_nameserver,
)

__all__ = [
    "EXIT_DNS_FAILURE",
    "EXIT_ELSEWHERE",
    "EXIT_NO_MAIL",
    "EXIT_OK",
    "command",
    "exit_status",
    "format_route",
    "route_json",
]

EXIT_OK = 0
EXIT_NO_MAIL = 3
EXIT_DNS_FAILURE = 4
EXIT_ELSEWHERE = 5

# Severity order when domains fail differently: permanent findings first (see module doc).
_PRECEDENCE = (EXIT_NO_MAIL, EXIT_ELSEWHERE, EXIT_DNS_FAILURE)

_IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Senders deliver to port 25 (RFC 5321 4.5.4.2 / IANA "smtp").
SMTP_PORT = 25


def exit_status(codes: Iterable[int]) -> int:
    """Combine per-domain exit codes: 0 when all are 0, else the first in 3, 5, 4 order."""
    seen = set(codes)
    return next((code for code in _PRECEDENCE if code in seen), EXIT_OK)


def _route_code(route: MailRoute) -> int:
    outcome = route.outcome
    match outcome:
        case RouteOutcome.OK:
            return EXIT_OK
        case RouteOutcome.NO_MAIL:
            return EXIT_NO_MAIL
        case RouteOutcome.DNS_FAILURE:
            return EXIT_DNS_FAILURE
        case _:
            assert_never(outcome)


def route_json(route: MailRoute) -> dict[str, Any]:
    """The ``--json`` object for one domain; ``hosts_left_out`` only when hosts were left out."""
    found: dict[str, Any] = {
        "domain": route.domain,
        "kind": route.kind.value,
        "hosts": [
            {"preference": h.preference, "host": h.host, "addresses": list(h.addresses)}
            for h in route.hosts
        ],
    }
    if route.hosts_left_out:
        found["hosts_left_out"] = route.hosts_left_out
    return found


# --- wording -----------------------------------------------------------------------------


def _seconds(seconds: float) -> str:
    return f"{seconds:g}s"


def _problem_text(host: MailHost) -> str | None:
    """The bracketed reason shown next to a host, or None when it has no problem."""
    problem = host.problem
    failed = " and ".join(t.value for t in host.failed)
    match problem:
        case None:
            return None
        case HostProblem.NULL_MX_MIXED:
            return "invalid: null MX target '.' mixed with other MX records (RFC 7505 3)"
        case HostProblem.NULL_MX_PREFERENCE:
            return "invalid: null MX target '.' at a preference other than 0 (RFC 7505 3)"
        case HostProblem.IP_LITERAL:
            return "invalid: an IP address, not a host name (RFC 5321 5.1)"
        case HostProblem.NXDOMAIN:
            return "host does not exist (NXDOMAIN)"
        case HostProblem.NO_ADDRESS:
            return "no A or AAAA record"
        case HostProblem.SERVFAIL:
            return f"{failed} lookup failed (SERVFAIL)"
        case HostProblem.TIMEOUT:
            return f"{failed} lookup timed out"
        case _:
            assert_never(problem)


def _host_remarks(host: MailHost) -> list[str]:
    remarks: list[str] = []
    if host.cname_target is not None:
        remarks.append(
            f"alias (CNAME) of {host.cname_target}: an MX target must not be an alias, "
            "RFC 2181 10.3"
        )
    problem = _problem_text(host)
    if problem is not None:
        remarks.append(problem)
    return remarks


def _host_lines(hosts: Sequence[MailHost]) -> list[str]:
    pref_width = max(len(str(h.preference)) for h in hosts)
    host_width = max(len(h.host) for h in hosts)
    lines = []
    for h in hosts:
        addresses = ", ".join(h.addresses) if h.addresses else "-"
        remarks = "".join(f"  [{r}]" for r in _host_remarks(h))
        lines.append(
            f"  {h.preference:>{pref_width}}  {h.host:<{host_width}}  {addresses}{remarks}"
        )
    return lines


def _label(route: MailRoute, given: str | None) -> str:
    # Show the name as typed next to its IDNA form: "xn--bcher-kva.example (bücher.example)".
    shown = (given or "").strip().rstrip(".")
    return route.domain if not shown or shown.isascii() else f"{route.domain} ({shown})"


def _notes(route: MailRoute, deadline: float) -> list[str]:
    """Facts worth telling that do not change the route."""
    notes = []
    if route.alias_of is not None:
        notes.append(
            f"{route.domain} is an alias (CNAME) of {route.alias_of}; "
            f"its mail goes where mail for {route.alias_of} goes (RFC 5321 5.1)"
        )
    if route.ties:
        notes.append(
            "hosts of equal preference are listed by name; "
            "senders pick among them at random (RFC 5321 5.1)"
        )
    if route.hosts_left_out:
        notes.append(
            f"{route.hosts_left_out} more MX hosts not shown: only the first "
            f"{len(route.hosts)} by preference are looked up (senders try no more than a few)"
        )
    if route.deadline_passed:
        notes.append(
            f"the {_seconds(deadline)} deadline (--deadline) passed: lookups without an "
            "answer by then count as timed out"
        )
    return notes


def format_route(
    route: MailRoute, *, timeout: float, deadline: float, given: str | None = None
) -> list[str]:
    """The readable lines for one domain: a header, one line per host, notes.

    ``timeout`` and ``deadline`` are the resolver's: the wait for one query and for all the
    queries of the domain. ``given`` is the name as typed, shown next to its IDNA form.
    """
    name = _label(route, given)
    lines: list[str]
    kind = route.kind
    match kind:
        case RouteKind.MX:
            count = len(route.hosts) + route.hosts_left_out
            if count == 1:
                lines = [f"{name}: 1 mail host (MX)"]
            else:
                lines = [f"{name}: {count} mail hosts (MX), in the order senders try them"]
            lines += _host_lines(route.hosts)
            outcome = route.outcome
            match outcome:
                case RouteOutcome.OK:
                    pass
                case RouteOutcome.NO_MAIL:
                    lines.append(
                        "  no usable mail host: mail to this domain bounces (RFC 5321 5.1)"
                    )
                case RouteOutcome.DNS_FAILURE:
                    lines.append(
                        "  no usable mail host right now: address lookups failed; try again later"
                    )
                case _:
                    assert_never(outcome)
        case RouteKind.IMPLICIT:
            lines = [
                f"{name}: no MX record; implicit MX: its own address receives mail (RFC 5321 5.1)",
                *_host_lines(route.hosts),
            ]
        case RouteKind.NULL:
            lines = [f"{name}: null MX (RFC 7505): this domain accepts no mail"]
        case RouteKind.NXDOMAIN:
            lines = [f"{name}: no such domain (NXDOMAIN)"]
        case RouteKind.NODATA:
            lines = [f"{name}: no MX and no A/AAAA record: this domain receives no mail"]
        case RouteKind.SERVFAIL:
            lines = [f"{name}: DNS failure (SERVFAIL or refused); try again later"]
        case RouteKind.TIMEOUT:
            wait = _seconds(min(timeout, deadline))
            lines = [f"{name}: no DNS answer within {wait} (timeout); try again later"]
        case _:
            assert_never(kind)
    lines += [f"  note: {note}" for note in _notes(route, deadline)]
    return lines


# --- the command -------------------------------------------------------------------------


def _parse_nameserver(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> Nameserver | None:
    if value is None:
        return None
    try:
        return parse_nameserver(value)
    except DnsError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


def _resolver(
    ctx: click.Context,
    nameserver: Nameserver | None,
    timeout: float,
    deadline: float | None,
    configured: tuple[str, ...] = (),
) -> MailResolver:
    """The one resolver of this invocation: --nameserver, else the config's [dns]
    nameservers (with --check), else the system's. A --nameserver whose name does not
    resolve is a usage error like any other bad --nameserver."""
    servers: Nameserver | list[str] | None = nameserver
    if nameserver is None and configured:
        servers = list(configured)
    try:
        return MailResolver(nameserver=servers, timeout=timeout, deadline=deadline)
    except NameserverError as exc:
        if nameserver is None:
            raise click.ClickException(f"dns -> nameservers: {exc}") from None
        raise click.BadParameter(str(exc), ctx=ctx, param_hint="'--nameserver'") from None


#: ``--timeout``, shared with ``smtpkit dns check``.
timeout_option = click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True, max=3600),
    default=DEFAULT_TIMEOUT,
    show_default=True,
    metavar="SECONDS",
    help="Seconds to wait for each DNS query.",
)


@click.command("mx")
@click.argument("domains", nargs=-1, metavar="[DOMAIN]...")
@click.option(
    "--check",
    is_flag=True,
    help="Check that every domain in the config has a mail host that is this server.",
)
@click.option(
    "--nameserver",
    metavar="HOST[:PORT]",
    callback=_parse_nameserver,
    help="Ask this DNS server ([IPv6]:PORT for IPv6) [default: with --check, the config's "
    "dns.nameservers; else the system resolver].",
)
@timeout_option
@click.option(
    "--deadline",
    type=click.FloatRange(min=0, min_open=True, max=3 * 3600),
    metavar="SECONDS",
    help=f"Seconds for all the queries of one domain [default: {DEADLINE_FACTOR} x --timeout].",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per domain per line.")
@pass_app
@reports_errors
def command(
    app: App,
    domains: tuple[str, ...],
    check: bool,
    nameserver: Nameserver | None,
    timeout: float,
    deadline: float | None,
    as_json: bool,
) -> None:
    """Show the mail hosts of each DOMAIN, in the order senders try them (RFC 5321 5.1).

    With --check (and no DOMAIN), tell for every domain in the config whether its mail reaches
    this server, and how to fix the DNS when it does not.

    Only the first 10 MX hosts by preference are looked up, as senders try no more than a
    few. What has no answer within the deadline counts as timed out.

    Exit status: 0 all fine; 3 a domain accepts no mail or does not exist; 4 DNS failure or
    timeout; 5 (--check) a domain's mail goes elsewhere; 1 error; 2 usage error.
    """
    ctx = click.get_current_context()
    if check and domains:
        raise click.UsageError("give DOMAIN arguments or --check, not both")
    if not check and not domains:
        raise click.UsageError("give at least one DOMAIN, or --check")
    if check:
        config = app.config
        resolver = _resolver(ctx, nameserver, timeout, deadline, config.delivery.nameservers)
        ctx.exit(_check(config, resolver, as_json=as_json))
    for given in domains:
        try:
            normalize_mail_domain(given)
        except DnsError as exc:
            raise click.BadParameter(str(exc), ctx=ctx, param_hint="DOMAIN") from None
    resolver = _resolver(ctx, nameserver, timeout, deadline)
    codes = []
    for given in domains:
        route = resolver.resolve(given)
        codes.append(_route_code(route))
        if as_json:
            click.echo(json.dumps(route_json(route)))
        else:
            lines = format_route(
                route, timeout=resolver.timeout, deadline=resolver.deadline, given=given
            )
            for line in lines:
                click.echo(line)
    ctx.exit(exit_status(codes))


# --- --check -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Server:
    """What "this server" means for the check: the addresses senders must reach."""

    hostname: str
    hostname_lookup: MailHost
    listen_addresses: tuple[_IPAddress, ...]  # specific addresses from server.listen
    wildcard: bool  # listening on 0.0.0.0 or ::, so server.hostname's addresses count
    listen_text: str
    ports: frozenset[int]

    @property
    def addresses(self) -> frozenset[_IPAddress]:
        found = set(self.listen_addresses)
        if self.wildcard:
            found.update(ipaddress.ip_address(a) for a in self.hostname_lookup.addresses)
        return frozenset(found)


def _listen_ips(host: str, port: int) -> tuple[list[_IPAddress], bool]:
    """The addresses of one ``server.listen`` entry, and whether it is a wildcard."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        # A name in server.listen is bound through the system resolver, so look it up the same
        # way the server does.
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError:
            return [], False
        ips = [ipaddress.ip_address(str(info[4][0]).partition("%")[0]) for info in infos]
        return ips, any(i.is_unspecified for i in ips)
    return ([], True) if ip.is_unspecified else ([ip], False)


def _this_server(config: Config, resolver: MailResolver) -> _Server:
    listen: list[_IPAddress] = []
    wildcard = False
    for address in config.server.listen:
        ips, any_address = _listen_ips(address.host, address.port)
        wildcard = wildcard or any_address
        listen += [ip for ip in ips if ip not in listen]
    lookup = resolver.lookup_host(config.server.hostname)
    return _Server(
        hostname=lookup.host,  # the ASCII form, as it appears in MX records
        hostname_lookup=lookup,
        listen_addresses=tuple(listen),
        wildcard=wildcard,
        listen_text=", ".join(str(a) for a in config.server.listen),
        ports=frozenset(a.port for a in config.server.listen),
    )


def _server_lines(server: _Server) -> list[str]:
    ours = ", ".join(str(a) for a in sorted(server.addresses, key=_ip_sort_key))
    lines = [
        f"this server: {server.hostname} at {ours or 'no known address'} "
        f"(listening on {server.listen_text})"
    ]
    if server.wildcard and not server.hostname_lookup.addresses:
        problem = _problem_text(server.hostname_lookup) or "no address"
        lines.append(
            f"  note: listening on a wildcard address, so MX hosts are matched against "
            f"{server.hostname}, which has no address ({problem})"
        )
    if SMTP_PORT not in server.ports:
        lines.append(
            f"  note: no listen address uses port {SMTP_PORT}, where other servers deliver "
            "(fine behind a port forward)"
        )
    return lines


def _ip_sort_key(ip: _IPAddress) -> tuple[int, int]:
    return (ip.version, int(ip))


def _ours(host: MailHost, server: _Server) -> bool:
    return any(ipaddress.ip_address(a) in server.addresses for a in host.addresses)


def _describe(hosts: Iterable[MailHost]) -> str:
    parts = []
    for h in hosts:
        detail = ", ".join(h.addresses) if h.addresses else (_problem_text(h) or "no address")
        parts.append(f"{h.host} ({detail})")
    return ", ".join(parts)


def _fix_lines(route: MailRoute, server: _Server) -> list[str]:
    """The DNS records to add so that mail for ``route.domain`` reaches this server."""
    record = f"{route.domain}. IN MX 10 {server.hostname}."
    fixes: list[str] = []
    kind = route.kind
    match kind:
        case RouteKind.NULL:
            fixes.append(f"replace the null MX with: {record}")
        case RouteKind.NXDOMAIN:
            fixes.append(f"register {route.domain} (or correct server.domains), then add: {record}")
        case RouteKind.MX:
            if all(h.host != server.hostname for h in route.hosts):
                fixes.append(f"add: {record}")
        case RouteKind.IMPLICIT | RouteKind.NODATA | RouteKind.SERVFAIL | RouteKind.TIMEOUT:
            fixes.append(f"add: {record}")
        case _:
            assert_never(kind)
    lookup = server.hostname_lookup
    known = [ipaddress.ip_address(a) for a in lookup.addresses]
    if not lookup.temporary and not any(ip in server.addresses for ip in known):
        # server.hostname itself does not lead here, so an MX naming it would not either.
        now = f" (now: {', '.join(lookup.addresses)})" if lookup.addresses else ""
        for ip in server.listen_addresses:
            rtype = "A" if ip.version == 4 else "AAAA"
            fixes.append(f"{'set' if now else 'add'}: {server.hostname}. IN {rtype} {ip}{now}")
        if not server.listen_addresses:
            fixes.append(f"give {server.hostname} an A/AAAA record with this server's address")
    return [f"  {'fix' if i == 0 else 'and'}: {fix}" for i, fix in enumerate(fixes)]


def _check_route(
    route: MailRoute, server: _Server, *, timeout: float, deadline: float
) -> tuple[int, list[str]]:
    """Exit code and lines for one configured domain."""
    name = route.domain
    kind = route.kind
    match kind:
        case RouteKind.MX:
            return _check_hosts(route, server, implicit=False)
        case RouteKind.IMPLICIT:
            return _check_hosts(route, server, implicit=True)
        case RouteKind.TIMEOUT:
            why = f"no DNS answer within {_seconds(min(timeout, deadline))}"
            return EXIT_DNS_FAILURE, [f"{name}: cannot tell: {why}; try again later"]
        case RouteKind.SERVFAIL:
            why = "DNS failure (SERVFAIL or refused)"
            return EXIT_DNS_FAILURE, [f"{name}: cannot tell: {why}; try again later"]
        case RouteKind.NULL:
            why = "null MX (RFC 7505): the domain refuses all mail"
        case RouteKind.NXDOMAIN:
            why = "the domain does not exist (NXDOMAIN)"
        case RouteKind.NODATA:
            why = "no MX record and no address"
        case _:
            assert_never(kind)
    return EXIT_NO_MAIL, [f"{name}: NOT this server: {why}", *_fix_lines(route, server)]


def _check_hosts(route: MailRoute, server: _Server, *, implicit: bool) -> tuple[int, list[str]]:
    """Exit code and lines for a domain with mail hosts: MX records or its implicit MX."""
    name = route.domain
    mine = [h for h in route.usable_hosts if _ours(h, server)]
    if mine:
        best = mine[0]
        addresses = ", ".join(
            a for a in best.addresses if ipaddress.ip_address(a) in server.addresses
        )
        if implicit:
            return EXIT_OK, [
                f"{name}: ok: no MX record, but its implicit MX {best.host} ({addresses}) "
                "is this server",
                f"  tip: an explicit MX is clearer: {name}. IN MX 10 {server.hostname}.",
            ]
        lines = [
            f"{name}: ok: {best.host} ({addresses}) at preference {best.preference} is this server"
        ]
        earlier = [h for h in route.usable_hosts if h.preference < best.preference]
        if earlier:
            lines.append(f"  note: tried first, and not this server: {_describe(earlier)}")
        return EXIT_OK, lines
    lookup = server.hostname_lookup
    if server.wildcard and lookup.temporary and route.usable_hosts:
        # Listening on a wildcard address, this server's addresses are those of its name.
        why = f"looking up this server's name {server.hostname} failed ({_problem_text(lookup)})"
        return EXIT_DNS_FAILURE, [f"{name}: cannot tell: {why}; try again later"]
    # An MX host whose lookup failed might be this server. (The host of an implicit MX has an
    # address, or the route would not be implicit.)
    failing = [h for h in route.hosts if h.temporary]
    if failing and not implicit:
        why = f"address lookups failed for {_describe(failing)}"
        return EXIT_DNS_FAILURE, [f"{name}: cannot tell: {why}; try again later"]
    if implicit:
        code = EXIT_ELSEWHERE
        why = f"no MX record; mail goes to its own address, {_describe(route.hosts)}"
    elif route.usable_hosts:
        code = EXIT_ELSEWHERE
        why = f"its mail goes to {_describe(route.hosts)}"
    else:
        code = EXIT_NO_MAIL
        why = f"none of its MX hosts has an address: {_describe(route.hosts)}"
    return code, [f"{name}: NOT this server: {why}", *_fix_lines(route, server)]


def _check(config: Config, resolver: MailResolver, *, as_json: bool) -> int:
    server = _this_server(config, resolver)
    if not as_json:
        for line in _server_lines(server):
            click.echo(line)
    codes = []
    for domain in config.server.domains:
        route = resolver.resolve(domain)
        code, lines = _check_route(
            route, server, timeout=resolver.timeout, deadline=resolver.deadline
        )
        codes.append(code)
        if as_json:
            click.echo(json.dumps({**route_json(route), "reachable": code == EXIT_OK}))
        else:
            for line in lines:
                click.echo(line)
    return exit_status(codes)
