"""smtpkit-sendmail end to end: what local programs drop is delivered by a real server,
whether it was running or not; remote recipients wait in the queue."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import MailServer, free_port, make_server, smtpkit, unavailable

NOBODY = pwd.getpwnam("nobody")


def sendmail(
    server: MailServer, *args: str, message: bytes, runner: list[str] | None = None, **kw: Any
) -> subprocess.CompletedProcess[bytes]:
    command = runner or [sys.executable, "-m", "smtpkit.sendmail_main"]
    env = {**os.environ, "SMTPKIT_CONFIG": str(server.config)}
    return subprocess.run(
        [*command, *args], input=message, capture_output=True, env=env, timeout=60, **kw
    )


def journal(server: MailServer) -> list[dict[str, Any]]:
    records = []
    for path in sorted((server.directory / "journal").iterdir()):
        records += [json.loads(line) for line in path.read_text().splitlines()]
    return records


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
        stored_events = [r for r in journal(server) if r["event"] == "stored" and "uid" in r]
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
            return [r for r in journal(server) if r["event"] == "rcpt" and r["code"] == 550]

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
            lambda: [r for r in journal(server) if r["event"] == "rcpt" and r.get("code")],
        )
        assert [(r["to"], r["code"]) for r in refused] == [("\u212aelvin@example.org", 501)]
    finally:
        assert server.stop() == 0
