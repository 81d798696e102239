"""DMARC (mailauth/dmarc.py, through verify.check_message) against policy records, SPF records
and DKIM keys served by the real DNS server NSD, with messages signed here.

Client 127.0.0.2 passes SPF for every domain below; 127.0.0.3 fails it everywhere.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from smtpkit.dns import make_resolver
from smtpkit.mailauth.dmarc import (
    DmarcRecord,
    aligned,
    author_domain,
    organizational_domain,
    parse_record,
)
from smtpkit.mailauth.results import DkimResult, DmarcResult, SpfResult, Verdict
from smtpkit.mailauth.verify import check_message
from tests.dnsserver import DnsServer, filtering_nameserver, run_nsd
from tests.test_mailauth_dkim import HEAD, Key, sign, txt

PASS_IP = "127.0.0.2"
FAIL_IP = "127.0.0.3"
SPF = 'IN TXT "v=spf1 ip4:127.0.0.2 -all"'


def zone(name: str, *lines: str) -> str:
    return "\n".join([f"$ORIGIN {name}.", HEAD, *lines, ""])


@pytest.fixture(scope="module")
def keys() -> dict[str, Key]:
    return {"a": Key.ed25519(), "other": Key.ed25519()}


@pytest.fixture(scope="module")
def nameserver(keys: dict[str, Key]) -> Iterator[DnsServer]:
    a, other = keys["a"].record(), keys["other"].record()
    zones = {
        "a.test": zone(
            "a.test",
            f"@ {SPF}",
            '_dmarc IN TXT "v=DMARC1; p=reject; sp=quarantine; rua=mailto:dmarc@a.test"',
            txt("sel._domainkey", a),
            f"sub {SPF}",
            f"strict {SPF}",
            txt("sel._domainkey.strict", a),
            '_dmarc.strict IN TXT "v=DMARC1; p=reject; adkim=s; aspf=s"',
            '_dmarc.own IN TXT "v=DMARC1; p=none"',
            txt("slow._domainkey", a),
        ),
        "q.test": zone("q.test", f"@ {SPF}", '_dmarc IN TXT "v=DMARC1; p=quarantine"'),
        "n.test": zone("n.test", f"@ {SPF}", '_dmarc IN TXT "v=DMARC1; p=none"'),
        "nodmarc.test": zone("nodmarc.test", f"@ {SPF}", '_dmarc IN TXT "not DMARC"'),
        "other.test": zone("other.test", f"@ {SPF}", txt("sel._domainkey", other)),
        "bad.test": zone("bad.test", f"@ {SPF}", '_dmarc IN TXT "v=DMARC1; p=bogus"'),
        "badrua.test": zone(
            "badrua.test", f"@ {SPF}", '_dmarc IN TXT "v=DMARC1; p=bogus; rua=mailto:r@badrua.test"'
        ),
        "multi.test": zone(
            "multi.test",
            f"@ {SPF}",
            '_dmarc IN TXT "v=DMARC1; p=reject"',
            '_dmarc IN TXT "v=DMARC1; p=none"',
        ),
        "empty.test": zone("empty.test", f"@ {SPF}"),
        "pct.test": zone("pct.test", f"@ {SPF}", '_dmarc IN TXT "v=DMARC1; p=reject; pct=50"'),
    }
    with run_nsd(zones) as server:
        yield server


def message(author: str, *, extra: bytes = b"") -> bytes:
    return (
        f"From: Alice <{author}>\r\n".encode()
        + extra
        + b"To: bob@example.org\r\nSubject: Hi\r\nMessage-ID: <1@x.test>\r\n\r\nHello.\r\n"
    )


def dmarc_of(
    server: DnsServer | str,
    content: bytes,
    *,
    mail_from: str,
    ip: str = PASS_IP,
    helo: str = "mail.example.net",
    timeout: float = 2,
) -> DmarcResult | None:
    nameserver = server if isinstance(server, str) else server.nameserver
    verdict = check_message(
        content,
        client_ip=ip,
        helo=helo,
        mail_from=mail_from,
        resolver=make_resolver(nameserver, timeout),
        time_limit=5,
    )
    return verdict.dmarc


def test_spf_alone_aligned_passes(nameserver: DnsServer) -> None:
    found = dmarc_of(nameserver, message("alice@a.test"), mail_from="bounce@a.test")
    assert found == DmarcResult("pass", "a.test", "reject")


def test_dkim_alone_aligned_passes(nameserver: DnsServer, keys: dict[str, Key]) -> None:
    signed = sign(message("alice@a.test"), keys["a"], "a.test", "sel")
    found = dmarc_of(nameserver, signed, mail_from="bounce@a.test", ip=FAIL_IP)
    assert found == DmarcResult("pass", "a.test", "reject")


def test_both_failing_fails(nameserver: DnsServer) -> None:
    found = dmarc_of(nameserver, message("alice@a.test"), mail_from="bounce@a.test", ip=FAIL_IP)
    assert found == DmarcResult("fail", "a.test", "reject")
    assert Verdict(dmarc=found).dmarc_action() == "reject"


def test_passes_for_other_domains_do_not_count(nameserver: DnsServer, keys: dict[str, Key]) -> None:
    signed = sign(message("alice@a.test"), keys["other"], "other.test", "sel")
    verdict = check_message(
        signed,
        client_ip=PASS_IP,
        helo="mail.other.test",
        mail_from="bounce@other.test",
        resolver=make_resolver(nameserver.nameserver, 2),
    )
    assert verdict.spf is not None and verdict.spf.result == "pass"
    assert verdict.dkim == (DkimResult("pass", "other.test", "sel", "ed25519-sha256"),)
    assert verdict.dmarc == DmarcResult("fail", "a.test", "reject")


def test_relaxed_alignment_and_the_organizations_sp(nameserver: DnsServer) -> None:
    # From: sub.a.test has no record of its own: a.test's applies, with its sp= (RFC 7489
    # 6.6.3); SPF passed for a.test, aligned in relaxed mode.
    content = message("alice@sub.a.test")
    found = dmarc_of(nameserver, content, mail_from="bounce@a.test")
    assert found == DmarcResult("pass", "sub.a.test", "quarantine")
    found = dmarc_of(nameserver, content, mail_from="bounce@a.test", ip=FAIL_IP)
    assert found == DmarcResult("fail", "sub.a.test", "quarantine")
    assert Verdict(dmarc=found).dmarc_action() == "quarantine"


def test_a_subdomains_own_record_wins(nameserver: DnsServer) -> None:
    found = dmarc_of(nameserver, message("alice@own.a.test"), mail_from="x@a.test", ip=FAIL_IP)
    assert found == DmarcResult("fail", "own.a.test", "none")
    assert Verdict(dmarc=found).dmarc_action() == "none"


def test_strict_alignment(nameserver: DnsServer, keys: dict[str, Key]) -> None:
    # aspf=s, adkim=s: a.test's passes do not align with strict.a.test; its own do.
    content = sign(message("alice@strict.a.test"), keys["a"], "a.test", "sel")
    found = dmarc_of(nameserver, content, mail_from="bounce@a.test")
    assert found == DmarcResult("fail", "strict.a.test", "reject")
    found = dmarc_of(nameserver, content, mail_from="bounce@strict.a.test")
    assert found == DmarcResult("pass", "strict.a.test", "reject")
    content = sign(message("alice@strict.a.test"), keys["a"], "strict.a.test", "sel")
    found = dmarc_of(nameserver, content, mail_from="bounce@a.test", ip=FAIL_IP)
    assert found == DmarcResult("pass", "strict.a.test", "reject")


@pytest.mark.parametrize(
    ("domain", "expected", "action"),
    [
        (
            "q.test",
            DmarcResult("fail", "q.test", "quarantine"),
            "quarantine",
        ),
        ("n.test", DmarcResult("fail", "n.test", "none"), "none"),
        # pct=50: every message counts as outside the sample, so one step milder.
        (
            "pct.test",
            DmarcResult("fail", "pct.test", "reject", pct=50),
            "quarantine",
        ),
        # An rua= saves a record with a broken p=: it counts as p=none (RFC 7489 6.6.3).
        (
            "badrua.test",
            DmarcResult("fail", "badrua.test", "none"),
            "none",
        ),
        ("nodmarc.test", DmarcResult("none", "nodmarc.test", "none", "no DMARC record"), "none"),
        # NXDOMAIN at the From: domain and at its organizational domain.
        (
            "sub.empty.test",
            DmarcResult("none", "sub.empty.test", "none", "no DMARC record"),
            "none",
        ),
        (
            "bad.test",
            DmarcResult(
                "permerror", "bad.test", "none", "unusable DMARC record: p=bogus is not a policy"
            ),
            "none",
        ),
        (
            "multi.test",
            DmarcResult("permerror", "multi.test", "none", "several DMARC records"),
            "none",
        ),
    ],
)
def test_policies(nameserver: DnsServer, domain: str, expected: DmarcResult, action: str) -> None:
    found = dmarc_of(nameserver, message(f"alice@{domain}"), mail_from=f"b@{domain}", ip=FAIL_IP)
    assert found == expected
    assert Verdict(dmarc=found).dmarc_action() == action


def test_null_sender_aligns_through_helo(nameserver: DnsServer) -> None:
    # The null sender's SPF identity is the HELO name (RFC 7208 2.4), which DMARC then uses.
    found = dmarc_of(nameserver, message("mailer-daemon@a.test"), mail_from="", helo="a.test")
    assert found == DmarcResult("pass", "a.test", "reject")


def test_unanswered_policy_lookup_is_temperror(nameserver: DnsServer) -> None:
    def drop(name: str, rdtype: str) -> bool:
        return name == "_dmarc.q.test"

    with filtering_nameserver(nameserver, drop) as server:
        found = dmarc_of(server.nameserver, message("a@q.test"), mail_from="b@q.test", timeout=0.5)
    assert found == DmarcResult("temperror", "q.test", "none", "DMARC record lookup timed out")


def test_an_unfinished_aligned_check_is_temperror_not_fail(
    nameserver: DnsServer, keys: dict[str, Key]
) -> None:
    # SPF failed; the aligned signature's key never came. Our DNS trouble must not make a
    # p=reject domain's mail fail.
    def drop(name: str, rdtype: str) -> bool:
        return name == "slow._domainkey.a.test"

    content = sign(message("alice@a.test"), keys["a"], "a.test", "slow")
    with filtering_nameserver(nameserver, drop) as server:
        found = dmarc_of(server.nameserver, content, mail_from="b@a.test", ip=FAIL_IP, timeout=0.5)
    assert found == DmarcResult(
        "temperror", "a.test", "reject", "an aligned check could not be completed"
    )
    assert Verdict(dmarc=found).dmarc_action() == "none"


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (b"", DmarcResult("none", "", "none", "no From: field")),
        (
            b"From: undisclosed-recipients:;\r\n",
            DmarcResult("none", "", "none", "no domain in From:"),
        ),
        (
            b"From: a@a.test\r\nFrom: b@a.test\r\n",
            DmarcResult("permerror", "", "none", "several From: fields"),
        ),
        (
            b"From: a@a.test, b@other.test\r\n",
            DmarcResult("permerror", "", "none", "several domains in From:"),
        ),
        (
            b"From: a@[127.0.0.2]\r\n",
            DmarcResult("none", "", "none", "From: domain is not a domain name"),
        ),
        # Several addresses of one domain: that domain. Folded, in another case, with a
        # display name that looks like an address.
        (
            b'FROM: "x@other.test" <a@A.test>,\r\n b@a.TEST\r\n',
            DmarcResult("fail", "a.test", "reject"),
        ),
    ],
)
def test_from_field(nameserver: DnsServer, fields: bytes, expected: DmarcResult) -> None:
    content = fields + b"Subject: Hi\r\n\r\nFrom: body@a.test\r\n"
    assert dmarc_of(nameserver, content, mail_from="b@a.test", ip=FAIL_IP) == expected


def test_only_dmarc_reported_but_spf_and_dkim_still_found(
    nameserver: DnsServer, keys: dict[str, Key]
) -> None:
    signed = sign(message("alice@a.test"), keys["a"], "a.test", "sel")
    verdict = check_message(
        signed,
        client_ip=FAIL_IP,
        helo="mail.a.test",
        mail_from="bounce@a.test",
        resolver=make_resolver(nameserver.nameserver, 2),
        spf=False,
        dkim=False,
    )
    assert verdict == Verdict(dmarc=DmarcResult("pass", "a.test", "reject"))


def test_spf_result_from_rcpt_time_is_reused() -> None:
    # Given check_spf's result, check_message asks no SPF question: with DKIM and DMARC off,
    # no DNS at all (the nameserver below does not exist).
    earlier = SpfResult("pass", "a.test", "mailfrom", helo="pass", sender="b@a.test")
    verdict = check_message(
        message("alice@a.test"),
        client_ip=PASS_IP,
        helo="mail.a.test",
        mail_from="b@a.test",
        resolver=make_resolver("127.0.0.1:9", 0.5),
        dkim=False,
        dmarc=False,
        spf_result=earlier,
    )
    assert verdict == Verdict(spf=earlier)


def test_organizational_domain() -> None:
    # ".test" is in no list: the default rule "*" makes "test" the public suffix.
    assert organizational_domain("a.test") == "a.test"
    assert organizational_domain("x.y.A.Test.") == "a.test"
    assert organizational_domain("test") == "test"
    # The list's own entries, private ones included.
    assert organizational_domain("mail.example.co.uk") == "example.co.uk"
    assert organizational_domain("co.uk") == "co.uk"
    assert organizational_domain("alice.github.io") == "alice.github.io"


def test_aligned() -> None:
    assert aligned("a.test", "a.test", "s")
    assert aligned("A.test.", "a.TEST", "s")
    assert not aligned("a.test", "sub.a.test", "s")
    assert aligned("a.test", "sub.a.test", "r")
    assert aligned("x.a.test", "y.a.test", "r")
    assert not aligned("a.test", "b.test", "r")
    assert not aligned("example.co.uk", "other.co.uk", "r")
    assert not aligned("", "a.test", "r")
    assert aligned("Bücher.test", "xn--bcher-kva.test", "s")


@pytest.mark.parametrize(
    ("text", "record"),
    [
        ("v=DMARC1; p=reject", DmarcRecord("reject")),
        (
            "v=DMARC1;p=Quarantine;SP=none;adkim=s;aspf=s;pct=20;",
            DmarcRecord("quarantine", "none", "s", "s", 20),
        ),
        (" v = DMARC1 ; p = none ; fo=1; rf=afrf; ri=86400; x-new=tag", DmarcRecord("none")),
        ("v=DMARC1; p=reject; adkim=x; aspf=; pct=101", DmarcRecord("reject")),
        ("v=DMARC1; p=reject; p=none", DmarcRecord("reject")),
        ("v=DMARC1; rua=mailto:d@a.test", DmarcRecord("none")),
        ("v=DMARC1; p=reject; sp=bogus; rua=mailto:d@a.test", DmarcRecord("none")),
    ],
)
def test_parse_record(text: str, record: DmarcRecord) -> None:
    assert parse_record(text) == record


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("v=DMARC1", "no valid p= tag"),
        ("v=DMARC1; p=bogus; rua=nowhere", "p=bogus is not a policy"),
        ("v=DMARC1; p=reject; sp=bogus", "sp=bogus is not a policy"),
        ("v=DMARC1; p=reject; junk", "'junk' is not tag=value"),
        ("p=reject; v=DMARC1", "not a DMARC1 record"),
        ("v=dmarc1; p=reject", "not a DMARC1 record"),
    ],
)
def test_parse_record_refuses(text: str, problem: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_record(text)
    assert str(caught.value) == problem


def test_author_domain_idn() -> None:
    assert author_domain(["Al <al@Bücher.test>".encode()]) == "xn--bcher-kva.test"
