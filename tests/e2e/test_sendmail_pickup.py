"""smtpkit-sendmail end to end: what local programs drop is delivered by a real server,
whether it was running or not; remote recipients wait in the queue."""

from __future__ import annotations

import email
import email.message
import email.policy
import json
import os
import pwd
import re
import subprocess
import sys
import time
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import MailServer, free_port, make_server, smtpkit, unavailable
from tests.scripted_smtp import Script, ScriptedServer

NOBODY = pwd.getpwnam("nobody")


def sendmail(
    server: MailServer, *args: str, message: bytes, runner: list[str] | None = None, **kw: Any
) -> subprocess.CompletedProcess[bytes]:
    command = runner or [sys.executable, "-m", "smtpkit.sendmail_main"]
    env = {**os.environ, "SMTPKIT_CONFIG": str(server.config)}
    return subprocess.run(
        [*command, *args], input=message, capture_output=True, env=env, timeout=60, **kw
    )


def wait_for(what: str, predicate: Any, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := predicate()):
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.05)
    return found


def stored_for(server: MailServer, address: str) -> list[bytes]:
    return [p.read_bytes() for p in server.new_files(address)]


def test_mail_dropped_while_stopped_is_delivered_at_start(tmp_path: Path) -> None:
    server = make_server(tmp_path)
    done = sendmail(server, "-i", "alice@example.org", message=b"Subject: early\n\nbefore start\n")
    assert done.returncode == 0, done.stderr
    assert len(list((server.directory / "maildrop").iterdir())) == 1
    server.start()
    try:
        (message,) = wait_for("delivery", lambda: stored_for(server, "alice@example.org"))
        head, body = message.split(b"\r\n\r\n", 1)
        assert b"\r\nSubject: early\r\n" in head and body == b"before start\r\n"
        assert b"(smtpkit, from userid 0)" in message
        assert message.startswith(b"Return-Path: <root@mx.test.example>\r\n")
        wait_for("an empty maildrop", lambda: not list((server.directory / "maildrop").iterdir()))
    finally:
        assert server.stop() == 0


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_an_ordinary_users_mail_reaches_a_running_server_as_that_user(
    open_tmp_path: Path, system_venv: Path
) -> None:
    """A cron job of `nobody`: cron's exact invocation, picked up at once (inotify); the
    sender is nobody's, whatever -f says; a remote recipient waits in the queue."""
    if os.geteuid() != 0:
        unavailable("running sendmail as another user needs root (CI runs as root)")
    # Nothing is sent on: the test looks at what waits in the queue.
    server = make_server(open_tmp_path, extra_config="\n[queue]\nhold = true\n")
    server.start()
    try:
        cron = [str(system_venv / "bin" / "smtpkit-sendmail")]
        message = (
            b"From: root (Cron Daemon)\nTo: alice@example.org, friend@remote.example\n"
            b"Subject: Cron <nobody@host> backup\n\n" + b"x" * 2500 + b"\nsecond line\n"
        )
        done = sendmail(
            server,
            "-FCronDaemon", "-i", "-B8BITMIME", "-oem", "-oi", "-t", "-f", "ceo@example.org",
            message=message, runner=cron, user=NOBODY.pw_uid, group=NOBODY.pw_gid,
            extra_groups=[],
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        (stored,) = wait_for("delivery", lambda: stored_for(server, "alice@example.org"))
        assert stored.startswith(b"Return-Path: <nobody@mx.test.example>\r\n")
        assert f"from userid {NOBODY.pw_uid}".encode() in stored
        body = stored.split(b"\r\n\r\n", 1)[1]
        # A 2,500-octet line is broken into lines of at most 998 (RFC 5321 4.5.3.1.6).
        assert (
            body
            == b"x" * 998 + b"\r\n" + b"x" * 998 + b"\r\n" + b"x" * 504 + b"\r\nsecond line\r\n"
        )
        out = smtpkit("queue", "list", "--json", config=server.config).stdout
        (queued,) = [json.loads(line) for line in out.splitlines()]
        assert queued["sender"] == "nobody@mx.test.example"
        assert [r["address"] for r in queued["recipients"]] == ["friend@remote.example"]
        stored_events = [r for r in server.journal() if r["event"] == "stored" and "uid" in r]
        assert stored_events[0]["uid"] == NOBODY.pw_uid
        assert stored_events[0]["to"] == ["alice@example.org", "friend@remote.example"]
    finally:
        assert server.stop() == 0


def test_unknown_local_recipients_are_journaled_and_the_rest_delivered(tmp_path: Path) -> None:
    server = make_server(tmp_path)
    server.start()
    try:
        done = sendmail(
            server, "nobody-here@example.org", "root", "bob@example.org",
            message=b"Subject: mixed\n\nhi\n",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        wait_for("delivery", lambda: stored_for(server, "bob@example.org"))

        def refused() -> list[dict[str, Any]]:
            return [r for r in server.journal() if r["event"] == "rcpt" and r["code"] == 550]

        lines = wait_for("the refusals in the journal", lambda: len(refused()) == 2 and refused())
        assert [r["to"] for r in lines] == ["nobody-here@example.org", "root@example.org"]
    finally:
        assert server.stop() == 0


def test_utf8_addresses_and_header_fields_from_a_local_program(tmp_path: Path) -> None:
    # A local program says no SMTPUTF8: the message is marked as needing it when an address
    # or a header field is UTF-8, so that the queue passes it on (or fails it) as for SMTP.
    server = make_server(
        tmp_path,
        users=("alice@example.org", "m\u00fcller@example.org"),
        # Mail for remote.example waits in the queue: its next hop does not answer.
        extra_config=f'[routes]\n"remote.example" = "127.0.0.1:{free_port()}"\n',
    )
    subject = "Subject: Gr\u00fc\u00dfe\n\nfrom cron\n".encode()
    for recipient in ("Mu\u0308ller@example.org", "j\u00f6rg@remote.example"):
        done = sendmail(server, "-i", recipient, message=subject)
        assert done.returncode == 0, done.stderr
    # A look-alike of a local user (U+212A KELVIN SIGN for k) reaches nobody.
    done = sendmail(server, "-i", "\u212aelvin@example.org", message=b"Subject: x\n\nx\n")
    assert done.returncode == 0, done.stderr
    server.start()
    try:
        (message,) = wait_for("delivery", lambda: stored_for(server, "m\u00fcller@example.org"))
        head, body = message.split(b"\r\n\r\n", 1)
        assert "\r\nSubject: Gr\u00fc\u00dfe\r\n".encode() in head and body == b"from cron\r\n"
        queue = server.directory / "queue"
        (envelope,) = wait_for("the queued copy", lambda: list(queue.glob("*.env")))
        data = json.loads(envelope.read_text())
        assert data["smtputf8"] is True
        assert [r["address"] for r in data["recipients"]] == ["j\u00f6rg@remote.example"]
        refused = wait_for(
            "the look-alike's refusal",
            lambda: [r for r in server.journal() if r["event"] == "rcpt" and r.get("code")],
        )
        assert [(r["to"], r["code"]) for r in refused] == [("\u212aelvin@example.org", 501)]
    finally:
        assert server.stop() == 0


# --- DSN requests: -N, -R and -V ------------------------------------------------------------
#
# Reports go to the envelope sender: root (and the data folder's owner) may name it with -f,
# so these tests send as alice@example.org, whose Maildir receives them. Remote domains are
# routed to ScriptedServers on 127.0.0.1 (no DNS world needed).

SENDER = "alice@example.org"


def reports(server: MailServer, address: str = SENDER) -> list[email.message.EmailMessage]:
    found = []
    for raw in stored_for(server, address):
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, email.message.EmailMessage)
        if message.get_content_type() == "multipart/report":
            found.append(message)
    return found


def status_blocks(report: email.message.EmailMessage) -> list[dict[str, str]]:
    """The message/delivery-status part's blocks (RFC 3464), the per-message one first."""
    part = next(p for p in report.walk() if p.get_content_type() == "message/delivery-status")
    return [{k: str(v) for k, v in block.items()} for block in part.get_payload()]


def routed_server(root: Path, routes: dict[str, int]) -> MailServer:
    lines = "".join(f'"{domain}" = "127.0.0.1:{port}"\n' for domain, port in routes.items())
    return make_server(
        root, extra_config=f"\n[routes]\n{lines}\n[queue]\nmin_retry = 1\nmax_retry = 2\n"
    )


def queue_empty(server: MailServer) -> bool:
    return not list((server.directory / "queue").glob("*.env"))


@pytest.mark.timeout(120)
def test_n_success_to_a_local_recipient_gets_a_delivered_report(tmp_path: Path) -> None:
    server = make_server(tmp_path)
    server.start()
    try:
        # Without -N: no success notice (RFC 3461 4.1: the default is FAILURE only).
        plain = sendmail(server, "-i", "-f", SENDER, "bob@example.org",
                         message=b"Subject: plain\n\nno notice\n")  # fmt: skip
        assert (plain.returncode, plain.stderr) == (0, b"")
        done = sendmail(
            server, "-i", "-f", SENDER, "-N", "success", "-V", "nightly-42", "bob@example.org",
            message=b"Subject: backup done\n\nall well\n",
        )  # fmt: skip
        assert (done.returncode, done.stderr) == (0, b"")
        (report,) = wait_for("the success notice", lambda: reports(server))
        assert report["To"] == SENDER
        assert report["Subject"] == "Successful Mail Delivery Report"
        message, rcpt = status_blocks(report)
        assert message["Original-Envelope-Id"] == "nightly-42"
        assert message["Reporting-MTA"] == "dns; mx.test.example"
        assert rcpt["Final-Recipient"] == "rfc822; bob@example.org"
        assert rcpt["Action"] == "delivered"
        assert rcpt["Status"] == "2.0.0"
        # Only the headers come back with a success notice (RFC 3461 4.3), of this message.
        (returned,) = [p for p in report.walk() if p.get_content_type() == "text/rfc822-headers"]
        assert "Subject: backup done" in returned.get_content()
        assert len(stored_for(server, "bob@example.org")) == 2
        (line,) = wait_for(
            "the report's journal line",
            lambda: [r for r in server.journal() if r["event"] == "report"],
        )
        assert (line["action"], line["to"], line["sender"]) == (
            "delivered", ["bob@example.org"], SENDER,
        )  # fmt: skip
    finally:
        assert server.stop() == 0


@pytest.mark.timeout(120)
def test_dsn_requests_reach_the_queue_as_smtps_do(tmp_path: Path) -> None:
    """-N success: a next hop without DSN makes the notice ours ("relayed"); one with DSN
    gets NOTIFY, RET and ENVID passed on, exactly as for mail submitted over SMTP."""
    with_dsn = Script(extensions=("PIPELINING", "8BITMIME", "DSN"))
    with ScriptedServer("127.0.0.1", 0) as plain, ScriptedServer("127.0.0.1", 0, with_dsn) as dsn:
        server = routed_server(tmp_path, {"plain.example": plain.port, "dsn.example": dsn.port})
        server.start()
        try:
            done = sendmail(
                server, "-i", "-f", SENDER, "-N", "success,failure", "-R", "hdrs",
                "-V", "cron+7=x", "carol@plain.example", "dave@dsn.example",
                message=b"Subject: onward\n\nhi\n",
            )  # fmt: skip
            assert (done.returncode, done.stderr) == (0, b"")
            (tx,) = dsn.wait_for(1)
            assert tx.mail_params.split() == ["RET=HDRS", "ENVID=cron+2B7+3Dx"]
            assert tx.rcpt_params == ["NOTIFY=SUCCESS,FAILURE"]
            (relayed,) = plain.wait_for(1)
            assert relayed.recipients == ["carol@plain.example"]
            # The hop offers no DSN: nothing of it is passed on.
            assert "RET=" not in relayed.mail_params and "ENVID=" not in relayed.mail_params
            assert relayed.rcpt_params == [""]
            (report,) = wait_for("the relayed notice", lambda: reports(server))
            assert report["Subject"] == "Successful Mail Delivery Report"
            message, rcpt = status_blocks(report)
            assert message["Original-Envelope-Id"] == "cron+7=x"
            assert rcpt["Final-Recipient"] == "rfc822; carol@plain.example"
            assert rcpt["Action"] == "relayed"
            assert rcpt["Remote-MTA"] == "dns; 127.0.0.1"
            wait_for("an empty queue", lambda: queue_empty(server))
        finally:
            assert server.stop() == 0


@pytest.mark.timeout(120)
def test_n_never_suppresses_the_bounce_of_a_failed_remote_recipient(tmp_path: Path) -> None:
    refusing = Script(rcpt=lambda address: f"550 5.1.1 <{address}>: no such user")
    with ScriptedServer("127.0.0.1", 0, refusing) as mx:
        server = routed_server(tmp_path, {"remote.example": mx.port})
        server.start()
        try:
            never = sendmail(server, "-i", "-f", SENDER, "-N", "never", "erin@remote.example",
                             message=b"Subject: quiet\n\nhi\n")  # fmt: skip
            assert (never.returncode, never.stderr) == (0, b"")
            # The same failure without -N never: its bounce comes, with the -V and -R asked.
            told = sendmail(
                server, "-i", "-f", SENDER, "-V", "job-9", "-R", "hdrs", "frank@remote.example",
                message=b"Subject: loud\n\nhi\n",
            )  # fmt: skip
            assert (told.returncode, told.stderr) == (0, b"")
            bounced = wait_for(
                "both failures",
                lambda: (
                    len(lines := [r for r in server.journal() if r["event"] == "bounced"]) == 2
                    and lines
                ),
            )
            assert sorted(r["to"] for r in bounced) == [
                "erin@remote.example",
                "frank@remote.example",
            ]
            wait_for("an empty queue", lambda: queue_empty(server))  # reports are made first
            (report,) = reports(server)
            assert report["Subject"] == "Undelivered Mail Returned to Sender"
            message, rcpt = status_blocks(report)
            assert message["Original-Envelope-Id"] == "job-9"
            assert rcpt["Final-Recipient"] == "rfc822; frank@remote.example"
            assert rcpt["Action"] == "failed"
            assert rcpt["Status"] == "5.1.1"
            kinds = [p.get_content_type() for p in report.walk()]
            assert "text/rfc822-headers" in kinds and "message/rfc822" not in kinds  # -R hdrs
        finally:
            assert server.stop() == 0


# --- what real programs run, end to end ---------------------------------------------------------
#
# Each program's exact arguments and the message it writes (line ends and all), through the
# real entry point to a running server; what lands in the Maildir is checked field by field.

USER = pwd.getpwuid(os.getuid())
LOGIN = USER.pw_name
GECOS_NAME = USER.pw_gecos.split(",", 1)[0].replace("&", LOGIN.capitalize())
TRACE = re.compile(
    rb"Return-Path: <(?P<sender>[^>]*)>\r\n"
    rb"Received: by mx\.test\.example \(smtpkit, from userid (?P<uid>\d+)\)\r\n"
    rb"\tid local[0-9a-f]+\.1-[0-9a-f]{4}; (?P<date>[^\r\n]+)\r\n"
)
ADDED_FROM = f"From: {GECOS_NAME} <{LOGIN}@mx.test.example>"


def fields(head: bytes) -> list[tuple[str, str]]:
    """(name, value) of each header field, unfolded."""
    unfolded = head.decode().replace("\r\n ", " ").replace("\r\n\t", " ")
    return [(n, v.strip()) for n, _, v in (line.partition(":") for line in unfolded.split("\r\n"))]


INVOCATIONS = {
    # PHP's mail($to, $subject, $body, $headers) with sendmail_path "sendmail -t -i": To: and
    # Subject: first, then the extra headers, CRLF ends (PHP 8); the body as given.
    "php": (
        ["-t", "-i"],
        b"To: alice@example.org\r\nSubject: Your order\r\nFrom: shop@example.org\r\n"
        b"Reply-To: orders@example.org\r\nX-Mailer: PHP/8.2.26\r\n\r\nThank you.\n.\nBye\n",
        ["alice@example.org"],
        ["To", "Subject", "From", "Reply-To", "X-Mailer", "Date", "Message-ID"],
        b"Thank you.\r\n.\r\nBye\r\n",
    ),
    # bsd-mailx: "sendmail -i -- rcpt", To: and Subject: only.
    "bsd-mailx": (
        ["-i", "--", "bob@example.org"],
        b"To: bob@example.org\nSubject: disk almost full\n\n/var is at 97%\n",
        ["bob@example.org"],
        ["To", "Subject", "From", "Date", "Message-ID"],
        b"/var is at 97%\r\n",
    ),
    # git send-email with sendemail.sendmailCmd: "-i" and the recipients (To: and Cc:);
    # "-f" only with --envelope-sender. Its message has every field it needs.
    "git send-email": (
        ["-i", "bob@example.org", "alice@example.org"],
        b"From: Alice <alice@example.org>\nTo: bob@example.org\nCc: alice@example.org\n"
        b"Subject: [PATCH] fix the frobnicator\nDate: Mon, 30 Nov 2026 04:00:00 +0000\n"
        b"Message-ID: <20261130040000.1-1-alice@example.org>\n"
        b"X-Mailer: git-send-email 2.47.0\nMIME-Version: 1.0\n"
        b"Content-Transfer-Encoding: 8bit\n\n---\n a | 1 +\n.\n-- \n2.47.0\n",
        ["bob@example.org", "alice@example.org"],
        [
            "From",
            "To",
            "Cc",
            "Subject",
            "Date",
            "Message-ID",
            "X-Mailer",
            "MIME-Version",
            "Content-Transfer-Encoding",
        ],
        b"---\r\n a | 1 +\r\n.\r\n-- \r\n2.47.0\r\n",
    ),  # fmt: skip
    # Debian's cron: MAILTO=alice, "-FCronDaemon -i -B8BITMIME -oem -oi -t".
    "cron": (
        ["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "-oi", "-t"],
        b"From: root (Cron Daemon)\nTo: alice\nSubject: Cron <root@host> run-parts /etc/daily\n"
        b"MIME-Version: 1.0\nContent-Type: text/plain; charset=UTF-8\n"
        b"Content-Transfer-Encoding: 8bit\nX-Cron-Env: <SHELL=/bin/sh>\n"
        b"X-Cron-Env: <HOME=/root>\n\nrotated 3 logs\n",
        ["alice@example.org"],
        [
            "From",
            "To",
            "Subject",
            "MIME-Version",
            "Content-Type",
            "Content-Transfer-Encoding",
            "X-Cron-Env",
            "X-Cron-Env",
            "Date",
            "Message-ID",
        ],
        b"rotated 3 logs\r\n",
    ),  # fmt: skip
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("program", list(INVOCATIONS))
def test_real_invocations_are_delivered_end_to_end(tmp_path: Path, program: str) -> None:
    argv, stdin, recipients, names, body = INVOCATIONS[program]
    server = make_server(tmp_path)
    server.start()
    try:
        done = sendmail(server, *argv, message=stdin)
        assert (done.returncode, done.stdout, done.stderr) == (0, b"", b"")
        for recipient in recipients:
            (stored,) = wait_for(f"{recipient}'s copy", lambda r=recipient: stored_for(server, r))
            trace = TRACE.match(stored)
            assert trace is not None, stored[:300]
            assert trace["sender"].decode() == f"{LOGIN}@mx.test.example"
            assert int(trace["uid"]) == os.getuid()
            head, found_body = stored[trace.end() :].split(b"\r\n\r\n", 1)
            found = fields(head)
            assert [name for name, _ in found] == names
            assert found_body == body
            values = dict(found)
            original = dict(fields(stdin.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0]
                                   .replace(b"\n", b"\r\n")))  # fmt: skip
            for name in names:
                if name in original and name != "X-Cron-Env":
                    assert values[name] == original[name], name  # kept as written
            if "From" not in original:
                assert f"From: {values['From']}" == ADDED_FROM
            if "Date" not in original:
                assert parsedate_to_datetime(values["Date"]).tzinfo is not None
            if "Message-ID" not in original:
                assert re.fullmatch(r"<[^<>@\s]+@mx\.test\.example>", values["Message-ID"])
        wait_for("an empty maildrop", lambda: not list((server.directory / "maildrop").iterdir()))
    finally:
        assert server.stop() == 0
