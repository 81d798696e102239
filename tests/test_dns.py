"""smtpkit.dns against a real DNS server (NSD, see tests/dnsserver.py): no mocked resolver.

Results are values (kinds, problems, names), never text: the wording is tests/cli/test_mx.py's.
"""

from __future__ import annotations

import math
import socket
import time
from typing import Any

import dns.name
import pytest

from smtpkit.addresses import normalize_hostname
from smtpkit.dns import (
    DEADLINE_FACTOR,
    LOOKUP_THREADS,
    MAX_MX_HOSTS,
    AddressType,
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
from smtpkit.errors import SmtpkitError, UserError
from tests.dnsserver import (  # noqa: F401
    DnsServer,
    FilteringNameserver,
    dns_server,
    filtered_dns_server,
    silent_nameserver,
)

MULTI_HOSTS = (
    MailHost(5, "mx-d.mx.test", ("192.0.2.4", "192.0.2.14")),
    MailHost(10, "mx-a.mx.test", ("192.0.2.1", "2001:db8::1")),
    MailHost(10, "mx-b.mx.test", ("192.0.2.2",)),
    MailHost(20, "mx-c.mx.test", ("2001:db8::3",)),
    MailHost(30, "mail.other.test", ("198.51.100.7",)),
)


def resolve(server: DnsServer, domain: str) -> MailRoute:
    return MailResolver(nameserver=server.nameserver, timeout=2).resolve(domain)


def test_mx_sorted_by_preference_then_name(dns_server: DnsServer) -> None:  # noqa: F811
    # Lowest preference first; the two at 10 by name (mx-a before mx-b) although the zone lists
    # mx-b first; addresses IPv4 then IPv6, in numeric (not text) order.
    route = resolve(dns_server, "multi.mx.test")
    assert route == MailRoute("multi.mx.test", RouteKind.MX, MULTI_HOSTS)
    assert route.ties
    assert route.outcome is RouteOutcome.OK
    assert route.usable_hosts == MULTI_HOSTS


def test_additional_section_saves_queries(
    dns_server: DnsServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # NSD puts the in-zone targets' A/AAAA records in the MX answer's additional section; only
    # the types missing there (and the out-of-zone host) are queried. A spy on the real
    # resolver records the queries; every answer still comes from NSD.
    resolver = MailResolver(nameserver=dns_server.nameserver, timeout=2)
    asked: list[tuple[str, str]] = []
    real = resolver._resolver.resolve

    def spy(qname: dns.name.Name, rdtype: Any, **kwargs: Any) -> Any:
        asked.append((qname.to_text(), str(rdtype.name)))
        return real(qname, rdtype, **kwargs)

    monkeypatch.setattr(resolver._resolver, "resolve", spy)
    assert resolver.resolve("multi.mx.test").hosts == MULTI_HOSTS
    assert sorted(asked) == [
        ("mail.other.test.", "A"),
        ("mail.other.test.", "AAAA"),
        ("multi.mx.test.", "MX"),
        ("mx-b.mx.test.", "AAAA"),
        ("mx-c.mx.test.", "A"),
        ("mx-d.mx.test.", "AAAA"),
    ]


def test_null_mx(dns_server: DnsServer) -> None:  # noqa: F811
    route = resolve(dns_server, "null.mx.test")
    assert route == MailRoute("null.mx.test", RouteKind.NULL)
    assert route.outcome is RouteOutcome.NO_MAIL


def test_null_mx_mixed_with_other_mx_is_not_a_null_mx(dns_server: DnsServer) -> None:  # noqa: F811
    route = resolve(dns_server, "mixednull.mx.test")
    assert route == MailRoute(
        "mixednull.mx.test",
        RouteKind.MX,
        (
            MailHost(
                0,
                ".",
                (),
                problem=HostProblem.NULL_MX_MIXED,
            ),
            MailHost(10, "mx-b.mx.test", ("192.0.2.2",)),
        ),
    )
    assert route.outcome is RouteOutcome.OK


def test_implicit_mx_with_only_a(dns_server: DnsServer) -> None:  # noqa: F811
    route = resolve(dns_server, "aonly.mx.test")
    assert route == MailRoute(
        "aonly.mx.test", RouteKind.IMPLICIT, (MailHost(0, "aonly.mx.test", ("192.0.2.10",)),)
    )
    assert route.outcome is RouteOutcome.OK


def test_implicit_mx_with_only_aaaa(dns_server: DnsServer) -> None:  # noqa: F811
    route = resolve(dns_server, "aaaaonly.mx.test")
    assert route == MailRoute(
        "aaaaonly.mx.test",
        RouteKind.IMPLICIT,
        (MailHost(0, "aaaaonly.mx.test", ("2001:db8::10",)),),
    )


def test_mx_target_cname_is_followed_and_reported(dns_server: DnsServer) -> None:  # noqa: F811
    route = resolve(dns_server, "cname.mx.test")
    assert route == MailRoute(
        "cname.mx.test",
        RouteKind.MX,
        (
            MailHost(
                10, "alias.mx.test", ("192.0.2.30", "2001:db8::30"), cname_target="real.mx.test"
            ),
        ),
    )
    assert route.outcome is RouteOutcome.OK


def test_mx_target_ip_literal_is_invalid(dns_server: DnsServer) -> None:  # noqa: F811
    route = resolve(dns_server, "literal.mx.test")
    assert route == MailRoute(
        "literal.mx.test",
        RouteKind.MX,
        (
            MailHost(
                10,
                "192.0.2.1",
                (),
                problem=HostProblem.IP_LITERAL,
            ),
        ),
    )
    assert route.usable_hosts == ()
    assert route.outcome is RouteOutcome.NO_MAIL


def test_mx_target_that_does_not_exist(dns_server: DnsServer) -> None:  # noqa: F811
    route = resolve(dns_server, "dangling.mx.test")
    assert route == MailRoute(
        "dangling.mx.test",
        RouteKind.MX,
        (MailHost(10, "nowhere.mx.test", (), problem=HostProblem.NXDOMAIN),),
    )
    assert route.outcome is RouteOutcome.NO_MAIL


def test_mx_target_lookup_failure_is_temporary(dns_server: DnsServer) -> None:  # noqa: F811
    route = resolve(dns_server, "failing.mx.test")
    assert route == MailRoute(
        "failing.mx.test",
        RouteKind.MX,
        (
            MailHost(
                10,
                "mail.broken.test",
                (),
                problem=HostProblem.SERVFAIL,
                failed=(AddressType.A, AddressType.AAAA),
            ),
        ),
    )
    assert route.outcome is RouteOutcome.DNS_FAILURE


def test_nxdomain(dns_server: DnsServer) -> None:  # noqa: F811
    route = resolve(dns_server, "nosuch.mx.test")
    assert route == MailRoute("nosuch.mx.test", RouteKind.NXDOMAIN)
    assert route.outcome is RouteOutcome.NO_MAIL


def test_nodata(dns_server: DnsServer) -> None:  # noqa: F811
    # The name exists (it has a TXT record) but has neither MX nor A nor AAAA.
    route = resolve(dns_server, "nodata.mx.test")
    assert route == MailRoute("nodata.mx.test", RouteKind.NODATA)
    assert route.outcome is RouteOutcome.NO_MAIL


@pytest.mark.parametrize("domain", ["bücher.mx.test", "BÜCHER.mx.test.", "xn--bcher-kva.mx.test"])
def test_idn_domain(dns_server: DnsServer, domain: str) -> None:  # noqa: F811
    route = resolve(dns_server, domain)
    assert route == MailRoute(
        "xn--bcher-kva.mx.test",
        RouteKind.MX,
        (MailHost(10, "mx-a.mx.test", ("192.0.2.1", "2001:db8::1")),),
    )


def test_domain_that_is_a_cname(dns_server: DnsServer) -> None:  # noqa: F811
    # RFC 5321 5.1: the CNAME's target is processed as if it were the initial name.
    route = resolve(dns_server, "www.mx.test")
    assert route == MailRoute(
        "www.mx.test",
        RouteKind.MX,
        MULTI_HOSTS,
        alias_of="multi.mx.test",
    )


@pytest.mark.parametrize("domain", ["broken.test", "mail.broken.test"])
def test_servfail(dns_server: DnsServer, domain: str) -> None:  # noqa: F811
    # NSD is configured for broken.test but its zone file does not load: SERVFAIL.
    route = resolve(dns_server, domain)
    assert route == MailRoute(domain, RouteKind.SERVFAIL)
    assert route.outcome is RouteOutcome.DNS_FAILURE


def test_refused_counts_as_servfail(dns_server: DnsServer) -> None:  # noqa: F811
    # NSD refuses names outside its zones; for a sender that is a DNS failure too.
    assert resolve(dns_server, "example.org") == MailRoute("example.org", RouteKind.SERVFAIL)


def test_timeout(silent_nameserver: str) -> None:  # noqa: F811
    started = time.monotonic()
    route = MailResolver(nameserver=silent_nameserver, timeout=1).resolve("multi.mx.test")
    elapsed = time.monotonic() - started
    assert route == MailRoute("multi.mx.test", RouteKind.TIMEOUT)
    assert route.outcome is RouteOutcome.DNS_FAILURE
    assert 0.9 <= elapsed < 3


def test_nameserver_object_and_host_name(dns_server: DnsServer) -> None:  # noqa: F811
    expected = MailRoute(
        "aonly.mx.test", RouteKind.IMPLICIT, (MailHost(0, "aonly.mx.test", ("192.0.2.10",)),)
    )
    by_object = Nameserver(dns_server.host, dns_server.port)
    assert MailResolver(nameserver=by_object, timeout=2).resolve("aonly.mx.test") == expected
    # A nameserver given by name is looked up with the system's resolver first.
    by_name = f"localhost:{dns_server.port}"
    assert MailResolver(nameserver=by_name, timeout=2).resolve("aonly.mx.test") == expected


def test_lookup_host(dns_server: DnsServer) -> None:  # noqa: F811
    resolver = MailResolver(nameserver=dns_server.nameserver, timeout=2)
    assert resolver.lookup_host("mail.mx.test") == MailHost(0, "mail.mx.test", ("127.0.0.1",))
    assert resolver.lookup_host("Alias.MX.test.") == MailHost(
        0, "alias.mx.test", ("192.0.2.30", "2001:db8::30"), cname_target="real.mx.test"
    )
    missing = resolver.lookup_host("nowhere.mx.test")
    assert missing == MailHost(0, "nowhere.mx.test", problem=HostProblem.NXDOMAIN)
    assert not missing.temporary
    failing = resolver.lookup_host("mail.broken.test")
    assert failing.problem is HostProblem.SERVFAIL and failing.temporary
    assert failing.failed == (AddressType.A, AddressType.AAAA)
    assert resolver.lookup_host("nodata.mx.test").problem is HostProblem.NO_ADDRESS


def test_lookup_host_timeout(silent_nameserver: str) -> None:  # noqa: F811
    resolver = MailResolver(nameserver=silent_nameserver, timeout=0.3)
    found = resolver.lookup_host("mail.mx.test")
    assert found == MailHost(
        0, "mail.mx.test", problem=HostProblem.TIMEOUT, failed=(AddressType.A, AddressType.AAAA)
    )


# --- limits: at most MAX_MX_HOSTS hosts, a deadline per domain, concurrent lookups --------


def address_queries(server: FilteringNameserver) -> list[tuple[str, str]]:
    return sorted(q for q in server.seen() if q[1] in ("A", "AAAA"))


def test_only_the_first_hosts_by_preference_are_looked_up(
    filtered_dns_server: FilteringNameserver,  # noqa: F811
) -> None:
    # many.test has 3,000 MX records (the MX answer comes over TCP after a truncated UDP one).
    resolver = MailResolver(nameserver=filtered_dns_server.nameserver, timeout=2)
    route = resolver.resolve("many.test")
    assert route == MailRoute(
        "many.test",
        RouteKind.MX,
        tuple(MailHost(i, f"{i}.many.test", ("192.0.2.99",)) for i in range(1, 11)),
        hosts_left_out=2990,
    )
    assert route.outcome is RouteOutcome.OK
    asked = address_queries(filtered_dns_server)
    assert 0 < len(asked) <= 2 * MAX_MX_HOSTS
    assert {name for name, _ in asked} <= {f"{i}.many.test" for i in range(1, 11)}


def test_host_limit_is_a_parameter(filtered_dns_server: FilteringNameserver) -> None:  # noqa: F811
    resolver = MailResolver(nameserver=filtered_dns_server.nameserver, timeout=2, max_hosts=3)
    route = resolver.resolve("multi.mx.test")
    assert route.hosts == MULTI_HOSTS[:3]
    assert route.hosts_left_out == 2
    assert route.ties  # mx-a and mx-b, both at 10, are among those kept
    # mx-d's AAAA and mx-b's AAAA (not in the additional section); none for mx-c or mail.other.
    assert address_queries(filtered_dns_server) == [
        ("mx-b.mx.test", "AAAA"),
        ("mx-d.mx.test", "AAAA"),
    ]


def slow_hosts() -> tuple[MailHost, ...]:
    return tuple(
        MailHost(
            9 + i,
            f"h{i:02d}.slow.test",
            problem=HostProblem.TIMEOUT,
            failed=(AddressType.A, AddressType.AAAA),
        )
        for i in range(1, 11)
    )


def test_deadline_bounds_hosts_that_never_answer(
    filtered_dns_server: FilteringNameserver,  # noqa: F811
) -> None:
    # slow.test has 40 MX hosts whose address queries are never answered.
    resolver = MailResolver(nameserver=filtered_dns_server.nameserver, timeout=0.5, deadline=0.7)
    started = time.monotonic()
    route = resolver.resolve("slow.test")
    elapsed = time.monotonic() - started
    assert route == MailRoute(
        "slow.test", RouteKind.MX, slow_hosts(), hosts_left_out=30, deadline_passed=True
    )
    assert route.outcome is RouteOutcome.DNS_FAILURE
    assert elapsed < 0.7 + 3
    # Never more than the first ten hosts' queries, whatever the deadline left unsent.
    assert {name for name, _ in address_queries(filtered_dns_server)} <= {
        f"h{i:02d}.slow.test" for i in range(1, 11)
    }


def test_default_deadline_is_three_timeouts(
    filtered_dns_server: FilteringNameserver,  # noqa: F811
) -> None:
    resolver = MailResolver(nameserver=filtered_dns_server.nameserver, timeout=0.5)
    assert resolver.deadline == DEADLINE_FACTOR * 0.5 == 1.5
    started = time.monotonic()
    route = resolver.resolve("slow.test")
    elapsed = time.monotonic() - started
    # Two rounds of 0.5 s on LOOKUP_THREADS threads fit in the deadline: every query had its
    # full timeout, and the 20 of them took far less than 20 x 0.5 s.
    assert route == MailRoute("slow.test", RouteKind.MX, slow_hosts(), hosts_left_out=30)
    assert LOOKUP_THREADS == MAX_MX_HOSTS == 10
    assert len(address_queries(filtered_dns_server)) == 20
    assert elapsed < 1.5 + 3


def test_implicit_mx_within_the_deadline(dns_server: DnsServer) -> None:  # noqa: F811
    route = MailResolver(nameserver=dns_server.nameserver, timeout=2, deadline=10).resolve(
        "aonly.mx.test"
    )
    assert route == MailRoute(
        "aonly.mx.test", RouteKind.IMPLICIT, (MailHost(0, "aonly.mx.test", ("192.0.2.10",)),)
    )


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("example.org", "example.org"),
        ("  Example.ORG.  ", "example.org"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("BÜCHER.Example", "xn--bcher-kva.example"),
        # IDNA 2008: the sharp s is kept, not mapped to "ss" as IDNA 2003 did.
        ("faß.example", "xn--fa-hia.example"),
    ],
)
def test_normalize_mail_domain(given: str, expected: str) -> None:
    assert normalize_mail_domain(given) == expected


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("", "empty domain name"),
        ("   ", "empty domain name"),
        ("exa mple.org", "'exa mple.org' is not a valid domain name"),
        ("-bad.example", "'-bad.example' is not a valid domain name"),
        ("example..org", "'example..org' is not a valid domain name"),
        ("localhost", "'localhost' is not a valid domain name"),
        ("192.0.2.1", "'192.0.2.1' is an IP address, not a domain name"),
        ("[192.0.2.1]", "'[192.0.2.1]' is an IP address, not a domain name"),
        ("a" * 64 + ".example", f"'{'a' * 64}.example' is not a valid domain name"),
        ("☃.example", "'☃.example' is not a valid domain name"),
        ("bü cher.example", "'bü cher.example' is not a valid domain name"),
    ],
)
def test_bad_domain(given: str, message: str) -> None:
    with pytest.raises(DnsError) as info:
        MailResolver(nameserver="127.0.0.1:9").resolve(given)
    assert str(info.value) == message
    assert isinstance(info.value, SmtpkitError)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("127.0.0.1", Nameserver("127.0.0.1", 53)),
        ("127.0.0.1:5353", Nameserver("127.0.0.1", 5353)),
        ("::1", Nameserver("::1", 53)),
        ("[::1]", Nameserver("::1", 53)),
        ("[::1]:5353", Nameserver("::1", 5353)),
        ("[2001:db8::53]:53", Nameserver("2001:db8::53", 53)),
        ("ns1.Example.org", Nameserver("ns1.example.org", 53)),
        ("localhost:5353", Nameserver("localhost", 5353)),
    ],
)
def test_parse_nameserver(spec: str, expected: Nameserver) -> None:
    assert parse_nameserver(spec) == expected


def test_nameserver_by_international_name() -> None:
    assert parse_nameserver("NS.bücher.example:5353") == Nameserver(
        "ns.xn--bcher-kva.example", 5353
    )


def test_nameserver_that_does_not_resolve(monkeypatch: pytest.MonkeyPatch) -> None:
    # The name is looked up once, when the resolver is built; no query leaves the machine.
    def no_such_name(*args: object, **kwargs: object) -> object:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_name)
    with pytest.raises(NameserverError) as info:
        MailResolver(nameserver="bogus")
    assert str(info.value) == "cannot resolve nameserver 'bogus': Name or service not known"


def test_nameserver_str() -> None:
    assert str(Nameserver("::1", 5353)) == "[::1]:5353"
    assert str(Nameserver("127.0.0.1")) == "127.0.0.1:53"


USAGE = "expected HOST, HOST:PORT or [IPv6]:PORT"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", f"bad nameserver '': {USAGE}"),
        ("127.0.0.1:", f"bad nameserver '127.0.0.1:': {USAGE}"),
        (":53", f"bad nameserver ':53': {USAGE}"),
        ("127.0.0.1:0", "bad nameserver '127.0.0.1:0': port must be 1-65535"),
        ("127.0.0.1:65536", "bad nameserver '127.0.0.1:65536': port must be 1-65535"),
        ("127.0.0.1:dns", "bad nameserver '127.0.0.1:dns': port must be 1-65535"),
        ("[::1", f"bad nameserver '[::1': {USAGE}"),
        ("[::1]53", f"bad nameserver '[::1]53': {USAGE}"),
        ("[::1]:", f"bad nameserver '[::1]:': {USAGE}"),
        (
            "[ns.example]:53",
            "bad nameserver '[ns.example]:53': 'ns.example' is not an IPv6 address",
        ),
        ("2001:db8::zz", f"bad nameserver '2001:db8::zz': {USAGE}"),
        ("name server", f"bad nameserver 'name server': {USAGE}"),
        ("-ns.example", f"bad nameserver '-ns.example': {USAGE}"),
    ],
)
def test_bad_nameserver(spec: str, message: str) -> None:
    with pytest.raises(NameserverError) as info:
        parse_nameserver(spec)
    assert str(info.value) == message
    assert isinstance(info.value, DnsError)
    with pytest.raises(NameserverError):
        MailResolver(nameserver=spec)


@pytest.mark.parametrize("timeout", [0, -1, math.nan, math.inf])
def test_bad_timeout(timeout: float) -> None:
    with pytest.raises(DnsError) as info:
        MailResolver(nameserver="127.0.0.1", timeout=timeout)
    assert str(info.value) == f"bad timeout {timeout!r}: must be a positive number of seconds"


@pytest.mark.parametrize("deadline", [0, -1, math.nan, math.inf])
def test_bad_deadline(deadline: float) -> None:
    with pytest.raises(DnsError) as info:
        MailResolver(nameserver="127.0.0.1", deadline=deadline)
    assert str(info.value) == f"bad deadline {deadline!r}: must be a positive number of seconds"


@pytest.mark.parametrize("max_hosts", [0, -1, True])
def test_bad_host_limit(max_hosts: int) -> None:
    with pytest.raises(DnsError) as info:
        MailResolver(nameserver="127.0.0.1", max_hosts=max_hosts)
    assert str(info.value) == f"bad host limit {max_hosts!r}: must be a positive integer"


# --- the values ---------------------------------------------------------------------------


def test_route_kind_values_are_the_json_kinds() -> None:
    # Scripts read these from `smtpkit mx --json`: they never change.
    assert [kind.value for kind in RouteKind] == [
        "mx",
        "implicit",
        "null",
        "nxdomain",
        "nodata",
        "servfail",
        "timeout",
    ]


TEMPORARY = {
    HostProblem.NULL_MX_MIXED: False,
    HostProblem.NULL_MX_PREFERENCE: False,
    HostProblem.IP_LITERAL: False,
    HostProblem.NXDOMAIN: False,
    HostProblem.NO_ADDRESS: False,
    HostProblem.SERVFAIL: True,
    HostProblem.TIMEOUT: True,
}

OUTCOME_WITHOUT_HOSTS = {
    RouteKind.MX: RouteOutcome.NO_MAIL,
    RouteKind.IMPLICIT: RouteOutcome.NO_MAIL,
    RouteKind.NULL: RouteOutcome.NO_MAIL,
    RouteKind.NXDOMAIN: RouteOutcome.NO_MAIL,
    RouteKind.NODATA: RouteOutcome.NO_MAIL,
    RouteKind.SERVFAIL: RouteOutcome.DNS_FAILURE,
    RouteKind.TIMEOUT: RouteOutcome.DNS_FAILURE,
}


def test_the_tables_cover_every_member() -> None:
    assert set(TEMPORARY) == set(HostProblem)
    assert set(OUTCOME_WITHOUT_HOSTS) == set(RouteKind)


@pytest.mark.parametrize(("problem", "temporary"), TEMPORARY.items())
def test_which_host_problems_are_temporary(problem: HostProblem, temporary: bool) -> None:
    assert problem.temporary is temporary
    assert MailHost(10, "mx.example", problem=problem).temporary is temporary


@pytest.mark.parametrize(("kind", "outcome"), OUTCOME_WITHOUT_HOSTS.items())
def test_outcome_of_every_kind_without_hosts(kind: RouteKind, outcome: RouteOutcome) -> None:
    assert MailRoute("example.org", kind).outcome is outcome


def test_outcome_with_hosts() -> None:
    usable = MailHost(10, "a.example", ("192.0.2.1",))
    failing = MailHost(20, "b.example", problem=HostProblem.TIMEOUT, failed=(AddressType.A,))
    missing = MailHost(30, "c.example", problem=HostProblem.NXDOMAIN)
    assert MailRoute("d.example", RouteKind.MX, (usable, failing)).outcome is RouteOutcome.OK
    assert MailRoute("d.example", RouteKind.MX, (missing, failing)).outcome is (
        RouteOutcome.DNS_FAILURE
    )
    assert MailRoute("d.example", RouteKind.MX, (missing,)).outcome is RouteOutcome.NO_MAIL


# --- the one host-name rule (smtpkit.addresses), as dns.py and tls.py use it ------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("localhost", "localhost"),
        ("Mail.Example.ORG.", "mail.example.org"),
        ("  mx1.example.org  ", "mx1.example.org"),
        ("bücher.example", "xn--bcher-kva.example"),
        # IDNA 2008 (UTS #46 non-transitional), as normalize_domain: the sharp s stays.
        ("faß.example", "xn--fa-hia.example"),
        ("fass.example", "fass.example"),
        ("a" * 63 + ".example", "a" * 63 + ".example"),
    ],
)
def test_normalize_hostname(given: str, expected: str) -> None:
    assert normalize_hostname(given) == expected


@pytest.mark.parametrize(
    "given",
    ["", ".", "a b", "mx..example", "-mx.example", "mx-.example", "mx_1.example", "a" * 64,
     "example.org..", "☃.example", ".".join(["a" * 63] * 4)],
)  # fmt: skip
def test_normalize_hostname_refuses(given: str) -> None:
    with pytest.raises(UserError) as info:
        normalize_hostname(given)
    assert str(info.value) == f"{given!r} is not a valid host name"
