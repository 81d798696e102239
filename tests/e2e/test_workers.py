"""Several worker processes: shared sockets, global limits, replacement, clean shutdown."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import _RUNNING, MailServer, make_server, need_program, unavailable


def worker_pids(master: int) -> list[int]:
    out = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(master)], capture_output=True, text=True, check=False
    ).stdout
    return sorted(int(p) for p in out.split())


def wait_for_workers(
    master: int, count: int, timeout: float = 10, without: int | None = None
) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = worker_pids(master)
        if len(pids) == count and without not in pids:
            return pids
        time.sleep(0.05)
    raise AssertionError(f"expected {count} workers, found {worker_pids(master)}")


def start_workers(server: MailServer, count: int, *args: str) -> int:
    """Start ``server`` with ``count`` workers; returns the supervisor's pid."""
    server.start("--workers", str(count), *args)
    assert server.process is not None
    return server.process.pid


def send(host: str, port: int, to: str, subject: str) -> None:
    with smtplib.SMTP(host, port, timeout=10) as smtp:
        smtp.sendmail("s@remote.test", [to], f"Subject: {subject}\r\n\r\nbody\r\n")


@pytest.mark.timeout(60)
def test_a_dead_worker_is_replaced_and_sigterm_drains_all(tmp_path: Path) -> None:
    server = make_server(tmp_path)
    master = start_workers(server, 3)
    try:
        first = wait_for_workers(master, 3)
        os.kill(first[0], signal.SIGKILL)
        later = wait_for_workers(master, 3, without=first[0])
        assert set(first[1:]) <= set(later)
        assert "ended (killed by SIGKILL); starting a new one" in server.stderr()
        for i in range(6):
            send(server.host, server.port, "alice@example.org", f"m{i}")
        assert len(server.new_files("alice@example.org")) == 6
    finally:
        assert server.stop(signal.SIGTERM) == 0
    assert worker_pids(master) == []


def batch_allowed() -> bool:
    """Whether a thread may switch itself to SCHED_BATCH here (a thread of its own, gone
    with its policy once it ends)."""
    allowed: list[bool] = []

    def probe() -> None:
        try:
            os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
        except OSError:
            allowed.append(False)
        else:
            allowed.append(True)

    thread = threading.Thread(target=probe)
    thread.start()
    thread.join()
    return allowed == [True]


@pytest.mark.timeout(60)
def test_workers_run_under_sched_batch_and_the_supervisor_does_not(tmp_path: Path) -> None:
    """Every thread of every worker (event loop, delivery, pickup) runs under SCHED_BATCH,
    so none preempts the others when it wakes; the supervisor keeps the default policy."""
    if not hasattr(os, "SCHED_BATCH"):
        unavailable("SCHED_BATCH (Linux only)")
    if not batch_allowed():
        # The server then keeps the default policy, as it should; CI's machine allows it.
        unavailable("this kernel or sandbox refuses SCHED_BATCH to a thread")
    server = make_server(tmp_path)
    master = start_workers(server, 2)
    try:
        workers = wait_for_workers(master, 2)
        for i in range(4):  # the delivery threads have committed something
            send(server.host, server.port, "alice@example.org", f"m{i}")
        assert len(server.new_files("alice@example.org")) == 4
        for pid in workers:
            threads = sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))
            assert len(threads) >= 2, threads  # the loop and the delivery thread at least
            assert {os.sched_getscheduler(t) for t in threads} == {os.SCHED_BATCH}
        assert os.sched_getscheduler(master) == os.SCHED_OTHER
    finally:
        assert server.stop(signal.SIGTERM) == 0


def thread_cpus(pids: list[int]) -> dict[int, set[frozenset[int]]]:
    """For each process, the CPU sets its threads may run on (one set: all alike)."""
    found: dict[int, set[frozenset[int]]] = {}
    for pid in pids:
        found[pid] = set()
        for task in os.listdir(f"/proc/{pid}/task"):
            # A thread that ended since the listing has no CPUs left to check.
            with contextlib.suppress(ProcessLookupError):
                found[pid].add(frozenset(os.sched_getaffinity(int(task))))
    return found


def wait_for_cpus(
    pids: list[int],
    want: Callable[[dict[int, set[frozenset[int]]]], bool],
    timeout: float = 15,
) -> None:
    deadline = time.monotonic() + timeout
    while not want(seen := thread_cpus(pids)):
        assert time.monotonic() < deadline, f"threads on {seen}"
        time.sleep(0.05)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("pin", [True, False])
def test_a_busy_server_runs_each_worker_on_a_cpu_of_its_own(tmp_path: Path, pin: bool) -> None:
    """With two connections per worker or more, every thread of worker i is fixed to the
    i-th CPU; once fewer connections than workers remain, they are free again. The
    supervisor is never fixed. ``server.pin_workers = false`` leaves them free throughout."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        unavailable("fixing workers to CPUs needs a machine with two CPUs or more")
    every = frozenset(cpus)
    server = make_server(tmp_path, extra_config=f"\npin_workers = {str(pin).lower()}\n")
    master = start_workers(server, 2)
    held: list[socket.socket] = []
    try:
        workers = wait_for_workers(master, 2)

        def free(seen: dict[int, set[frozenset[int]]]) -> bool:
            return all(sets == {every} for sets in seen.values())

        def fixed(seen: dict[int, set[frozenset[int]]]) -> bool:
            # Workers 0 and 1 on the first two CPUs, one each, all their threads alike.
            places = [sets.pop() for sets in map(set, seen.values()) if len(sets) == 1]
            return sorted(min(p) for p in places if len(p) == 1) == cpus[:2]

        wait_for_cpus(workers, free)
        for _ in range(6):  # busy: three per worker
            s = socket.create_connection((server.host, server.port), timeout=10)
            assert s.recv(1024).startswith(b"220 ")
            held.append(s)
        if pin:
            # Fixed at once by the worker that accepted the fourth, and by its next accept
            # or sweep (each second) for the other.
            wait_for_cpus(workers, fixed)
        else:
            # Turned on, the worker that greeted the fourth would be fixed by now.
            assert free(thread_cpus(workers))
        assert thread_cpus([master]) == {master: {every}}
        for s in held[1:]:
            s.close()
        wait_for_cpus(workers, free)
        send(server.host, server.port, "alice@example.org", "after")
        assert len(server.new_files("alice@example.org")) == 1
    finally:
        for s in held:
            s.close()
        assert server.stop(signal.SIGTERM) == 0


@pytest.mark.timeout(60)
def test_per_ip_limit_is_global_across_workers(tmp_path: Path) -> None:
    server = make_server(tmp_path, extra_config="\n[limits]\nmax_connections_per_ip = 4\n")
    server.start("--workers", "2")
    try:
        held = []
        for _ in range(4):
            s = socket.create_connection((server.host, server.port), timeout=10)
            assert s.recv(1024).startswith(b"220 ")
            held.append(s)
        # Whichever worker accepts the fifth, it counts the other worker's connections too.
        for _ in range(3):
            with socket.create_connection((server.host, server.port), timeout=10) as extra:
                assert extra.recv(1024) == (b"421 4.7.0 Too many connections from your address\r\n")
        held.pop().close()
        deadline = time.monotonic() + 5
        while True:
            with socket.create_connection((server.host, server.port), timeout=10) as again:
                if again.recv(1024).startswith(b"220 "):
                    break
            assert time.monotonic() < deadline, "the freed slot never became usable"
            time.sleep(0.05)
        for s in held:
            s.close()
    finally:
        server.stop()


@pytest.mark.timeout(120)
def test_journal_lines_stay_whole_with_parallel_workers(tmp_path: Path) -> None:
    source = need_program("smtp-source", "postfix")
    server = make_server(tmp_path, extra_config="\n[limits]\nmax_connections_per_ip = 50\n")
    server.start("--workers", "2")
    try:
        result = subprocess.run(
            [
                source,
                "-s",
                "20",
                "-m",
                "400",
                "-l",
                "512",
                "-f",
                "s@remote.test",
                "-t",
                "bob@example.org",
                f"{server.host}:{server.port}",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
    finally:
        assert server.stop() == 0
    assert len(server.new_files("bob@example.org")) == 400
    records = []
    for path in sorted((server.directory / "journal").iterdir()):
        for line in path.read_text().splitlines():
            records.append(json.loads(line))  # every line is one whole JSON object
    stored = [r for r in records if r["event"] == "stored"]
    assert len(stored) == 400
    assert {r["worker"] for r in records if r["event"] == "start"} == {0, 1}


@pytest.mark.timeout(60)
def test_workers_do_not_outlive_a_killed_supervisor(tmp_path: Path) -> None:
    server = make_server(tmp_path)
    master = start_workers(server, 2, "--quiet")
    workers = wait_for_workers(master, 2)
    server.process.kill()  # SIGKILL: the supervisor cannot clean up
    server.process.wait(timeout=10)
    server.process = None
    deadline = time.monotonic() + 15
    while any(Path(f"/proc/{pid}").exists() for pid in workers):
        assert time.monotonic() < deadline, "workers still running after the supervisor died"
        time.sleep(0.1)
    # The port is free again: a new server starts on it.
    server.start("--workers", "1", "--quiet")
    server.stop()


@pytest.mark.timeout(60)
def test_workers_that_keep_dying_stop_the_server_with_an_error(tmp_path: Path) -> None:
    server = make_server(tmp_path)
    master = start_workers(server, 2, "--quiet")
    killed: set[int] = set()
    # More deaths within the restart window than the supervisor tolerates (a crash loop).
    while server.process.poll() is None and len(killed) < 12:
        for pid in worker_pids(master):
            if pid not in killed:
                killed.add(pid)
                # Listed but gone since: the supervisor may already be stopping it.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    assert server.process.wait(timeout=30) == 1
    assert "workers keep dying (5 in 10s); stopping" in server.stderr()
    assert server.stderr().rstrip().endswith("Error: workers kept failing; see the messages above")
    server.process = None


def blocked_signals(pid: int) -> set[int]:
    """The signals a process holds blocked (SigBlk in /proc/PID/status)."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("SigBlk:"):
                mask = int(line.split()[1], 16)
                return {n for n in range(1, 65) if mask & (1 << (n - 1))}
    return set()


def banner_now(host: str, port: int) -> bool:
    """One quick try: does the server answer with its 220 greeting?"""
    try:
        with socket.create_connection((host, port), timeout=0.5) as s:
            return s.recv(512).startswith(b"220 ")
    except OSError:
        return False


@pytest.mark.timeout(60)
@pytest.mark.parametrize("workers", ["1", "2"])
def test_sighup_from_the_first_moment_of_start_up_is_not_fatal(
    tmp_path: Path, workers: str
) -> None:
    """A reload request (SIGHUP) while the server is still starting waits for the handlers
    instead of killing the process with the default action (exit 129)."""
    server = make_server(tmp_path)
    process = subprocess.Popen(
        [sys.executable, "-m", "smtpkit", "-c", str(server.config), "serve", "--workers", workers],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server.process = process
    _RUNNING.append(server)
    # The interpreter's own start (tens of milliseconds, before any smtpkit code runs) is the
    # one window no Python program can close: hangups start once the process shows the
    # signal held, the first thing its code does.
    started = time.monotonic()
    while signal.SIGHUP not in blocked_signals(process.pid):
        assert process.poll() is None and time.monotonic() - started < 10
        time.sleep(0.001)
    held_after = time.monotonic() - started
    hups = 0
    deadline = time.monotonic() + 30
    while not banner_now(server.host, server.port):
        assert process.poll() is None, f"killed by SIGHUP number {hups}: exit {process.returncode}"
        assert time.monotonic() < deadline, "the server never answered"
        process.send_signal(signal.SIGHUP)
        hups += 1
    process.send_signal(signal.SIGHUP)
    send(server.host, server.port, "alice@example.org", "after the hangups")
    assert process.poll() is None
    assert len(server.new_files("alice@example.org")) == 1
    print(
        f"\nSIGHUP held {held_after * 1000:.0f} ms after spawn; {hups} SIGHUPs during "
        f"start-up survived ({workers} worker(s))"
    )
    assert hups >= 1
    assert server.stop() == 0


@pytest.mark.timeout(60)
def test_sighup_burst_while_a_replacement_worker_starts_is_not_fatal(tmp_path: Path) -> None:
    server = make_server(tmp_path)
    master = start_workers(server, 2)
    first = wait_for_workers(master, 2)
    os.kill(first[0], signal.SIGKILL)
    # Hangups at the supervisor, which forwards each one to its workers, while the
    # replacement for the killed worker is being forked and started.
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        server.process.send_signal(signal.SIGHUP)
        time.sleep(0.002)
    workers = wait_for_workers(master, 2, without=first[0])
    assert server.process.poll() is None
    for i in range(4):
        send(server.host, server.port, "alice@example.org", f"m{i}")
    assert len(server.new_files("alice@example.org")) == 4
    assert "killed by SIGHUP" not in server.stderr()
    assert worker_pids(master) == workers  # no worker died after the first kill
    assert server.stop() == 0
