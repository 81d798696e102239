"""End to end: an international (RFC 6531) user gets a password with the real ``smtpkit user
add`` and ``smtpkit user passwd --stdin``, logs in over STARTTLS submission of a real ``smtpkit
serve`` with AUTH PLAIN and LOGIN in any spelling of its address, never through a look-alike,
and sends as itself with SMTPUTF8.

smtplib encodes SASL responses as ASCII (``SMTP.auth`` calls ``.encode('ascii')``), so it
cannot log in a UTF-8 user: the AUTH lines are written with ``docmd``, base64 of the UTF-8
bytes, as RFC 4954 has them. Addresses are written with escapes: an NFD spelling looks just
like the NFC one in an editor.
"""

from __future__ import annotations

import base64
import imaplib
import pwd
import smtplib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import MailServer, make_server, smtpkit
from tests.e2e import test_dovecot
from tests.e2e.test_dovecot import (  # noqa: F401 - fixtures
    _SOURCES,
    Dovecot,
    dovecot_program,
    root,
    start_dovecot,
    stop_dovecot,
)
from tests.e2e.test_outbound import wait_until
from tests.e2e.test_service_user import owned_server, service_user  # noqa: F401 - a fixture
from tests.e2e.test_submission import Submission, add_submission

MUELLER = "m\u00fcller@xn--bcher-kva.example"  # the canonical form, the mailbox's name
KUEHN = "k\u00fchn@xn--bcher-kva.example"
PASSWORDS = {MUELLER: "gr\u00fc\u00dfe aus m\u00fcnchen", KUEHN: "kuehns geheimnis"}
SPELLINGS = [
    "M\u00fcller@b\u00fccher.example",  # NFC, upper-case M, U-label domain
    "Mu\u0308ller@bu\u0308cher.example",  # NFD
    "m\u00fcller@xn--bcher-kva.example",  # the A-label domain
    "MU\u0308LLER@XN--BCHER-KVA.EXAMPLE",  # NFD, upper case, A-label
]

AUTH_OK = (235, b"2.7.0 Authentication successful")
AUTH_FAILED = (535, b"5.7.8 Authentication credentials invalid")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def auth_plain(smtp: smtplib.SMTP, user: str, password: str) -> tuple[int, bytes]:
    return smtp.docmd("AUTH", "PLAIN " + b64(f"\0{user}\0{password}".encode()))


def auth_login(smtp: smtplib.SMTP, user: str, password: str) -> tuple[int, bytes]:
    assert smtp.docmd("AUTH", "LOGIN") == (334, b"VXNlcm5hbWU6")
    assert smtp.docmd(b64(user.encode())) == (334, b"UGFzc3dvcmQ6")
    return smtp.docmd(b64(password.encode()))


def passwd(server_config: Path, address: str, password: str) -> str:
    """``smtpkit user passwd --stdin ADDRESS``, the password as UTF-8 on standard input."""
    result = subprocess.run(
        [sys.executable, "-m", "smtpkit", "-c", str(server_config), "user", "passwd",
         "--stdin", address],
        input=(password + "\n").encode(), capture_output=True, check=True, timeout=60,
    )  # fmt: skip
    return result.stdout.decode()


@pytest.fixture
def sub(tmp_path: Path) -> Iterator[Submission]:
    server = make_server(tmp_path, domains=("example.org", "b\u00fccher.example"))
    added = smtpkit(
        "user", "add", "M\u00fcller@b\u00fccher.example", "k\u00fchn@b\u00fccher.example",
        config=server.config,
    )  # fmt: skip
    assert added.stdout.splitlines()[:2] == [
        f"Added {MUELLER} ({server.directory / 'users' / MUELLER})",
        f"Added {KUEHN} ({server.directory / 'users' / KUEHN})",
    ]
    # Set in the NFD spelling: stored, like the mailbox, under the canonical name.
    assert passwd(server.config, "Mu\u0308ller@bu\u0308cher.example", PASSWORDS[MUELLER]) == (
        f"Password set for {MUELLER}\n"
    )
    assert passwd(server.config, KUEHN, PASSWORDS[KUEHN]) == f"Password set for {KUEHN}\n"
    names = [line.split(b":", 1)[0] for line in (server.directory / "passwd").read_bytes().split()]
    assert names == [MUELLER.encode(), KUEHN.encode()]
    listed = smtpkit("user", "list", config=server.config).stdout.splitlines()
    assert [line.split()[0] + " " + line.split()[-1] for line in listed[1:]] == [
        "alice@example.org no",
        "bob@example.org no",
        f"{KUEHN} yes",
        f"{MUELLER} yes",
    ]
    starttls, implicit = add_submission(server)
    server.start("--workers", "2")
    made = Submission(server, starttls, implicit)
    yield made
    if server.process is not None:
        server.stop()


def auth_records(sub: Submission, count: int) -> list[dict[str, object]]:
    """The journal's auth records, once there are ``count`` of them (workers append every
    20 ms)."""
    found = wait_until(
        f"{count} auth records in the journal",
        lambda: (
            (records := [r for r in sub.journal() if r["event"] == "auth"])
            and len(records) >= count
            and records
        ),
    )
    assert isinstance(found, list) and len(found) == count, found
    return found


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_every_spelling_logs_in_with_plain_and_login(sub: Submission, spelling: str) -> None:
    with sub.smtp() as smtp:
        assert "PLAIN" in smtp.esmtp_features["auth"].split()
        assert auth_plain(smtp, spelling, PASSWORDS[MUELLER]) == AUTH_OK
    with sub.smtp() as smtp:
        assert auth_login(smtp, spelling, PASSWORDS[MUELLER]) == AUTH_OK
    records = auth_records(sub, 2)
    assert [(r["mechanism"], r["user"], r["result"]) for r in records] == [
        ("PLAIN", MUELLER, "ok"),
        ("LOGIN", MUELLER, "ok"),
    ]


def test_look_alikes_and_wrong_passwords_get_535(sub: Submission) -> None:
    attempts = [
        # U+212A KELVIN SIGN, which NFC makes "K": kühn's password must not let it in.
        (auth_plain, "\u212a\u00fchn@b\u00fccher.example", PASSWORDS[KUEHN]),
        # U+0137 LATIN SMALL LETTER K WITH CEDILLA: a letter of its own, nobody's name.
        (auth_plain, "\u0137\u00fchn@b\u00fccher.example", PASSWORDS[KUEHN]),
        # FULLWIDTH LATIN SMALL LETTER M, which NFKC makes "m".
        (auth_login, "\uff4d\u00fcller@b\u00fccher.example", PASSWORDS[MUELLER]),
        # The right user with the other user's password.
        (auth_plain, "m\u00fcller@b\u00fccher.example", PASSWORDS[KUEHN]),
    ]
    for login, user, password in attempts:
        with sub.smtp() as smtp:  # one connection each: 3 failures end a session
            assert login(smtp, user, password) == AUTH_FAILED
            assert smtp.mail(MUELLER, ["SMTPUTF8"]) == (530, b"5.7.0 Authentication required")
    records = auth_records(sub, len(attempts))
    assert [(r["user"], r["result"]) for r in records] == [
        (user, "failed") for _, user, _ in attempts
    ]
    # Both users still log in (the failures stayed under the limit of the address).
    with sub.smtp() as smtp:
        assert auth_plain(smtp, "K\u00fchn@b\u00fccher.example", PASSWORDS[KUEHN]) == AUTH_OK


def test_credentials_that_are_no_utf8_cannot_be_decoded(sub: Submission) -> None:
    with sub.smtp() as smtp:
        latin1 = b"\0m\xfcller@b\xfccher.example\0" + PASSWORDS[MUELLER].encode()
        assert smtp.docmd("AUTH", "PLAIN " + b64(latin1)) == (
            501,
            b"5.5.2 Cannot decode the response",
        )
        assert auth_plain(smtp, SPELLINGS[1], PASSWORDS[MUELLER]) == AUTH_OK


def test_the_utf8_user_sends_as_itself_with_smtputf8(sub: Submission) -> None:
    sender = "M\u00fcller@b\u00fccher.example"
    with sub.smtp() as smtp:
        assert smtp.has_extn("smtputf8")
        assert auth_plain(smtp, "Mu\u0308ller@bu\u0308cher.example", PASSWORDS[MUELLER]) == AUTH_OK
        refused = smtp.sendmail(
            sender,
            ["alice@example.org", "K\u00fchn@b\u00fccher.example"],
            "Subject: Gr\u00fc\u00dfe\r\n\r\nHall\u00f6\r\n".encode(),
            mail_options=["SMTPUTF8"],
        )
        assert refused == {}
        # Another user's address is not this user's to send as.
        assert smtp.mail("k\u00fchn@b\u00fccher.example", ["SMTPUTF8"]) == (
            553,
            b"5.7.1 Sender address not owned by the authenticated user",
        )
    for mailbox in ("alice@example.org", KUEHN):
        (path,) = sub.server.new_files(mailbox)
        data = path.read_bytes()
        assert data.startswith(f"Return-Path: <{sender}>\r\n".encode())
        assert b"by mx.test.example (smtpkit) with UTF8SMTPSA id " in data
        assert data.endswith("Subject: Gr\u00fc\u00dfe\r\n\r\nHall\u00f6\r\n".encode())


def test_the_utf8_user_may_name_itself_in_from(sub: Submission) -> None:
    with sub.smtp() as smtp:
        assert auth_plain(smtp, MUELLER, PASSWORDS[MUELLER]) == AUTH_OK
        assert smtp.mail("m\u00fcller@b\u00fccher.example", ["SMTPUTF8"])[0] == 250
        assert smtp.rcpt("alice@example.org")[0] == 250
        message = "From: M\u00fcller <M\u00fcller@b\u00fccher.example>\r\nSubject: x\r\n\r\nx\r\n"
        assert smtp.data(message.encode())[0] == 250
    assert len(sub.server.new_files("alice@example.org")) == 1


# --- Dovecot reads the same password file -----------------------------------------------------

# Dovecot 2.3's default auth_username_chars (ASCII letters, digits and ".-_@") refuses every
# non-ASCII byte before it looks at the file; empty, it allows any.
ANY_USERNAME_CHARS = "auth_username_chars =\n"


@pytest.fixture
def utf8_data(root: Path, service_user: pwd.struct_passwd) -> tuple[MailServer, bytes]:  # noqa: F811
    """The README's service layout with müller@bücher.example, its password, and one message
    smtpkit delivered to it with SMTPUTF8."""
    server = owned_server(
        root, service_user, domains=("example.org", "b\u00fccher.example"),
        users=("alice@example.org", "M\u00fcller@b\u00fccher.example"),
    )  # fmt: skip
    config = server.config
    server.start()
    with smtplib.SMTP(server.host, server.port, timeout=30) as client:
        client.sendmail(
            "j\u00fcrgen@remote.test",
            ["mu\u0308ller@bu\u0308cher.example"],
            "Subject: Gr\u00fc\u00dfe\r\n\r\nLies mich \u00fcber IMAP.\r\n".encode(),
            mail_options=["SMTPUTF8"],
        )
    assert server.stop() == 0
    [stored] = server.new_files(MUELLER)
    assert passwd(config, "M\u00fcller@b\u00fccher.example", PASSWORDS[MUELLER]) == (
        f"Password set for {MUELLER}\n"
    )
    return server, stored.read_bytes()


def imap_login(dovecot: Dovecot, user: str, password: str) -> imaplib.IMAP4 | None:
    """A client logged in with AUTHENTICATE PLAIN (UTF-8, as RFC 4616 has it), or None when
    Dovecot refused; each attempt from a loopback address of its own."""
    client = dovecot.imap(next(_SOURCES))
    try:
        client.authenticate("PLAIN", lambda _: f"\0{user}\0{password}".encode())
    except imaplib.IMAP4.error:
        client.logout()
        return None
    return client


def test_dovecot_with_the_shipped_example_logs_the_utf8_user_in(
    dovecot_program: str,  # noqa: F811
    utf8_data: tuple[MailServer, bytes],
    service_user: pwd.struct_passwd,  # noqa: F811
) -> None:
    server, _ = utf8_data
    dovecot = start_dovecot(
        dovecot_program, server.directory.parent.parent, server.directory, service_user.pw_name
    )
    try:
        client = imap_login(dovecot, MUELLER, PASSWORDS[MUELLER])
        assert client is not None
        client.logout()
    finally:
        stop_dovecot(dovecot)


def test_dovecot_logs_the_utf8_user_in_by_its_canonical_name_and_reads_its_mail(
    dovecot_program: str,  # noqa: F811
    utf8_data: tuple[MailServer, bytes],
    service_user: pwd.struct_passwd,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server, stored = utf8_data
    shipped = test_dovecot.adapted_example
    monkeypatch.setattr(
        test_dovecot, "adapted_example", lambda d, o: shipped(d, o) + ANY_USERNAME_CHARS
    )
    dovecot = start_dovecot(
        dovecot_program, server.directory.parent.parent, server.directory, service_user.pw_name
    )
    try:
        # Dovecot looks the name up as given, ASCII letters lower-cased (%Lu): the canonical
        # name, the one `smtpkit user list` shows, is the IMAP user name.
        for spelling in (MUELLER, "M\u00fcller@XN--BCHER-KVA.example"):
            client = imap_login(dovecot, spelling, PASSWORDS[MUELLER])
            assert client is not None, spelling
            assert client.select("INBOX") == ("OK", [b"1"])
            status, data = client.fetch("1", "(BODY.PEEK[])")
            assert status == "OK"
            fetched = data[0][1] if isinstance(data[0], tuple) else b""
            assert fetched.replace(b"\r\n", b"\n") == stored.replace(b"\r\n", b"\n")
            assert client.logout()[0] == "BYE"
        # It neither lower-cases non-ASCII letters nor normalizes Unicode nor maps a U-label
        # domain: those spellings log in to submission only.
        for spelling in (
            "M\u00dcLLER@xn--bcher-kva.example",
            "mu\u0308ller@xn--bcher-kva.example",
            "m\u00fcller@b\u00fccher.example",
        ):
            assert imap_login(dovecot, spelling, PASSWORDS[MUELLER]) is None, ascii(spelling)
        assert imap_login(dovecot, MUELLER, PASSWORDS[KUEHN]) is None
    finally:
        stop_dovecot(dovecot)
