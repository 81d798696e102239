"""smtpkit run by a service user: started by root (binds, then the workers become the data
folder's owner), or started directly as that user, as a systemd unit does.

Runs as root (as CI does): the test creates a system user of its own and removes it after.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import signal
import smtplib
import ssl
import subprocess
import time
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import tomli_w

from smtpkit.delivery.queue import QueueError, clean_queue
from smtpkit.owner import as_owner
from tests.conftest import (
    _RUNNING,
    MailServer,
    free_port,
    make_server,
    smtpkit,
    unavailable,
    wait_for_banner,
)
from tests.e2e.test_tls import SMTPTo, client_context, served_certificate, wait_for


@pytest.fixture
def service_user() -> Iterator[pwd.struct_passwd]:
    if os.geteuid() != 0:
        unavailable("creating a service user needs root (CI runs as root)")
    name = f"smtpkit-t{uuid.uuid4().hex[:8]}"
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        check=True,
        capture_output=True,
    )
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], check=False, capture_output=True)


def owned_server(
    root: Path,
    user: pwd.struct_passwd,
    *,
    domains: tuple[str, ...] = ("example.org",),
    users: tuple[str, ...] = ("alice@example.org", "bob@example.org"),
) -> MailServer:
    """The README's service layout: the config root's (outside the data folder), the data
    folder made by `init --owner` and filled by root's `user add`."""
    port = free_port()
    config = root / "etc" / "smtpkit.toml"
    directory = root / "var" / "smtpkit"
    smtpkit(
        "-c", str(config), "init", str(directory), "--owner", user.pw_name,
        *(arg for domain in domains for arg in ("--domain", domain)),
        "--hostname", "mx.test.example", "--listen", f"127.0.0.1:{port}",
    )  # fmt: skip
    smtpkit("user", "add", *users, config=config)
    return MailServer(directory, config, "127.0.0.1", port, domains[0])


def process_uids(pid: int) -> tuple[int, ...]:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("Uid:"):
                return tuple(int(x) for x in line.split()[1:4])
    raise AssertionError("no Uid line")


def children(pid: int) -> list[int]:
    out = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True, check=False
    )
    return sorted(int(p) for p in out.stdout.split())


def wait_children(pid: int, count: int, without: frozenset[int] = frozenset()) -> list[int]:
    deadline = time.monotonic() + 15
    while True:
        found = children(pid)
        if len(found) == count and not set(found) & without:
            return found
        assert time.monotonic() < deadline, f"expected {count} workers, found {found}"
        time.sleep(0.05)


def not_owned_by(directory: Path, uid: int) -> list[Path]:
    """Files under the data folder not owned by ``uid``, but for root's own: the config
    (which a service user must not be able to change) and the test's stderr log."""
    return [
        p
        for p in [directory, *directory.rglob("*")]
        if p.lstat().st_uid != uid and p.name not in ("smtpkit.toml", "serve.stderr")
    ]


@pytest.mark.timeout(90)
@pytest.mark.parametrize("workers", ["1", "2"])
def test_started_by_root_the_workers_run_as_the_owner(
    open_tmp_path: Path, service_user: pwd.struct_passwd, workers: str
) -> None:
    server = owned_server(open_tmp_path, service_user)
    server.start("--workers", workers)
    assert server.process is not None
    master = server.process.pid
    try:
        assert process_uids(master) == (0, 0, 0)  # the supervisor keeps root
        pids = wait_children(master, int(workers))
        uid = service_user.pw_uid
        assert [process_uids(pid) for pid in pids] == [(uid, uid, uid)] * int(workers)
        with smtplib.SMTP(server.host, server.port, timeout=10) as smtp:
            smtp.sendmail("s@remote.test", ["alice@example.org"], "Subject: a\r\n\r\nx\r\n")
        assert len(server.new_files("alice@example.org")) == 1
    finally:
        assert server.stop() == 0
    # Every file the server made (journal, spool pool, message) belongs to the owner.
    assert not_owned_by(server.directory, service_user.pw_uid) == []
    assert f"({workers} workers, as {service_user.pw_name})" in server.stderr()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_started_as_the_owner_it_serves_without_root(
    open_tmp_path: Path, service_user: pwd.struct_passwd, system_venv: Path
) -> None:
    """As a systemd unit with User= runs it (a port over 1024 here; the unit adds
    CAP_NET_BIND_SERVICE for port 25)."""
    server = owned_server(open_tmp_path, service_user)
    uid, gid = service_user.pw_uid, service_user.pw_gid
    server.process = subprocess.Popen(
        [str(system_venv / "bin" / "smtpkit"), "-c", str(server.config), "serve", "--workers", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        user=uid,
        group=gid,
        extra_groups=[],
        cwd=open_tmp_path,
    )
    _RUNNING.append(server)
    wait_for_banner(server.host, server.port, server.process)
    assert process_uids(server.process.pid) == (uid, uid, uid)
    with smtplib.SMTP(server.host, server.port, timeout=10) as smtp:
        smtp.sendmail("s@remote.test", ["bob@example.org"], "Subject: b\r\n\r\nx\r\n")
    assert len(server.new_files("bob@example.org")) == 1
    assert server.stop() == 0
    assert not_owned_by(server.directory, uid) == []


@pytest.mark.timeout(120)
def test_a_root_only_key_is_read_by_the_supervisor_and_reloaded_on_sighup(
    open_tmp_path: Path, service_user: pwd.struct_passwd
) -> None:
    """The key is root's alone (as Let's Encrypt keeps it): the workers, running as the
    owner, could not read it. The supervisor reads it at start and again on SIGHUP, and
    replaces the workers with ones that use the new certificate."""
    server = owned_server(open_tmp_path, service_user)
    keys = open_tmp_path / "root-keys"
    keys.mkdir(mode=0o700)
    smtpkit("tls", "self-signed", "--hostname", "mx.test.example", config=server.config)
    tls_dir = server.directory / "tls"
    for name in ("cert.pem", "key.pem"):
        (keys / name).write_bytes((tls_dir / name).read_bytes())
        (keys / name).chmod(0o600)
    data = tomllib.loads(server.config.read_text())
    data["tls"] = {"certificate": str(keys / "cert.pem"), "key": str(keys / "key.pem")}
    server.config.write_text(tomli_w.dumps(data))
    server.start("--workers", "2")
    assert server.process is not None
    master = server.process.pid
    try:
        first = (keys / "cert.pem").read_text()
        assert served_certificate(server, first) == ssl.PEM_cert_to_DER_cert(first)
        old = set(wait_children(master, 2))
        # A renewal, written where only root can read it.
        smtpkit("tls", "self-signed", "--force", "--key-type", "rsa", config=server.config)
        for name in ("cert.pem", "key.pem"):
            (keys / name).write_bytes((tls_dir / name).read_bytes())
        second = (keys / "cert.pem").read_text()
        assert second != first
        server.process.send_signal(signal.SIGHUP)
        wait_for(lambda: any(r["event"] == "tls_reload" and r["ok"] for r in server.journal()))
        new = wait_children(
            master, 2, without=frozenset(old)
        )  # the old generation drained and left
        uid = service_user.pw_uid
        assert [process_uids(pid) for pid in new] == [(uid, uid, uid)] * 2
        for _ in range(4):
            assert served_certificate(server, second) == ssl.PEM_cert_to_DER_cert(second)
        # A broken renewal keeps the workers and the certificate.
        (keys / "cert.pem").write_text("-----BEGIN CERTIFICATE-----\nbroken\n")
        server.process.send_signal(signal.SIGHUP)
        wait_for(lambda: any(r["event"] == "tls_reload" and not r["ok"] for r in server.journal()))
        assert children(master) == new
        assert served_certificate(server, second) == ssl.PEM_cert_to_DER_cert(second)
        with SMTPTo(server) as smtp:
            smtp.starttls(context=client_context(server, second))
            smtp.ehlo("client.test")
            smtp.sendmail("s@remote.test", ["alice@example.org"], "Subject: t\r\n\r\nx\r\n")
    finally:
        assert server.stop() == 0
    assert not_owned_by(server.directory, service_user.pw_uid) == []


@pytest.mark.timeout(60)
def test_a_root_owned_new_folder_is_one_line_at_start(
    open_tmp_path: Path, service_user: pwd.struct_passwd
) -> None:
    """A root `mkdir` or `cp` in a Maildir: the workers, running as the owner, could not
    store alice's mail. serve says so in one line and exits 1, never a traceback."""
    server = owned_server(open_tmp_path, service_user)
    new = server.maildir("alice@example.org") / "new"
    os.chown(new, 0, 0)
    new.chmod(0o700)
    result = smtpkit("serve", config=server.config, check=False)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        "Error: cannot write users/alice@example.org/new: owned by root, mode 0700; "
        f"smtpkit runs as {service_user.pw_name}"
    ]
    # Given back to the owner, it starts.
    os.chown(new, service_user.pw_uid, service_user.pw_gid)
    server.start()
    assert server.stop() == 0


def refused_by_serve_and_check(server: MailServer, text: str) -> None:
    """serve stops with ``text`` as its one line, before binding anything, and check names
    the same problem as fatal: the two agree on what stops the server."""
    result = smtpkit("serve", config=server.config, check=False)
    assert (result.returncode, result.stderr.splitlines()) == (1, [f"Error: {text}"])
    checked = smtpkit("check", "--json", config=server.config, check=False)
    assert checked.returncode == 1
    problems = [json.loads(line) for line in checked.stdout.splitlines()]
    assert [p["text"] for p in problems if p["fatal"]] == [text]


@pytest.mark.timeout(90)
def test_a_queue_the_owner_cannot_write_stops_serve_and_check(
    open_tmp_path: Path, service_user: pwd.struct_passwd
) -> None:
    """Mail for other domains is written to queue/: a root `mkdir` there (or a mode without
    write) would cost that mail, or end serve's start in a traceback."""
    server = owned_server(open_tmp_path, service_user)
    name, uid, gid = service_user.pw_name, service_user.pw_uid, service_user.pw_gid
    queue = server.directory / "queue"
    queue.mkdir(mode=0o700)  # root's
    refused_by_serve_and_check(
        server, f"cannot write queue: owned by root, mode 0700; smtpkit runs as {name}"
    )
    os.chown(queue, uid, gid)
    queue.chmod(0o500)
    refused_by_serve_and_check(
        server, f"cannot write queue: owned by {name}, mode 0500; smtpkit runs as {name}"
    )
    queue.chmod(0o700)
    server.start()
    assert server.stop() == 0


@pytest.mark.timeout(90)
@pytest.mark.parametrize("what", ["maildrop", "smtpkit.pid"])
def test_a_maildrop_or_pid_file_of_roots_stops_serve_and_check(
    open_tmp_path: Path, service_user: pwd.struct_passwd, what: str
) -> None:
    """Left by a root `mkdir`, or by a server run as root before the folder was given to
    its user: serve, as the owner, cannot use them, and root does not take over a file in
    a folder the owner controls (the owner could have put anything there)."""
    server = owned_server(open_tmp_path, service_user)
    name = service_user.pw_name
    path = server.directory / what
    if what == "maildrop":
        os.chown(path, 0, 0)  # init made it the owner's, mode 1733
        group = grp.getgrgid(service_user.pw_gid).gr_name
        text = (
            f"maildrop: owned by root, not by {name}, so smtpkit serve cannot take it over "
            f"(chown {name}:{group} {path}; serve then sets its mode, 1733)"
        )
    else:
        path.write_text("4242\n")
        path.chmod(0o644)
        text = (
            f"cannot write smtpkit.pid: owned by root, mode 0644; smtpkit runs as {name} "
            "(once no server runs for this folder, remove it)"
        )
    refused_by_serve_and_check(server, text)
    if what == "maildrop":
        os.chown(path, service_user.pw_uid, service_user.pw_gid)
    else:
        path.unlink()
    server.start()
    assert server.stop() == 0
    assert not_owned_by(server.directory, service_user.pw_uid) == []


@pytest.mark.timeout(60)
def test_a_root_owned_data_folder_says_once_to_use_owner(tmp_path: Path) -> None:
    """The Quick start's folder (or a container's) is root's: serve runs as root, and says
    once how production avoids it."""
    if os.geteuid() != 0:
        unavailable("a data folder owned by root needs root (CI runs as root)")
    server = make_server(tmp_path)
    server.start()
    assert server.stop() == 0
    warnings = [line for line in server.stderr().splitlines() if "owned by root" in line]
    assert warnings == [
        f"smtpkit: warning: {server.directory}: owned by root, so smtpkit serve runs as root: "
        "production should give the data folder a user of its own (smtpkit init --owner USER "
        "for a new one; for this one: useradd --system smtpkit; chown -R smtpkit: "
        f"{server.directory})"
    ]


def test_a_queue_unreadable_at_start_up_is_one_error(
    open_tmp_path: Path, service_user: pwd.struct_passwd
) -> None:
    """Should queue/ change between serve's checks and its clean-up of the queue, that
    clean-up raises the error serve prints as one line, not a PermissionError."""
    data = open_tmp_path / "data"
    data.mkdir()
    os.chown(data, service_user.pw_uid, service_user.pw_gid)
    queue = data / "queue"
    queue.mkdir(mode=0o700)  # root's
    with as_owner(data), pytest.raises(QueueError) as caught:
        clean_queue(queue)
    assert str(caught.value) == f"cannot read {queue}: Permission denied"
