"""``smtpkit dns check``: are the DNS records that mail from and to our domains needs in place?

``smtpkit.dnscheck`` finds the facts as values; every word the user reads is chosen here.
For each configured domain (or each DOMAIN given), one line per record: MX, SPF, DKIM (one
per key), DMARC, and the optional MTA-STS and TLS-RPT; above them, once, the PTR record of
each of this server's addresses. A missing or wrong record comes with the zone-file line to
publish, on a line of its own after ``publish:``.

"This server" is what ``smtpkit mx --check`` takes it to be (its specific listen addresses;
listening on a wildcard, the addresses of server.hostname), unless ``--address`` says which
addresses other servers see (behind NAT, for one).

Decisions worth knowing:

- SPF is evaluated by pyspf, as receivers (and this server) evaluate it, for mail from each
  address of this server (MAIL FROM postmaster@DOMAIN, HELO server.hostname). With no
  record, the proposal is ``v=spf1 mx -all`` when the domain's MX hosts are this server at
  every one of its addresses (the record keeps working when the server moves), else this
  server's addresses as ``ip4:``/``ip6:``. A record that does not authorize some address
  comes back with the missing ``ip4:``/``ip6:`` terms placed before its ``all`` (or its
  first modifier).
- A domain without a DKIM key is a warning, not a failure: nothing in DNS is wrong, and
  ``smtpkit dkim keygen DOMAIN`` makes a key whose record the next check asks for. So are
  reports (From: MAILER-DAEMON@server.hostname) that no key would sign: the signer takes
  the key of server.hostname's domain or of a parent within its organizational domain, and
  the warning names the domain to make one for. Signed reports need no line of their own
  (the domain's DKIM lines tell); ``--json`` has the finding either way.
- DMARC p=none is fine (monitoring only, and said so); a bad p= is replaced by p=none in the
  proposal, the safe start.
- PTR records belong to whoever runs the address (the hosting provider): the proposal is the
  record to ask them for. Receivers compare them with the HELO name, so the PTR must name
  server.hostname, and that name must lead back to the address.
- MTA-STS and TLS-RPT are information only: never a failure, and their lookups failing is
  no DNS failure either.

Exit status (cron scripts may rely on it):

====  ===================================================================================
0     every check ok; warnings (no DKIM key, unsigned reports) and information (MTA-STS,
      TLS-RPT not published; DMARC p=none) do not count
1     error: unreadable config or DKIM key, no system resolver, a [dns] nameserver whose
      name does not resolve, ...
2     usage error: bad option, a DOMAIN that is not one of server.domains, bad --nameserver
      (also one whose name does not resolve), bad --address
3     a record is missing or wrong: something to publish (or, for PTR, to ask the hosting
      provider for); the lines after ``publish:`` say what
4     DNS failure or timeout: some check could not be made; retrying later may give an answer
====  ===================================================================================

When several apply, 3 wins over 4, as in ``smtpkit mx``: a record to publish is certain and
can be acted on now, while a DNS failure may clear on retry.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Sequence
from typing import Any, assert_never

import click

from smtpkit.commands import App, pass_app, reports_errors
from smtpkit.commands.mx import (
    _describe,
    _ip_sort_key,
    _problem_text,
    _seconds,
    _server_lines,
    _this_server,
    timeout_option,
)
from smtpkit.config import Config
from smtpkit.dns import (
    DnsError,
    Nameserver,
    NameserverError,
    normalize_mail_domain,
    parse_nameserver,
)
from smtpkit.dnscheck import (
    BounceFinding,
    BounceReason,
    Check,
    Checker,
    DkimFinding,
    DkimReason,
    DmarcFinding,
    DmarcReason,
    DomainReport,
    Failure,
    Finding,
    IPAddress,
    MxFinding,
    MxReason,
    OptionalFinding,
    OptionalReason,
    PtrFinding,
    PtrReason,
    SpfFinding,
    SpfReason,
    Status,
    ThisServer,
    check_bounces,
    parse_tags,
)
from smtpkit.mailauth.keys import DkimKey, load_keys
from smtpkit.owner import as_owner

__all__ = [
    "EXIT_DNS_FAILURE",
    "EXIT_OK",
    "EXIT_TO_PUBLISH",
    "command",
    "exit_status",
]

EXIT_OK = 0
EXIT_TO_PUBLISH = 3
EXIT_DNS_FAILURE = 4

_LABELS = {
    Check.MX: "MX",
    Check.SPF: "SPF",
    Check.DKIM: "DKIM",
    Check.DMARC: "DMARC",
    Check.PTR: "PTR",
    Check.MTA_STS: "MTA-STS",
    Check.TLS_RPT: "TLS-RPT",
}
_LABEL_WIDTH = max(len(label) for label in _LABELS.values())
# Notes and records line up under the text after the label.
_INDENT = " " * (2 + _LABEL_WIDTH + 1)

_STATUS_WORDS = {
    Status.OK: "ok",
    Status.MISSING: "missing",
    Status.WRONG: "wrong",
    Status.DNS_FAILURE: "cannot tell",
    Status.WARNING: "warning",
    Status.INFO: "info",
    Status.SKIPPED: "skipped",
}

_MONITORING = (
    "p=none is monitoring only: receivers send reports but deliver mail that fails DMARC "
    "as usual; raise it to quarantine or reject once the reports show your mail passing"
)


def exit_status(statuses: Iterable[Status]) -> int:
    """3 when something is to publish, else 4 on a DNS failure, else 0 (module docstring)."""
    seen = set(statuses)
    if any(status.to_publish for status in seen):
        return EXIT_TO_PUBLISH
    if Status.DNS_FAILURE in seen:
        return EXIT_DNS_FAILURE
    return EXIT_OK


# --- wording -----------------------------------------------------------------------------


class _Words:
    """What the wording of a finding needs besides the finding: the server and the timeout."""

    def __init__(self, server: ThisServer, timeout: float, deadline: float) -> None:
        self.server = server
        self.timeout = timeout
        self.deadline = deadline

    def failure(self, failure: Failure | None, wait: float | None = None) -> str:
        match failure:
            case Failure.TIMEOUT:
                return f"no DNS answer within {_seconds(wait or self.timeout)}; try again later"
            case Failure.SERVFAIL | None:
                return "DNS failure (SERVFAIL or refused); try again later"
            case _:
                assert_never(failure)

    def server_failed(self) -> str:
        lookup = self.server.hostname_lookup
        return (
            f"looking up this server's name {lookup.host} failed "
            f"({_problem_text(lookup) or 'no answer'}); try again later"
        )

    def no_server_address(self) -> str:
        return "this server has no known address (see MX), or give --address"


def _quote(text: str) -> str:
    return f'"{text}"'


def _addresses(ips: Iterable[IPAddress | str]) -> str:
    return ", ".join(str(ip) for ip in ips)


def _mx_words(f: MxFinding, w: _Words) -> tuple[str, list[str]]:
    route, host, server = f.route, f.host, w.server
    notes: list[str] = []
    reason = f.reason
    match reason:
        case MxReason.OURS:
            assert host is not None
            detail = (
                f"{host.host} ({_addresses(f.addresses)}) at preference {host.preference} "
                "is this server"
            )
            if f.earlier:
                notes.append(f"tried first, and not this server: {_describe(f.earlier)}")
        case MxReason.IMPLICIT_OURS:
            assert host is not None
            detail = (
                f"no MX record, but its implicit MX {host.host} ({_addresses(f.addresses)}) "
                "is this server"
            )
            notes.append(
                f"tip: an explicit MX is clearer: {route.domain}. IN MX 10 {server.hostname}."
            )
        case MxReason.TIMEOUT:
            detail = w.failure(Failure.TIMEOUT, min(w.timeout, w.deadline))
        case MxReason.SERVFAIL:
            detail = w.failure(Failure.SERVFAIL)
        case MxReason.HOSTNAME_FAILED:
            detail = w.server_failed()
        case MxReason.HOSTS_FAILED:
            detail = f"address lookups failed for {_describe(f.failing)}; try again later"
        case MxReason.NULL:
            detail = "null MX (RFC 7505): the domain refuses all mail; replace it"
        case MxReason.NXDOMAIN:
            detail = "the domain does not exist (NXDOMAIN): register it (or correct server.domains)"
        case MxReason.NODATA:
            detail = "no MX record and no address"
        case MxReason.IMPLICIT_ELSEWHERE:
            detail = f"no MX record; mail goes to its own address, {_describe(route.hosts)}"
        case MxReason.ELSEWHERE:
            detail = f"its mail goes to {_describe(route.hosts)}, not to this server"
        case MxReason.NO_USABLE_HOST:
            detail = f"none of its MX hosts has an address: {_describe(route.hosts)}"
        case _:
            assert_never(reason)
    lookup = server.hostname_lookup
    if any(r.startswith(f"{server.hostname}. IN A") for r in f.records) and lookup.addresses:
        notes.append(
            f"{server.hostname} now resolves to {_addresses(lookup.addresses)}: "
            "replace those records"
        )
    if f.needs_address:
        notes.append(f"give {server.hostname} an A/AAAA record with this server's address")
    return detail, notes


def _spf_words(f: SpfFinding, w: _Words) -> tuple[str, list[str]]:
    record = _quote(f.found[0]) if len(f.found) == 1 else ""
    notes: list[str] = []
    reason = f.reason
    match reason:
        case SpfReason.PASS:
            detail = f"{record} authorizes {_addresses(r.address for r in f.results)}"
        case SpfReason.NO_RECORD:
            detail = f"no SPF record (TXT v=spf1) at {f.domain}: receivers cannot tell forgeries"
        case SpfReason.MULTIPLE:
            detail = (
                f"{len(f.found)} SPF records at {f.domain}: receivers treat that as an error "
                "(permerror, RFC 7208 4.5); replace them with one"
            )
            notes += [f"found: {_quote(text)}" for text in f.found]
        case SpfReason.INVALID:
            bad = next(r for r in f.results if r.result == "permerror")
            detail = f"{record} is invalid (permerror): {bad.reason}"
        case SpfReason.NOT_AUTHORIZED:
            detail = f"{record} does not authorize this server: " + ", ".join(
                f"{r.address} gets {r.result}" for r in f.results
            )
        case SpfReason.LOOKUP_FAILED:
            failed = next((r for r in f.results if r.result == "temperror"), None)
            if failed is None:
                detail = w.failure(f.failure)
            else:
                detail = f"{failed.address} gets temperror ({failed.reason}); try again later"
        case SpfReason.NO_SERVER_ADDRESS:
            detail = w.no_server_address()
        case SpfReason.SERVER_LOOKUP_FAILED:
            detail = w.server_failed()
        case _:
            assert_never(reason)
    return detail, notes


def _dkim_words(f: DkimFinding, w: _Words) -> tuple[str, list[str]]:
    key = f.key
    reason = f.reason
    if reason is DkimReason.NO_KEY or key is None:
        return (
            f"mail from {f.domain} is not signed: it has no DKIM key; "
            f"`smtpkit dkim keygen {f.domain}` makes one",
            [],
        )
    what = f"key {key.selector} ({key.algorithm})"
    match reason:
        case DkimReason.MATCH:
            detail = f"{key.record_name} publishes {what}"
        case DkimReason.NO_RECORD:
            detail = f"no TXT record at {key.record_name} for {what}: its signatures fail"
        case DkimReason.MULTIPLE:
            detail = (
                f"{len(f.found)} TXT records at {key.record_name}: which one verifiers use is "
                "undefined (RFC 6376 3.6.2.2); publish only this one"
            )
        case DkimReason.NOT_A_KEY:
            detail = (
                f"the TXT record at {key.record_name} is no DKIM key record "
                f"(v=DKIM1 first, if at all, and p=): {_quote(_shorten(f.found[0]))}"
            )
        case DkimReason.REVOKED:
            detail = f"{key.record_name} has an empty p=, which revokes {what}: signatures fail"
        case DkimReason.KEY_DIFFERS:
            detail = (
                f"{key.record_name} publishes another public key than {what} in {key.path}: "
                "signatures fail"
            )
        case DkimReason.ALGORITHM_DIFFERS:
            published = dict(parse_tags(f.found[0]) or ()).get("k", "rsa")
            detail = f"{key.record_name} says k={published}, but {what} is {key.algorithm}"
        case DkimReason.LOOKUP_FAILED:
            detail = w.failure(f.failure)
        case _:
            assert_never(reason)
    return detail, []


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _dmarc_words(f: DmarcFinding, w: _Words) -> tuple[str, list[str]]:
    reason = f.reason
    match reason:
        case DmarcReason.POLICY:
            if f.policy == "none":
                return "p=none", [_MONITORING]
            return f"p={f.policy}", []
        case DmarcReason.NO_RECORD:
            return f"no DMARC record at {f.name}", [_MONITORING]
        case DmarcReason.MULTIPLE:
            return (
                f"{len(f.found)} DMARC records at {f.name}: receivers ignore them all "
                "(RFC 7489 6.6.3); replace them with one",
                [_MONITORING],
            )
        case DmarcReason.NO_POLICY:
            return (
                f"{_quote(f.found[0])} has no p= (none, quarantine or reject): receivers "
                "ignore it, or take it as p=none",
                [_MONITORING],
            )
        case DmarcReason.BAD_POLICY:
            return (
                f"p={f.policy} is not none, quarantine or reject: receivers ignore the record, "
                "or take it as p=none",
                [_MONITORING],
            )
        case DmarcReason.LOOKUP_FAILED:
            return w.failure(f.failure), []
        case _:
            assert_never(reason)


def _ptr_words(f: PtrFinding, w: _Words) -> tuple[str, list[str]]:
    ip, host = f.address, f.hostname
    reason = f.reason
    match reason:
        case PtrReason.FCRDNS:
            return f"{ip} -> {host} -> {ip}", []
        case PtrReason.NO_PTR:
            return (
                f"{ip} has no PTR record: receivers distrust such mail; the reverse zone is "
                f"your hosting provider's: ask them to name {host}",
                [],
            )
        case PtrReason.OTHER_NAME:
            return (
                f"{ip} -> {_addresses(f.names)}, not {host}, the name this server greets with; "
                "ask your hosting provider to change it",
                [],
            )
        case PtrReason.NOT_FORWARD:
            now = _addresses(w.server.hostname_lookup.addresses) or "no address"
            return f"{ip} -> {host}, but {host} does not lead back to {ip} ({now})", []
        case PtrReason.LOOKUP_FAILED:
            return f"{ip}: {w.failure(f.failure)}", []
        case PtrReason.NO_SERVER_ADDRESS:
            return w.no_server_address(), []
        case PtrReason.SERVER_LOOKUP_FAILED:
            return w.server_failed(), []
        case _:
            assert_never(reason)


_OPTIONAL_WHY = {
    Check.MTA_STS: "lets senders insist on TLS, RFC 8461",
    Check.TLS_RPT: "asks senders for reports of TLS failures, RFC 8460",
}


def _optional_words(f: OptionalFinding, w: _Words) -> tuple[str, list[str]]:
    reason = f.reason
    match reason:
        case OptionalReason.PUBLISHED:
            notes = []
            if f.check is Check.MTA_STS:
                domain = f.name.removeprefix("_mta-sts.")
                notes.append(
                    f"the policy at https://mta-sts.{domain}/.well-known/mta-sts.txt is not checked"
                )
            return _quote(f.found[0]), notes
        case OptionalReason.NOT_PUBLISHED:
            return f"not published (optional: {_OPTIONAL_WHY[f.check]})", []
        case OptionalReason.MULTIPLE:
            return f"{len(f.found)} records at {f.name}: senders ignore them all", []
        case OptionalReason.LOOKUP_FAILED:
            return f"not known: {w.failure(f.failure)}", []
        case _:
            assert_never(reason)


def _bounce_words(f: BounceFinding, w: _Words) -> tuple[str, list[str]]:
    reports = f"reports from MAILER-DAEMON@{f.hostname} (bounces)"
    reason = f.reason
    match reason:
        case BounceReason.SIGNED:
            return f"{reports} are signed with the keys of {f.domain}", []
        case BounceReason.NO_KEY:
            return (
                f"{reports} are not signed: {f.domain}, whose keys would sign them, has none; "
                f"`smtpkit dkim keygen {f.domain}` makes one",
                [],
            )
        case BounceReason.NO_DOMAIN:
            then = "whose keys then sign them" if f.keyed else f"`smtpkit dkim keygen {f.domain}`"
            return (
                f"{reports} are not signed: {f.hostname} is within none of server.domains, "
                f"whose keys could sign them; name this server within one (as mail.{f.domain}), "
                f"then {then}",
                [],
            )
        case _:
            assert_never(reason)


def _words(finding: Finding, w: _Words) -> tuple[str, list[str]]:
    """The text after ``LABEL status:``, and the notes that follow it."""
    if isinstance(finding, MxFinding):
        return _mx_words(finding, w)
    if isinstance(finding, SpfFinding):
        return _spf_words(finding, w)
    if isinstance(finding, DkimFinding):
        return _dkim_words(finding, w)
    if isinstance(finding, DmarcFinding):
        return _dmarc_words(finding, w)
    if isinstance(finding, PtrFinding):
        return _ptr_words(finding, w)
    if isinstance(finding, BounceFinding):
        return _bounce_words(finding, w)
    return _optional_words(finding, w)


def _finding_lines(finding: Finding, w: _Words) -> list[str]:
    detail, notes = _words(finding, w)
    label = _LABELS[finding.check]
    lines = [f"  {label:<{_LABEL_WIDTH}} {_STATUS_WORDS[finding.status]}: {detail}"]
    lines += [f"{_INDENT}note: {note}" for note in notes]
    lines += [f"{_INDENT}publish: {record}" for record in finding.records]
    return lines


def _finding_json(finding: Finding, w: _Words) -> dict[str, Any]:
    detail, notes = _words(finding, w)
    return {
        "check": finding.check.value,
        "status": finding.status.value,
        "reason": finding.reason.value,
        "name": finding.name,
        "detail": detail,
        "notes": notes,
        "records": list(finding.records),
    }


def _report_json(
    report: DomainReport, server: Sequence[PtrFinding | BounceFinding], w: _Words
) -> dict[str, Any]:
    """One domain's object; the server's findings (PTR, signed reports) go in every one,
    after DMARC, so that each object tells all that decides whether the domain's mail is
    received and trusted."""
    findings = list(report.findings)
    at = next(
        (i for i, f in enumerate(findings) if f.check in (Check.MTA_STS, Check.TLS_RPT)),
        len(findings),
    )
    findings[at:at] = server
    return {"domain": report.domain, "checks": [_finding_json(f, w) for f in findings]}


# --- the command -------------------------------------------------------------------------


def _parse_nameservers(
    ctx: click.Context, param: click.Parameter, value: tuple[str, ...]
) -> tuple[Nameserver, ...]:
    try:
        return tuple(parse_nameserver(v) for v in value)
    except DnsError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


def _parse_addresses(
    ctx: click.Context, param: click.Parameter, value: tuple[str, ...]
) -> tuple[IPAddress, ...]:
    found: list[IPAddress] = []
    for text in value:
        try:
            ip = ipaddress.ip_address(text.strip().strip("[]"))
        except ValueError:
            raise click.BadParameter(f"{text!r} is not an IP address", ctx, param) from None
        if ip.is_unspecified:
            raise click.BadParameter(f"{text!r} is no address other servers can reach", ctx, param)
        if ip not in found:
            found.append(ip)
    return tuple(sorted(found, key=_ip_sort_key))


def _chosen_domains(ctx: click.Context, config: Config, given: Sequence[str]) -> list[str]:
    """The domains to check, ASCII: all configured ones, or those given, which must be."""
    if not given:
        return list(config.server.domains)
    chosen: list[str] = []
    for text in given:
        try:
            domain = normalize_mail_domain(text)
        except DnsError as exc:
            raise click.BadParameter(str(exc), ctx=ctx, param_hint="'DOMAIN'") from None
        if domain not in config.server.domains:
            raise click.BadParameter(
                f"{text} is not one of server.domains ({', '.join(config.server.domains)})",
                ctx=ctx,
                param_hint="'DOMAIN'",
            )
        if domain not in chosen:
            chosen.append(domain)
    return chosen


def _checker(
    ctx: click.Context, config: Config, nameservers: Sequence[Nameserver], timeout: float
) -> Checker:
    """--nameserver, else the config's [dns] nameservers, else the system's resolver: the
    resolvers delivery asks, so that the check sees what the server sees."""
    servers: Sequence[Nameserver | str] | None = nameservers or config.delivery.nameservers or None
    try:
        return Checker(nameserver=servers, timeout=timeout)
    except NameserverError as exc:
        if not nameservers:
            raise click.ClickException(f"dns -> nameservers: {exc}") from None
        raise click.BadParameter(str(exc), ctx=ctx, param_hint="'--nameserver'") from None


def _server(
    config: Config, checker: Checker, given: Sequence[IPAddress]
) -> tuple[ThisServer, list[str]]:
    """This server, as ``smtpkit mx --check`` finds it or with --address's addresses, and
    the lines that introduce it."""
    found = _this_server(config, checker.mail)
    if not given:
        server = ThisServer(
            hostname=found.hostname,
            hostname_lookup=found.hostname_lookup,
            addresses=tuple(sorted(found.addresses, key=_ip_sort_key)),
            listen_addresses=found.listen_addresses,
            wildcard=found.wildcard,
        )
        return server, _server_lines(found)
    server = ThisServer(
        hostname=found.hostname,
        hostname_lookup=found.hostname_lookup,
        addresses=tuple(given),
        listen_addresses=tuple(given),
    )
    return server, [f"this server: {found.hostname} at {_addresses(given)} (--address)"]


def _keys(config: Config) -> dict[str, tuple[DkimKey, ...]]:
    """The DKIM keys, read as the data folder's owner, who signs with them (a root-owned
    0600 file a service user cannot read would sign nothing)."""
    directory = config.server.directory
    if not directory.is_dir():
        return {}
    # cryptography loads its OpenSSL backend on first use: load it as the user who started
    # the command, who can read the folder Python is installed in.
    import cryptography.hazmat.backends.openssl.backend  # noqa: F401

    with as_owner(directory):
        return load_keys(directory)


@click.group("dns")
def command() -> None:
    """Check the DNS records of the configured domains."""


@command.command("check")
@click.argument("domains", nargs=-1, metavar="[DOMAIN]...")
@click.option(
    "--nameserver",
    "nameservers",
    multiple=True,
    metavar="HOST[:PORT]",
    callback=_parse_nameservers,
    help="Ask this DNS server ([IPv6]:PORT for IPv6); repeat for more, asked in order "
    "[default: the config's dns.nameservers, else the system resolver].",
)
@timeout_option
@click.option(
    "--address",
    "addresses",
    multiple=True,
    metavar="IP",
    callback=_parse_addresses,
    help="An address other servers see this server at (repeatable), e.g. the public address "
    "in front of NAT [default: as `smtpkit mx --check` finds them: the listen addresses, or, "
    "listening on a wildcard, those of server.hostname].",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per domain per line.")
@pass_app
@reports_errors
def check(
    app: App,
    domains: tuple[str, ...],
    nameservers: tuple[Nameserver, ...],
    timeout: float,
    addresses: tuple[IPAddress, ...],
    as_json: bool,
) -> None:
    """Check the DNS records that mail to and from the configured domains needs.

    For every domain in the config (or each DOMAIN, one of them): MX, SPF, DKIM (each key),
    DMARC, MTA-STS and TLS-RPT; for this server, the PTR of each address. Each record that
    is missing or wrong comes with the zone-file line to publish.

    Exit status: 0 all fine (warnings and information aside); 3 a record to publish;
    4 DNS failure or timeout; 1 error; 2 usage error.
    """
    ctx = click.get_current_context()
    config = app.config
    chosen = _chosen_domains(ctx, config, domains)
    checker = _checker(ctx, config, nameservers, timeout)
    keys = _keys(config)
    server, header = _server(config, checker, addresses)
    words = _Words(server, checker.timeout, checker.deadline)
    ptr = checker.ptr(server)
    bounces = check_bounces(server.hostname, config.server.domains, keys)
    statuses = [*(f.status for f in ptr), bounces.status]
    if not as_json:
        for line in header:
            click.echo(line)
        for ptr_finding in ptr:
            for line in _finding_lines(ptr_finding, words):
                click.echo(line)
        if bounces.status is not Status.OK:  # signed: each domain's DKIM lines say enough
            for line in _finding_lines(bounces, words):
                click.echo(line)
    for domain in chosen:
        report = checker.domain(domain, server, keys.get(domain, ()))
        statuses += [f.status for f in report.findings]
        if as_json:
            click.echo(json.dumps(_report_json(report, (*ptr, bounces), words)))
            continue
        click.echo(f"{domain}:")
        for finding in report.findings:
            for line in _finding_lines(finding, words):
                click.echo(line)
    ctx.exit(exit_status(statuses))
