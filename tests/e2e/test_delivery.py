"""End to end: a real ``smtpkit serve`` subprocess, real clients (smtplib, swaks, smtp-source)."""

from __future__ import annotations

import json
import mailbox
import os
import signal
import smtplib
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import (
    _RUNNING,
    MailServer,
    free_port,
    make_server,
    need_program,
    smtpkit,
    unavailable,
    wait_for_banner,
)


def wait_for(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_smtplib_delivery_lands_in_maildir_with_trace_headers(mailserver: MailServer) -> None:
    body = "Subject: hello\r\n\r\nFirst line\r\n.starts with a dot\r\n"
    with smtplib.SMTP(mailserver.host, mailserver.port, local_hostname="client.test") as smtp:
        code, _ = smtp.ehlo()
        assert code == 250
        assert smtp.has_extn("pipelining") and smtp.has_extn("8bitmime")
        assert smtp.esmtp_features["size"] == "10485760"
        refused = smtp.sendmail("sender@remote.test", ["alice@example.org"], body)
        assert refused == {}
    files = mailserver.new_files("alice@example.org")
    assert len(files) == 1
    data = files[0].read_bytes()
    head, _, message = data.partition(b"Subject: hello")
    assert head.startswith(
        b"Return-Path: <sender@remote.test>\r\nReceived: from client.test ([127.0.0.1])\r\n"
    )
    assert b"by mx.test.example (smtpkit) with ESMTP id " in head
    assert b"for <alice@example.org>;" in head
    assert message == b"\r\n\r\nFirst line\r\n.starts with a dot\r\n"
    assert files[0].stat().st_mode & 0o777 == 0o600
    # Readable by Python's own Maildir reader, as by Dovecot or mutt.
    msgs = list(mailbox.Maildir(mailserver.maildir("alice@example.org"), create=False))
    assert [m["Subject"] for m in msgs] == ["hello"]
    assert list((mailserver.maildir("alice@example.org") / "tmp").iterdir()) == []


def test_refusals_over_a_real_socket(mailserver: MailServer) -> None:
    with smtplib.SMTP(mailserver.host, mailserver.port) as smtp:
        smtp.ehlo("client.test")
        assert smtp.mail("s@remote.test") == (250, b"2.1.0 Sender OK")
        assert smtp.rcpt("nobody@example.org") == (550, b"5.1.1 No such user here")
        assert smtp.rcpt("victim@elsewhere.test") == (550, b"5.7.1 Relaying denied")
        assert smtp.rcpt("Postmaster")[0] == 250  # RFC 5321 4.5.1, via the alias to alice
        assert smtp.docmd("VRFY", "alice@example.org")[0] == 252
        assert smtp.docmd("EXPN", "staff")[0] == 502
        assert smtp.docmd("BOGUS")[0] == 500
        assert smtp.docmd("MAIL", "FROM:<x@y.test> SIZE=99999999999")[0] == 503
        smtp.rset()
        assert smtp.docmd("MAIL", "FROM:<x@y.test> SIZE=99999999999")[0] == 552


def test_one_copy_per_mailbox_and_postmaster_alias(mailserver: MailServer) -> None:
    with smtplib.SMTP(mailserver.host, mailserver.port) as smtp:
        smtp.sendmail(
            "s@remote.test",
            ["alice@example.org", "BOB@Example.org", "postmaster@example.org"],
            "Subject: both\r\n\r\nhi\r\n",
        )
    alice = mailserver.new_files("alice@example.org")
    bob = mailserver.new_files("bob@example.org")
    assert len(alice) == 1 and len(bob) == 1  # postmaster -> alice: still one copy
    assert alice[0].read_bytes() == bob[0].read_bytes()
    assert b"\tfor <" not in alice[0].read_bytes()  # several recipients: none named (RFC 5321 7.2)


def test_swaks_delivers(mailserver: MailServer) -> None:
    swaks = need_program("swaks", "swaks")
    result = subprocess.run(
        [
            swaks,
            "--server",
            f"{mailserver.host}:{mailserver.port}",
            "--from",
            "a@remote.test",
            "--to",
            "bob@example.org",
            "--header",
            "Subject: via swaks",
            "--body",
            "swaks body",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "<-  250 2.0.0 OK: message stored as " in result.stdout
    files = mailserver.new_files("bob@example.org")
    assert len(files) == 1
    msg = mailbox.MaildirMessage(files[0].read_bytes())
    assert msg["Subject"] == "via swaks"
    assert msg.get_payload().strip() == "swaks body"


def test_swaks_unknown_user_gets_550(mailserver: MailServer) -> None:
    swaks = need_program("swaks", "swaks")
    result = subprocess.run(
        [
            swaks,
            "--server",
            f"{mailserver.host}:{mailserver.port}",
            "--from",
            "a@remote.test",
            "--to",
            "carol@example.org",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 24  # swaks: the RCPT was refused
    assert "<** 550 5.1.1 No such user here" in result.stdout


def test_smtp_source_1000_messages_10_sessions(mailserver: MailServer) -> None:
    source = need_program("smtp-source", "postfix")
    result = subprocess.run(
        [
            source,
            "-s",
            "10",
            "-m",
            "1000",
            "-l",
            "1024",
            "-f",
            "load@remote.test",
            "-t",
            "alice@example.org",
            f"{mailserver.host}:{mailserver.port}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    files = mailserver.new_files("alice@example.org")
    assert len(files) == 1000
    box = mailbox.Maildir(mailserver.maildir("alice@example.org"), create=False)
    assert len(box) == 1000
    for msg in box:
        assert msg["Return-Path"] == "<load@remote.test>"
        assert msg["Received"] is not None
    # The journal is appended every few milliseconds.
    wait_for(lambda: sum(r["event"] == "stored" for r in mailserver.journal()) >= 1000)
    stored = [r for r in mailserver.journal() if r["event"] == "stored"]
    assert len(stored) == 1000


def test_journal_records_and_tail(mailserver: MailServer) -> None:
    with smtplib.SMTP(mailserver.host, mailserver.port) as smtp:
        smtp.ehlo("client.test")
        smtp.sendmail("s@remote.test", ["alice@example.org"], "Subject: j\r\n\r\nx\r\n")

    def ours() -> list[dict[str, object]]:
        helo = [r for r in mailserver.journal() if r.get("name") == "client.test"]
        return [r for r in mailserver.journal() if helo and r["session"] == helo[0]["session"]]

    wait_for(lambda: any(r["event"] == "close" for r in ours()))
    records = ours()
    events = [r["event"] for r in records]
    assert events[:2] == ["connect", "helo"]
    assert events[-1] == "close"
    assert {"mail", "rcpt", "stored"} <= set(events)
    stored = next(r for r in records if r["event"] == "stored")
    assert stored["to"] == ["alice@example.org"] and stored["sender"] == "s@remote.test"
    assert stored["files"][0].startswith("alice@example.org/new/")
    assert len({r["session"] for r in records}) == 1
    assert all(r["peer"].startswith("127.0.0.1:") for r in records)
    files = sorted((mailserver.directory / "journal").iterdir())
    assert [len(f.name) for f in files] == [13] * len(files)  # YYYY_MM_DD_HH

    def tails_match() -> bool:
        """``journal tail`` shows the journal's last lines. Another worker's lines (its
        start, on a slow machine) may still arrive: compare only while nothing did."""
        last = mailserver.journal()[-3:]
        out = smtpkit("journal", "tail", "-n", "3", "--json", config=mailserver.config).stdout
        readable = smtpkit("journal", "tail", "-n", "1", config=mailserver.config).stdout
        if mailserver.journal()[-3:] != last:
            return False
        assert [json.loads(line) for line in out.splitlines()] == last
        assert readable.count("\n") == 1
        assert readable.startswith(f"{last[-1]['time']} ") and f" {last[-1]['event']} " in readable
        return True

    wait_for(tails_match)


def test_sigterm_exits_zero_and_answers_421(mailserver: MailServer) -> None:
    sock = socket.create_connection((mailserver.host, mailserver.port), timeout=10)
    assert sock.recv(1024).startswith(b"220 ")
    assert mailserver.stop(signal.SIGTERM) == 0
    assert sock.recv(1024) == b"421 4.3.2 Service shutting down, closing connection\r\n"
    sock.close()


def journal_files(server: MailServer) -> list[Path]:
    return sorted((server.directory / "journal").iterdir())


def test_sigterm_lets_a_message_in_data_finish(mailserver: MailServer) -> None:
    sock = socket.create_connection((mailserver.host, mailserver.port), timeout=10)
    f = sock.makefile("rb")
    f.readline()
    sock.sendall(b"HELO c\r\nMAIL FROM:<s@remote.test>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n")
    for _ in range(4):
        f.readline()
    sock.sendall(b"Subject: late\r\n\r\nhalf")
    assert mailserver.process is not None
    mailserver.process.send_signal(signal.SIGTERM)
    # The rest goes once the server has begun its shutdown (it journals "stopping").
    deadline = time.monotonic() + 10
    while not any('"event":"stopping"' in p.read_text() for p in journal_files(mailserver)):
        assert time.monotonic() < deadline, "the server never began to stop"
        time.sleep(0.02)
    sock.sendall(b" and the rest\r\n.\r\n")
    assert f.readline().startswith(b"250 2.0.0 OK: message stored as ")
    assert f.readline() == b"421 4.3.2 Service shutting down, closing connection\r\n"
    assert mailserver.stop() == 0
    assert (
        mailserver.new_files("bob@example.org")[0].read_bytes().endswith(b"half and the rest\r\n")
    )


def test_address_in_use_is_one_line_and_nonzero(tmp_path: Path) -> None:
    server = make_server(tmp_path)
    with socket.socket() as blocker:
        blocker.bind((server.host, server.port))
        blocker.listen()
        result = smtpkit("serve", config=server.config, check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"Error: cannot listen on 127.0.0.1:{server.port}: address already in use "
        "(is another mail server running?)"
    )
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("limit_line", ["max_connections_per_ip = 2", "max_connections = 2"])
def test_connection_limits_answer_421(tmp_path: Path, limit_line: str) -> None:
    server = make_server(tmp_path, extra_config=f"\n[limits]\n{limit_line}\n")
    server.start()
    try:
        held = [socket.create_connection((server.host, server.port), timeout=10) for _ in range(2)]
        for s in held:
            assert s.recv(1024).startswith(b"220 ")
        extra = socket.create_connection((server.host, server.port), timeout=10)
        assert extra.recv(1024).startswith(b"421 4.7.0 Too many connections")
        assert extra.recv(1024) == b""
        extra.close()
        for s in held:
            s.close()
    finally:
        server.stop()


def test_idle_session_times_out_with_421(tmp_path: Path) -> None:
    server = make_server(tmp_path, extra_config="\n[limits]\ncommand_timeout = 1\n")
    server.start()
    try:
        with socket.create_connection((server.host, server.port), timeout=10) as s:
            f = s.makefile("rb")
            assert f.readline().startswith(b"220 ")
            s.sendall(b"EHLO slow")  # never finished: the deadline is per command, not per byte
            started = time.monotonic()
            assert f.readline() == b"421 4.4.2 Timeout exceeded, closing connection\r\n"
            assert time.monotonic() - started < 5
            assert f.readline() == b""
    finally:
        server.stop()


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.timeout(60)
def test_a_client_that_never_reads_replies_cannot_grow_memory(tmp_path: Path) -> None:
    server = make_server(tmp_path)
    server.start("--workers", "1", "--quiet")
    assert server.process is not None
    try:
        before = rss_kb(server.process.pid)
        sock = socket.create_connection((server.host, server.port), timeout=10)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(3)
        # EHLO: neither refused nor junk, so only back-pressure can stop it.
        chunk = b"EHLO x.example\r\n" * 4000
        sent = 0
        try:
            while sent < 100 * 1024 * 1024:  # at most 100 MB, far more than buffers hold
                sock.sendall(chunk)
                sent += len(chunk)
        except TimeoutError:
            pass  # the server stopped reading: back-pressure reached us
        grown = rss_kb(server.process.pid) - before
        assert sent < 100 * 1024 * 1024, "the server kept reading without sending replies"
        assert grown < 20 * 1024, f"RSS grew by {grown} KB"
        sock.close()
        # The server is still serving others.
        with smtplib.SMTP(server.host, server.port, timeout=10) as smtp:
            assert smtp.noop()[0] == 250
    finally:
        server.stop()


@pytest.mark.timeout(60)
def test_journal_tail_follow_prints_new_events_and_stderr_echoes_them(
    mailserver: MailServer,
) -> None:
    import queue
    import threading

    follower = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "smtpkit",
            "-c",
            str(mailserver.config),
            "journal",
            "tail",
            "-n",
            "1",
            "-f",
            "--json",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert follower.stdout is not None
        for line in follower.stdout:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    hostile = "evil\u009b31m\u2002code=250"  # a C1 control (CSI) and an EN SPACE
    try:
        # The server journals "start" before it listens, so the tail has a line to print.
        # Once it is printed the follower has taken its snapshot of the journal's end, and
        # every event after it will be followed: only then send mail.
        json.loads(lines.get(timeout=30))
        with smtplib.SMTP(mailserver.host, mailserver.port) as smtp:
            assert smtp.ehlo()[0] == 250
            # A non-ASCII sender is refused (no SMTPUTF8), and journaled as sent.
            smtp.send(f"MAIL FROM:<{hostile}@remote.test>\r\n".encode())
            assert smtp.getreply()[0] == 553
            smtp.sendmail("f@remote.test", ["bob@example.org"], "Subject: f\r\n\r\nx\r\n")
        raw: list[str] = []
        seen: list[dict[str, object]] = []
        session = None
        while not any(r["event"] == "close" and r["session"] == session for r in seen):
            raw.append(lines.get(timeout=30))
            seen.append(json.loads(raw[-1]))
            if seen[-1]["event"] == "stored":
                session = seen[-1]["session"]
        mine = [(line, r) for line, r in zip(raw, seen, strict=True) if r["session"] == session]
        assert [r["event"] for _, r in mine] == [
            "connect",
            "helo",
            "mail",
            "mail",
            "rcpt",
            "stored",
            "close",
        ]
        # Stored and shown as printable ASCII, the client's text as JSON escapes.
        assert all(line.isascii() and line.rstrip("\n").isprintable() for line in raw)
        assert '"sender":"evil\\u009b31m\\u2002code=250@remote.test"' in mine[2][0]
        assert mine[2][1]["sender"] == f"{hostile}@remote.test"
    finally:
        follower.terminate()
        follower.wait(timeout=10)
    # The same events, readable, on the server's stderr (no --quiet), the name escaped and
    # quoted so that it cannot pass for a code=250 field.
    stderr = mailserver.stderr()
    echoed = [line for line in stderr.splitlines() if f" {session} " in line]
    assert [line.split()[3] for line in echoed] == [r["event"] for _, r in mine]
    assert echoed[2].split(" ", 3)[3] == (
        'mail sender="evil\\u009b31m\\u2002code=250@remote.test" code=553 '
        'text="553 5.6.7 Non-ASCII addresses are not permitted without SMTPUTF8"'
    )
    assert "\u009b" not in stderr and "\u2002" not in stderr


def test_privileged_port_without_the_capability_is_one_line(tmp_path: Path) -> None:
    setpriv = need_program("setpriv", "util-linux")
    smtpkit("init", str(tmp_path / "d"), "--domain", "example.org", "--listen", "127.0.0.1:25")
    result = subprocess.run(
        [
            setpriv,
            "--bounding-set",
            "-net_bind_service",
            "--inh-caps",
            "-net_bind_service",
            sys.executable,
            "-m",
            "smtpkit",
            "-c",
            str(tmp_path / "d" / "smtpkit.toml"),
            "serve",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "Error: cannot listen on 127.0.0.1:25: permission denied "
        "(ports below 1024 need root or CAP_NET_BIND_SERVICE)"
    ]


def test_ipv6_listen_address_receives_mail(tmp_path: Path) -> None:
    try:
        port = free_port("::1") if socket.has_ipv6 else 0
    except OSError:
        port = 0
    if not port:
        unavailable("no IPv6 loopback on this machine")
    smtpkit("init", str(tmp_path / "d"), "--domain", "example.org", "--listen", f"[::1]:{port}")
    config = tmp_path / "d" / "smtpkit.toml"
    smtpkit("user", "add", "alice@example.org", config=config)
    server = MailServer(tmp_path / "d", config, "::1", port, "example.org")
    server.start("--workers", "1")
    with smtplib.SMTP("::1", port) as smtp:
        assert smtp.sendmail("s@remote.test", ["alice@example.org"], "Subject: v6\r\n\r\n") == {}
    (stored,) = server.new_files("alice@example.org")
    assert b"([IPv6:::1])\r\n" in stored.read_bytes()
    assert server.stop() == 0


def test_under_umask_000_every_folder_gets_its_own_mode(tmp_path: Path) -> None:
    """init, user add and serve under umask 000 (a careless shell or unit): nothing they
    create is open to other users, let alone writable by them."""

    def run(*args: str) -> None:
        subprocess.run(
            [sys.executable, "-m", "smtpkit", *args],
            check=True,
            capture_output=True,
            preexec_fn=lambda: os.umask(0),
            timeout=60,
        )

    port = free_port()
    data = tmp_path / "new" / "data"  # a parent that does not exist yet either
    run("init", str(data), "--domain", "example.org", "--listen", f"127.0.0.1:{port}")
    config = str(data / "smtpkit.toml")
    run("-c", config, "user", "add", "alice@example.org")
    server = MailServer(data, data / "smtpkit.toml", "127.0.0.1", port, "example.org")
    server.process = subprocess.Popen(
        [sys.executable, "-m", "smtpkit", "-c", config, "serve", "--quiet", "--workers", "1"],
        preexec_fn=lambda: os.umask(0),
    )
    _RUNNING.append(server)
    wait_for_banner(server.host, server.port, server.process)
    with smtplib.SMTP(server.host, server.port, timeout=10) as smtp:
        smtp.sendmail("a@remote.test", ["alice@example.org"], "Subject: m\r\n\r\nx\r\n")
    assert server.stop() == 0
    modes = {
        str(p.relative_to(tmp_path)): stat.S_IMODE(p.lstat().st_mode)
        for p in [tmp_path / "new", *sorted((tmp_path / "new").rglob("*"))]
    }
    folders = {k: v for k, v in modes.items() if (tmp_path / k).is_dir()}
    assert folders == {
        "new": 0o750,
        "new/data": 0o751,  # others may pass through to the maildrop, and no further
        "new/data/journal": 0o750,
        "new/data/maildrop": 0o1733,
        "new/data/queue": 0o700,
        "new/data/users": 0o700,
        "new/data/users/.spool": 0o700,
        "new/data/users/.spool/0": 0o700,
        "new/data/users/alice@example.org": 0o700,
        "new/data/users/alice@example.org/cur": 0o700,
        "new/data/users/alice@example.org/new": 0o700,
        "new/data/users/alice@example.org/tmp": 0o700,
    }
    # Nothing writable by others but the sticky maildrop; mail and the journal readable by
    # nobody else.
    writable = [k for k, v in modes.items() if v & 0o002]
    assert writable == ["new/data/maildrop"], modes
    (message,) = (data / "users" / "alice@example.org" / "new").iterdir()
    assert stat.S_IMODE(message.stat().st_mode) == 0o600
    for hour in (data / "journal").iterdir():
        assert stat.S_IMODE(hour.stat().st_mode) == 0o640
