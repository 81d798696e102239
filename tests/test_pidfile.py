"""The pid file: written atomically and locked by its server, trusted by readers only through
the lock's holder, never signalled on a number alone.

A process never probes a pid file it holds itself (closing any descriptor of the file drops
its own lock, and its own lock never shows to ``F_GETLK``), so the servers here are child
processes: ``smtpkit`` scripts (their command line reads ``python .../smtpkit serve DIR``,
as the console script's does) that take the pid file through ``acquire_pid_file``, and an
unrelated program that merely locks the file.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from smtpkit.pidfile import (
    PID_FILE,
    AlreadyRunning,
    NotRunning,
    PidFileError,
    State,
    acquire_pid_file,
    is_serve,
    probe,
    process_facts,
    signal_server,
)

REPOSITORY = Path(__file__).resolve().parent.parent

# A stand-in for `smtpkit serve`: takes the pid file when told ("go" on stdin), says how
# that went, reports SIGHUPs, and lets go when stdin closes.
SERVE = """\
import signal, sys
from pathlib import Path
from smtpkit.pidfile import AlreadyRunning, acquire_pid_file
signal.signal(signal.SIGHUP, lambda *_: print("SIGHUP", flush=True))
sys.stdin.readline()
try:
    held = acquire_pid_file(Path(sys.argv[2]))
except AlreadyRunning as exc:
    print("lost", exc, flush=True)
    sys.exit(0)
print("won", flush=True)
sys.stdin.read()
held.release()
"""

# An unrelated program that happens to lock the file; SIGHUP blocked, so a SIGHUP sent to it
# would stay pending where /proc shows it.
LOCKER = """\
import fcntl, os, signal, sys
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
os.write(fd, b"%d\\n" % os.getpid())
fcntl.lockf(fd, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.read()
"""


class Child:
    def __init__(self, args: list[str]) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPOSITORY))
        self.process = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def say(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text)
        self.process.stdin.flush()

    def line(self) -> str:
        assert self.process.stdout is not None
        return self.process.stdout.readline().strip()

    def end(self) -> None:
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()
        self.process.wait(timeout=10)


@pytest.fixture
def children() -> Iterator[list[Child]]:
    started: list[Child] = []
    yield started
    for child in started:
        if child.process.poll() is None:
            child.process.kill()
        child.process.wait()


def start_serve(tmp_path: Path, children: list[Child], directory: Path) -> Child:
    script = tmp_path / "bin" / "smtpkit"
    if not script.exists():  # once: a racer starting while it is rewritten would run nothing
        script.parent.mkdir()
        script.write_text(SERVE)
    child = Child([sys.executable, str(script), "serve", str(directory)])
    children.append(child)
    return child


def serving(tmp_path: Path, children: list[Child], directory: Path) -> Child:
    child = start_serve(tmp_path, children, directory)
    child.say("go\n")
    assert child.line() == "won"
    return child


def hup_pending(pid: int) -> bool:
    """Whether a SIGHUP waits for process ``pid`` (it blocks SIGHUP): shared pending set."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("ShdPnd:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGHUP - 1)))
    raise AssertionError("no ShdPnd line")


def dead_pid() -> int:
    gone = subprocess.Popen(["true"])
    gone.wait()
    return gone.pid


# --- the server's side --------------------------------------------------------------------------


def test_the_pid_file_is_the_pid_and_a_newline_mode_0644_whatever_the_umask(
    tmp_path: Path,
) -> None:
    old = os.umask(0o027)  # what serve sets
    try:
        held = acquire_pid_file(tmp_path)
    finally:
        os.umask(old)
    path = tmp_path / PID_FILE
    try:
        assert path.read_bytes() == f"{os.getpid()}\n".encode()
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        assert sorted(p.name for p in tmp_path.iterdir()) == [PID_FILE]  # no temporary left
    finally:
        held.release()
    assert not path.exists()
    held.release()  # twice: nothing more happens


def test_a_server_holds_the_lock_and_a_second_one_stops(
    tmp_path: Path, children: list[Child]
) -> None:
    server = serving(tmp_path, children, tmp_path)
    found = probe(tmp_path)
    assert (found.state, found.pid) == (State.RUNNING, server.pid)
    with pytest.raises(AlreadyRunning) as caught:
        acquire_pid_file(tmp_path)
    assert str(caught.value) == (
        f"smtpkit serve is already running for {tmp_path} "
        f"(pid {server.pid} holds {tmp_path / PID_FILE})"
    )
    # The one that lost left the winner's file as it was.
    assert (tmp_path / PID_FILE).read_text() == f"{server.pid}\n"
    server.end()
    assert not (tmp_path / PID_FILE).exists()
    assert probe(tmp_path).state is State.STOPPED


def test_of_servers_starting_together_exactly_one_wins(
    tmp_path: Path, children: list[Child]
) -> None:
    racers = [start_serve(tmp_path, children, tmp_path) for _ in range(8)]
    for racer in racers:
        racer.say("go\n")
    results = {racer.pid: racer.line() for racer in racers}
    winners = [pid for pid, line in results.items() if line == "won"]
    assert len(winners) == 1, results
    losers = [line for pid, line in results.items() if pid != winners[0]]
    assert all(line.startswith("lost smtpkit serve is already running") for line in losers), results
    assert (tmp_path / PID_FILE).read_text() == f"{winners[0]}\n"
    found = probe(tmp_path)
    assert (found.state, found.pid) == (State.RUNNING, winners[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin", PID_FILE]


def test_a_stale_file_is_taken_over(tmp_path: Path, children: list[Child]) -> None:
    (tmp_path / PID_FILE).write_text(f"{dead_pid()}\n")
    server = serving(tmp_path, children, tmp_path)
    assert (tmp_path / PID_FILE).read_text() == f"{server.pid}\n"
    assert probe(tmp_path).pid == server.pid


def test_release_leaves_a_file_that_is_no_longer_its_own(tmp_path: Path) -> None:
    held = acquire_pid_file(tmp_path)
    other = tmp_path / "other"
    other.write_text("12345\n")
    other.rename(tmp_path / PID_FILE)
    held.release()
    assert (tmp_path / PID_FILE).read_text() == "12345\n"


def test_a_forked_worker_never_removes_its_supervisors_file(tmp_path: Path) -> None:
    held = acquire_pid_file(tmp_path)
    try:
        pid = os.fork()
        if pid == 0:  # the worker: inherits the object, not the lock
            held.release()
            os._exit(0)
        assert os.waitpid(pid, 0)[1] == 0
        assert (tmp_path / PID_FILE).read_text() == f"{os.getpid()}\n"
    finally:
        held.release()
    assert not (tmp_path / PID_FILE).exists()


def test_a_symbolic_link_is_neither_written_through_nor_read(tmp_path: Path) -> None:
    target = tmp_path / "precious"
    target.write_text("keep\n")
    (tmp_path / PID_FILE).symlink_to(target)
    message = f"{tmp_path / PID_FILE} is a symbolic link, not a pid file: remove it"
    with pytest.raises(PidFileError, match="symbolic link") as caught:
        acquire_pid_file(tmp_path)
    assert str(caught.value) == message
    with pytest.raises(PidFileError) as caught:
        probe(tmp_path)
    assert str(caught.value) == message
    assert target.read_text() == "keep\n"


# --- a reader's side ----------------------------------------------------------------------------


def test_no_pid_file_is_stopped(tmp_path: Path) -> None:
    found = probe(tmp_path)
    assert (found.state, found.path, found.pid) == (State.STOPPED, tmp_path / PID_FILE, None)
    assert probe(tmp_path / "missing").state is State.STOPPED


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("DEAD", "pid DEAD is gone"),
        # Alive, but it holds no lock: a recycled pid, or a number anyone wrote.
        ("SELF", "pid SELF holds no lock on it: not smtpkit serve of this data folder"),
        ("", "it names no process"),
        ("not a pid\n", "it names no process"),
        ("0\n", "it names no process"),
    ],
)
def test_an_unlocked_file_is_stale_whatever_it_names(
    tmp_path: Path, content: str, reason: str
) -> None:
    numbers = {"DEAD": str(dead_pid()), "SELF": str(os.getpid())}
    for word, number in numbers.items():
        content = content.replace(word, number)
        reason = reason.replace(word, number)
    (tmp_path / PID_FILE).write_text(content + ("\n" if content.isdigit() else ""))
    found = probe(tmp_path)
    assert (found.state, found.reason) == (State.STALE, reason)
    with pytest.raises(NotRunning) as caught:
        signal_server(tmp_path, signal.SIGHUP)
    assert str(caught.value) == (
        f"smtpkit serve is not running (stale pid file {tmp_path / PID_FILE}: {reason})"
    )


def test_a_lock_held_by_another_program_is_no_server_and_gets_no_signal(
    tmp_path: Path, children: list[Child]
) -> None:
    locker = Child([sys.executable, "-c", LOCKER, str(tmp_path / PID_FILE)])
    children.append(locker)
    assert locker.line() == "locked"
    found = probe(tmp_path)
    assert (found.state, found.pid) == (State.STALE, locker.pid)
    assert found.reason == f"pid {locker.pid} locks it but is not smtpkit serve"
    with pytest.raises(NotRunning):
        signal_server(tmp_path, signal.SIGHUP)
    assert not hup_pending(locker.pid)
    assert locker.process.poll() is None


def test_signal_server_reaches_the_verified_server(tmp_path: Path, children: list[Child]) -> None:
    server = serving(tmp_path, children, tmp_path)
    assert signal_server(tmp_path, signal.SIGHUP) == server.pid
    assert server.line() == "SIGHUP"


def test_signal_server_without_a_pid_file(tmp_path: Path) -> None:
    with pytest.raises(NotRunning) as caught:
        signal_server(tmp_path, signal.SIGHUP)
    assert str(caught.value) == (
        f"smtpkit serve is not running (no pid file {tmp_path / PID_FILE})"
    )
    assert caught.value.found.state is State.STOPPED


@pytest.mark.parametrize(
    ("args", "serve"),
    [
        (["/opt/smtpkit/bin/python3", "/opt/smtpkit/bin/smtpkit", "serve"], True),
        (["python3", "-m", "smtpkit", "-c", "/etc/smtpkit/smtpkit.toml", "serve", "--quiet"], True),
        (["smtpkit", "serve"], True),
        (["python3", "-m", "smtpkit", "status"], False),
        (["python3", "-m", "smtpkit", "-c", "serve.toml", "reload"], False),
        (["/usr/bin/smtpkit-sendmail", "serve"], False),
        (["python3", "-c", "import smtpkit", "serve"], False),
        (["sleep", "1000"], False),
        ([], False),
    ],
)
def test_is_serve(args: list[str], serve: bool) -> None:
    assert is_serve(args) is serve


def test_process_facts_count_live_children_and_the_uptime(
    tmp_path: Path, children: list[Child]
) -> None:
    # Two live children and one that has exited unreaped (a zombie: not a worker).
    parent = Child(
        [
            sys.executable,
            "-c",
            "import subprocess, sys\n"
            "kids = [subprocess.Popen(['sleep', '60']) for _ in range(2)]\n"
            "gone = subprocess.Popen(['true'])\n"
            "print(gone.pid, flush=True)\n"
            "sys.stdin.read()\n"
            "for kid in kids: kid.kill()\n",
        ]
    )
    children.append(parent)
    zombie = int(parent.line())
    deadline = time.monotonic() + 10
    while Path(f"/proc/{zombie}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline, "the child did not exit"
        time.sleep(0.01)
    facts = process_facts(parent.pid)
    assert facts is not None
    assert facts.workers == 2
    assert 0 <= facts.uptime < 60
    parent.end()
    assert process_facts(parent.pid) is None
    lonely = Child(["sleep", "60"])
    children.append(lonely)
    facts = process_facts(lonely.pid)
    assert facts is not None and facts.workers == 1  # no children: it serves itself
