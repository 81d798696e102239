"""``smtpkit mx`` through click's CliRunner, resolving through a real NSD (tests/dnsserver.py)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dns.resolver
import pytest
from click.testing import CliRunner, Result

from smtpkit.commands import cli
from smtpkit.dns import DEADLINE_FACTOR, MAX_MX_HOSTS
from tests.dnsserver import (  # noqa: F401
    DnsServer,
    FilteringNameserver,
    dns_server,
    filtered_dns_server,
    silent_nameserver,
)

TIES = (
    "  note: hosts of equal preference are listed by name; "
    "senders pick among them at random (RFC 5321 5.1)"
)
MULTI = [
    "multi.mx.test: 5 mail hosts (MX), in the order senders try them",
    "   5  mx-d.mx.test     192.0.2.4, 192.0.2.14",
    "  10  mx-a.mx.test     192.0.2.1, 2001:db8::1",
    "  10  mx-b.mx.test     192.0.2.2",
    "  20  mx-c.mx.test     2001:db8::3",
    "  30  mail.other.test  198.51.100.7",
    TIES,
]


def mx(server: DnsServer | str, *args: str, config: Path | None = None) -> Result:
    nameserver = server if isinstance(server, str) else server.nameserver
    head = ["-c", str(config)] if config is not None else ["-c", "/nonexistent/smtpkit.toml"]
    return CliRunner().invoke(
        cli, [*head, "mx", "--nameserver", nameserver, "--timeout", "2", *args]
    )


def lines(result: Result) -> list[str]:
    return result.output.splitlines()


def test_mx_hosts_in_sender_order(dns_server: DnsServer) -> None:  # noqa: F811
    # No config file exists: plain lookups must not need one.
    result = mx(dns_server, "multi.mx.test")
    assert lines(result) == MULTI
    assert result.exit_code == 0


def test_every_kind_of_answer(dns_server: DnsServer) -> None:  # noqa: F811
    result = mx(
        dns_server,
        "aonly.mx.test",
        "aaaaonly.mx.test",
        "null.mx.test",
        "mixednull.mx.test",
        "cname.mx.test",
        "literal.mx.test",
        "dangling.mx.test",
        "failing.mx.test",
        "nodata.mx.test",
        "nosuch.mx.test",
        "broken.test",
        "www.mx.test",
    )
    assert lines(result) == [
        "aonly.mx.test: no MX record; implicit MX: its own address receives mail (RFC 5321 5.1)",
        "  0  aonly.mx.test  192.0.2.10",
        "aaaaonly.mx.test: no MX record; implicit MX: its own address receives mail (RFC 5321 5.1)",
        "  0  aaaaonly.mx.test  2001:db8::10",
        "null.mx.test: null MX (RFC 7505): this domain accepts no mail",
        "mixednull.mx.test: 2 mail hosts (MX), in the order senders try them",
        "   0  .             -  [invalid: null MX target '.' mixed with other MX records "
        "(RFC 7505 3)]",
        "  10  mx-b.mx.test  192.0.2.2",
        "cname.mx.test: 1 mail host (MX)",
        "  10  alias.mx.test  192.0.2.30, 2001:db8::30  [alias (CNAME) of real.mx.test: "
        "an MX target must not be an alias, RFC 2181 10.3]",
        "literal.mx.test: 1 mail host (MX)",
        "  10  192.0.2.1  -  [invalid: an IP address, not a host name (RFC 5321 5.1)]",
        "  no usable mail host: mail to this domain bounces (RFC 5321 5.1)",
        "dangling.mx.test: 1 mail host (MX)",
        "  10  nowhere.mx.test  -  [host does not exist (NXDOMAIN)]",
        "  no usable mail host: mail to this domain bounces (RFC 5321 5.1)",
        "failing.mx.test: 1 mail host (MX)",
        "  10  mail.broken.test  -  [A and AAAA lookup failed (SERVFAIL)]",
        "  no usable mail host right now: address lookups failed; try again later",
        "nodata.mx.test: no MX and no A/AAAA record: this domain receives no mail",
        "nosuch.mx.test: no such domain (NXDOMAIN)",
        "broken.test: DNS failure (SERVFAIL or refused); try again later",
        "www.mx.test: 5 mail hosts (MX), in the order senders try them",
        *MULTI[1:-1],
        "  note: www.mx.test is an alias (CNAME) of multi.mx.test; its mail goes where mail "
        "for multi.mx.test goes (RFC 5321 5.1)",
        TIES,
    ]
    # Domains without mail (3) and DNS failures (4) together: the permanent finding wins.
    assert result.exit_code == 3


def test_every_host_problem_has_its_words(dns_server: DnsServer) -> None:  # noqa: F811
    # The two host problems test_every_kind_of_answer does not show (the others are there and
    # in the slow.test tests below).
    result = mx(dns_server, "lonedot.mx.test", "noaddr.mx.test")
    assert lines(result) == [
        "lonedot.mx.test: 1 mail host (MX)",
        "  10  .  -  [invalid: null MX target '.' at a preference other than 0 (RFC 7505 3)]",
        "  no usable mail host: mail to this domain bounces (RFC 5321 5.1)",
        "noaddr.mx.test: 1 mail host (MX)",
        "  10  nodata.mx.test  -  [no A or AAAA record]",
        "  no usable mail host: mail to this domain bounces (RFC 5321 5.1)",
    ]
    assert result.exit_code == 3


def test_idn_domain_shows_both_forms(dns_server: DnsServer) -> None:  # noqa: F811
    result = mx(dns_server, "bücher.mx.test")
    assert lines(result) == [
        "xn--bcher-kva.mx.test (bücher.mx.test): 1 mail host (MX)",
        "  10  mx-a.mx.test  192.0.2.1, 2001:db8::1",
    ]
    assert result.exit_code == 0


def test_timeout(silent_nameserver: str) -> None:  # noqa: F811
    result = CliRunner().invoke(
        cli, ["mx", "--nameserver", silent_nameserver, "--timeout", "0.5", "multi.mx.test"]
    )
    assert lines(result) == ["multi.mx.test: no DNS answer within 0.5s (timeout); try again later"]
    assert result.exit_code == 4


@pytest.mark.parametrize(
    ("domains", "code"),
    [
        (["multi.mx.test"], 0),
        (["aonly.mx.test", "aaaaonly.mx.test", "cname.mx.test", "mixednull.mx.test"], 0),
        (["null.mx.test"], 3),
        (["nosuch.mx.test"], 3),
        (["nodata.mx.test"], 3),
        (["literal.mx.test"], 3),
        (["dangling.mx.test"], 3),
        (["multi.mx.test", "null.mx.test"], 3),
        (["broken.test"], 4),
        (["failing.mx.test"], 4),
        (["example.org"], 4),  # NSD refuses names outside its zones
        (["multi.mx.test", "broken.test"], 4),
        (["broken.test", "null.mx.test"], 3),
    ],
)
def test_exit_codes(dns_server: DnsServer, domains: list[str], code: int) -> None:  # noqa: F811
    assert mx(dns_server, *domains).exit_code == code


def test_json(dns_server: DnsServer) -> None:  # noqa: F811
    result = mx(
        dns_server, "--json", "multi.mx.test", "aonly.mx.test", "null.mx.test", "bücher.mx.test"
    )
    assert result.exit_code == 3
    out = lines(result)
    assert out[0] == (
        '{"domain": "multi.mx.test", "kind": "mx", "hosts": ['
        '{"preference": 5, "host": "mx-d.mx.test", "addresses": ["192.0.2.4", "192.0.2.14"]}, '
        '{"preference": 10, "host": "mx-a.mx.test", "addresses": ["192.0.2.1", "2001:db8::1"]}, '
        '{"preference": 10, "host": "mx-b.mx.test", "addresses": ["192.0.2.2"]}, '
        '{"preference": 20, "host": "mx-c.mx.test", "addresses": ["2001:db8::3"]}, '
        '{"preference": 30, "host": "mail.other.test", "addresses": ["198.51.100.7"]}]}'
    )
    assert [json.loads(line) for line in out[1:]] == [
        {
            "domain": "aonly.mx.test",
            "kind": "implicit",
            "hosts": [{"preference": 0, "host": "aonly.mx.test", "addresses": ["192.0.2.10"]}],
        },
        {"domain": "null.mx.test", "kind": "null", "hosts": []},
        {
            "domain": "xn--bcher-kva.mx.test",
            "kind": "mx",
            "hosts": [
                {
                    "preference": 10,
                    "host": "mx-a.mx.test",
                    "addresses": ["192.0.2.1", "2001:db8::1"],
                }
            ],
        },
    ]


@pytest.mark.parametrize(
    ("domain", "kind"),
    [
        ("nosuch.mx.test", "nxdomain"),
        ("nodata.mx.test", "nodata"),
        ("broken.test", "servfail"),
    ],
)
def test_json_failures(dns_server: DnsServer, domain: str, kind: str) -> None:  # noqa: F811
    result = mx(dns_server, "--json", domain)
    assert lines(result) == [f'{{"domain": "{domain}", "kind": "{kind}", "hosts": []}}']


def test_json_timeout(silent_nameserver: str) -> None:  # noqa: F811
    result = CliRunner().invoke(
        cli, ["mx", "--json", "--nameserver", silent_nameserver, "--timeout", "0.3", "x.test"]
    )
    assert lines(result) == ['{"domain": "x.test", "kind": "timeout", "hosts": []}']
    assert result.exit_code == 4


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ([], "Error: give at least one DOMAIN, or --check"),
        (["--check", "example.org"], "Error: give DOMAIN arguments or --check, not both"),
        (["exa mple.org"],
         "Error: Invalid value for DOMAIN: 'exa mple.org' is not a valid domain name"),
        (["192.0.2.1"],
         "Error: Invalid value for DOMAIN: '192.0.2.1' is an IP address, not a domain name"),
        (["--nameserver", "127.0.0.1:0", "example.org"],
         "Error: Invalid value for '--nameserver': bad nameserver '127.0.0.1:0': "
         "port must be 1-65535"),
        (["--nameserver", "[::1", "example.org"],
         "Error: Invalid value for '--nameserver': bad nameserver '[::1': "
         "expected HOST, HOST:PORT or [IPv6]:PORT"),
        (["--timeout", "0", "example.org"],
         "Error: Invalid value for '--timeout': 0.0 is not in the range 0<x<=3600."),
        (["--deadline", "0", "example.org"],
         "Error: Invalid value for '--deadline': 0.0 is not in the range 0<x<=10800."),
    ],
)  # fmt: skip
def test_usage_errors(args: list[str], error: str) -> None:
    result = CliRunner().invoke(cli, ["mx", *args])
    assert result.exit_code == 2
    assert lines(result)[-1] == error


def refuse_to_resolve(real: Callable[..., Any], name: str) -> Callable[..., Any]:
    """``socket.getaddrinfo`` for which ``name`` does not exist: no query leaves the machine."""

    def getaddrinfo(host: object, *args: Any, **kwargs: Any) -> Any:
        if host == name:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    return getaddrinfo


@pytest.mark.parametrize("extra", [["example.org"], ["--check"]])
def test_nameserver_that_does_not_resolve_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, extra: list[str]
) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", refuse_to_resolve(socket.getaddrinfo, "bogus"))
    path = config(tmp_path, ["example.org"], ["127.0.0.1:25"], "mail.example.org")
    result = CliRunner().invoke(cli, ["-c", str(path), "mx", "--nameserver", "bogus", *extra])
    assert result.exit_code == 2
    assert lines(result)[-1] == (
        "Error: Invalid value for '--nameserver': cannot resolve nameserver 'bogus': "
        "Name or service not known"
    )


def test_one_resolver_per_invocation(
    dns_server: DnsServer,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built: list[dns.resolver.Resolver] = []

    class Counted(dns.resolver.Resolver):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            built.append(self)

    monkeypatch.setattr(dns.resolver, "Resolver", Counted)
    result = mx(dns_server, "multi.mx.test", "aonly.mx.test", "null.mx.test")
    assert result.exit_code == 3
    assert len(built) == 1
    built.clear()
    assert check(dns_server, tmp_path, "ours.mx.test", "selfhosted.mx.test").exit_code == 0
    assert len(built) == 1


def test_help_names_the_limits() -> None:
    result = CliRunner().invoke(cli, ["mx", "--help"])
    text = " ".join(result.output.split())
    assert f"Only the first {MAX_MX_HOSTS} MX hosts by preference are looked up" in text
    assert f"[default: {DEADLINE_FACTOR} x --timeout]" in text


# --- limits: a deadline per domain, at most 10 hosts, addresses looked up concurrently -----

SLOW = [
    "slow.test: 40 mail hosts (MX), in the order senders try them",
    *(f"  {9 + i}  h{i:02d}.slow.test  -  [A and AAAA lookup timed out]" for i in range(1, 11)),
    "  no usable mail host right now: address lookups failed; try again later",
    "  note: 30 more MX hosts not shown: only the first 10 by preference are looked up "
    "(senders try no more than a few)",
]


def timed_mx(server: FilteringNameserver, *args: str) -> tuple[Result, float]:
    started = time.monotonic()
    result = CliRunner().invoke(cli, ["mx", "--nameserver", server.nameserver, *args])
    return result, time.monotonic() - started


def test_hosts_that_never_answer_end_by_the_deadline(
    filtered_dns_server: FilteringNameserver,  # noqa: F811
) -> None:
    # 40 MX hosts whose address queries are never answered: 80 queries of 0.5 s each took
    # 48 s before. Now 10 hosts are looked up, concurrently, within the default deadline of
    # 3 x --timeout; the bound below is on a hang, not a benchmark.
    result, elapsed = timed_mx(filtered_dns_server, "--timeout", "0.5", "slow.test")
    assert lines(result) == SLOW
    assert result.exit_code == 4
    assert elapsed < 1.5 + 3
    asked = [q for q in filtered_dns_server.seen() if q[1] != "MX"]
    assert sorted(asked) == sorted(
        (f"h{i:02d}.slow.test", rdtype) for i in range(1, 11) for rdtype in ("A", "AAAA")
    )


def test_deadline_option_cuts_lookups_short(
    filtered_dns_server: FilteringNameserver,  # noqa: F811
) -> None:
    # 20 address queries on 10 threads take two rounds of 0.5 s; the second is cut at 0.7 s.
    result, elapsed = timed_mx(
        filtered_dns_server, "--timeout", "0.5", "--deadline", "0.7", "slow.test"
    )
    assert lines(result) == [
        *SLOW,
        "  note: the 0.7s deadline (--deadline) passed: lookups without an answer by then count "
        "as timed out",
    ]
    assert result.exit_code == 4
    assert elapsed < 0.7 + 3


def test_deadline_shorter_than_timeout_bounds_the_mx_query(silent_nameserver: str) -> None:  # noqa: F811
    started = time.monotonic()
    result = CliRunner().invoke(
        cli,
        ["mx", "--nameserver", silent_nameserver, "--timeout", "5", "--deadline", "0.3", "x.test"],
    )
    elapsed = time.monotonic() - started
    assert lines(result) == [
        "x.test: no DNS answer within 0.3s (timeout); try again later",
        "  note: the 0.3s deadline (--deadline) passed: lookups without an answer by then count "
        "as timed out",
    ]
    assert result.exit_code == 4
    assert elapsed < 0.3 + 3


def test_address_lookups_run_concurrently(
    filtered_dns_server: FilteringNameserver,  # noqa: F811
) -> None:
    # With a deadline out of the way, 10 hosts x 2 queries x 1 s would take 20 s one after the
    # other; on 10 threads it is two rounds, about 2 s.
    result, elapsed = timed_mx(
        filtered_dns_server, "--timeout", "1", "--deadline", "60", "slow.test"
    )
    assert lines(result) == SLOW
    assert result.exit_code == 4
    assert elapsed < 10 * 1 / 2


def many_lines() -> list[str]:
    return [
        "many.test: 3000 mail hosts (MX), in the order senders try them",
        *(f"  {i:>2}  {f'{i}.many.test':<12}  192.0.2.99" for i in range(1, 11)),
        "  note: 2990 more MX hosts not shown: only the first 10 by preference are looked up "
        "(senders try no more than a few)",
    ]


def test_only_the_first_ten_hosts_are_looked_up(
    filtered_dns_server: FilteringNameserver,  # noqa: F811
) -> None:
    # 3,000 MX records cost 6,000 address queries before; now those of the first 10 hosts.
    result, _ = timed_mx(filtered_dns_server, "--timeout", "2", "many.test")
    assert lines(result) == many_lines()
    assert result.exit_code == 0
    first = {f"{i}.many.test" for i in range(1, 11)}
    asked = [q for q in filtered_dns_server.seen() if q[1] != "MX"]
    assert 0 < len(asked) <= 20
    assert {name for name, _ in asked} <= first


def test_json_says_how_many_hosts_were_left_out(
    filtered_dns_server: FilteringNameserver,  # noqa: F811
) -> None:
    result, _ = timed_mx(filtered_dns_server, "--timeout", "2", "--json", "many.test")
    assert json.loads(result.output) == {
        "domain": "many.test",
        "kind": "mx",
        "hosts": [
            {"preference": i, "host": f"{i}.many.test", "addresses": ["192.0.2.99"]}
            for i in range(1, 11)
        ],
        "hosts_left_out": 2990,
    }
    assert result.exit_code == 0


# --- --check -----------------------------------------------------------------------------


def config(tmp_path: Path, domains: list[str], listen: list[str], hostname: str) -> Path:
    path = tmp_path / "smtpkit.toml"
    quoted = ", ".join(f'"{x}"' for x in listen)
    names = ", ".join(f'"{d}"' for d in domains)
    path.write_text(
        f'[server]\nhostname = "{hostname}"\nlisten = [{quoted}]\ndomains = [{names}]\n'
    )
    return path


def check(
    server: DnsServer | str,
    tmp_path: Path,
    *domains: str,
    listen: tuple[str, ...] = ("127.0.0.1:25",),
    hostname: str = "mail.mx.test",
    json_out: bool = False,
) -> Result:
    path = config(tmp_path, list(domains), list(listen), hostname)
    return mx(server, "--check", *(["--json"] if json_out else []), config=path)


def test_check_ok(dns_server: DnsServer, tmp_path: Path) -> None:  # noqa: F811
    result = check(dns_server, tmp_path, "ours.mx.test", "selfhosted.mx.test")
    assert lines(result) == [
        "this server: mail.mx.test at 127.0.0.1 (listening on 127.0.0.1:25)",
        "ours.mx.test: ok: mail.mx.test (127.0.0.1) at preference 10 is this server",
        "selfhosted.mx.test: ok: no MX record, but its implicit MX selfhosted.mx.test "
        "(127.0.0.1) is this server",
        "  tip: an explicit MX is clearer: selfhosted.mx.test. IN MX 10 mail.mx.test.",
    ]
    assert result.exit_code == 0


def test_check_notes_other_port(dns_server: DnsServer, tmp_path: Path) -> None:  # noqa: F811
    result = check(dns_server, tmp_path, "ours.mx.test", listen=("127.0.0.1:2525",))
    assert lines(result) == [
        "this server: mail.mx.test at 127.0.0.1 (listening on 127.0.0.1:2525)",
        "  note: no listen address uses port 25, where other servers deliver "
        "(fine behind a port forward)",
        "ours.mx.test: ok: mail.mx.test (127.0.0.1) at preference 10 is this server",
    ]
    assert result.exit_code == 0


def test_check_elsewhere(dns_server: DnsServer, tmp_path: Path) -> None:  # noqa: F811
    result = check(dns_server, tmp_path, "ours.mx.test", "theirs.mx.test", "aonly.mx.test")
    assert lines(result) == [
        "this server: mail.mx.test at 127.0.0.1 (listening on 127.0.0.1:25)",
        "ours.mx.test: ok: mail.mx.test (127.0.0.1) at preference 10 is this server",
        "theirs.mx.test: NOT this server: its mail goes to mx-b.mx.test (192.0.2.2), "
        "mx-c.mx.test (2001:db8::3)",
        "  fix: add: theirs.mx.test. IN MX 10 mail.mx.test.",
        "aonly.mx.test: NOT this server: no MX record; mail goes to its own address, "
        "aonly.mx.test (192.0.2.10)",
        "  fix: add: aonly.mx.test. IN MX 10 mail.mx.test.",
    ]
    assert result.exit_code == 5


def test_check_no_mail(dns_server: DnsServer, tmp_path: Path) -> None:  # noqa: F811
    result = check(
        dns_server,
        tmp_path,
        "null.mx.test",
        "nosuch.mx.test",
        "nodata.mx.test",
        "dangling.mx.test",
        "literal.mx.test",
        "theirs.mx.test",
    )
    assert lines(result) == [
        "this server: mail.mx.test at 127.0.0.1 (listening on 127.0.0.1:25)",
        "null.mx.test: NOT this server: null MX (RFC 7505): the domain refuses all mail",
        "  fix: replace the null MX with: null.mx.test. IN MX 10 mail.mx.test.",
        "nosuch.mx.test: NOT this server: the domain does not exist (NXDOMAIN)",
        "  fix: register nosuch.mx.test (or correct server.domains), then add: "
        "nosuch.mx.test. IN MX 10 mail.mx.test.",
        "nodata.mx.test: NOT this server: no MX record and no address",
        "  fix: add: nodata.mx.test. IN MX 10 mail.mx.test.",
        "dangling.mx.test: NOT this server: none of its MX hosts has an address: "
        "nowhere.mx.test (host does not exist (NXDOMAIN))",
        "  fix: add: dangling.mx.test. IN MX 10 mail.mx.test.",
        "literal.mx.test: NOT this server: none of its MX hosts has an address: "
        "192.0.2.1 (invalid: an IP address, not a host name (RFC 5321 5.1))",
        "  fix: add: literal.mx.test. IN MX 10 mail.mx.test.",
        "theirs.mx.test: NOT this server: its mail goes to mx-b.mx.test (192.0.2.2), "
        "mx-c.mx.test (2001:db8::3)",
        "  fix: add: theirs.mx.test. IN MX 10 mail.mx.test.",
    ]
    # "accepts no mail" (3) outranks "goes elsewhere" (5).
    assert result.exit_code == 3


def test_check_dns_failure(dns_server: DnsServer, tmp_path: Path) -> None:  # noqa: F811
    result = check(dns_server, tmp_path, "ours.mx.test", "broken.test", "failing.mx.test")
    assert lines(result) == [
        "this server: mail.mx.test at 127.0.0.1 (listening on 127.0.0.1:25)",
        "ours.mx.test: ok: mail.mx.test (127.0.0.1) at preference 10 is this server",
        "broken.test: cannot tell: DNS failure (SERVFAIL or refused); try again later",
        "failing.mx.test: cannot tell: address lookups failed for mail.broken.test "
        "(A and AAAA lookup failed (SERVFAIL)); try again later",
    ]
    assert result.exit_code == 4
    # Going elsewhere (5) outranks a DNS failure (4).
    assert check(dns_server, tmp_path, "broken.test", "theirs.mx.test").exit_code == 5


def test_check_timeout(silent_nameserver: str, tmp_path: Path) -> None:  # noqa: F811
    path = config(tmp_path, ["ours.mx.test"], ["127.0.0.1:25"], "mail.mx.test")
    result = CliRunner().invoke(
        cli,
        ["-c", str(path), "mx", "--check", "--nameserver", silent_nameserver, "--timeout", "0.3"],
    )
    assert lines(result) == [
        "this server: mail.mx.test at 127.0.0.1 (listening on 127.0.0.1:25)",
        "ours.mx.test: cannot tell: no DNS answer within 0.3s; try again later",
    ]
    assert result.exit_code == 4


def test_check_wildcard_uses_hostname(dns_server: DnsServer, tmp_path: Path) -> None:  # noqa: F811
    # Listening on 0.0.0.0 / ::, "this server" is whatever server.hostname resolves to.
    result = check(
        dns_server, tmp_path, "ours.mx.test", "theirs.mx.test", listen=("0.0.0.0:25", "[::]:25")
    )
    assert lines(result) == [
        "this server: mail.mx.test at 127.0.0.1 (listening on 0.0.0.0:25, [::]:25)",
        "ours.mx.test: ok: mail.mx.test (127.0.0.1) at preference 10 is this server",
        "theirs.mx.test: NOT this server: its mail goes to mx-b.mx.test (192.0.2.2), "
        "mx-c.mx.test (2001:db8::3)",
        "  fix: add: theirs.mx.test. IN MX 10 mail.mx.test.",
    ]
    assert result.exit_code == 5


def test_check_wildcard_hostname_without_address(
    dns_server: DnsServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    result = check(
        dns_server, tmp_path, "ours.mx.test", listen=("0.0.0.0:25",), hostname="nowhere.mx.test"
    )
    assert lines(result) == [
        "this server: nowhere.mx.test at no known address (listening on 0.0.0.0:25)",
        "  note: listening on a wildcard address, so MX hosts are matched against "
        "nowhere.mx.test, which has no address (host does not exist (NXDOMAIN))",
        "ours.mx.test: NOT this server: its mail goes to mail.mx.test (127.0.0.1)",
        "  fix: add: ours.mx.test. IN MX 10 nowhere.mx.test.",
        "  and: give nowhere.mx.test an A/AAAA record with this server's address",
    ]
    assert result.exit_code == 5


def test_check_wildcard_hostname_lookup_fails(
    dns_server: DnsServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    result = check(
        dns_server, tmp_path, "ours.mx.test", listen=("0.0.0.0:25",), hostname="mail.broken.test"
    )
    assert lines(result)[2:] == [
        "ours.mx.test: cannot tell: looking up this server's name mail.broken.test failed "
        "(A and AAAA lookup failed (SERVFAIL)); try again later",
    ]
    assert result.exit_code == 4


def test_check_hostname_points_elsewhere(dns_server: DnsServer, tmp_path: Path) -> None:  # noqa: F811
    # server.hostname is already the MX of theirs.mx.test, but resolves to another address.
    result = check(
        dns_server, tmp_path, "theirs.mx.test", "nodata.mx.test", hostname="mx-b.mx.test"
    )
    assert lines(result) == [
        "this server: mx-b.mx.test at 127.0.0.1 (listening on 127.0.0.1:25)",
        "theirs.mx.test: NOT this server: its mail goes to mx-b.mx.test (192.0.2.2), "
        "mx-c.mx.test (2001:db8::3)",
        "  fix: set: mx-b.mx.test. IN A 127.0.0.1 (now: 192.0.2.2)",
        "nodata.mx.test: NOT this server: no MX record and no address",
        "  fix: add: nodata.mx.test. IN MX 10 mx-b.mx.test.",
        "  and: set: mx-b.mx.test. IN A 127.0.0.1 (now: 192.0.2.2)",
    ]
    assert result.exit_code == 3


def test_check_json(dns_server: DnsServer, tmp_path: Path) -> None:  # noqa: F811
    result = check(dns_server, tmp_path, "ours.mx.test", "null.mx.test", json_out=True)
    assert [json.loads(line) for line in lines(result)] == [
        {
            "domain": "ours.mx.test",
            "kind": "mx",
            "hosts": [{"preference": 10, "host": "mail.mx.test", "addresses": ["127.0.0.1"]}],
            "reachable": True,
        },
        {"domain": "null.mx.test", "kind": "null", "hosts": [], "reachable": False},
    ]
    assert result.exit_code == 3


def test_check_needs_a_config(dns_server: DnsServer, tmp_path: Path) -> None:  # noqa: F811
    missing = tmp_path / "smtpkit.toml"
    result = mx(dns_server, "--check", config=missing)
    assert result.exit_code == 1
    assert lines(result) == [
        "Error: config file not found (create one with `smtpkit init DIR --domain example.org`, "
        f"or point -c/--config or $SMTPKIT_CONFIG at it) ({missing})"
    ]
