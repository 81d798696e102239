"""The Verdict's three forms (Authentication-Results field, journal, DMARC action),
strip_authentication_results, and check_message the whole way against NSD, within its time
limit."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest

from smtpkit.dns import make_resolver
from smtpkit.mailauth.results import DkimResult, DmarcResult, SpfResult, Verdict
from smtpkit.mailauth.verify import check_message, preload, strip_authentication_results
from tests.dnsserver import DnsServer, run_nsd, silent_nameserver  # noqa: F401
from tests.test_mailauth_dkim import HEAD, STORED_ON_TOP, Key, sign, txt

ID = "mx.example.org"

SPF_PASS = SpfResult("pass", "a.test", "mailfrom", sender="alice@a.test")
DKIM_PASS = DkimResult("pass", "a.test", "sel", "rsa-sha256")
DMARC_PASS = DmarcResult("pass", "a.test", "reject")


# --- the Authentication-Results field ---------------------------------------------------------


def test_header_all_pass() -> None:
    verdict = Verdict(spf=SPF_PASS, dkim=(DKIM_PASS,), dmarc=DMARC_PASS, dkim_checked=True)
    assert verdict.header(ID) == (
        b"Authentication-Results: mx.example.org;\r\n"
        b"\tspf=pass smtp.mailfrom=alice@a.test;\r\n"
        b"\tdkim=pass header.d=a.test header.s=sel header.a=rsa-sha256;\r\n"
        b"\tdmarc=pass header.from=a.test\r\n"
    )


def test_header_nothing_checked() -> None:
    assert Verdict().header(ID) == b"Authentication-Results: mx.example.org; none\r\n"


def test_header_unsigned_message() -> None:
    assert Verdict(dkim_checked=True).header(ID) == (
        b"Authentication-Results: mx.example.org;\r\n\tdkim=none\r\n"
    )


def test_header_leaves_out_what_was_not_checked() -> None:
    # DKIM not checked (dkim_checked false): no dkim= at all, not dkim=none.
    assert Verdict(spf=SPF_PASS).header(ID) == (
        b"Authentication-Results: mx.example.org;\r\n\tspf=pass smtp.mailfrom=alice@a.test\r\n"
    )
    assert Verdict(dmarc=DMARC_PASS).header(ID) == (
        b"Authentication-Results: mx.example.org;\r\n\tdmarc=pass header.from=a.test\r\n"
    )


def test_header_helo_scope_reason_and_quoting() -> None:
    verdict = Verdict(
        spf=SpfResult("none", "[127.0.0.2]", "helo", reason="HELO name is not a domain"),
        dkim=(DkimResult("neutral", "", "", "", 'bad "tag"\tvalue ü'),),
        dmarc=DmarcResult("none", "", "none", "no From: field"),
    )
    assert verdict.header(ID) == (
        b"Authentication-Results: mx.example.org;\r\n"
        b'\tspf=none reason="HELO name is not a domain" smtp.helo="[127.0.0.2]";\r\n'
        b'\tdkim=neutral reason="bad \\"tag\\" value ?";\r\n'
        b'\tdmarc=none reason="no From: field"\r\n'
    )


def test_header_helo_scope_pass() -> None:
    verdict = Verdict(spf=SpfResult("pass", "mail.a.test", "helo"))
    assert verdict.header(ID) == (
        b"Authentication-Results: mx.example.org;\r\n\tspf=pass smtp.helo=mail.a.test\r\n"
    )


@pytest.mark.parametrize(
    ("sender", "shown"),
    [
        ("alice@a.test", b"alice@a.test"),
        ("", b"a.test"),  # no address kept: the domain
        ('"a b"@a.test', b"a.test"),  # a quoted local part: the domain
        ("j\xf6rg@a.test", b"a.test"),  # not ASCII: the domain
    ],
)
def test_header_mailfrom_value(sender: str, shown: bytes) -> None:
    verdict = Verdict(spf=SpfResult("fail", "a.test", "mailfrom", sender=sender))
    assert verdict.header(ID) == (
        b"Authentication-Results: mx.example.org;\r\n\tspf=fail smtp.mailfrom=" + shown + b"\r\n"
    )


def test_header_folds_long_results_within_78_columns() -> None:
    reason = "No valid SPF record for included domain: none.spf.test: include:none.spf.test"
    verdict = Verdict(
        spf=SpfResult(
            "permerror", "noinclude.spf.test", "mailfrom", reason=reason, sender="a@b.test"
        ),
        dkim=(
            DkimResult(
                "fail", "mail.example.test", "2026-11", "ed25519-sha256", "body hash mismatch"
            ),
        ),
        dmarc=DmarcResult("fail", "example.test", "reject", "no aligned SPF or DKIM pass"),
    )
    header = verdict.header(ID)
    assert header == (
        b"Authentication-Results: mx.example.org;\r\n"
        b'\tspf=permerror reason="No valid SPF record for included domain: none.spf.test:\r\n'
        b' include:none.spf.test" smtp.mailfrom=a@b.test;\r\n'
        b'\tdkim=fail reason="body hash mismatch" header.d=mail.example.test\r\n'
        b"\theader.s=2026-11 header.a=ed25519-sha256;\r\n"
        b'\tdmarc=fail reason="no aligned SPF or DKIM pass" header.from=example.test\r\n'
    )
    assert all(len(line) <= 78 for line in header.split(b"\r\n"))
    # Unfolding (RFC 5322 2.2.3: removing each CRLF) gives the reason back unchanged.
    assert f'reason="{reason}"'.encode() in header.replace(b"\r\n", b"")


def test_header_is_ascii_whatever_it_is_given() -> None:
    verdict = Verdict(
        dkim=(DkimResult("pass", "bücher.test", "sel", "ed25519-sha256"),),
    )
    assert verdict.header("mx.bücher.test") == (
        b'Authentication-Results: "mx.b?cher.test";\r\n'
        b'\tdkim=pass header.d="b?cher.test" header.s=sel header.a=ed25519-sha256\r\n'
    )


def test_results_refuse_unknown_words() -> None:
    with pytest.raises(ValueError):
        SpfResult("maybe", "a.test", "mailfrom")
    with pytest.raises(ValueError):
        SpfResult("pass", "a.test", "rcpt")
    with pytest.raises(ValueError):
        DkimResult("softfail", "a.test", "s", "rsa-sha256")
    with pytest.raises(ValueError):
        DmarcResult("pass", "a.test", "discard")


# --- journal and DMARC action -------------------------------------------------------------------


def test_journal() -> None:
    assert Verdict().journal() == {}
    assert Verdict(
        spf=SpfResult("pass", "a.test", "mailfrom", helo="none"),
        dkim=(DKIM_PASS, DkimResult("neutral", "", "", "")),
        dmarc=DmarcResult("fail", "a.test", "reject"),
        dkim_checked=True,
    ).journal() == {
        "spf": "pass",
        "spf_helo": "none",
        "dkim": ["pass a.test", "neutral"],
        "dmarc": "fail",
    }
    assert Verdict(dkim_checked=True).journal() == {"dkim": []}


@pytest.mark.parametrize(
    ("dmarc", "action"),
    [
        (None, "none"),
        (DmarcResult("pass", "a.test", "reject"), "none"),
        (DmarcResult("temperror", "a.test", "reject"), "none"),
        (DmarcResult("permerror", "a.test", "none"), "none"),
        (DmarcResult("fail", "a.test", "reject"), "reject"),
        (DmarcResult("fail", "a.test", "quarantine"), "quarantine"),
        (DmarcResult("fail", "a.test", "none"), "none"),
        (DmarcResult("fail", "a.test", "reject", pct=99), "quarantine"),
        (DmarcResult("fail", "a.test", "quarantine", pct=0), "none"),
    ],
)
def test_dmarc_action(dmarc: DmarcResult | None, action: str) -> None:
    assert Verdict(dmarc=dmarc).dmarc_action() == action


# --- strip_authentication_results -------------------------------------------------------------

FORGED = (
    b"Return-Path: <alice@a.test>\r\n"
    b"Authentication-Results: MX.Example.ORG;\r\n"
    b"\tspf=pass smtp.mailfrom=alice@a.test;\r\n"
    b"\tdkim=pass header.d=a.test\r\n"
    b"Received: from x by y; Mon, 30 Nov 2026 08:00:00 +0000\r\n"
    b"authentication-results : mx.example.org (forged) 1; dkim=pass\r\n"
    b"Authentication-Results: (a comment (nested)) mx.example.org; none\r\n"
    b'Authentication-Results: "mx.example.org"; none\r\n'
    b"Authentication-Results: other.example.net;\r\n spf=fail smtp.mailfrom=a.test\r\n"
    b"Authentication-Results: mx.example.org.evil.test; none\r\n"
    b"X-Authentication-Results: mx.example.org; none\r\n"
    b"Subject: Authentication-Results: mx.example.org; none\r\n"
    b"\r\n"
    b"Authentication-Results: mx.example.org; in the body\r\n"
)


def test_strip_only_ours_from_the_header_section() -> None:
    message, removed = strip_authentication_results(FORGED, ID)
    assert removed == 4
    assert message == (
        b"Return-Path: <alice@a.test>\r\n"
        b"Received: from x by y; Mon, 30 Nov 2026 08:00:00 +0000\r\n"
        b"Authentication-Results: other.example.net;\r\n spf=fail smtp.mailfrom=a.test\r\n"
        b"Authentication-Results: mx.example.org.evil.test; none\r\n"
        b"X-Authentication-Results: mx.example.org; none\r\n"
        b"Subject: Authentication-Results: mx.example.org; none\r\n"
        b"\r\n"
        b"Authentication-Results: mx.example.org; in the body\r\n"
    )


def test_strip_nothing_of_ours() -> None:
    assert strip_authentication_results(FORGED, "other.example.org") == (FORGED, 0)
    assert strip_authentication_results(FORGED, "") == (FORGED, 0)


def test_strip_with_lf_line_ends_and_no_body() -> None:
    message = b"Authentication-Results: mx.example.org;\n dkim=none\nSubject: x\n"
    assert strip_authentication_results(message, ID) == (b"Subject: x\n", 1)
    message = b"Subject: x\r\nAuthentication-Results: mx.example.org; none"
    assert strip_authentication_results(message, ID) == (b"Subject: x\r\n", 1)


def test_strip_then_our_header_is_the_only_one_of_ours() -> None:
    stripped, _ = strip_authentication_results(FORGED, ID)
    added = Verdict(spf=SPF_PASS).header(ID) + stripped
    assert strip_authentication_results(added, ID) == (stripped, 1)


# --- check_message against NSD ----------------------------------------------------------------


@pytest.fixture(scope="module")
def key() -> Key:
    return Key.ed25519()


@pytest.fixture(scope="module")
def nameserver(key: Key) -> Iterator[DnsServer]:
    zone = "\n".join(
        [
            "$ORIGIN v.test.",
            HEAD,
            '@ IN TXT "v=spf1 ip4:127.0.0.2 -all"',
            'mail IN TXT "v=spf1 ip4:127.0.0.2 -all"',
            '_dmarc IN TXT "v=DMARC1; p=reject"',
            txt("sel._domainkey", key.record()),
            "",
        ]
    )
    with run_nsd({"v.test": zone}) as server:
        yield server


MESSAGE = (
    b"From: Alice <alice@v.test>\r\n"
    b"To: bob@example.org\r\n"
    b"Subject: Hello\r\n"
    b"Message-ID: <2@v.test>\r\n"
    b"\r\n"
    b"Hello.\r\n"
)


def stored(key: Key) -> bytes:
    """As our server stores it: its Return-Path: and Received: on top of the signed message."""
    return STORED_ON_TOP.replace(b"dkim.test", b"v.test") + sign(MESSAGE, key, "v.test", "sel")


def check(server: DnsServer | str, message: bytes, ip: str, time_limit: float = 5) -> Verdict:
    nameserver = server if isinstance(server, str) else server.nameserver
    return check_message(
        message,
        client_ip=ip,
        helo="mail.v.test",
        mail_from="alice@v.test",
        resolver=make_resolver(nameserver, 2),
        time_limit=time_limit,
    )


def test_check_message_pass(nameserver: DnsServer, key: Key) -> None:
    verdict = check(nameserver, stored(key), "127.0.0.2")
    assert verdict == Verdict(
        spf=SpfResult("pass", "v.test", "mailfrom", helo="pass", sender="alice@v.test"),
        dkim=(DkimResult("pass", "v.test", "sel", "ed25519-sha256"),),
        dmarc=DmarcResult("pass", "v.test", "reject"),
        dkim_checked=True,
    )
    assert verdict.header(ID) == (
        b"Authentication-Results: mx.example.org;\r\n"
        b"\tspf=pass smtp.mailfrom=alice@v.test;\r\n"
        b"\tdkim=pass header.d=v.test header.s=sel header.a=ed25519-sha256;\r\n"
        b"\tdmarc=pass header.from=v.test\r\n"
    )
    assert verdict.journal() == {
        "spf": "pass",
        "spf_helo": "pass",
        "dkim": ["pass v.test"],
        "dmarc": "pass",
    }
    assert verdict.dmarc_action() == "none"


def test_check_message_fail(nameserver: DnsServer, key: Key) -> None:
    changed = stored(key).replace(b"Hello.", b"Hello!")
    verdict = check(nameserver, changed, "127.0.0.3")
    assert verdict.header(ID) == (
        b"Authentication-Results: mx.example.org;\r\n"
        b"\tspf=fail smtp.mailfrom=alice@v.test;\r\n"
        b'\tdkim=fail reason="body hash mismatch" header.d=v.test header.s=sel\r\n'
        b"\theader.a=ed25519-sha256;\r\n"
        b"\tdmarc=fail header.from=v.test\r\n"
    )
    assert verdict.dmarc_action() == "reject"


def test_check_message_unsigned_only_dkim(nameserver: DnsServer) -> None:
    verdict = check_message(
        MESSAGE,
        client_ip="127.0.0.2",
        helo="mail.v.test",
        mail_from="alice@v.test",
        resolver=make_resolver(nameserver.nameserver, 2),
        spf=False,
        dmarc=False,
    )
    assert verdict == Verdict(dkim_checked=True)
    assert verdict.header(ID) == b"Authentication-Results: mx.example.org;\r\n\tdkim=none\r\n"


def test_check_message_nothing_asked() -> None:
    verdict = check_message(
        MESSAGE,
        client_ip="127.0.0.2",
        helo="mail.v.test",
        mail_from="alice@v.test",
        resolver=make_resolver("127.0.0.1:9", 0.5),
        spf=False,
        dkim=False,
        dmarc=False,
    )
    assert verdict == Verdict()


def test_check_message_within_its_time_limit(
    silent_nameserver: str,  # noqa: F811
    key: Key,
) -> None:
    # Every query goes unanswered: the first takes the whole time limit, the others find
    # none left. Everything is temperror; nothing raises.
    started = time.monotonic()
    verdict = check(silent_nameserver, stored(key), "127.0.0.2", time_limit=1)
    elapsed = time.monotonic() - started
    assert verdict.spf == SpfResult(
        "temperror",
        "v.test",
        "mailfrom",
        helo="temperror",
        reason="DNS timeout for v.test TXT",
        sender="alice@v.test",
    )
    assert verdict.journal() == {
        "spf": "temperror",
        "spf_helo": "temperror",
        "dkim": ["temperror v.test"],
        "dmarc": "temperror",
    }
    assert verdict.dmarc_action() == "none"
    assert elapsed < 8


def test_preload() -> None:
    preload()  # nothing to see: it must only not fail


def test_header_lines_parse_back() -> None:
    # Every resinfo of a folded field, unfolded, reads method=result as RFC 8601 2.2 wants.
    verdict = Verdict(spf=SPF_PASS, dkim=(DKIM_PASS, DKIM_PASS), dmarc=DMARC_PASS)
    unfolded = verdict.header(ID).replace(b"\r\n", b"").decode("ascii")
    name, _, value = unfolded.partition(": ")
    assert name == "Authentication-Results"
    parts = [p.strip() for p in value.split(";")]
    assert parts[0] == ID
    assert [re.match(r"[a-z]+=[a-z]+", p)[0] for p in parts[1:]] == [  # type: ignore[index]
        "spf=pass",
        "dkim=pass",
        "dkim=pass",
        "dmarc=pass",
    ]
