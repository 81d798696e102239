"""Every way mail leaves smtpkit carries a DKIM signature that another smtpkit verifies:
authenticated submission, ``smtpkit-sendmail``, and the reports smtpkit writes itself, from
the queue runner and from ``smtpkit queue bounce`` with no server running.

The world is ``test_checks.signing_world``: the sender's key made by ``smtpkit dkim keygen
example.org``, its printed record published; the sender is named mx.example.org, so that its
reports (From: MAILER-DAEMON@mx.example.org) are signed by example.org's key, their parent
domain's. The receiving smtpkit on 127.0.0.2:25 checks what arrives and says so in its
``Authentication-Results``. Run under ``flock /tmp/world.lock`` (port 25, NSD).
"""

from __future__ import annotations

import email.message
import email.policy
import json
import os
import smtplib
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from smtpkit.config import update_config
from tests.conftest import free_port, smtpkit
from tests.e2e.test_checks import SigningWorld, received_at, results, signing_world
from tests.e2e.test_outbound import journal, wait_until

PASSWORD = "correct horse battery staple"

MESSAGE = (
    b"From: Alice <alice@example.org>\r\nTo: bob@dkim.test\r\nSubject: signed\r\n"
    b"Message-ID: <signed@example.org>\r\n\r\nSigned by smtpkit.\r\n"
)

#: What the receiver says of mail from alice@example.org signed with example.org's key.
ALICE_PASSES = (
    "mx.dkim.test; spf=pass smtp.mailfrom=alice@example.org; "
    "dkim=pass header.d=example.org header.s=s1 header.a=rsa-sha256; "
    "dmarc=pass header.from=example.org"
)

#: What it says of a report: SPF by the HELO name (the sender is <>), the signature the
#: parent domain's, DMARC aligned in relaxed mode (mx.example.org within example.org).
REPORT_PASSES = (
    "mx.dkim.test; spf=pass smtp.helo=mx.example.org; "
    "dkim=pass header.d=example.org header.s=s1 header.a=rsa-sha256; "
    "dmarc=pass header.from=mx.example.org"
)


def _signer(msg: email.message.Message) -> tuple[str, str]:
    """d= and s= of the message's one DKIM-Signature field."""
    (field,) = msg.get_all("DKIM-Signature", [])
    tags = dict(
        part.strip().split("=", 1) for part in "".join(str(field).split()).split(";") if part
    )
    return tags["d"], tags["s"]


def _is_report(msg: email.message.Message) -> bool:
    return (
        msg.get_content_type() == "multipart/report"
        and msg["From"] == "Mail Delivery System <MAILER-DAEMON@mx.example.org>"
    )


@pytest.mark.timeout(120)
def test_authenticated_submission_is_signed(tmp_path: Path) -> None:
    with signing_world(tmp_path) as world:
        sender = world.sender
        smtpkit("tls", "self-signed", config=sender.config)
        port = free_port()

        def submission(data: dict[str, Any]) -> None:
            # No trusted network: the user's login is what makes the mail ours.
            data["submission"] = {"listen": [f"127.0.0.1:{port}"]}

        assert update_config(sender.config, submission)
        smtpkit("user", "passwd", "--stdin", "alice@example.org", config=sender.config,
                input=PASSWORD + "\n")  # fmt: skip
        world.receiver.start()
        sender.start()
        context = ssl.create_default_context(cafile=str(sender.directory / "tls" / "cert.pem"))
        context.check_hostname = False  # connecting to 127.0.0.1
        with smtplib.SMTP(sender.host, port, timeout=30) as client:
            client.starttls(context=context)
            client.login("alice@example.org", PASSWORD)
            client.sendmail("alice@example.org", ["bob@dkim.test"], MESSAGE)
        msg = received_at(world)
        assert _signer(msg) == ("example.org", "s1")
        assert results(msg) == [ALICE_PASSES]


@pytest.mark.timeout(120)
def test_what_smtpkit_sendmail_drops_is_signed(tmp_path: Path) -> None:
    with signing_world(tmp_path) as world:
        world.receiver.start()
        world.sender.start()
        env = {**os.environ, "SMTPKIT_CONFIG": str(world.sender.config)}
        dropped = subprocess.run(
            [sys.executable, "-m", "smtpkit.sendmail_main", "-i", "-f", "alice@example.org",
             "bob@dkim.test"],
            input=MESSAGE.replace(b"\r\n", b"\n"), capture_output=True, env=env, timeout=60,
        )  # fmt: skip
        assert (dropped.returncode, dropped.stderr) == (0, b"")
        msg = received_at(world)
        assert _signer(msg) == ("example.org", "s1")
        assert results(msg) == [ALICE_PASSES]


def _from_bob(world: SigningWorld, to: str) -> None:
    """A message from bob@dkim.test (unsigned: the sender has no key of dkim.test) to
    ``to``, relayed by the sender for a trusted network."""
    data = MESSAGE.replace(b"alice@example.org", b"bob@dkim.test")
    with smtplib.SMTP(world.sender.host, world.sender.port, timeout=30) as client:
        client.sendmail("bob@dkim.test", [to], data)


@pytest.mark.timeout(120)
def test_a_bounce_from_the_queue_runner_is_signed(tmp_path: Path) -> None:
    with signing_world(tmp_path) as world:
        world.receiver.start()
        world.sender.start()
        _from_bob(world, "nobody@dkim.test")  # the receiver refuses: 550 5.1.1
        report = received_at(world)
        assert _is_report(report)
        assert _signer(report) == ("example.org", "s1")
        assert results(report) == [REPORT_PASSES]


@pytest.mark.timeout(120)
def test_a_bounce_by_smtpkit_queue_bounce_without_a_server_is_signed(tmp_path: Path) -> None:
    with signing_world(tmp_path) as world:
        sender = world.sender
        sender.start()
        _from_bob(world, "bob@dkim.test")  # the receiver is not running yet: it waits
        wait_until("a deferral", lambda: journal(sender, "deferred"))
        assert sender.stop() == 0
        listed = smtpkit("queue", "list", "--json", config=sender.config).stdout
        (entry,) = [json.loads(line)["id"] for line in listed.splitlines()]
        done = smtpkit("queue", "bounce", entry, config=sender.config)
        assert done.stdout == f"Returned {entry} to its sender.\n"
        # The report waits in the queue, signed when it was written: the server started now
        # sends it as it is.
        world.receiver.start()
        sender.start()
        report = received_at(world)
        assert _is_report(report)
        assert _signer(report) == ("example.org", "s1")
        assert results(report) == [REPORT_PASSES]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("workers", [1, 2])
def test_a_key_added_while_running_signs_after_a_reload(tmp_path: Path, workers: int) -> None:
    """No restart: SIGHUP reads the keys again (a lone worker itself; with several, each
    worker), and every worker signs from then on."""
    with signing_world(tmp_path) as world:
        sender = world.sender
        key = sender.directory / "dkim" / "example.org" / "s1.key"
        aside = tmp_path / "s1.key"
        key.rename(aside)  # the server starts without a key
        world.receiver.start()
        sender.start("--workers", str(workers))
        wait_until("every worker", lambda: len(journal(sender, "start")) == workers)
        aside.rename(key)  # as `smtpkit dkim keygen` would write it now
        smtpkit("reload", config=sender.config)
        wait_until(
            "every worker reloaded",
            lambda: sum(r["ok"] is True for r in journal(sender, "reload")) == workers,
        )
        count = 2 * workers  # whichever worker accepts each
        for n in range(count):
            with smtplib.SMTP(sender.host, sender.port, timeout=30) as client:
                client.sendmail("alice@example.org", ["bob@dkim.test"],
                                MESSAGE.replace(b"<signed@", f"<signed{n}@".encode()))  # fmt: skip
        wait_until("every copy", lambda: len(world.receiver.new_files("bob@dkim.test")) == count)
        for path in world.receiver.new_files("bob@dkim.test"):
            msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.compat32)
            assert results(msg) == [ALICE_PASSES]
