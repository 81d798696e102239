"""``smtpkit status`` and ``smtpkit reload`` against real ``smtpkit serve`` processes, and the
pid file they rely on: written at start, removed at exit, never trusted on its number alone.
"""

from __future__ import annotations

import json
import os
import signal
import smtplib
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from tests.conftest import (
    MailServer,
    free_port,
    make_server,
    smtpkit,
    wait_for_banner,
)

TIMEOUT = 20.0


def wait_for(predicate: Callable[[], object], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not in {timeout:.0f}s: {what}")
        time.sleep(0.02)


def run(server: MailServer, *args: str) -> subprocess.CompletedProcess[str]:
    return smtpkit(*args, config=server.config, check=False)


def status_json(server: MailServer) -> dict[str, Any]:
    result = run(server, "status", "--json")
    assert result.returncode in (0, 3), result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def events(server: MailServer, *names: str) -> int:
    return sum(r["event"] in names for r in server.journal())


def pid_file(server: MailServer) -> Path:
    return server.directory / "smtpkit.pid"


def running_pid(server: MailServer) -> int:
    assert server.process is not None
    return server.process.pid


# --- a running server ---------------------------------------------------------------------------


def test_status_of_a_running_server_with_its_workers_queue_and_last_hour(tmp_path: Path) -> None:
    # Loopback may relay, and what it relays stays queued: one message to count in the queue.
    server = make_server(
        tmp_path,
        extra_config='[submission]\ntrusted_networks = ["127.0.0.0/8"]\n[queue]\nhold = true\n',
    )
    server.start("--workers", "2")
    pid = running_pid(server)
    assert pid_file(server).read_text() == f"{pid}\n"
    assert pid_file(server).stat().st_mode & 0o777 == 0o644
    # Both workers are forked right away; the first may answer before the second exists.
    wait_for(lambda: status_json(server)["workers"] == 2, "two workers")
    # The start-up probe's sessions are over (and flushed) before counting begins.
    wait_for(
        lambda: events(server, "connect") == events(server, "close") > 0, "probe sessions ended"
    )
    before = status_json(server)["last_hour"]["connections"]
    closes = events(server, "close")

    with smtplib.SMTP(server.host, server.port) as smtp:
        assert smtp.sendmail("a@client.test", ["alice@example.org"], "Subject: 1\r\n\r\nx") == {}
    with smtplib.SMTP(server.host, server.port) as smtp:
        assert smtp.sendmail("a@client.test", ["far@remote.test"], "Subject: 2\r\n\r\nx") == {}
    refused = pytest.raises(smtplib.SMTPRecipientsRefused)
    with smtplib.SMTP(server.host, server.port) as smtp, refused:
        smtp.sendmail("a@client.test", ["nobody@example.org"], "Subject: 3\r\n\r\nx")
    wait_for(lambda: events(server, "close") == closes + 3, "the three sessions in the journal")

    result = run(server, "status", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(data) == {
        "state",
        "running",
        "pid",
        "pid_file",
        "stale",
        "started",
        "uptime",
        "workers",
        "listeners",
        "queue",
        "last_hour",
    }
    assert (data["state"], data["running"], data["pid"]) == ("running", True, pid)
    assert (data["pid_file"], data["stale"], data["workers"]) == (str(pid_file(server)), None, 2)
    assert isinstance(data["uptime"], int) and 0 <= data["uptime"] < 600
    assert data["started"].endswith("Z")
    assert data["listeners"] == [
        {
            "address": f"127.0.0.1:{server.port}",
            "host": "127.0.0.1",
            "port": server.port,
            "role": "receive",
        }
    ]
    assert data["queue"] == {"folder": str(server.directory / "queue"), "messages": 1}
    hour = data["last_hour"]
    assert hour.pop("since").endswith("Z")
    assert hour == {"connections": before + 3, "accepted": 2, "refused": 1, "deferred": 0}

    text = run(server, "status")
    assert text.returncode == 0
    lines = text.stdout.splitlines()
    assert lines[0].startswith(f"smtpkit serve is running (pid {pid}, up ")
    assert lines[0].endswith(", 2 workers)")
    assert f"  pid file:   {pid_file(server)}" in lines
    assert f"  listen:     127.0.0.1:{server.port} (receive)" in lines
    assert f"  queue:      1 message in {server.directory / 'queue'}" in lines
    assert f"  last hour:  {before + 3} connections, 2 accepted, 1 refused, 0 deferred" in lines

    assert server.stop() == 0
    assert not pid_file(server).exists()


def test_one_worker_in_the_main_process_counts_as_one(tmp_path: Path) -> None:
    server = make_server(tmp_path)
    server.start("--workers", "1")
    data = status_json(server)
    assert (data["running"], data["pid"], data["workers"]) == (True, running_pid(server), 1)


# --- not running --------------------------------------------------------------------------------


def test_a_stopped_server(tmp_path: Path) -> None:
    server = make_server(tmp_path)
    missing = f"no pid file {pid_file(server)}"
    result = run(server, "status")
    assert result.returncode == 3, result.stderr
    assert result.stdout.splitlines()[0] == f"smtpkit serve is not running ({missing})"
    assert f"  listen:     127.0.0.1:{server.port} (receive)" in result.stdout.splitlines()
    data = status_json(server)
    assert (data["state"], data["running"], data["pid"], data["workers"]) == (
        "stopped",
        False,
        None,
        None,
    )
    reload = run(server, "reload")
    assert (reload.returncode, reload.stdout) == (1, "")
    assert reload.stderr == f"Error: smtpkit serve is not running ({missing})\n"


def test_a_bad_config_is_an_error(tmp_path: Path) -> None:
    config = tmp_path / "smtpkit.toml"
    config.write_text("[server\n")
    for command in ("status", "reload"):
        result = smtpkit(command, config=config, check=False)
        assert result.returncode == 1
        assert result.stderr.startswith("Error: not valid TOML")


@pytest.mark.parametrize("owner", ["a dead process", "an unrelated live process (this test)"])
def test_a_stale_pid_file_is_not_running_and_nobody_is_signalled(
    tmp_path: Path, owner: str
) -> None:
    server = make_server(tmp_path)
    if owner == "a dead process":
        gone = subprocess.Popen(["true"])
        gone.wait()
        pid = gone.pid
    else:
        pid = os.getpid()
    pid_file(server).write_text(f"{pid}\n")

    result = run(server, "status")
    assert result.returncode == 3, result.stderr
    first, second = result.stdout.splitlines()[:2]
    assert first == f"smtpkit serve is not running (stale pid file {pid_file(server)})"
    assert second.startswith(f"  stale:      pid {pid} ")
    data = status_json(server)
    assert (data["state"], data["running"], data["pid"]) == ("stale", False, None)
    assert data["stale"].startswith(f"pid {pid} ")

    # SIGHUP would end this test's process: caught, and held back, so that one sent now
    # would show as pending rather than slip by.
    caught: list[int] = []
    previous = signal.signal(signal.SIGHUP, lambda signum, frame: caught.append(signum))
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
    try:
        reload = run(server, "reload")
        assert signal.SIGHUP not in signal.sigpending()
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
        signal.signal(signal.SIGHUP, previous)
    assert caught == []
    assert (reload.returncode, reload.stdout) == (1, "")
    assert reload.stderr.startswith(
        f"Error: smtpkit serve is not running (stale pid file {pid_file(server)}: pid {pid} "
    )
    assert pid_file(server).read_text() == f"{pid}\n"  # status and reload only read it

    server.start()  # a stale file does not stop a server: it is replaced
    assert pid_file(server).read_text() == f"{running_pid(server)}\n"
    assert run(server, "status").returncode == 0


def test_a_process_locking_the_pid_file_is_not_a_server(tmp_path: Path) -> None:
    """Holding the lock is not enough: the holder must be smtpkit serve too."""
    server = make_server(tmp_path)
    locker = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, signal, sys\n"
            "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})\n"
            "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)\n"
            "os.write(fd, b'%d\\n' % os.getpid())\n"
            "fcntl.lockf(fd, fcntl.LOCK_EX)\n"
            "print('locked', flush=True)\n"
            "sys.stdin.read()\n",
            str(pid_file(server)),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert locker.stdout is not None and locker.stdout.readline() == "locked\n"
        result = run(server, "status")
        assert result.returncode == 3
        assert result.stdout.splitlines()[1] == (
            f"  stale:      pid {locker.pid} locks it but is not smtpkit serve"
        )
        reload = run(server, "reload")
        assert reload.returncode == 1
        assert "stale pid file" in reload.stderr
        status = Path(f"/proc/{locker.pid}/status").read_text()
        pending = next(line for line in status.splitlines() if line.startswith("ShdPnd:"))
        assert not int(pending.split()[1], 16) & (1 << (signal.SIGHUP - 1))
    finally:
        locker.kill()
        locker.wait()


# --- reload -------------------------------------------------------------------------------------


def test_reload_sends_sighup_to_the_running_server(tmp_path: Path) -> None:
    server = make_server(tmp_path)
    smtpkit("tls", "self-signed", config=server.config)  # SIGHUP reloads the certificate
    server.start("--workers", "1")
    wait_for(lambda: events(server, "start") == 1, "the worker's start line")
    assert events(server, "reload", "tls_reload") == 0

    result = run(server, "reload")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == f"Sent SIGHUP to smtpkit serve (pid {running_pid(server)})\n"
    wait_for(lambda: events(server, "reload", "tls_reload") > 0, "a reload in the journal")
    reloaded = [r for r in server.journal() if r["event"] in ("reload", "tls_reload")]
    assert all(r["ok"] is True for r in reloaded), reloaded
    assert server.process is not None and server.process.poll() is None
    assert server.stop() == 0


# --- the pid file's life ------------------------------------------------------------------------


def test_the_pid_file_goes_at_sigterm_and_goes_stale_at_sigkill(tmp_path: Path) -> None:
    server = make_server(tmp_path)
    server.start("--workers", "1")
    assert pid_file(server).read_text() == f"{running_pid(server)}\n"
    assert server.stop(signal.SIGTERM) == 0
    assert not pid_file(server).exists()
    assert run(server, "status").returncode == 3

    server.start("--workers", "1")
    killed = running_pid(server)
    assert server.stop(signal.SIGKILL) == -signal.SIGKILL
    assert pid_file(server).read_text() == f"{killed}\n"  # nobody left to remove it
    result = run(server, "status")
    assert result.returncode == 3
    assert result.stdout.startswith("smtpkit serve is not running (stale pid file ")

    server.start("--workers", "1")
    assert status_json(server)["pid"] == running_pid(server)


def test_a_second_server_for_the_same_data_folder_stops_with_one_line(tmp_path: Path) -> None:
    server = make_server(tmp_path)
    server.start()
    # The same data folder on another port: binding succeeds, the pid file's lock does not.
    data = tomllib.loads(server.config.read_text())
    data["server"]["listen"] = [f"127.0.0.1:{free_port()}"]
    data["server"]["directory"] = str(server.directory)
    other = tmp_path / "other.toml"
    other.write_text(tomli_w.dumps(data))
    second = smtpkit("serve", config=other, check=False)
    assert second.returncode == 1
    pid = running_pid(server)
    assert second.stderr.splitlines() == [
        f"Error: smtpkit serve is already running for {server.directory} "
        f"(pid {pid} holds {pid_file(server)})"
    ]
    # The first server keeps its pid file and its port.
    assert pid_file(server).read_text() == f"{pid}\n"
    assert server.process is not None
    wait_for_banner(server.host, server.port, server.process)
    assert status_json(server)["pid"] == pid
