"""Delivery to the world: a real ``smtpkit serve`` sends queued mail to MX hosts found through
a real DNS server (NSD), on other loopback addresses, port 25.

The world (zone ``world.test``, served by NSD):

==========================  ====================================================
domain                      mail hosts
==========================  ====================================================
two.world.test              MX 10 mx1 (127.0.0.2), MX 20 mx2 (127.0.0.3)
fallback.world.test         MX 10 dead (127.0.0.5, nothing listens), MX 20 alive
                            (127.0.0.3)
implicit.world.test         no MX; A 127.0.0.4 (the implicit MX)
nullmx.world.test           MX 0 . (RFC 7505: no mail)
nosuch.world.test           NXDOMAIN
smarthost.world.test        A 127.0.0.6 (a smarthost, on port 2525)
==========================  ====================================================

Mail enters the sending server from 127.0.0.1, a trusted network (relay without AUTH), and
the receivers are ``ScriptedServer`` instances answering as each test wants, or a second
``smtpkit serve``. Retries run on short test values; every wait is for a condition.
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import re
import signal
import smtplib
import ssl
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
import tomli_w

from tests.conftest import MailServer, free_port, make_server, need_program, smtpkit
from tests.dnsserver import DnsServer, FilteringNameserver, run_nsd
from tests.scripted_smtp import Script, ScriptedServer, make_certificate, server_context

WORLD_ZONE = """\
$ORIGIN world.test.
$TTL 60
@               IN SOA   ns hostmaster 1 3600 600 86400 60
@               IN NS    ns
ns              IN A     127.0.0.1

two             IN MX    10 mx1.two
two             IN MX    20 mx2.two
mx1.two         IN A     127.0.0.2
mx2.two         IN A     127.0.0.3

fallback        IN MX    10 dead.fallback
fallback        IN MX    20 alive.fallback
dead.fallback   IN A     127.0.0.5
alive.fallback  IN A     127.0.0.3

implicit        IN A     127.0.0.4
nullmx          IN MX    0 .
smarthost       IN A     127.0.0.6
"""

SENDER = "alice@example.org"


@pytest.fixture(scope="module")
def world_dns() -> Iterator[DnsServer]:
    with run_nsd({"world.test": WORLD_ZONE}) as server:
        yield server


def sending_server(
    root: Path,
    dns: DnsServer | FilteringNameserver,
    extra: str = "",
    server: str = "",
    *,
    reply_timeout: float = 5,
) -> MailServer:
    """A sending smtpkit on 127.0.0.1 (a trusted network: it relays without AUTH), asking
    ``dns``; ``extra`` goes under ``[delivery]`` (and may open sections of its own)."""
    config = f"""{server}
[submission]
trusted_networks = ["127.0.0.0/8"]

[dns]
nameservers = ["{dns.nameserver}"]

[delivery]
connect_timeout = 2
reply_timeout = {reply_timeout}
{extra}
"""
    if "[queue]" not in extra:
        config += "\n[queue]\nmin_retry = 1\nmax_retry = 2\n"
    return make_server(root, users=("alice@example.org",), extra_config=config)


def send(server: MailServer, recipients: list[str], body: str = "Hello.\n", **headers: str) -> str:
    msg = EmailMessage()
    msg["From"] = SENDER
    msg["To"] = ", ".join(recipients)
    msg["Subject"] = headers.get("subject", "outbound test")
    msg.set_content(body)
    with smtplib.SMTP(server.host, server.port, timeout=30) as client:
        client.send_message(msg, from_addr=SENDER, to_addrs=recipients)
    return msg["Subject"]


def queue_entries(server: MailServer) -> list[dict[str, object]]:
    out = smtpkit("queue", "list", "--json", config=server.config).stdout
    return [json.loads(line) for line in out.splitlines()]


def wait_until(what: str, check: Callable[[], object], timeout: float = 60.0) -> object:
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.25)


def journal(server: MailServer, event: str) -> list[dict[str, object]]:
    return [r for r in server.journal() if r.get("event") == event]


def wait_journal(server: MailServer, event: str, count: int = 1) -> list[dict[str, object]]:
    """The journal's ``event`` lines once there are ``count``: the loop writes them, and
    flushes them to the hour file in batches, after what a test may have waited for."""
    return wait_until(  # type: ignore[return-value]
        f"{count} {event} line(s)", lambda: (lines := journal(server, event))[count - 1 :] and lines
    )


def reports(server: MailServer, address: str = SENDER) -> list[email.message.Message]:
    new = server.maildir(address) / "new"
    return [
        email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
        for p in sorted(new.iterdir())
    ]


def status_blocks(report: email.message.Message) -> list[dict[str, str]]:
    """The message/delivery-status part's blocks, as dicts (per-message block first)."""
    part = next(p for p in report.walk() if p.get_content_type() == "message/delivery-status")
    return [{k: str(v) for k, v in block.items()} for block in part.get_payload()]


def test_lowest_preference_first_then_delivered(tmp_path: Path, world_dns: DnsServer) -> None:
    with ScriptedServer("127.0.0.2", 25) as mx1, ScriptedServer("127.0.0.3", 25) as mx2:
        server = sending_server(tmp_path, world_dns)
        server.start()
        subject = send(server, ["bob@two.world.test", "carol@two.world.test"])
        (tx,) = mx1.wait_for(1)
        assert tx.sender == SENDER
        assert tx.recipients == ["bob@two.world.test", "carol@two.world.test"]
        assert tx.helo == "mx.test.example"
        assert f"Subject: {subject}".encode() in tx.data
        # Our trace header travels on; the Return-Path line is for our own mailboxes only
        # (RFC 5321 4.4: the final delivery adds it).
        assert tx.data.startswith(b"Received: from ")
        assert b"Return-Path:" not in tx.data
        assert mx2.connections == 0
        wait_until("an empty queue", lambda: not queue_entries(server))
        delivered = wait_journal(server, "delivered", 2)
        assert sorted(r["to"] for r in delivered) == ["bob@two.world.test", "carol@two.world.test"]
        assert all(r["peer"] == "mx1.two.world.test[127.0.0.2]:25" for r in delivered)


def test_next_mx_when_the_first_is_down(tmp_path: Path, world_dns: DnsServer) -> None:
    with ScriptedServer("127.0.0.3", 25) as alive:
        server = sending_server(tmp_path, world_dns)
        server.start()
        send(server, ["bob@fallback.world.test"])
        (tx,) = alive.wait_for(1)
        assert tx.recipients == ["bob@fallback.world.test"]
        wait_until("an empty queue", lambda: not queue_entries(server))


def test_implicit_mx(tmp_path: Path, world_dns: DnsServer) -> None:
    with ScriptedServer("127.0.0.4", 25) as host:
        server = sending_server(tmp_path, world_dns)
        server.start()
        send(server, ["dave@implicit.world.test"])
        (tx,) = host.wait_for(1)
        assert tx.recipients == ["dave@implicit.world.test"]


def test_null_mx_bounces_at_once(tmp_path: Path, world_dns: DnsServer) -> None:
    server = sending_server(tmp_path, world_dns)
    server.start()
    send(server, ["erin@nullmx.world.test"])
    (report,) = wait_until("a report", lambda: reports(server))  # type: ignore[misc]
    assert report["To"] == SENDER
    assert report["Subject"] == "Undelivered Mail Returned to Sender"
    assert report.get_content_type() == "multipart/report"
    _, rcpt = status_blocks(report)
    assert rcpt["Final-Recipient"] == "rfc822; erin@nullmx.world.test"
    assert rcpt["Action"] == "failed"
    assert rcpt["Status"] == "5.1.10"
    wait_until("an empty queue", lambda: not queue_entries(server))


def test_nxdomain_bounces_at_once(tmp_path: Path, world_dns: DnsServer) -> None:
    server = sending_server(tmp_path, world_dns)
    server.start()
    send(server, ["frank@nosuch.world.test"])
    (report,) = wait_until("a report", lambda: reports(server))  # type: ignore[misc]
    _, rcpt = status_blocks(report)
    assert rcpt["Status"] == "5.1.2"
    assert rcpt["Action"] == "failed"


def test_remote_550_bounces_with_its_reply(tmp_path: Path, world_dns: DnsServer) -> None:
    script = Script(
        rcpt=lambda a: f"550 5.1.1 <{a}>: no such user" if a.startswith("nobody") else "250 ok"
    )
    with ScriptedServer("127.0.0.2", 25, script) as mx1:
        server = sending_server(tmp_path, world_dns)
        server.start()
        send(server, ["bob@two.world.test", "nobody@two.world.test"])
        (tx,) = mx1.wait_for(1)
        assert tx.recipients == ["bob@two.world.test"]
        (report,) = wait_until("a report", lambda: reports(server))  # type: ignore[misc]
        message, rcpt = status_blocks(report)
        assert message["Reporting-MTA"] == "dns; mx.test.example"
        assert "Arrival-Date" in message
        assert rcpt["Final-Recipient"] == "rfc822; nobody@two.world.test"
        assert rcpt["Action"] == "failed"
        assert rcpt["Status"] == "5.1.1"
        assert rcpt["Remote-MTA"] == "dns; mx1.two.world.test"
        assert rcpt["Diagnostic-Code"] == "smtp; 550 5.1.1 <nobody@two.world.test>: no such user"
        # No RET: the whole original comes back (it is small).
        original = next(p for p in report.walk() if p.get_content_type() == "message/rfc822")
        assert original.get_payload()[0]["Subject"] == "outbound test"
        wait_until("an empty queue", lambda: not queue_entries(server))


def test_down_then_up_is_delivered_on_retry(tmp_path: Path, world_dns: DnsServer) -> None:
    server = sending_server(tmp_path, world_dns)
    server.start()
    send(server, ["gina@implicit.world.test"])

    def deferred() -> bool:
        return any(
            r["state"] == "deferred" and r["attempts"] >= 1
            for e in queue_entries(server)
            for r in e["recipients"]  # type: ignore[attr-defined]
        )

    wait_until("a deferral", deferred)
    (entry,) = queue_entries(server)
    (rcpt,) = entry["recipients"]  # type: ignore[misc]
    assert "127.0.0.4" in rcpt["last_error"]
    assert wait_journal(server, "deferred")[0]["status"] == "4.4.1"
    with ScriptedServer("127.0.0.4", 25) as host:
        (tx,) = host.wait_for(1)
        assert tx.recipients == ["gina@implicit.world.test"]
        wait_until("an empty queue", lambda: not queue_entries(server))
    assert not reports(server)  # delivered: no report (NOTIFY not given, no delay notice)


def test_max_age_expiry_bounces(tmp_path: Path, world_dns: DnsServer) -> None:
    extra = "[queue]\nmin_retry = 1\nmax_retry = 1\nmax_age = 3\n"
    script = Script(rcpt=lambda a: "451 4.3.0 try later")
    with ScriptedServer("127.0.0.4", 25, script) as host:
        server = sending_server(tmp_path, world_dns, extra)
        server.start()
        send(server, ["hank@implicit.world.test"])
        (report,) = wait_until("a report", lambda: reports(server), 60)  # type: ignore[misc]
        _, rcpt = status_blocks(report)
        assert rcpt["Action"] == "failed"
        assert rcpt["Status"] == "4.3.0"  # the actual problem (RFC 3463 4.4.7)
        assert rcpt["Diagnostic-Code"].startswith("smtp; 451 4.3.0 try later")
        assert host.connections >= 2
        wait_until("an empty queue", lambda: not queue_entries(server))


def test_starttls_to_the_next_hop(tmp_path: Path, world_dns: DnsServer) -> None:
    # Opportunistic TLS: encrypted although the certificate is self-signed (RFC 7435).
    context = server_context(*make_certificate(tmp_path, "mx1.two.world.test"))
    with ScriptedServer("127.0.0.2", 25, Script(tls=context)) as mx1:
        server = sending_server(tmp_path, world_dns)
        server.start()
        send(server, ["ivy@two.world.test"])
        (tx,) = mx1.wait_for(1)
        assert tx.tls is True
        assert tx.helo == "mx.test.example"  # EHLO again after STARTTLS (RFC 3207 4.2)
        (line,) = wait_until("the delivered line", lambda: journal(server, "delivered"))  # type: ignore[misc]
        assert line["tls"] in ("TLSv1.2", "TLSv1.3")


def relay_config(tmp_path: Path, ca_file: Path, tls: str = "starttls") -> str:
    (tmp_path / "relay.pass").write_text("s3cret\n")
    return f"""
[relay]
host = "smarthost.world.test:2525"
tls = "{tls}"
username = "relayuser"
password_file = "{tmp_path / "relay.pass"}"
ca_file = "{ca_file}"
"""


def test_smarthost_with_auth_under_starttls(tmp_path: Path, world_dns: DnsServer) -> None:
    cert, key = make_certificate(tmp_path, "smarthost.world.test")
    script = Script(tls=server_context(cert, key), auth=("relayuser", "s3cret"))
    with ScriptedServer("127.0.0.6", 2525, script) as smarthost:
        server = sending_server(tmp_path, world_dns, relay_config(tmp_path, cert))
        server.start()
        # No MX lookup for anything: the smarthost takes all (nosuch.world.test included).
        send(server, ["jo@nosuch.world.test", "kim@two.world.test"])
        (tx,) = smarthost.wait_for(1)
        assert tx.tls is True
        assert tx.authenticated == "relayuser"
        assert sorted(tx.recipients) == ["jo@nosuch.world.test", "kim@two.world.test"]
        wait_until("an empty queue", lambda: not queue_entries(server))


def test_smarthost_certificate_not_trusted_defers_without_password(
    tmp_path: Path, world_dns: DnsServer
) -> None:
    # The smarthost shows a certificate for another name: no password goes to it.
    trusted, _ = make_certificate(tmp_path, "smarthost.world.test")
    impostor = server_context(*make_certificate(tmp_path, "impostor.world.test"))
    script = Script(tls=impostor, auth=("relayuser", "s3cret"))
    with ScriptedServer("127.0.0.6", 2525, script) as smarthost:
        server = sending_server(tmp_path, world_dns, relay_config(tmp_path, trusted))
        server.start()
        send(server, ["jo@two.world.test"])

        def deferred() -> object:
            return [
                r
                for e in queue_entries(server)
                for r in e["recipients"]  # type: ignore[attr-defined]
                if r["state"] == "deferred"
            ]

        (rcpt,) = wait_until("a deferral", deferred)  # type: ignore[misc]
        assert "certificate not trusted" in rcpt["last_error"]
        assert smarthost.auth_attempts == []
        assert smarthost.transactions == []


def test_notify_success_gets_a_relayed_report(tmp_path: Path, world_dns: DnsServer) -> None:
    with ScriptedServer("127.0.0.2", 25) as mx1:  # offers no DSN
        server = sending_server(tmp_path, world_dns, server="dsn_on_receive = true")
        server.start()
        with smtplib.SMTP(server.host, server.port, timeout=30) as client:
            client.ehlo()
            assert client.has_extn("DSN")
            client.sendmail(SENDER, ["bob@two.world.test"], b"Subject: dsn\r\n\r\nhi\r\n",
                            rcpt_options=["NOTIFY=SUCCESS,FAILURE"])  # fmt: skip
        mx1.wait_for(1)
        (report,) = wait_until("a report", lambda: reports(server))  # type: ignore[misc]
        assert report["Subject"] == "Successful Mail Delivery Report"
        _, rcpt = status_blocks(report)
        assert rcpt["Action"] == "relayed"
        assert rcpt["Status"] == "2.0.0"
        assert rcpt["Remote-MTA"] == "dns; mx1.two.world.test"
        # Only the headers come back with a success notice (RFC 3461 4.3).
        kinds = [p.get_content_type() for p in report.walk()]
        assert "text/rfc822-headers" in kinds


def test_notify_never_gets_no_report(tmp_path: Path, world_dns: DnsServer) -> None:
    server = sending_server(tmp_path, world_dns, server="dsn_on_receive = true")
    server.start()
    with smtplib.SMTP(server.host, server.port, timeout=30) as client:
        client.sendmail(SENDER, ["erin@nullmx.world.test"], b"Subject: x\r\n\r\nhi\r\n",
                        rcpt_options=["NOTIFY=NEVER"])  # fmt: skip
    wait_until("an empty queue", lambda: not queue_entries(server))
    (line,) = wait_journal(server, "bounced")
    assert line["status"] == "5.1.10"
    assert not reports(server)


def test_dsn_parameters_pass_on_to_a_next_hop_with_dsn(
    tmp_path: Path, world_dns: DnsServer
) -> None:
    script = Script(extensions=("PIPELINING", "8BITMIME", "DSN"))
    with ScriptedServer("127.0.0.2", 25, script) as mx1:
        server = sending_server(tmp_path, world_dns, server="dsn_on_receive = true")
        server.start()
        with smtplib.SMTP(server.host, server.port, timeout=30) as client:
            client.sendmail(
                SENDER,
                ["bob@two.world.test"],
                b"Subject: x\r\n\r\nhi\r\n",
                mail_options=["RET=HDRS", "ENVID=QQ+2B1"],
                rcpt_options=["NOTIFY=SUCCESS", "ORCPT=rfc822;Bob@two.world.test"],
            )
        (tx,) = mx1.wait_for(1)
        assert tx.mail_params.split() == ["RET=HDRS", "ENVID=QQ+2B1"]
        assert tx.rcpt_params == ["NOTIFY=SUCCESS ORCPT=rfc822;Bob@two.world.test"]
        wait_until("an empty queue", lambda: not queue_entries(server))
        assert not reports(server)  # the next hop reports success now, not us


def test_dsn_is_not_offered_on_port_25_by_default(tmp_path: Path, world_dns: DnsServer) -> None:
    server = sending_server(tmp_path, world_dns)
    server.start()
    with smtplib.SMTP(server.host, server.port, timeout=30) as client:
        client.ehlo()
        assert not client.has_extn("DSN")
        assert client.mail(SENDER, ["RET=FULL"])[0] == 555
        assert client.mail(SENDER)[0] == 250
        assert client.rcpt("bob@two.world.test", ["NOTIFY=SUCCESS"])[0] == 555


def test_sigkill_during_delivery_loses_nothing(tmp_path: Path, world_dns: DnsServer) -> None:
    count = 20
    stall = Script(stall_at="dot")
    with ScriptedServer("127.0.0.2", 25, stall) as stuck:
        server = sending_server(tmp_path, world_dns, "[queue]\nmin_retry = 1\nmax_retry = 1\n")
        server.start()
        for i in range(count):
            send(server, [f"user{i}@two.world.test"])
        stuck.wait_connections(1)
        assert server.process is not None
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(10)
        server.process = None
    with ScriptedServer("127.0.0.2", 25) as mx1:
        server.start()
        mx1.wait_for(count, 120)
        wait_until("an empty queue", lambda: not queue_entries(server), 60)
        got = sorted(r for tx in mx1.transactions for r in tx.recipients)
        assert set(got) == {f"user{i}@two.world.test" for i in range(count)}


def receiving_smtpkit(root: Path, host: str, hostname: str, domain: str, user: str) -> MailServer:
    """A second ``smtpkit serve``, on port 25 of ``host``, receiving for ``domain``."""
    directory = root / f"receiver-{host}"
    smtpkit("init", str(directory), "--domain", domain, "--hostname", hostname,
            "--listen", f"{host}:25")  # fmt: skip
    config = directory / "smtpkit.toml"
    smtpkit("user", "add", user, config=config)
    return MailServer(directory, config, host, 25, domain)


def test_delivered_into_another_smtpkits_maildir(tmp_path: Path, world_dns: DnsServer) -> None:
    receiver = receiving_smtpkit(
        tmp_path, "127.0.0.2", "mx1.two.world.test", "two.world.test", "bob@two.world.test"
    )
    receiver.start()
    server = sending_server(tmp_path, world_dns)
    server.start()
    send(server, ["bob@two.world.test"], body="Hello from one smtpkit to another.\n")
    (stored,) = wait_until(
        "the copy at the receiver", lambda: receiver.new_files("bob@two.world.test")
    )  # type: ignore[misc]
    message = email.message_from_bytes(stored.read_bytes(), policy=email.policy.default)
    assert message["From"] == SENDER
    assert message.get_content().strip() == "Hello from one smtpkit to another."
    received = message.get_all("Received")
    assert received[0].startswith("from mx.test.example (")  # the receiver's trace: our EHLO
    assert "by mx1.two.world.test" in received[0]
    assert "by mx.test.example" in received[1]  # ours, from the submission
    wait_until("an empty queue", lambda: not queue_entries(server))
    receiver.stop()


def test_mail_looping_back_to_this_server_bounces(tmp_path: Path, world_dns: DnsServer) -> None:
    # A route that points at this very server: its EHLO name is ours (RFC 5321 5.1 asks a
    # sender to notice), so the mail fails with 5.4.6 instead of going round forever.
    server = sending_server(tmp_path, world_dns)
    with server.config.open("a") as fh:
        fh.write(f'\n[routes]\n"loop.example" = "127.0.0.1:{server.port}"\n')
    server.start()
    send(server, ["x@loop.example"])
    (report,) = wait_until("a report", lambda: reports(server))  # type: ignore[misc]
    _, rcpt = status_blocks(report)
    assert rcpt["Status"] == "5.4.6"
    assert "loops back to myself" in rcpt["Diagnostic-Code"]


def test_delivery_to_postfix_smtp_sink(tmp_path: Path, world_dns: DnsServer) -> None:
    sink = need_program("smtp-sink", "postfix")
    port = free_port()
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    out = tmp_path / "sink.out"
    with out.open("wb") as fh:
        proc = subprocess.Popen([sink, *user, "-c", f"127.0.0.1:{port}", "100"], stdout=fh,
                                stderr=subprocess.STDOUT)  # fmt: skip
    try:
        server = sending_server(tmp_path, world_dns)
        with server.config.open("a") as fh2:
            fh2.write(f'\n[routes]\n"sink.example" = "127.0.0.1:{port}"\n')
        server.start()
        for i in range(5):
            send(server, [f"u{i}@sink.example", f"v{i}@sink.example"])

        def counted() -> int:
            found = re.findall(rb"mesg=(\d+)", out.read_bytes())
            return int(found[-1]) if found else 0

        wait_until("5 messages at the sink", lambda: counted() >= 5)
        wait_until("an empty queue", lambda: not queue_entries(server))
        delivered = wait_journal(server, "delivered", 10)
        assert len(delivered) == 10
        assert {r["peer"] for r in delivered} == {f"127.0.0.1[127.0.0.1]:{port}"}
    finally:
        proc.terminate()
        proc.wait(10)


def test_connection_dropped_at_rcpt_is_deferred(tmp_path: Path, world_dns: DnsServer) -> None:
    with ScriptedServer("127.0.0.4", 25, Script(drop_at="rcpt")) as host:
        server = sending_server(
            tmp_path, world_dns, "[queue]\nmin_retry = 3600\nmax_retry = 3600\n"
        )
        server.start()
        send(server, ["kim@implicit.world.test"])
        (line,) = wait_until("a deferral", lambda: journal(server, "deferred"))  # type: ignore[misc]
        assert line["status"] == "4.4.2"
        assert "closed the connection" in str(line["reason"])
        assert host.transactions == []
        (entry,) = queue_entries(server)
        assert entry["recipients"][0]["state"] == "deferred"  # type: ignore[index]


def test_message_over_the_remote_size_limit_fails(tmp_path: Path, world_dns: DnsServer) -> None:
    script = Script(extensions=("PIPELINING", "SIZE 300"))
    with ScriptedServer("127.0.0.4", 25, script) as host:
        server = sending_server(tmp_path, world_dns)
        server.start()
        send(server, ["lee@implicit.world.test"], body="x" * 500 + "\n")
        (report,) = wait_until("a report", lambda: reports(server))  # type: ignore[misc]
        _, rcpt = status_blocks(report)
        assert rcpt["Status"] == "5.3.4"
        assert rcpt["Action"] == "failed"
        assert host.transactions == []  # RFC 1870: not even tried


def test_delay_warning_is_sent_once(tmp_path: Path, world_dns: DnsServer) -> None:
    extra = "[queue]\nmin_retry = 1\nmax_retry = 1\nmax_age = 600\ndelay_warning = 2\n"
    script = Script(rcpt=lambda a: "452 4.2.2 mailbox full")
    with ScriptedServer("127.0.0.4", 25, script) as host:
        server = sending_server(tmp_path, world_dns, extra)
        server.start()
        send(server, ["max@implicit.world.test"])
        (report,) = wait_until("the delay notice", lambda: reports(server))  # type: ignore[misc]
        assert report["Subject"] == "Delayed Mail (still being retried)"
        _, rcpt = status_blocks(report)
        assert rcpt["Action"] == "delayed"
        assert rcpt["Status"] == "4.2.2"
        assert "Will-Retry-Until" in rcpt
        # More attempts, and still one notice.
        attempts = host.connections
        host.wait_connections(attempts + 2)
        assert len(reports(server)) == 1
        (entry,) = queue_entries(server)
        assert entry["warned"] is True


def test_notify_success_on_local_delivery(tmp_path: Path, world_dns: DnsServer) -> None:
    server = sending_server(tmp_path, world_dns, server="dsn_on_receive = true")
    server.start()
    with smtplib.SMTP(server.host, server.port, timeout=30) as client:
        client.sendmail(SENDER, [SENDER], b"Subject: to myself\r\n\r\nhi\r\n",
                        mail_options=["ENVID=note-1"],
                        rcpt_options=["NOTIFY=SUCCESS", f"ORCPT=rfc822;{SENDER}"])  # fmt: skip

    def notices() -> list[email.message.Message]:
        return [m for m in reports(server) if m.get_content_type() == "multipart/report"]

    (report,) = wait_until("the success notice", notices)  # type: ignore[misc]
    assert report["Subject"] == "Successful Mail Delivery Report"
    message, rcpt = status_blocks(report)
    assert message["Original-Envelope-Id"] == "note-1"
    assert rcpt["Action"] == "delivered"
    assert rcpt["Status"] == "2.0.0"
    assert rcpt["Original-Recipient"] == f"rfc822; {SENDER}"
    (line,) = wait_journal(server, "report")
    assert line["action"] == "delivered"


def test_submitted_on_587_and_through_sendmail_reaches_the_remote_mx(
    tmp_path: Path, world_dns: DnsServer
) -> None:
    """The whole way: a user logs in on 587, a cron job runs smtpkit-sendmail; both
    messages reach the MX host DNS names for the recipients' domain."""
    port = free_port()
    server = sending_server(tmp_path, world_dns)
    smtpkit("tls", "self-signed", config=server.config)  # before listen: 587 needs [tls]
    document = tomllib.loads(server.config.read_text())
    document["submission"]["listen"] = [f"127.0.0.1:{port}"]
    server.config.write_text(tomli_w.dumps(document))
    subprocess.run(
        [sys.executable, "-m", "smtpkit", "-c", str(server.config), "user", "passwd", "--stdin",
         SENDER],
        input="pa55word\n", text=True, capture_output=True, check=True, timeout=60,
    )  # fmt: skip
    with ScriptedServer("127.0.0.2", 25) as mx1:
        server.start()
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with smtplib.SMTP(server.host, port, timeout=30) as client:
            client.starttls(context=context)
            client.login(SENDER, "pa55word")
            client.sendmail(SENDER, ["nina@two.world.test"], b"Subject: by 587\r\n\r\nhi\r\n")
        env = {**os.environ, "SMTPKIT_CONFIG": str(server.config)}
        dropped = subprocess.run(
            [sys.executable, "-m", "smtpkit.sendmail_main", "-f", SENDER, "omar@two.world.test"],
            input=b"Subject: by sendmail\n\nhello\n", capture_output=True, env=env, timeout=60,
        )  # fmt: skip
        assert dropped.returncode == 0, dropped.stderr
        transactions = mx1.wait_for(2)
        by_rcpt = {tx.recipients[0]: tx for tx in transactions}
        assert b"Subject: by 587" in by_rcpt["nina@two.world.test"].data
        assert b"Subject: by sendmail" in by_rcpt["omar@two.world.test"].data
        assert {tx.sender for tx in transactions} == {SENDER}
        wait_until("an empty queue", lambda: not queue_entries(server))
