"""SMTPUTF8 (RFC 6531) through a session: the policy, the router and the Received line."""

from __future__ import annotations

import json
import re
from ipaddress import ip_network
from pathlib import Path

import pytest

from smtpkit.config import ListenerRole
from smtpkit.delivery.queue import entry_name
from smtpkit.delivery.router import Router
from smtpkit.limits import Limits
from smtpkit.policy import Accept, LocalPolicy, Reject, SessionFacts, TlsInfo
from smtpkit.protocol import replies
from smtpkit.protocol.events import RcptTo
from tests.test_session import Harness, b64, codes, journal_events, submission

NFC = "m\u00fcller@example.org"
NFD = "mu\u0308ller@example.org"
NON_ASCII = "553 5.6.7 Non-ASCII addresses are not permitted without SMTPUTF8"
BAD_DESTINATION = "501 5.1.3 Bad destination mailbox address syntax"


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    harness = Harness(tmp_path, Limits(max_errors=20))
    harness.transport.take()
    harness.say(b"EHLO c\r\n")
    return harness


def send(h: Harness, sender: str, recipient: str, params: str = " SMTPUTF8") -> list[str]:
    return h.say(
        f"MAIL FROM:<{sender}>{params}\r\nRCPT TO:<{recipient}>\r\nDATA\r\n"
        "Subject: gr\u00fc\u00dfe\r\n\r\nhi\r\n.\r\n".encode()
    )


@pytest.mark.parametrize(
    "recipient", [NFC, NFD, "M\u00dcLLER@example.org", "m\u00fcller@EXAMPLE.org"]
)
def test_every_spelling_of_a_utf8_user_reaches_its_mailbox(h: Harness, recipient: str) -> None:
    box = h.store.add(NFC)
    assert box.name == NFC
    lines = send(h, "s\u00e9nder@remote.test", recipient)
    assert codes(lines) == ["250", "250", "354", "250"]
    (stored,) = (box / "new").iterdir()
    data = stored.read_bytes()
    assert data.startswith("Return-Path: <s\u00e9nder@remote.test>\r\n".encode())
    assert f"(smtpkit) with UTF8SMTP id {entry_name('sid.1')}\r\n".encode() in data
    assert f"\tfor <{recipient}>;".encode() in data
    assert data.endswith("Subject: gr\u00fc\u00dfe\r\n\r\nhi\r\n".encode())


def test_only_the_transaction_with_smtputf8_is_utf8smtp(h: Harness) -> None:
    h.store.add(NFC)
    assert codes(send(h, "a@remote.test", "alice@example.org")) == ["250", "250", "354", "250"]
    assert codes(send(h, "a@remote.test", "alice@example.org", "")) == ["250", "250", "354", "250"]
    protocols = sorted(
        re.search(rb"with (\S+) id", path.read_bytes())[1]  # type: ignore[index]
        for path in (h.alice / "new").iterdir()
    )
    assert protocols == [b"ESMTP", b"UTF8SMTP"]


def test_without_smtputf8_utf8_addresses_are_refused(h: Harness) -> None:
    """RFC 6531 3.3 / 3.5: without SMTPUTF8 a UTF-8 sender or recipient gets 553 5.6.7,
    whether the recipient names a user of ours, a domain of ours or another domain."""
    h.store.add(NFC)
    assert h.say(f"MAIL FROM:<{NFC}>\r\n".encode()) == [NON_ASCII]
    assert h.say(f"MAIL FROM:<{NFC}> BODY=8BITMIME\r\n".encode()) == [NON_ASCII]
    lines = h.say(
        f"MAIL FROM:<a@remote.test>\r\nRCPT TO:<{NFC}>\r\n"
        "RCPT TO:<nobody\u00e9@example.org>\r\n"
        "RCPT TO:<a@b\u00fccher.example>\r\nRSET\r\n".encode()
    )
    assert lines == ["250 2.1.0 Sender OK", NON_ASCII, NON_ASCII, NON_ASCII, "250 2.0.0 OK"]
    # RSET ends the transaction and its SMTPUTF8 with it.
    lines = h.say(
        f"MAIL FROM:<a@remote.test> SMTPUTF8\r\nRSET\r\nMAIL FROM:<a@remote.test>\r\n"
        f"RCPT TO:<{NFC}>\r\n".encode()
    )
    assert lines[-1] == NON_ASCII
    assert list((h.store.mailbox(NFC) / "new").iterdir()) == []
    h.journal.flush()
    text = "".join(p.read_text() for p in h.journal.directory.iterdir())
    assert text.isascii() and "m\\u00fcller@example.org" in text
    events = journal_events(h)
    refused = [(e["event"], e.get("to", e.get("sender"))) for e in events if e.get("code") == 553]
    assert refused == [
        ("mail", NFC),
        ("mail", NFC),
        ("rcpt", NFC),
        ("rcpt", "nobody\u00e9@example.org"),
        ("rcpt", "a@b\u00fccher.example"),
        ("rcpt", NFC),
    ]


@pytest.mark.parametrize("role", list(ListenerRole))
@pytest.mark.parametrize(
    ("peer", "user"),
    [("203.0.113.9", None), ("192.0.2.7", None), ("203.0.113.9", "alice@example.org")],
    ids=["stranger", "trusted-network", "authenticated"],
)
def test_every_listener_refuses_a_utf8_recipient_without_smtputf8(
    tmp_path: Path, role: ListenerRole, peer: str, user: str | None
) -> None:
    """The first RCPT rule answers 553 5.6.7 whoever asks and wherever, before any rule asks
    whose domain the address is in (the relay rules never see it)."""
    h = Harness(tmp_path, Limits())
    h.store.add(NFC)
    router = h.ctx.policy.rules.router  # type: ignore[attr-defined]
    (tmp_path / "queue").mkdir()
    policy = LocalPolicy(
        router, h.ctx.limits, queue=tmp_path / "queue", trusted=(ip_network("192.0.2.0/24"),)
    )
    facts = SessionFacts(peer, role, TlsInfo("TLSv1.3", "TLS_AES_256_GCM_SHA384"), user=user)
    for address in (NFC, "nobody\u00e9@example.org", "a@b\u00fccher.example", "\u7528@x.test"):
        assert policy.check_rcpt(facts, RcptTo(address)) == Reject(replies.NON_ASCII_ADDRESS)
    # With SMTPUTF8 the same local user is accepted.
    utf8 = SessionFacts(peer, role, facts.tls, user=user, smtputf8=True)
    assert isinstance(policy.check_rcpt(utf8, RcptTo(NFC)), Accept)


@pytest.mark.parametrize(
    "recipient",
    [
        "\uff4d\u00fcller@example.org",  # FULLWIDTH LATIN SMALL LETTER M
        "\u212alice@example.org",  # KELVIN SIGN, which NFC makes "K"
        "m\u00fcller@\uff45xample.org",  # a fullwidth "e" in our domain
        "m\u00fcller@example\u3002org",  # IDEOGRAPHIC FULL STOP
        "m\u00fc\ufb01ller@example.org",  # LATIN SMALL LIGATURE FI
        "m\u00fcller@[192.0.2.1]",
    ],
)
def test_look_alikes_are_refused_as_bad_syntax(h: Harness, recipient: str) -> None:
    h.store.add(NFC)
    h.store.add("klice@example.org")
    h.store.add("m\u00fcfiller@example.org")
    lines = h.say(f"MAIL FROM:<a@remote.test> SMTPUTF8\r\nRCPT TO:<{recipient}>\r\n".encode())
    assert lines == ["250 2.1.0 Sender OK", BAD_DESTINATION]


@pytest.mark.parametrize("sender", ["\uff41@remote.test", "\u212a\u00e9@remote.test"])
def test_a_look_alike_sender_is_a_syntax_error(h: Harness, sender: str) -> None:
    assert h.say(f"MAIL FROM:<{sender}> SMTPUTF8\r\n".encode()) == [
        "501 5.5.4 Syntax error in parameters or arguments"
    ]


def test_unknown_utf8_users_and_relaying_are_refused(h: Harness) -> None:
    lines = h.say(
        f"MAIL FROM:<a@remote.test> SMTPUTF8\r\nRCPT TO:<{NFC}>\r\n"
        "RCPT TO:<m\u00fcller@b\u00fccher.example>\r\nRCPT TO:<\u7528\u6237@remote.test>\r\n"
        "RCPT TO:<ascii@b\u00fccher.example>\r\n".encode()
    )
    assert lines == [
        "250 2.1.0 Sender OK",
        "550 5.1.1 No such user here",
        "550 5.7.1 Relaying denied",
        "550 5.7.1 Relaying denied",
        "550 5.7.1 Relaying denied",
    ]


def test_a_u_label_domain_of_ours_is_its_a_label(tmp_path: Path) -> None:
    h = Harness(tmp_path, Limits())
    h.transport.take()
    h.store.domains = ("xn--bcher-kva.example",)
    box = h.store.add("info@b\u00fccher.example")
    assert box.name == "info@xn--bcher-kva.example"
    router = Router(h.store, {}, h.store.domains)
    h.ctx.policy = LocalPolicy(router, h.ctx.limits)
    lines = h.say(
        b"EHLO c\r\nMAIL FROM:<a@remote.test> SMTPUTF8\r\n"
        + "RCPT TO:<INFO@B\u00dcCHER.example>\r\nRCPT TO:<info@xn--bcher-kva.example>\r\n".encode()
        + b"RCPT TO:<info@b\xc3\xbccher.example>\r\n"
    )
    assert codes(lines) == ["250", "250", "250", "250", "250"]


def test_a_user_relays_a_utf8_address_as_given(tmp_path: Path) -> None:
    h, auth = submission(tmp_path)
    remote = "J\u00fcrgen.Mu\u0308ller@b\u00fccher.example"
    lines = h.say(
        b"EHLO c\r\nAUTH PLAIN " + b64("\0alice@example.org\0secret") + b"\r\n"
        b"MAIL FROM:<alice@example.org> SMTPUTF8\r\n" + f"RCPT TO:<{remote}>\r\n".encode()
    )
    assert codes(lines)[-2:] == ["250", "250"]
    lines = h.say(b"DATA\r\nFrom: Alice <alice@example.org>\r\n\r\nhi\r\n.\r\n")
    assert lines[-1].startswith("250 2.0.0 OK")
    (envelope,) = (tmp_path / "queue").glob("*.env")
    data = json.loads(envelope.read_text())
    assert [r["address"] for r in data["recipients"]] == [remote]
    message = (tmp_path / "queue" / data["id"]).read_bytes()
    assert data["id"] == entry_name("sid.1")
    assert f"with UTF8SMTPSA id {data['id']} (using TLSv1.3".encode() in message
    # Without SMTPUTF8 an authenticated user's UTF-8 recipient is 553 5.6.7, as before.
    assert h.say(f"MAIL FROM:<alice@example.org>\r\nRCPT TO:<{remote}>\r\n".encode()) == [
        "250 2.1.0 Sender OK",
        NON_ASCII,
    ]
