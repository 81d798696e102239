"""SPF (mailauth/spf.py, verify.check_spf) against records served by the real DNS server NSD.

Clients are 127.0.0.2 (allowed wherever a record allows anyone) and 127.0.0.3 (never allowed).
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator

import pytest
import spf

import smtpkit.mailauth.spf
from smtpkit.dns import make_resolver
from smtpkit.mailauth.results import Deadline, SpfResult
from smtpkit.mailauth.spf import check_host, spf_domain
from smtpkit.mailauth.verify import check_spf
from tests.dnsserver import DnsServer, filtering_nameserver, run_nsd, silent_nameserver  # noqa: F401

# include:c1 ... include:c11: eleven DNS-querying terms, one more than RFC 7208 4.6.4 allows;
# include:d1 ... include:d10: exactly ten.
CHAIN = "\n".join(
    [f'c{n} IN TXT "v=spf1 include:c{n + 1}.spf.test -all"' for n in range(1, 11)]
    + ['c11 IN TXT "v=spf1 ip4:127.0.0.2 -all"']
    + [f'd{n} IN TXT "v=spf1 include:d{n + 1}.spf.test -all"' for n in range(1, 10)]
    + ['d10 IN TXT "v=spf1 ip4:127.0.0.2 -all"']
)

SPF_ZONE = f"""\
$ORIGIN spf.test.
$TTL 60
@          IN SOA   ns hostmaster 1 3600 600 86400 60
@          IN NS    ns
ns         IN A     127.0.0.1
pass       IN TXT   "v=spf1 ip4:127.0.0.2 -all"
pass       IN TXT   "an unrelated record"
soft       IN TXT   "v=spf1 ip4:127.0.0.2 ~all"
neutral    IN TXT   "v=spf1 ?all"
nomech     IN TXT   "v=spf1"
none       IN A     127.0.0.2
helo       IN TXT   "v=spf1 ip4:127.0.0.2 -all"
mx         IN TXT   "v=spf1 mx -all"
mx         IN MX    10 mail
mail       IN A     127.0.0.2
a          IN TXT   "v=spf1 a:mail.spf.test -all"
include    IN TXT   "v=spf1 include:pass.spf.test -all"
six        IN TXT   "v=spf1 ip6:2001:db8::1 -all"
split      IN TXT   "v=spf1 ip4:127.0.0.9 " "ip4:127.0.0.2 -all"
syntax     IN TXT   "v=spf1 ip4:127.0.0.2 foo:bar -all"
badip      IN TXT   "v=spf1 ip4:127.0.0.300 -all"
two        IN TXT   "v=spf1 ip4:127.0.0.2 -all"
two        IN TXT   "v=spf1 -all"
void       IN TXT   "v=spf1 a:v1.spf.test a:v2.spf.test a:v3.spf.test -all"
noinclude  IN TXT   "v=spf1 include:none.spf.test -all"
chain      IN TXT   "v=spf1 include:c1.spf.test -all"
chain10    IN TXT   "v=spf1 include:d1.spf.test -all"
partial    IN TXT   "v=spf1 include:slow.spf.test ip4:127.0.0.2 -all"
slow       IN TXT   "v=spf1 ip4:127.0.0.2 -all"
{CHAIN}
"""


@pytest.fixture(scope="module")
def nameserver() -> Iterator[DnsServer]:
    with run_nsd({"spf.test": SPF_ZONE}) as server:
        yield server


def spf_of(
    server: DnsServer | str, domain: str, ip: str = "127.0.0.2", time_limit: float = 5
) -> SpfResult:
    nameserver = server if isinstance(server, str) else server.nameserver
    resolver = make_resolver(nameserver, 2)
    return check_spf(
        client_ip=ip,
        helo="[127.0.0.2]",
        mail_from=f"alice@{domain}",
        resolver=resolver,
        time_limit=time_limit,
    )


def mailfrom(result: str, domain: str, reason: str = "") -> SpfResult:
    return SpfResult(result, domain, "mailfrom", reason=reason, sender=f"alice@{domain}")


@pytest.mark.parametrize(
    ("domain", "ip", "result"),
    [
        ("pass.spf.test", "127.0.0.2", "pass"),
        ("pass.spf.test", "127.0.0.3", "fail"),
        ("soft.spf.test", "127.0.0.3", "softfail"),
        ("neutral.spf.test", "127.0.0.3", "neutral"),
        ("nomech.spf.test", "127.0.0.2", "neutral"),  # no term matches: neutral (RFC 7208 4.7)
        ("mx.spf.test", "127.0.0.2", "pass"),
        ("mx.spf.test", "127.0.0.3", "fail"),
        ("a.spf.test", "127.0.0.2", "pass"),
        ("include.spf.test", "127.0.0.2", "pass"),
        ("include.spf.test", "127.0.0.3", "fail"),
        ("six.spf.test", "2001:db8::1", "pass"),
        ("six.spf.test", "2001:db8::2", "fail"),
        ("split.spf.test", "127.0.0.2", "pass"),  # a record in two strings is one record
        ("chain10.spf.test", "127.0.0.2", "pass"),  # ten DNS-querying terms are allowed
    ],
)
def test_results(nameserver: DnsServer, domain: str, ip: str, result: str) -> None:
    assert spf_of(nameserver, domain, ip) == mailfrom(result, domain)


@pytest.mark.parametrize(
    ("domain", "reason"),
    [
        ("none.spf.test", "no SPF record"),  # the name exists, without an SPF record
        ("nosuch.spf.test", "no SPF record"),  # NXDOMAIN
    ],
)
def test_none(nameserver: DnsServer, domain: str, reason: str) -> None:
    assert spf_of(nameserver, domain) == mailfrom("none", domain, reason)


@pytest.mark.parametrize(
    ("domain", "reason"),
    [
        ("syntax.spf.test", "Unknown mechanism found: foo:bar"),
        ("badip.spf.test", "Invalid IP4 address: ip4:127.0.0.300"),
        ("two.spf.test", "Two or more type TXT spf records found."),
        # RFC 7208 4.6.4: more than ten DNS-querying terms, more than two void lookups.
        ("chain.spf.test", "Too many DNS lookups"),
        ("void.spf.test", "Void lookup limit of 2 exceeded"),
        # RFC 7208 5.2: include of a domain without a record.
        (
            "noinclude.spf.test",
            "No valid SPF record for included domain: none.spf.test: include:none.spf.test",
        ),
    ],
)
def test_permerror(nameserver: DnsServer, domain: str, reason: str) -> None:
    assert spf_of(nameserver, domain) == mailfrom("permerror", domain, reason)


def test_malformed_domains_are_none_without_a_query(silent_nameserver: str) -> None:  # noqa: F811
    # RFC 7208 4.3: a domain that is malformed or not multi-label is "none" at once; the
    # nameserver never answers, so a query would have made it temperror.
    resolver = make_resolver(silent_nameserver, 2)
    for sender, domain in [("alice@localhost", "localhost"), ("bob@[127.0.0.2]", "[127.0.0.2]")]:
        found = check_spf(client_ip="127.0.0.2", helo="", mail_from=sender, resolver=resolver)
        assert found == SpfResult(
            "none", domain, "mailfrom", reason="MAIL FROM domain is not a domain", sender=sender
        )


def test_null_sender_checks_the_helo_identity(nameserver: DnsServer) -> None:
    # RFC 7208 2.4: for the null sender, the identity is postmaster@HELO.
    resolver = make_resolver(nameserver.nameserver, 2)
    found = check_spf(client_ip="127.0.0.2", helo="HELO.spf.test", mail_from="", resolver=resolver)
    assert found == SpfResult("pass", "helo.spf.test", "helo")
    found = check_spf(client_ip="127.0.0.3", helo="helo.spf.test", mail_from="", resolver=resolver)
    assert found == SpfResult("fail", "helo.spf.test", "helo")
    found = check_spf(client_ip="127.0.0.2", helo="[127.0.0.2]", mail_from="", resolver=resolver)
    assert found == SpfResult("none", "[127.0.0.2]", "helo", reason="HELO name is not a domain")


def test_helo_identity_checked_on_its_own(nameserver: DnsServer) -> None:
    # RFC 7208 2.3: the HELO name is checked too; its result does not change MAIL FROM's.
    resolver = make_resolver(nameserver.nameserver, 2)
    found = check_spf(
        client_ip="127.0.0.2",
        helo="helo.spf.test",
        mail_from="alice@soft.spf.test",
        resolver=resolver,
    )
    assert found == SpfResult(
        "pass", "soft.spf.test", "mailfrom", helo="pass", sender="alice@soft.spf.test"
    )
    found = check_spf(
        client_ip="127.0.0.3",
        helo="mail.spf.test",  # exists, without a record
        mail_from="alice@pass.spf.test",
        resolver=resolver,
    )
    assert found == SpfResult(
        "fail", "pass.spf.test", "mailfrom", helo="none", sender="alice@pass.spf.test"
    )


def test_domain_case_and_final_dot(nameserver: DnsServer) -> None:
    resolver = make_resolver(nameserver.nameserver, 2)
    found = check_spf(
        client_ip="127.0.0.2", helo="", mail_from="Alice@PASS.spf.test.", resolver=resolver
    )
    assert found == SpfResult("pass", "pass.spf.test", "mailfrom", sender="Alice@PASS.spf.test.")


def test_spf_domain() -> None:
    assert spf_domain("Pass.SPF.test.") == "pass.spf.test"
    assert spf_domain("bücher.test") == "xn--bcher-kva.test"
    assert spf_domain("localhost") is None
    assert spf_domain("a..test") is None
    assert spf_domain("[192.0.2.1]") is None
    assert spf_domain("") is None


def test_bad_client_address_is_a_caller_error(nameserver: DnsServer) -> None:
    resolver = make_resolver(nameserver.nameserver, 2)
    with pytest.raises(ValueError):
        check_spf(client_ip="mx.test", helo="", mail_from="a@pass.spf.test", resolver=resolver)


def test_silent_nameserver_is_temperror_within_the_time_limit(
    silent_nameserver: str,  # noqa: F811
) -> None:
    started = time.monotonic()
    found = spf_of(silent_nameserver, "pass.spf.test", time_limit=1)
    elapsed = time.monotonic() - started
    # MAIL FROM's lookup takes the whole second; none is left for the HELO name's.
    assert found == SpfResult(
        "temperror",
        "pass.spf.test",
        "mailfrom",
        reason="DNS timeout for pass.spf.test TXT",
        sender="alice@pass.spf.test",
    )
    assert elapsed < 8


def test_one_silent_name_is_temperror(nameserver: DnsServer) -> None:
    # The rest of the zone answers; the include's record never comes.
    def drop(name: str, rdtype: str) -> bool:
        return name == "slow.spf.test"

    with filtering_nameserver(nameserver, drop) as server:
        resolver = make_resolver(server.nameserver, 0.5)
        found = check_spf(
            client_ip="127.0.0.2",
            helo="helo.spf.test",
            mail_from="alice@partial.spf.test",
            resolver=resolver,
            time_limit=5,
        )
        assert ("slow.spf.test", "TXT") in server.seen()
    assert found == SpfResult(
        "temperror",
        "partial.spf.test",
        "mailfrom",
        helo="pass",
        reason="DNS timeout for slow.spf.test TXT",
        sender="alice@partial.spf.test",
    )


def test_no_time_left_is_temperror_without_a_query(nameserver: DnsServer) -> None:
    resolver = make_resolver(nameserver.nameserver, 2)
    found = check_host(
        client_ip="127.0.0.2",
        domain="pass.spf.test",
        sender="alice@pass.spf.test",
        helo="",
        resolver=resolver,
        deadline=Deadline.after(0),
    )
    assert found == ("temperror", "no time left")


def test_concurrent_checks_use_their_own_resolver(
    nameserver: DnsServer,
    silent_nameserver: str,  # noqa: F811
) -> None:
    # pyspf's DNS hook is one module global; each thread's check must still ask its own
    # resolver: the answering one passes, the silent one times out.
    answering = make_resolver(nameserver.nameserver, 2)
    silent = make_resolver(silent_nameserver, 2)

    def run(index: int) -> SpfResult:
        return check_spf(
            client_ip="127.0.0.2",
            helo="",
            mail_from="alice@pass.spf.test",
            resolver=silent if index % 2 else answering,
            time_limit=1 if index % 2 else 10,
        )

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        found = list(pool.map(run, range(16)))
    assert [r.result for r in found] == ["pass", "temperror"] * 8


def test_pyspf_outside_a_check_keeps_its_own_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    # The hook answers only for the thread running check_host; elsewhere pyspf's own
    # function answers, with the arguments pyspf gave.
    calls: list[tuple[object, ...]] = []

    def pyspf_own(*args: object) -> list[object]:
        calls.append(args)
        return []

    monkeypatch.setattr(smtpkit.mailauth.spf, "_PYSPF_LOOKUP", pyspf_own)
    assert spf.DNSLookup("pass.spf.test", "TXT", True, 5) == []
    assert calls == [("pass.spf.test", "TXT", True, 5)]
