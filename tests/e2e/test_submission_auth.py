"""AUTH and the sending limit on the submission listeners, end to end: a real `smtpkit serve`,
passwords set with `smtpkit user passwd --stdin`, Python's smtplib as the client."""

from __future__ import annotations

import base64
import smtplib
from pathlib import Path

import pytest

from tests.conftest import make_server
from tests.e2e.test_outbound import wait_until
from tests.e2e.test_submission import (
    PASSWORD,
    Submission,
    add_submission,
    set_password,
)

#: The longest password `smtpkit user passwd` accepts is 1024 bytes; this one is 1000, so
#: its AUTH PLAIN initial response (1360 base64 characters) is far over a 512-octet command
#: line, and under the 12288 octets RFC 4954 4 allows an AUTH line.
LONG_PASSWORD = "".join(chr(0x21 + i % 94) for i in range(1000)).replace(":", "-")


@pytest.mark.timeout(120)
def test_a_1000_byte_password_logs_in_with_plain_and_login(sub: Submission) -> None:
    assert len(LONG_PASSWORD.encode()) == 1000
    set_password(sub.server, "bob@example.org", LONG_PASSWORD)
    # PLAIN: the whole exchange is one AUTH command line with its initial response.
    with sub.smtp() as smtp:
        assert smtp.login("bob@example.org", LONG_PASSWORD) == (
            235,
            b"2.7.0 Authentication successful",
        )
        smtp.sendmail("bob@example.org", ["alice@example.org"], "Subject: long\r\n\r\nx\r\n")
    # LOGIN on the implicit-TLS listener: the password comes on a 334 continuation line.
    with smtplib.SMTP_SSL(sub.server.host, sub.implicit, context=sub.context()) as smtp:
        smtp.ehlo()
        smtp.user, smtp.password = "bob@example.org", LONG_PASSWORD
        assert smtp.auth("LOGIN", smtp.auth_login) == (235, b"2.7.0 Authentication successful")
    # A wrong long password is refused as a wrong password, not as a malformed line.
    with sub.smtp() as smtp, pytest.raises(smtplib.SMTPAuthenticationError) as caught:
        smtp.user, smtp.password = "bob@example.org", LONG_PASSWORD[:-1] + "!"
        smtp.auth("PLAIN", smtp.auth_plain)
    assert (caught.value.smtp_code, caught.value.smtp_error) == (
        535,
        b"5.7.8 Authentication credentials invalid",
    )
    assert len(sub.server.new_files("alice@example.org")) == 1


@pytest.mark.timeout(60)
def test_other_commands_keep_the_512_octet_line_limit(sub: Submission) -> None:
    with sub.smtp() as smtp:
        smtp.login("alice@example.org", PASSWORD)
        local = "a" * (512 - len("MAIL FROM:<@example.org>\r\n") + 1)
        assert smtp.docmd(f"MAIL FROM:<{local}@example.org>") == (
            500,
            b"5.5.6 Command line too long",
        )
        assert smtp.noop()[0] == 250


def one_worker_submission(root: Path, extra: str) -> Submission:
    """Like ``start_submission``, with one worker: the sending limit is counted in each
    worker, so one worker makes the count across sessions exact."""
    server = make_server(root)
    starttls, implicit = add_submission(server, extra)
    made = Submission(server, starttls, implicit)
    set_password(made.server, "alice@example.org", PASSWORD)
    set_password(made.server, "bob@example.org", PASSWORD)
    server.start("--workers", "1")
    return made


@pytest.mark.timeout(120)
def test_the_sending_limit_defers_the_next_message_of_that_user(tmp_path: Path) -> None:
    sub = one_worker_submission(tmp_path, "\n[limits]\nmax_messages_per_user_per_hour = 3\n")
    try:
        body = "Subject: {n}\r\n\r\nmessage {n}\r\n"
        with sub.smtp() as smtp:
            smtp.login("alice@example.org", PASSWORD)
            for n in (1, 2):
                smtp.sendmail("alice@example.org", ["bob@example.org"], body.format(n=n))
        # Counted per user across sessions: the third goes, the fourth waits.
        with sub.smtp() as smtp:
            smtp.login("alice@example.org", PASSWORD)
            smtp.sendmail("alice@example.org", ["friend@remote.example"], body.format(n=3))
            assert smtp.mail("alice@example.org") == (
                451,
                b"4.7.1 Sending limit reached, try again later",
            )
            # A temporary refusal: the session goes on, and stays refused.
            assert smtp.noop()[0] == 250
            assert smtp.mail("alice@example.org")[0] == 451
        # Another user has a limit of their own.
        with sub.smtp() as smtp:
            smtp.login("bob@example.org", PASSWORD)
            smtp.sendmail("bob@example.org", ["alice@example.org"], body.format(n=4))
        assert len(sub.server.new_files("bob@example.org")) == 2
        assert len(sub.queue()) == 1
        assert len(sub.server.new_files("alice@example.org")) == 1
    finally:
        sub.server.stop()


def smtp_from(sub: Submission, source: str) -> smtplib.SMTP:
    """A STARTTLS session from the loopback address ``source`` (any 127.0.0.0/8 address is
    this host's), as if from a client of its own."""
    smtp = smtplib.SMTP(sub.server.host, sub.starttls, timeout=30, source_address=(source, 0))
    smtp.starttls(context=sub.context())
    smtp.ehlo()
    return smtp


def plain_auth(smtp: smtplib.SMTP, user: str, password: str) -> tuple[int, bytes]:
    token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
    return smtp.docmd("AUTH", f"PLAIN {token}")


@pytest.mark.timeout(120)
def test_failures_for_one_user_from_many_addresses_throttle_that_user(tmp_path: Path) -> None:
    """A guesser spread over addresses (one failure each, never enough to block an address)
    still gets the user name blocked; the user's own address, where it logged in before,
    and other users are not."""
    sub = one_worker_submission(tmp_path, "")
    try:
        with smtp_from(sub, "127.0.0.1") as smtp:
            assert plain_auth(smtp, "alice@example.org", PASSWORD)[0] == 235
        for i in range(5):
            with smtp_from(sub, f"127.0.0.{11 + i}") as smtp:
                assert plain_auth(smtp, "alice@example.org", "guess")[0] == 535
        with smtp_from(sub, "127.0.0.20") as smtp:
            # Even the right password: no password is checked for that name for now.
            assert plain_auth(smtp, "Alice@example.org", PASSWORD) == (
                454,
                b"4.7.0 Too many authentication failures, try again later",
            )
            assert plain_auth(smtp, "bob@example.org", PASSWORD)[0] == 235
        with smtp_from(sub, "127.0.0.1") as smtp:
            assert plain_auth(smtp, "alice@example.org", PASSWORD)[0] == 235
        throttled = wait_until(
            "the throttled login in the journal",
            lambda: [
                r for r in sub.journal() if r["event"] == "auth" and r["result"] == "throttled"
            ],
        )
        assert [(r["user"], r["mechanism"]) for r in throttled] == [("Alice@example.org", "PLAIN")]
    finally:
        sub.server.stop()
