"""End to end: SMTPUTF8 (RFC 6531) from smtplib to a real ``smtpkit serve``, into the Maildir
of a user added with ``smtpkit user add`` under a UTF-8 name.

swaks (20201014 here) cannot send SMTPUTF8, so smtplib is the client; the refusals use its
raw ``send`` where smtplib itself would refuse to send a UTF-8 command without the option.
"""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import MailServer, make_server
from tests.e2e.test_delivery import wait_for

NFC = "m\u00fcller@example.org"
NFD = "mu\u0308ller@example.org"
MESSAGE = (
    "From: J\u00fcrgen <j\u00fcrgen@remote.test>\r\nSubject: Gr\u00fc\u00dfe\r\n\r\nHall\u00f6\r\n"
)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[MailServer]:
    mail = make_server(tmp_path, users=("alice@example.org", "M\u00fcller@example.org"))
    mail.start()
    try:
        yield mail
    finally:
        if mail.process is not None:
            mail.stop()


def test_utf8_mail_reaches_the_users_mailbox_in_every_spelling(server: MailServer) -> None:
    assert server.maildir(NFC).is_dir()  # `user add` named it in NFC, lower case
    with smtplib.SMTP(server.host, server.port, local_hostname="client.test") as smtp:
        smtp.ehlo()
        assert smtp.has_extn("smtputf8")
        for recipient in (NFC, NFD):
            refused = smtp.sendmail(
                "j\u00fcrgen@remote.test",
                [recipient],
                MESSAGE.encode(),
                mail_options=["SMTPUTF8", "BODY=8BITMIME"],
            )
            assert refused == {}
    files = server.new_files(NFC)
    assert len(files) == 2
    for path, recipient in zip(
        sorted(files, key=lambda p: p.stat().st_mtime_ns), (NFC, NFD), strict=True
    ):
        data = path.read_bytes()
        head, _, message = data.partition(b"From: J")
        assert head.startswith("Return-Path: <j\u00fcrgen@remote.test>\r\n".encode())
        assert b"by mx.test.example (smtpkit) with UTF8SMTP id " in head
        assert f"for <{recipient}>;".encode() in head
        assert b"From: J" + message == MESSAGE.encode()
    assert server.new_files("alice@example.org") == []


def test_ascii_mail_in_the_same_session_is_esmtp(server: MailServer) -> None:
    with smtplib.SMTP(server.host, server.port, local_hostname="client.test") as smtp:
        smtp.sendmail("s@remote.test", ["alice@example.org"], b"Subject: a\r\n\r\nx\r\n")
        smtp.sendmail(
            "s@remote.test", ["alice@example.org"], b"Subject: b\r\n\r\nx\r\n", ["SMTPUTF8"]
        )
    withs = sorted(
        path.read_bytes().split(b"(smtpkit) with ", 1)[1].split(b" ", 1)[0]
        for path in server.new_files("alice@example.org")
    )
    assert withs == [b"ESMTP", b"UTF8SMTP"]


def test_without_smtputf8_utf8_addresses_are_refused(server: MailServer) -> None:
    with smtplib.SMTP(server.host, server.port, local_hostname="client.test") as smtp:
        smtp.ehlo()
        smtp.send("MAIL FROM:<j\u00fcrgen@remote.test> BODY=8BITMIME\r\n".encode())
        assert smtp.getreply() == (
            553,
            b"5.6.7 Non-ASCII addresses are not permitted without SMTPUTF8",
        )
        assert smtp.mail("s@remote.test") == (250, b"2.1.0 Sender OK")
        # A recipient too, be it a user of ours or another domain's (RFC 6531 3.3 / 3.5).
        for recipient in (NFC, "m\u00fcller@elsewhere.test"):
            smtp.send(f"RCPT TO:<{recipient}>\r\n".encode())
            assert smtp.getreply() == (
                553,
                b"5.6.7 Non-ASCII addresses are not permitted without SMTPUTF8",
            )
    assert server.new_files(NFC) == []

    def refused() -> list[object]:
        return [r.get("to", r.get("sender")) for r in server.journal() if r.get("code") == 553]

    wait_for(lambda: len(refused()) == 3)
    assert refused() == ["j\u00fcrgen@remote.test", NFC, "m\u00fcller@elsewhere.test"]
    journal = b"".join(p.read_bytes() for p in (server.directory / "journal").iterdir())
    assert journal.isascii()


@pytest.mark.parametrize(
    "recipient",
    [
        "\uff4d\u00fcller@example.org",  # FULLWIDTH LATIN SMALL LETTER M
        "\u212a\u00fcller@example.org",  # KELVIN SIGN, which NFC would make "K"
        "m\u00fcller@\uff45xample.org",  # FULLWIDTH LATIN SMALL LETTER E in the domain
    ],
)
def test_look_alikes_get_the_syntax_reply(server: MailServer, recipient: str) -> None:
    with smtplib.SMTP(server.host, server.port, local_hostname="client.test") as smtp:
        smtp.ehlo()
        assert smtp.mail("s@remote.test", ["SMTPUTF8"])[0] == 250
        assert smtp.rcpt(recipient) == (501, b"5.1.3 Bad destination mailbox address syntax")
        assert smtp.rcpt("nobody\u00e9@example.org") == (550, b"5.1.1 No such user here")
        assert smtp.rcpt("m\u00fcller@elsewhere.test") == (550, b"5.7.1 Relaying denied")
        assert smtp.rcpt(NFD) == (250, b"2.1.5 Recipient OK")
