"""``smtpkit mx``: show where mail for a domain goes, and check that ours comes here.

Exit status (documented in docs/mx.md; cron scripts rely on it):

====  ===================================================================================
0     every domain has at least one mail host with an address (``--check``: every
      configured domain has a mail host that resolves to this server)
1     error: unreadable config, no system resolver, ...
2     usage error: bad option, bad DOMAIN, bad --nameserver, DOMAIN together with --check
3     a domain accepts no mail or does not exist: null MX, NXDOMAIN, no MX and no address,
      or MX hosts none of which has an address
4     DNS failure or timeout: retrying later may give an answer
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
from typing import Any

import click

from smtpkit.commands import App, pass_app, reports_errors
from smtpkit.config import Config
from smtpkit.dns import (
    DEADLINE_FACTOR,
    DEFAULT_TIMEOUT,
    DnsError,
    HostAddresses,
    MailHost,
    MailResolver,
    MailRoute,
    Nameserver,
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
    if outcome == "ok":
        return EXIT_OK
    return EXIT_DNS_FAILURE if outcome == "dns-failure" else EXIT_NO_MAIL


def route_json(route: MailRoute) -> dict[str, Any]:
    """The ``--json`` object for one domain; ``hosts_left_out`` only when hosts were left out."""
    found: dict[str, Any] = {
        "domain": route.domain,
        "kind": route.kind,
        "hosts": [
            {"preference": h.preference, "host": h.host, "addresses": list(h.addresses)}
            for h in route.hosts
        ],
    }
    if route.hosts_left_out:
        found["hosts_left_out"] = route.hosts_left_out
    return found


def _timeout_text(timeout: float) -> str:
    return f"{timeout:g}s"


def _host_remarks(host: MailHost) -> list[str]:
    remarks: list[str] = []
    if host.cname_target is not None:
        remarks.append(
            f"alias (CNAME) of {host.cname_target}: an MX target must not be an alias, "
            "RFC 2181 10.3"
        )
    if host.problem is not None:
        remarks.append(host.problem)
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


def _limit_notes(route: MailRoute, deadline: float) -> list[str]:
    notes = []
    if route.hosts_left_out:
        notes.append(
            f"{route.hosts_left_out} more MX hosts not shown: only the first "
            f"{len(route.hosts)} by preference are looked up (senders try no more than a few)"
        )
    if route.deadline_passed:
        notes.append(
            f"the {_timeout_text(deadline)} deadline (--deadline) passed: lookups without an "
            "answer by then count as timed out"
        )
    return notes


def format_route(
    route: MailRoute, *, timeout: float, deadline: float | None = None, given: str | None = None
) -> list[str]:
    """The readable lines for one domain: a header, one line per host, notes.

    ``timeout`` is the longest wait for one query (the ``--timeout``, or the deadline when that
    is shorter), ``deadline`` the one for all the queries of the domain.
    """
    name = _label(route, given)
    lines: list[str]
    if route.kind == "mx":
        count = len(route.hosts) + route.hosts_left_out
        if count == 1:
            lines = [f"{name}: 1 mail host (MX)"]
        else:
            lines = [f"{name}: {count} mail hosts (MX), in the order senders try them"]
        lines += _host_lines(route.hosts)
        if route.outcome == "no-mail":
            lines.append("  no usable mail host: mail to this domain bounces (RFC 5321 5.1)")
        elif route.outcome == "dns-failure":
            lines.append("  no usable mail host right now: address lookups failed; try again later")
    elif route.kind == "implicit":
        lines = [f"{name}: no MX record; implicit MX: its own address receives mail (RFC 5321 5.1)"]
        lines += _host_lines(route.hosts)
    elif route.kind == "null":
        lines = [f"{name}: null MX (RFC 7505): this domain accepts no mail"]
    elif route.kind == "nxdomain":
        lines = [f"{name}: no such domain (NXDOMAIN)"]
    elif route.kind == "nodata":
        lines = [f"{name}: no MX and no A/AAAA record: this domain receives no mail"]
    elif route.kind == "servfail":
        lines = [f"{name}: DNS failure (SERVFAIL or refused); try again later"]
    else:
        lines = [
            f"{name}: no DNS answer within {_timeout_text(timeout)} (timeout); try again later"
        ]
    notes = [
        *route.notes,
        *_limit_notes(route, DEADLINE_FACTOR * timeout if deadline is None else deadline),
    ]
    lines += [f"  note: {note}" for note in notes]
    return lines


def _parse_nameserver(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> Nameserver | None:
    if value is None:
        return None
    try:
        return parse_nameserver(value)
    except DnsError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


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
    help="Ask this DNS server ([IPv6]:PORT for IPv6) [default: the system resolver].",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True, max=3600),
    default=DEFAULT_TIMEOUT,
    show_default=True,
    metavar="SECONDS",
    help="Seconds to wait for each DNS query.",
)
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
        resolver = MailResolver(nameserver=nameserver, timeout=timeout, deadline=deadline)
        ctx.exit(_check(config, resolver, as_json=as_json))
    for given in domains:
        try:
            normalize_mail_domain(given)
        except DnsError as exc:
            raise click.BadParameter(str(exc), ctx=ctx, param_hint="DOMAIN") from None
    resolver = MailResolver(nameserver=nameserver, timeout=timeout, deadline=deadline)
    wait = min(resolver.timeout, resolver.deadline)
    codes = []
    for given in domains:
        route = resolver.resolve(given)
        codes.append(_route_code(route))
        if as_json:
            click.echo(json.dumps(route_json(route)))
        else:
            for line in format_route(route, timeout=wait, deadline=resolver.deadline, given=given):
                click.echo(line)
    ctx.exit(exit_status(codes))


# --- --check -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Server:
    """What "this server" means for the check: the addresses senders must reach."""

    hostname: str
    hostname_lookup: HostAddresses
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
    return _Server(
        hostname=config.server.hostname.rstrip(".").lower(),
        hostname_lookup=resolver.lookup_host(config.server.hostname),
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
        problem = server.hostname_lookup.problem or "no address"
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
        detail = ", ".join(h.addresses) if h.addresses else (h.problem or "no address")
        parts.append(f"{h.host} ({detail})")
    return ", ".join(parts)


def _fix_lines(route: MailRoute, server: _Server) -> list[str]:
    """The DNS records to add so that mail for ``route.domain`` reaches this server."""
    record = f"{route.domain}. IN MX 10 {server.hostname}."
    fixes: list[str] = []
    if route.kind == "null":
        fixes.append(f"replace the null MX with: {record}")
    elif route.kind == "nxdomain":
        fixes.append(f"register {route.domain} (or correct server.domains), then add: {record}")
    elif route.kind != "mx" or all(h.host != server.hostname for h in route.hosts):
        fixes.append(f"add: {record}")
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


def _check_route(route: MailRoute, server: _Server, timeout: float) -> tuple[int, list[str]]:
    """Exit code and lines for one configured domain."""
    name = route.domain
    mine = [h for h in route.usable_hosts if _ours(h, server)]
    if mine:
        best = mine[0]
        addresses = ", ".join(
            a for a in best.addresses if ipaddress.ip_address(a) in server.addresses
        )
        if route.kind == "implicit":
            lines = [
                f"{name}: ok: no MX record, but its implicit MX {best.host} ({addresses}) "
                "is this server",
                f"  tip: an explicit MX is clearer: {name}. IN MX 10 {server.hostname}.",
            ]
        else:
            lines = [
                f"{name}: ok: {best.host} ({addresses}) at preference {best.preference} "
                "is this server"
            ]
            earlier = [h for h in route.usable_hosts if h.preference < best.preference]
            if earlier:
                lines.append(f"  note: tried first, and not this server: {_describe(earlier)}")
        return EXIT_OK, lines
    lookup = server.hostname_lookup
    if server.wildcard and lookup.temporary and route.usable_hosts:
        # Listening on a wildcard address, this server's addresses are those of its name.
        why = f"looking up this server's name {server.hostname} failed ({lookup.problem})"
        return EXIT_DNS_FAILURE, [f"{name}: cannot tell: {why}; try again later"]
    if route.outcome == "dns-failure" or (
        route.kind == "mx" and any(h.temporary for h in route.hosts)
    ):
        if route.kind == "timeout":
            why = f"no DNS answer within {_timeout_text(timeout)}"
        elif route.kind == "servfail":
            why = "DNS failure (SERVFAIL or refused)"
        else:
            why = f"address lookups failed for {_describe(h for h in route.hosts if h.temporary)}"
        return EXIT_DNS_FAILURE, [f"{name}: cannot tell: {why}; try again later"]
    code = EXIT_NO_MAIL
    if route.kind == "null":
        why = "null MX (RFC 7505): the domain refuses all mail"
    elif route.kind == "nxdomain":
        why = "the domain does not exist (NXDOMAIN)"
    elif route.kind == "nodata":
        why = "no MX record and no address"
    elif route.kind == "implicit":
        code = EXIT_ELSEWHERE
        why = f"no MX record; mail goes to its own address, {_describe(route.hosts)}"
    elif route.usable_hosts:
        code = EXIT_ELSEWHERE
        why = f"its mail goes to {_describe(route.hosts)}"
    else:
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
        code, lines = _check_route(route, server, min(resolver.timeout, resolver.deadline))
        codes.append(code)
        if as_json:
            click.echo(json.dumps({**route_json(route), "reachable": code == EXIT_OK}))
        else:
            for line in lines:
                click.echo(line)
    return exit_status(codes)
