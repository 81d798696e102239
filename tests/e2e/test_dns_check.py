"""``smtpkit dns check`` against zones served by a real NSD (tests/dnsserver.py).

The site: ``smtpkit init`` with server.hostname ``mail.dc.test``, listening on 127.0.0.1:25 (so
127.0.0.1 is "this server", as for ``smtpkit mx --check``), one domain, ``dc.test``, and a DKIM
key made by ``smtpkit dkim keygen``. Each test serves its own variant of the ``dc.test`` zone
and of the reverse zone ``0.0.127.in-addr.arpa`` (where 127.0.0.1's PTR lives), each in a NSD
of its own.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from smtpkit.dnscheck import zone_txt
from smtpkit.mailauth.keys import DkimKey, load_keys
from tests.conftest import smtpkit
from tests.dnsserver import DnsServer, run_nsd, silent_nameserver  # noqa: F401

DOMAIN = "dc.test"
HOST = "mail.dc.test"
REVERSE = "0.0.127.in-addr.arpa"

BASE = ("ns IN A 127.0.0.1", "mail IN A 127.0.0.1")
MX = "@ IN MX 10 mail"
SPF = '@ IN TXT "v=spf1 mx -all"'
DMARC = '_dmarc IN TXT "v=DMARC1; p=reject; rua=mailto:postmaster@dc.test"'
MTA_STS = '_mta-sts IN TXT "v=STSv1; id=20240101T000000"'
TLS_RPT = '_smtp._tls IN TXT "v=TLSRPTv1; rua=mailto:tls@dc.test"'
PTR = f"1 IN PTR {HOST}."

HEADER = f"this server: {HOST} at 127.0.0.1 (listening on 127.0.0.1:25)"
PTR_OK = f"  PTR     ok: 127.0.0.1 -> {HOST} -> 127.0.0.1"
MX_OK = f"  MX      ok: {HOST} (127.0.0.1) at preference 10 is this server"
SPF_OK = '  SPF     ok: "v=spf1 mx -all" authorizes 127.0.0.1'
DMARC_OK = "  DMARC   ok: p=reject"
MTA_STS_OK = '  MTA-STS ok: "v=STSv1; id=20240101T000000"'
MTA_STS_NOTE = (
    "          note: the policy at https://mta-sts.dc.test/.well-known/mta-sts.txt is not checked"
)
TLS_RPT_OK = '  TLS-RPT ok: "v=TLSRPTv1; rua=mailto:tls@dc.test"'
MTA_STS_INFO = "  MTA-STS info: not published (optional: lets senders insist on TLS, RFC 8461)"
TLS_RPT_INFO = (
    "  TLS-RPT info: not published (optional: asks senders for reports of TLS failures, RFC 8460)"
)
MONITORING = (
    "          note: p=none is monitoring only: receivers send reports but deliver mail that "
    "fails DMARC as usual; raise it to quarantine or reject once the reports show your mail "
    "passing"
)


# The server's reports, From: MAILER-DAEMON@mail.dc.test, are signed by dc.test's keys.
BOUNCES_UNSIGNED = (
    f"  DKIM    warning: reports from MAILER-DAEMON@{HOST} (bounces) are not signed: "
    f"{DOMAIN}, whose keys would sign them, has none; `smtpkit dkim keygen {DOMAIN}` makes one"
)


def zone(origin: str, records: Sequence[str]) -> str:
    return "\n".join(
        [
            f"$ORIGIN {origin}.",
            "$TTL 60",
            f"@ IN SOA ns.{DOMAIN}. hostmaster.{DOMAIN}. 1 3600 600 86400 60",
            f"@ IN NS ns.{DOMAIN}.",
            *records,
            "",
        ]
    )


@contextlib.contextmanager
def serve(records: Sequence[str], reverse: Sequence[str] = (PTR,)) -> Iterator[DnsServer]:
    """NSD with ``dc.test`` (``BASE`` and ``records``) and the reverse zone of 127.0.0.x."""
    zones = {DOMAIN: zone(DOMAIN, [*BASE, *records]), REVERSE: zone(REVERSE, reverse)}
    with run_nsd(zones) as server:
        yield server


@dataclass(frozen=True)
class Site:
    config: Path
    directory: Path

    def key(self, selector: str = "s1") -> DkimKey:
        return next(k for k in load_keys(self.directory)[DOMAIN] if k.selector == selector)

    def key_record(self, selector: str = "s1") -> str:
        """The key's record as it goes into the zone file."""
        key = self.key(selector)
        return zone_txt(key.record_name, key.txt_record())


def make_site(root: Path, *, key_types: Sequence[str] = ("rsa",)) -> Site:
    directory = root / "mail"
    smtpkit(
        "init", str(directory), "--hostname", HOST, "--listen", "127.0.0.1:25", "--domain", DOMAIN
    )
    site = Site(directory / "smtpkit.toml", directory)
    for i, key_type in enumerate(key_types, 1):
        smtpkit(
            "dkim", "keygen", DOMAIN, "--selector", f"s{i}", "--type", key_type, config=site.config
        )
    return site


def dns_check(site: Site, nameserver: DnsServer | str, *args: str) -> tuple[int, list[str]]:
    where = nameserver if isinstance(nameserver, str) else nameserver.nameserver
    result = smtpkit(
        "dns", "check", "--nameserver", where, "--timeout", "2", *args,
        config=site.config, check=False,
    )  # fmt: skip
    assert result.stderr == ""
    return result.returncode, result.stdout.splitlines()


def published(lines: Sequence[str]) -> list[str]:
    """The records the command asked to publish, as printed."""
    return [line.strip().removeprefix("publish: ") for line in lines if "publish: " in line]


def dkim_missing(site: Site) -> list[str]:
    key = site.key()
    return [
        f"  DKIM    missing: no TXT record at s1._domainkey.{DOMAIN} for key s1 (rsa): "
        "its signatures fail",
        f"          publish: {zone_txt(key.record_name, key.txt_record())}",
    ]


# --- all in place --------------------------------------------------------------------------


def test_everything_published_is_ok(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    records = [MX, SPF, DMARC, MTA_STS, TLS_RPT, site.key_record()]
    with serve(records) as dns:
        code, out = dns_check(site, dns)
    assert out == [
        HEADER,
        PTR_OK,
        f"{DOMAIN}:",
        MX_OK,
        SPF_OK,
        f"  DKIM    ok: s1._domainkey.{DOMAIN} publishes key s1 (rsa)",
        DMARC_OK,
        MTA_STS_OK,
        MTA_STS_NOTE,
        TLS_RPT_OK,
    ]
    assert code == 0


def test_optional_records_and_a_missing_key_do_not_fail(tmp_path: Path) -> None:
    # No DKIM key, no MTA-STS, no TLS-RPT, DMARC p=none: all said, none of them a failure.
    site = make_site(tmp_path, key_types=())
    with serve([MX, SPF, '_dmarc IN TXT "v=DMARC1; p=none"']) as dns:
        code, out = dns_check(site, dns)
    assert out == [
        HEADER,
        PTR_OK,
        BOUNCES_UNSIGNED,
        f"{DOMAIN}:",
        MX_OK,
        SPF_OK,
        f"  DKIM    warning: mail from {DOMAIN} is not signed: it has no DKIM key; "
        f"`smtpkit dkim keygen {DOMAIN}` makes one",
        "  DMARC   ok: p=none",
        MONITORING,
        MTA_STS_INFO,
        TLS_RPT_INFO,
    ]
    assert code == 0


# --- what is printed, published, makes it right ----------------------------------------------


def test_publishing_the_printed_records_makes_every_check_ok(tmp_path: Path) -> None:
    # An empty zone: no MX (and no address), SPF, DKIM, DMARC; no PTR for 127.0.0.1.
    site = make_site(tmp_path, key_types=("rsa", "ed25519"))
    with serve([], reverse=()) as dns:
        code, out = dns_check(site, dns)
    ed25519 = site.key("s2")
    assert out == [
        HEADER,
        "  PTR     missing: 127.0.0.1 has no PTR record: receivers distrust such mail; the "
        f"reverse zone is your hosting provider's: ask them to name {HOST}",
        f"          publish: 1.0.0.127.in-addr.arpa. IN PTR {HOST}.",
        f"{DOMAIN}:",
        "  MX      missing: no MX record and no address",
        f"          publish: {DOMAIN}. IN MX 10 {HOST}.",
        f"  SPF     missing: no SPF record (TXT v=spf1) at {DOMAIN}: receivers cannot tell "
        "forgeries",
        # The MX is not this server yet, so the proposal names its address, not "mx".
        f'          publish: {DOMAIN}. IN TXT "v=spf1 ip4:127.0.0.1 -all"',
        *dkim_missing(site),
        f"  DKIM    missing: no TXT record at s2._domainkey.{DOMAIN} for key s2 (ed25519): "
        "its signatures fail",
        f'          publish: s2._domainkey.{DOMAIN}. IN TXT "v=DKIM1; k=ed25519; '
        f'p={ed25519.public_data}"',
        f"  DMARC   missing: no DMARC record at _dmarc.{DOMAIN}",
        MONITORING,
        f"          publish: _dmarc.{DOMAIN}. IN TXT "
        f'"v=DMARC1; p=none; rua=mailto:postmaster@{DOMAIN}"',
        MTA_STS_INFO,
        TLS_RPT_INFO,
    ]
    assert code == 3
    # An RSA key's text is longer than one TXT string: split, in parentheses.
    rsa_record = published(out)[3]
    assert rsa_record.startswith(f"s1._domainkey.{DOMAIN}. IN TXT ( ") and rsa_record.endswith(
        '" )'
    )

    # Paste every printed record into the zone it belongs to, as an admin would.
    records = published(out)
    forward = [r for r in records if not r.split()[0].endswith(".in-addr.arpa.")]
    reverse = [r for r in records if r.split()[0].endswith(".in-addr.arpa.")]
    with serve(forward, reverse=reverse) as dns:
        code, out = dns_check(site, dns)
    assert out == [
        HEADER,
        PTR_OK,
        f"{DOMAIN}:",
        MX_OK,
        '  SPF     ok: "v=spf1 ip4:127.0.0.1 -all" authorizes 127.0.0.1',
        f"  DKIM    ok: s1._domainkey.{DOMAIN} publishes key s1 (rsa)",
        f"  DKIM    ok: s2._domainkey.{DOMAIN} publishes key s2 (ed25519)",
        "  DMARC   ok: p=none",
        MONITORING,
        MTA_STS_INFO,
        TLS_RPT_INFO,
    ]
    assert code == 0


def test_spf_that_authorizes_another_address(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    others = [MX, DMARC, site.key_record()]
    with serve([*others, '@ IN TXT "v=spf1 ip4:192.0.2.1 ~all"']) as dns:
        code, out = dns_check(site, dns)
    assert out[4:6] == [
        '  SPF     wrong: "v=spf1 ip4:192.0.2.1 ~all" does not authorize this server: '
        "127.0.0.1 gets softfail",
        f'          publish: {DOMAIN}. IN TXT "v=spf1 ip4:192.0.2.1 ip4:127.0.0.1 ~all"',
    ]
    assert out[3] == MX_OK
    assert code == 3
    # The amended record, in place of the old one, passes.
    with serve([*others, *published(out)]) as dns:
        code, out = dns_check(site, dns)
    assert out[4] == (
        '  SPF     ok: "v=spf1 ip4:192.0.2.1 ip4:127.0.0.1 ~all" authorizes 127.0.0.1'
    )
    assert code == 0


def test_spf_problems(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    others = [MX, DMARC, site.key_record()]
    # Two SPF records: a permerror for every receiver (RFC 7208 4.5).
    with serve([*others, '@ IN TXT "v=spf1 mx -all"', '@ IN TXT "v=spf1 a -all"']) as dns:
        code, out = dns_check(site, dns)
    spf = [line for line in out if line.startswith("  SPF") or line.startswith("          ")]
    assert spf == [
        f"  SPF     wrong: 2 SPF records at {DOMAIN}: receivers treat that as an error "
        "(permerror, RFC 7208 4.5); replace them with one",
        '          note: found: "v=spf1 a -all"',
        '          note: found: "v=spf1 mx -all"',
        f'          publish: {DOMAIN}. IN TXT "v=spf1 mx -all"',
    ]
    assert code == 3
    # An unknown mechanism: pyspf's permerror, in its own words.
    with serve([*others, '@ IN TXT "v=spf1 mx moo -all"']) as dns:
        code, out = dns_check(site, dns)
    assert out[4:6] == [
        '  SPF     wrong: "v=spf1 mx moo -all" is invalid (permerror): '
        "Unknown mechanism found: moo",
        f'          publish: {DOMAIN}. IN TXT "v=spf1 mx -all"',
    ]
    assert code == 3
    # Other TXT records at the domain are no SPF record.
    with serve([*others, '@ IN TXT "google-site-verification=abc"']) as dns:
        code, out = dns_check(site, dns)
    assert out[4:6] == [
        f"  SPF     missing: no SPF record (TXT v=spf1) at {DOMAIN}: receivers cannot tell "
        "forgeries",
        f'          publish: {DOMAIN}. IN TXT "v=spf1 mx -all"',
    ]
    assert code == 3


def test_the_record_keygen_prints_is_what_the_check_accepts(tmp_path: Path) -> None:
    # What `smtpkit dkim keygen` printed, pasted into the zone as it is (quoted strings of at
    # most 255 bytes, on one line), not the check's own rendering of the key.
    site = make_site(tmp_path, key_types=())
    made = smtpkit("dkim", "keygen", DOMAIN, "--selector", "s1", config=site.config)
    (printed,) = [line for line in made.stdout.splitlines() if " IN TXT " in line]
    assert printed.startswith(f's1._domainkey.{DOMAIN}. IN TXT "v=DKIM1; k=rsa; p=')
    with serve([MX, SPF, DMARC, printed]) as dns:
        code, out = dns_check(site, dns)
    assert out[5] == f"  DKIM    ok: s1._domainkey.{DOMAIN} publishes key s1 (rsa)"
    assert published(out) == []
    assert code == 0


SPF_BY_ADDRESS = '@ IN TXT "v=spf1 ip4:127.0.0.1 -all"'  # keeps passing when the MX moves


@pytest.mark.parametrize(
    ("wrong", "reverse", "fixed"),
    [
        pytest.param(
            [MX, DMARC, 's1._domainkey IN TXT "v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOC"'],
            [PTR],
            f"  DKIM    ok: s1._domainkey.{DOMAIN} publishes key s1 (rsa)",
            id="dkim",
        ),
        pytest.param(
            [MX, '_dmarc IN TXT "v=DMARC1; p=rejct; rua=mailto:d@dc.test"'],
            [PTR],
            "  DMARC   ok: p=none",
            id="dmarc",
        ),
        pytest.param(
            ["@ IN MX 10 mx.elsewhere", "mx.elsewhere IN A 192.0.2.9", DMARC],
            [PTR],
            MX_OK,
            id="mx",
        ),
        pytest.param([MX, DMARC], ["1 IN PTR localhost.dc.test."], PTR_OK, id="ptr"),
    ],
)
def test_a_wrong_record_replaced_by_the_printed_one_passes(
    tmp_path: Path, wrong: list[str], reverse: list[str], fixed: str
) -> None:
    site = make_site(tmp_path)
    forward = [SPF_BY_ADDRESS, *wrong]
    if not any("_domainkey" in record for record in wrong):
        forward.append(site.key_record())
    with serve(forward, reverse=reverse) as dns:
        code, out = dns_check(site, dns)
    (record,) = published(out)
    assert fixed not in out
    assert code == 3
    # The printed record takes the place of the wrong one: same name, same type.
    name, _, kind = record.split()[:3]
    relative = name.removesuffix(f".{DOMAIN}.").removesuffix(f".{REVERSE}.")
    relative = "@" if relative == f"{DOMAIN}." else relative
    forward = [r for r in forward if r.split()[:3] != [relative, "IN", kind]]
    reverse = [r for r in reverse if r.split()[:3] != [relative, "IN", kind]]
    if name.endswith(f".{REVERSE}."):
        reverse.append(record)
    else:
        forward.append(record)
    with serve(forward, reverse=reverse) as dns:
        code, out = dns_check(site, dns)
    assert fixed in out
    assert published(out) == []
    assert code == 0


def test_unsigned_reports_are_a_warning_until_keygen(tmp_path: Path) -> None:
    site = make_site(tmp_path, key_types=())
    with serve([MX, SPF, DMARC]) as dns:
        code, out = dns_check(site, dns)
        assert out[:4] == [HEADER, PTR_OK, BOUNCES_UNSIGNED, f"{DOMAIN}:"]
        assert code == 0  # a warning: nothing in DNS is wrong
        smtpkit("dkim", "keygen", DOMAIN, "--selector", "s1", config=site.config)
        code, out = dns_check(site, dns)
    # The key of dc.test signs them, as mail.dc.test's parent: nothing more to say.
    assert out[:3] == [HEADER, PTR_OK, f"{DOMAIN}:"]
    assert BOUNCES_UNSIGNED not in out
    assert code == 3  # the new key's record is still to publish


def test_reports_no_configured_domain_can_sign(tmp_path: Path) -> None:
    # server.hostname outside every configured domain: keygen makes keys for those only,
    # and none of them is a parent of the name the reports come from.
    directory = tmp_path / "mail"
    smtpkit("init", str(directory), "--hostname", "mx.hosting.test", "--listen", "127.0.0.1:25",
            "--domain", DOMAIN)  # fmt: skip
    site = Site(directory / "smtpkit.toml", directory)
    smtpkit("dkim", "keygen", DOMAIN, "--selector", "s1", config=site.config)
    with serve([MX, SPF, DMARC, site.key_record()]) as dns:
        code, out = dns_check(site, dns)
    warning = (
        "  DKIM    warning: reports from MAILER-DAEMON@mx.hosting.test (bounces) are not "
        "signed: mx.hosting.test is within none of server.domains, whose keys could sign "
        f"them; name this server within one (as mail.{DOMAIN}), then "
    )
    assert [line for line in out if "bounces" in line] == [f"{warning}whose keys then sign them"]
    assert code == 3  # the PTR names mail.dc.test, not mx.hosting.test
    (site.directory / "dkim" / DOMAIN / "s1.key").unlink()
    with serve([MX, SPF, DMARC]) as dns:
        code, out = dns_check(site, dns)
    assert [line for line in out if "bounces" in line] == [
        f"{warning}`smtpkit dkim keygen {DOMAIN}`"
    ]


# --- DKIM, DMARC, PTR gone wrong ---------------------------------------------------------------


def test_dkim_records_that_do_not_match_the_key(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    other = make_site(tmp_path / "other").key()
    key = site.key()
    others = [MX, SPF, DMARC]
    expected_record = f"          publish: {site.key_record()}"
    cases = [
        (
            zone_txt(key.record_name, other.txt_record()),
            f"  DKIM    wrong: s1._domainkey.{DOMAIN} publishes another public key than "
            f"key s1 (rsa) in {key.path}: signatures fail",
        ),
        (
            zone_txt(key.record_name, "v=DKIM1; k=rsa; p="),
            f"  DKIM    wrong: s1._domainkey.{DOMAIN} has an empty p=, which revokes key s1 "
            "(rsa): signatures fail",
        ),
        (
            zone_txt(key.record_name, f"v=DKIM1; k=ed25519; p={key.public_data}"),
            f"  DKIM    wrong: s1._domainkey.{DOMAIN} says k=ed25519, but key s1 (rsa) is rsa",
        ),
        (
            f'{key.record_name}. IN TXT "hello"',
            f"  DKIM    wrong: the TXT record at s1._domainkey.{DOMAIN} is no DKIM key record "
            '(v=DKIM1 first, if at all, and p=): "hello"',
        ),
    ]
    for record, line in cases:
        with serve([*others, record]) as dns:
            code, out = dns_check(site, dns)
        assert out[5:7] == [line, expected_record], record
        assert code == 3
    # p= split over strings and lines, with white space, and no v= or k=: still the key.
    data = key.public_data
    spaced = (
        f'{key.record_name}. IN TXT ( "p={data[:100]} "\n  "  {data[100:300]}" "{data[300:]}" )'
    )
    with serve([*others, spaced]) as dns:
        code, out = dns_check(site, dns)
    assert out[5] == f"  DKIM    ok: s1._domainkey.{DOMAIN} publishes key s1 (rsa)"
    assert code == 0


def test_dmarc_problems(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    others = [MX, SPF, site.key_record()]
    with serve([*others, '_dmarc IN TXT "v=DMARC1; p=rejct; rua=mailto:d@dc.test"']) as dns:
        code, out = dns_check(site, dns)
    assert out[6:9] == [
        "  DMARC   wrong: p=rejct is not none, quarantine or reject: receivers ignore the "
        "record, or take it as p=none",
        MONITORING,
        f'          publish: _dmarc.{DOMAIN}. IN TXT "v=DMARC1; p=none; rua=mailto:d@dc.test"',
    ]
    assert code == 3
    with serve([*others, '_dmarc IN TXT "v=DMARC1; rua=mailto:d@dc.test"']) as dns:
        code, out = dns_check(site, dns)
    assert out[6:9] == [
        '  DMARC   wrong: "v=DMARC1; rua=mailto:d@dc.test" has no p= (none, quarantine or '
        "reject): receivers ignore it, or take it as p=none",
        MONITORING,
        f'          publish: _dmarc.{DOMAIN}. IN TXT "v=DMARC1; p=none; rua=mailto:d@dc.test"',
    ]
    assert code == 3
    # Policy words are case-insensitive (RFC 5234 2.3).
    with serve([*others, '_dmarc IN TXT "v=DMARC1;p=Quarantine"']) as dns:
        code, out = dns_check(site, dns)
    assert out[6] == "  DMARC   ok: p=quarantine"
    assert code == 0


def test_ptr_that_names_another_host(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    records = [MX, SPF, DMARC, site.key_record()]
    with serve(records, reverse=["1 IN PTR localhost.dc.test."]) as dns:
        code, out = dns_check(site, dns)
    assert out[:3] == [
        HEADER,
        f"  PTR     wrong: 127.0.0.1 -> localhost.dc.test, not {HOST}, the name this server "
        "greets with; ask your hosting provider to change it",
        f"          publish: 1.0.0.127.in-addr.arpa. IN PTR {HOST}.",
    ]
    assert code == 3


def test_ptr_whose_name_leads_elsewhere(tmp_path: Path) -> None:
    # The PTR names mail.dc.test, but mail.dc.test is 192.0.2.25: no FCrDNS, and no MX here.
    site = make_site(tmp_path)
    zone_records = ["ns IN A 127.0.0.1", "mail IN A 192.0.2.25", MX, SPF, DMARC, site.key_record()]
    zones = {DOMAIN: zone(DOMAIN, zone_records), REVERSE: zone(REVERSE, [PTR])}
    with run_nsd(zones) as dns:
        code, out = dns_check(site, dns)
    assert out[:6] == [
        HEADER,
        f"  PTR     wrong: 127.0.0.1 -> {HOST}, but {HOST} does not lead back to 127.0.0.1 "
        "(192.0.2.25)",
        f"          publish: {HOST}. IN A 127.0.0.1",
        f"{DOMAIN}:",
        f"  MX      wrong: its mail goes to {HOST} (192.0.2.25), not to this server",
        f"          note: {HOST} now resolves to 192.0.2.25: replace those records",
    ]
    assert out[6] == f"          publish: {HOST}. IN A 127.0.0.1"
    assert code == 3


def test_mx_elsewhere(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    records = ["@ IN MX 10 mx.elsewhere", "mx.elsewhere IN A 192.0.2.9", DMARC, site.key_record()]
    with serve(records) as dns:
        code, out = dns_check(site, dns)
    assert out[3:8] == [
        f"  MX      wrong: its mail goes to mx.elsewhere.{DOMAIN} (192.0.2.9), not to this server",
        f"          publish: {DOMAIN}. IN MX 10 {HOST}.",
        f"  SPF     missing: no SPF record (TXT v=spf1) at {DOMAIN}: receivers cannot tell "
        "forgeries",
        f'          publish: {DOMAIN}. IN TXT "v=spf1 ip4:127.0.0.1 -all"',
        f"  DKIM    ok: s1._domainkey.{DOMAIN} publishes key s1 (rsa)",
    ]
    assert code == 3


def test_address_option_says_what_this_server_is(tmp_path: Path) -> None:
    # Behind NAT: other servers see 192.0.2.7, not the listen address.
    site = make_site(tmp_path)
    with serve([MX, SPF, DMARC, site.key_record()], reverse=()) as dns:
        code, out = dns_check(site, dns, "--address", "192.0.2.7")
    assert out[:9] == [
        f"this server: {HOST} at 192.0.2.7 (--address)",
        "  PTR     cannot tell: 192.0.2.7: DNS failure (SERVFAIL or refused); try again later",
        f"{DOMAIN}:",
        f"  MX      wrong: its mail goes to {HOST} (127.0.0.1), not to this server",
        f"          note: {HOST} now resolves to 127.0.0.1: replace those records",
        f"          publish: {HOST}. IN A 192.0.2.7",
        '  SPF     wrong: "v=spf1 mx -all" does not authorize this server: 192.0.2.7 gets fail',
        f'          publish: {DOMAIN}. IN TXT "v=spf1 mx ip4:192.0.2.7 -all"',
        f"  DKIM    ok: s1._domainkey.{DOMAIN} publishes key s1 (rsa)",
    ]
    assert code == 3


# --- DNS failures ------------------------------------------------------------------------------


def test_a_nameserver_that_never_answers(tmp_path: Path, silent_nameserver: str) -> None:  # noqa: F811
    site = make_site(tmp_path)
    code, out = dns_check(site, silent_nameserver, "--timeout", "0.3")
    wait = "no DNS answer within 0.3s; try again later"
    assert out == [
        HEADER,
        f"  PTR     cannot tell: 127.0.0.1: {wait}",
        f"{DOMAIN}:",
        f"  MX      cannot tell: {wait}",
        f"  SPF     cannot tell: {wait}",
        f"  DKIM    cannot tell: {wait}",
        f"  DMARC   cannot tell: {wait}",
        f"  MTA-STS info: not known: {wait}",
        f"  TLS-RPT info: not known: {wait}",
    ]
    assert code == 4


def test_a_record_to_publish_outranks_a_dns_failure(tmp_path: Path) -> None:
    # The reverse zone is not served (REFUSED: a DNS failure), and SPF is missing.
    site = make_site(tmp_path)
    zones = {DOMAIN: zone(DOMAIN, [*BASE, MX, DMARC, site.key_record()])}
    with run_nsd(zones) as dns:
        code, out = dns_check(site, dns)
    assert out[1] == (
        "  PTR     cannot tell: 127.0.0.1: DNS failure (SERVFAIL or refused); try again later"
    )
    assert out[4].startswith("  SPF     missing: ")
    assert code == 3


# --- the command line ------------------------------------------------------------------------


def test_json(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    with serve([MX, '@ IN TXT "v=spf1 -all"', site.key_record(), TLS_RPT]) as dns:
        code, out = dns_check(site, dns, "--json")
    assert len(out) == 1
    found = json.loads(out[0])
    assert found == {
        "domain": DOMAIN,
        "checks": [
            {
                "check": "mx",
                "status": "ok",
                "reason": "ours",
                "name": DOMAIN,
                "detail": f"{HOST} (127.0.0.1) at preference 10 is this server",
                "notes": [],
                "records": [],
            },
            {
                "check": "spf",
                "status": "wrong",
                "reason": "not-authorized",
                "name": DOMAIN,
                "detail": '"v=spf1 -all" does not authorize this server: 127.0.0.1 gets fail',
                "notes": [],
                "records": [f'{DOMAIN}. IN TXT "v=spf1 ip4:127.0.0.1 -all"'],
            },
            {
                "check": "dkim",
                "status": "ok",
                "reason": "match",
                "name": f"s1._domainkey.{DOMAIN}",
                "detail": f"s1._domainkey.{DOMAIN} publishes key s1 (rsa)",
                "notes": [],
                "records": [],
            },
            {
                "check": "dmarc",
                "status": "missing",
                "reason": "no-record",
                "name": f"_dmarc.{DOMAIN}",
                "detail": f"no DMARC record at _dmarc.{DOMAIN}",
                "notes": [MONITORING.strip().removeprefix("note: ")],
                "records": [
                    f'_dmarc.{DOMAIN}. IN TXT "v=DMARC1; p=none; rua=mailto:postmaster@{DOMAIN}"'
                ],
            },
            {
                "check": "ptr",
                "status": "ok",
                "reason": "fcrdns",
                "name": "1.0.0.127.in-addr.arpa",
                "detail": f"127.0.0.1 -> {HOST} -> 127.0.0.1",
                "notes": [],
                "records": [],
            },
            {
                "check": "dkim",
                "status": "ok",
                "reason": "signed",
                "name": HOST,
                "detail": f"reports from MAILER-DAEMON@{HOST} (bounces) are signed with the "
                f"keys of {DOMAIN}",
                "notes": [],
                "records": [],
            },
            {
                "check": "mta-sts",
                "status": "info",
                "reason": "not-published",
                "name": f"_mta-sts.{DOMAIN}",
                "detail": "not published (optional: lets senders insist on TLS, RFC 8461)",
                "notes": [],
                "records": [],
            },
            {
                "check": "tls-rpt",
                "status": "ok",
                "reason": "published",
                "name": f"_smtp._tls.{DOMAIN}",
                "detail": '"v=TLSRPTv1; rua=mailto:tls@dc.test"',
                "notes": [],
                "records": [],
            },
        ],
    }
    assert code == 3


def test_domains_given_must_be_configured(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    with serve([MX, SPF, DMARC, site.key_record()]) as dns:
        result = smtpkit(
            "dns", "check", "--nameserver", dns.nameserver, "--timeout", "2", "other.test",
            config=site.config, check=False,
        )  # fmt: skip
        assert result.returncode == 2
        assert result.stdout == ""
        assert result.stderr.splitlines()[-1] == (
            f"Error: Invalid value for 'DOMAIN': other.test is not one of server.domains ({DOMAIN})"
        )
        code, out = dns_check(site, dns, DOMAIN.upper())
    assert out[2:4] == [f"{DOMAIN}:", MX_OK]
    assert code == 0


def test_the_configured_nameservers_are_asked(tmp_path: Path) -> None:
    # No --nameserver: [dns] nameservers, which delivery asks too (the system's resolver
    # would not know dc.test).
    site = make_site(tmp_path)
    with serve([MX, SPF, DMARC, site.key_record()]) as dns:
        with site.config.open("a") as fh:
            fh.write(f'\n[dns]\nnameservers = ["{dns.nameserver}"]\n')
        result = smtpkit("dns", "check", "--timeout", "2", config=site.config, check=False)
    assert result.stdout.splitlines()[:4] == [HEADER, PTR_OK, f"{DOMAIN}:", MX_OK]
    assert result.returncode == 0


def test_no_config_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "smtpkit.toml"
    result = smtpkit("dns", "check", "--nameserver", "127.0.0.1:1", config=missing, check=False)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("Error: config file not found")
