"""smtpkit/dnscheck.py without DNS: the MX verdict next to ``smtpkit mx --check``'s own, and
the records it proposes (tests/e2e/test_dns_check.py runs the checks against NSD)."""

from __future__ import annotations

import ipaddress
import itertools
import re

import pytest

from smtpkit.commands.mx import EXIT_ELSEWHERE, EXIT_NO_MAIL, _check_route, _ip_sort_key, _Server
from smtpkit.dns import AddressType, HostProblem, MailHost, MailRoute, RouteKind
from smtpkit.dnscheck import (
    MxFinding,
    MxReason,
    Status,
    ThisServer,
    amend_spf,
    check_mx,
    parse_tags,
    spf_proposal,
    zone_txt,
)

HOSTNAME = "mail.mx.test"


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


def lookup(*addresses: str, problem: HostProblem | None = None) -> MailHost:
    failed = (AddressType.A, AddressType.AAAA) if problem and problem.temporary else ()
    return MailHost(0, HOSTNAME, addresses, problem=problem, failed=failed)


# "This server" as mx --check builds it: (listen addresses, wildcard, its name's lookup).
SERVERS = {
    "listen-ours": ((ip("127.0.0.1"),), False, lookup("127.0.0.1")),
    "listen-name-elsewhere": ((ip("127.0.0.1"),), False, lookup("192.0.2.2")),
    "listen-name-fails": ((ip("127.0.0.1"),), False, lookup(problem=HostProblem.SERVFAIL)),
    "listen-two": ((ip("127.0.0.1"), ip("::1")), False, lookup("127.0.0.1", "::1")),
    "wildcard-ours": ((), True, lookup("127.0.0.1")),
    "wildcard-no-name": ((), True, lookup(problem=HostProblem.NXDOMAIN)),
    "wildcard-name-times-out": ((), True, lookup(problem=HostProblem.TIMEOUT)),
}


def host(
    preference: int,
    name: str,
    *addresses: str,
    problem: HostProblem | None = None,
    failed: tuple[AddressType, ...] = (),
) -> MailHost:
    return MailHost(preference, name, addresses, problem=problem, failed=failed)


D = "d.test"
ROUTES = {
    "mx-ours": MailRoute(D, RouteKind.MX, (host(10, HOSTNAME, "127.0.0.1"),)),
    "mx-ours-second": MailRoute(
        D, RouteKind.MX, (host(5, "a.other.test", "192.0.2.5"), host(10, "b", "127.0.0.1"))
    ),
    "implicit-ours": MailRoute(D, RouteKind.IMPLICIT, (host(0, D, "127.0.0.1"),)),
    "mx-elsewhere": MailRoute(D, RouteKind.MX, (host(10, "mx.other.test", "192.0.2.9"),)),
    "mx-names-us-elsewhere": MailRoute(D, RouteKind.MX, (host(10, HOSTNAME, "192.0.2.2"),)),
    "implicit-elsewhere": MailRoute(D, RouteKind.IMPLICIT, (host(0, D, "192.0.2.10"),)),
    "mx-host-fails": MailRoute(
        D,
        RouteKind.MX,
        (
            host(
                10,
                "x.broken.test",
                problem=HostProblem.SERVFAIL,
                failed=(AddressType.A, AddressType.AAAA),
            ),
        ),
    ),
    "mx-host-missing": MailRoute(
        D, RouteKind.MX, (host(10, "nowhere.test", problem=HostProblem.NXDOMAIN),)
    ),
    "null": MailRoute(D, RouteKind.NULL),
    "nxdomain": MailRoute(D, RouteKind.NXDOMAIN),
    "nodata": MailRoute(D, RouteKind.NODATA),
    "servfail": MailRoute(D, RouteKind.SERVFAIL),
    "timeout": MailRoute(D, RouteKind.TIMEOUT),
}

_RECORD = re.compile(r"(\S+\. IN (?:MX 10 \S+\.|A \S+|AAAA \S+))")


def servers(case: str) -> tuple[_Server, ThisServer]:
    """The same server, as mx --check and as dnscheck take it."""
    listen, wildcard, name = SERVERS[case]
    theirs = _Server(HOSTNAME, name, listen, wildcard, "", frozenset({25}))
    addresses = tuple(sorted(theirs.addresses, key=_ip_sort_key))
    return theirs, ThisServer(HOSTNAME, name, addresses, listen, wildcard)


@pytest.mark.parametrize(("server_case", "route_case"), list(itertools.product(SERVERS, ROUTES)))
def test_mx_decides_as_mx_check(server_case: str, route_case: str) -> None:
    theirs, ours = servers(server_case)
    route = ROUTES[route_case]
    code, lines = _check_route(route, theirs, timeout=1, deadline=3)
    finding = check_mx(route, ours)
    expected = {
        0: {Status.OK},
        EXIT_NO_MAIL: {Status.MISSING, Status.WRONG},
        EXIT_ELSEWHERE: {Status.MISSING, Status.WRONG},
        4: {Status.DNS_FAILURE},
    }[code]
    assert finding.status in expected
    reason = finding.reason
    if code == EXIT_NO_MAIL:
        no_mail = {MxReason.NULL, MxReason.NXDOMAIN, MxReason.NODATA, MxReason.NO_USABLE_HOST}
        assert reason in no_mail
    if code == EXIT_ELSEWHERE:
        assert reason in {MxReason.ELSEWHERE, MxReason.IMPLICIT_ELSEWHERE}
    # The same records to publish (a tip is advice, not a fix), and the same "give it an
    # address" when none is known.
    fixes = [m.group(1) for line in lines if "tip:" not in line for m in _RECORD.finditer(line)]
    assert list(finding.records) == fixes
    needs = any("an A/AAAA record with this server's address" in line for line in lines)
    assert finding.needs_address == needs


def test_mx_finding_details() -> None:
    finding = check_mx(ROUTES["mx-ours-second"], servers("listen-ours")[1])
    assert finding == MxFinding(
        MxReason.OURS,
        ROUTES["mx-ours-second"],
        host=host(10, "b", "127.0.0.1"),
        addresses=("127.0.0.1",),
        earlier=(host(5, "a.other.test", "192.0.2.5"),),
    )
    assert finding.status is Status.OK


# --- SPF -----------------------------------------------------------------------------------


def test_spf_proposal_uses_mx_only_when_the_mx_hosts_are_every_address() -> None:
    one = servers("listen-ours")[1]
    two = servers("listen-two")[1]
    assert spf_proposal(ROUTES["mx-ours"], one) == "v=spf1 mx -all"
    # ::1 is not an address of the MX host: "mx" would not authorize it.
    assert spf_proposal(ROUTES["mx-ours"], two) == "v=spf1 ip4:127.0.0.1 ip6:::1 -all"
    # SPF's mx mechanism has no implicit MX (RFC 7208 5.4).
    assert spf_proposal(ROUTES["implicit-ours"], one) == "v=spf1 ip4:127.0.0.1 -all"
    assert spf_proposal(ROUTES["mx-elsewhere"], one) == "v=spf1 ip4:127.0.0.1 -all"


@pytest.mark.parametrize(
    ("record", "amended"),
    [
        ("v=spf1 mx -all", "v=spf1 mx ip4:192.0.2.7 ip6:2001:db8::7 -all"),
        ("v=spf1 a ~ALL", "v=spf1 a ip4:192.0.2.7 ip6:2001:db8::7 ~ALL"),
        (
            "v=spf1 mx redirect=_spf.d.test",
            "v=spf1 mx ip4:192.0.2.7 ip6:2001:db8::7 redirect=_spf.d.test",
        ),
        ("v=spf1 include:_spf.d.test", "v=spf1 include:_spf.d.test ip4:192.0.2.7 ip6:2001:db8::7"),
        ("v=spf1", "v=spf1 ip4:192.0.2.7 ip6:2001:db8::7"),
        # An address already listed (but failing, say behind -ip4:) is not added twice.
        ("v=spf1 IP4:192.0.2.7 -all", "v=spf1 IP4:192.0.2.7 ip6:2001:db8::7 -all"),
    ],
)
def test_amend_spf(record: str, amended: str) -> None:
    assert amend_spf(record, [ip("192.0.2.7"), ip("2001:db8::7")]) == amended


# --- zone-file lines and tag lists ----------------------------------------------------------


def test_zone_txt() -> None:
    assert zone_txt("d.test", "v=spf1 -all") == 'd.test. IN TXT "v=spf1 -all"'
    assert zone_txt("d.test", 'say "hi" \\ ok') == 'd.test. IN TXT "say \\"hi\\" \\\\ ok"'
    assert zone_txt("d.test", "caf\u00e9") == 'd.test. IN TXT "caf\\195\\169"'
    text = "x" * 255 + "y" * 256
    assert zone_txt("s._domainkey.d.test", text) == (
        f's._domainkey.d.test. IN TXT ( "{"x" * 255}" "{"y" * 255}" "y" )'
    )


def test_parse_tags() -> None:
    assert parse_tags(" v = DKIM1 ;k=rsa; p=AB CD ;") == [
        ("v", "DKIM1"),
        ("k", "rsa"),
        ("p", "AB CD"),
    ]
    assert parse_tags("") == []
    assert parse_tags("v=DMARC1; oops") is None
    assert parse_tags("p=a; p=b") is None
    assert parse_tags("=x") is None
