"""The servers under test and their processes.

smtpkit (``smtpkit init``, one user, ``serve --quiet``), aiosmtpd with the durable Maildir
handler of ``aiosmtpd_maildir.py``, and Postfix's ``smtp-sink`` (stores nothing: the
protocol's ceiling). Each runs in a session of its own, on a fresh port and a fresh data
folder; its process tree's RSS is sampled while it runs, and whatever of its process group
outlives it is killed and counted.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w  # smtpkit's own dependency: rewrites the benchmark's smtpkit.toml

from benchmarks.common import DOMAIN, HOST, RECIPIENT, ROOT, BenchError

__all__ = [
    "SERVERS",
    "RssSampler",
    "Server",
    "find_program",
    "free_port",
    "group_members",
    "make_aiosmtpd",
    "make_sink",
    "make_smtpkit",
    "raise_open_files_limit",
    "settle_rss",
    "smtpkit_accepts_workers",
    "tree_pss_kb",
    "tree_rss_kb",
]

SERVERS = ("smtpkit", "aiosmtpd", "smtp-sink")


# --- processes and memory -------------------------------------------------------------------


def find_program(name: str) -> str:
    for candidate in (shutil.which(name), f"/usr/sbin/{name}", f"/usr/bin/{name}"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise BenchError(
        f"{name} not found: install Debian's postfix package (apt-get install postfix)"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return kids
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                kids.extend(int(k) for k in fh.read().split())
        except OSError:
            continue
    return kids


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (workers of a pre-fork server)."""
    seen: list[int] = []
    todo = [pid]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.append(current)
        todo.extend(_children(current))
    return seen


def _proc_kb(path: str, field: str) -> int:
    """The kB figure of the ``field:`` line of a /proc file; 0 when the process is gone."""
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith(field):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def rss_kb(pid: int) -> int:
    return _proc_kb(f"/proc/{pid}/status", "VmRSS:")


def pss_kb(pid: int) -> int:
    """A process's proportional set size (kB): each page it shares counted in part, so the
    figures of forked workers add up to what the server really costs (RSS counts the pages
    they share with the supervisor once in each)."""
    return _proc_kb(f"/proc/{pid}/smaps_rollup", "Pss:")


def tree_pss_kb(pid: int) -> int:
    """Summed PSS of the process tree (kB)."""
    return sum(pss_kb(p) for p in process_tree(pid))


def tree_rss_kb(pid: int) -> tuple[int, int]:
    """Summed VmRSS of the process tree (kB) and how many processes it has."""
    pids = process_tree(pid)
    return sum(rss_kb(p) for p in pids), len(pids)


class RssSampler:
    """Samples a process tree's summed RSS every ``interval`` seconds in a thread.

    ``window()`` returns the peak since the previous call; ``peak`` is the peak of the whole run.
    The PSS (``peak_pss_kb``) is read less often, at each ``window()``: reading it walks the
    processes' page tables, which would load the machine being measured.
    """

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_kb = 0
        self.peak_pss_kb = 0
        self.max_processes = 0
        self._window_kb = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> int:
        kb, count = tree_rss_kb(self.pid)
        with self._lock:
            self._window_kb = max(self._window_kb, kb)
            self.peak_kb = max(self.peak_kb, kb)
            self.max_processes = max(self.max_processes, count)
        return kb

    def window(self) -> int:
        self.sample()
        pss = tree_pss_kb(self.pid)
        with self._lock:
            self.peak_pss_kb = max(self.peak_pss_kb, pss)
            kb, self._window_kb = self._window_kb, 0
        return kb

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def group_members(group: int) -> int:
    """How many processes are in process group ``group`` (a server's own session)."""
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if os.getpgid(int(entry)) == group:
                    count += 1
    return count


def reap_group(group: int) -> int:
    """Kill what is left of a server's process group; return how many were left."""
    left = group_members(group)
    if left:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)
    return left


def raise_open_files_limit() -> int:
    """Lift RLIMIT_NOFILE's soft limit to the hard limit (inherited by the servers)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft if soft != resource.RLIM_INFINITY else target
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return soft
    return target


def wait_for_greeting(port: int, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"server exited with status {process.returncode} before answering")
        try:
            with socket.create_connection((HOST, port), timeout=2) as s:
                if s.recv(512).startswith(b"220"):
                    s.sendall(b"QUIT\r\n")
                    with contextlib.suppress(OSError):
                        while s.recv(512):
                            pass
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise BenchError(f"no greeting on {HOST}:{port} within {timeout:.0f} s")


# --- one server -----------------------------------------------------------------------------


@dataclass
class Server:
    """One server under test: its command, its data folder and, once started, its process."""

    name: str
    command: list[str]
    port: int
    folder: Path
    maildir: Path | None  # where stored messages land; None for smtp-sink
    cwd: Path | None = None
    env: dict[str, str] | None = None
    expect_clean_exit: bool = True
    # Seconds the rest of its process group may take to exit after it before counting as
    # stragglers: Postfix's master signals its daemons and exits without waiting for them.
    linger: float = 0.0
    journal: Path | None = None  # smtpkit's journal folder
    process: subprocess.Popen[bytes] | None = None
    sampler: RssSampler | None = None
    log: Path = field(default_factory=Path)
    stragglers: int = 0  # processes of its group still running after it exited (then killed)

    def start(self) -> None:
        self.log = self.folder / f"{self.name}.log"
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.command,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                env=self.env,
                start_new_session=True,
            )
        try:
            wait_for_greeting(self.port, self.process)
        except BenchError as exc:
            with contextlib.suppress(BenchError):
                self.stop(timeout=10)
            raise BenchError(f"{self.name}: {exc}\n{self.log_tail()}") from None
        self.sampler = RssSampler(self.process.pid)

    @property
    def pid(self) -> int:
        if self.process is None:
            raise BenchError(f"{self.name} is not running")
        return self.process.pid

    def check_alive(self) -> None:
        if self.process is None or self.process.poll() is not None:
            code = None if self.process is None else self.process.returncode
            left = group_members(self.process.pid) if self.process is not None else 0
            orphans = f"; {left} of its processes still running (orphaned)" if left else ""
            raise BenchError(f"{self.name} died (exit status {code}){orphans}\n{self.log_tail()}")

    def stop(self, timeout: float = 60) -> int | None:
        if self.sampler is not None:
            self.sampler.stop()
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
                raise BenchError(
                    f"{self.name} did not stop within {timeout:.0f} s of SIGTERM"
                ) from None
        code = self.process.returncode
        group = self.process.pid
        self.process = None
        deadline = time.monotonic() + self.linger
        while time.monotonic() < deadline and group_members(group):
            time.sleep(0.05)
        self.stragglers = reap_group(group)
        return code

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        tail = text.splitlines()[-lines:]
        return "\n".join(f"  | {line}" for line in tail)

    def log_problems(self) -> list[str]:
        """Lines of the server's log that show a crash or an error."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return []
        pattern = re.compile(r"Traceback|Error|error|exception|Exception|fatal")
        return [line for line in text.splitlines() if pattern.search(line)][:20]

    def syncs(self) -> dict[str, int] | None:
        """smtpkit's syncfs counts, summed over the ``stop`` events its workers journaled:
        ``syncs`` (calls made) and ``syncs_shared`` (calls spared because another worker's
        covered them). None when the journal's stop events do not carry them."""
        if self.journal is None:
            return None
        stops = [r for r in journal_records(self.journal) if r.get("event") == "stop"]
        counted = [r for r in stops if isinstance(r.get("syncs"), int)]
        if not counted:
            return None
        return {
            "syncs": sum(int(r["syncs"]) for r in counted),
            "syncs_shared": sum(int(r.get("syncs_shared") or 0) for r in counted),
            "workers": len(counted),
        }


def journal_records(folder: Path) -> list[dict[str, Any]]:
    """Every whole JSON record in the hour files of a journal folder (others are skipped)."""
    records: list[dict[str, Any]] = []
    try:
        paths = sorted(p for p in folder.iterdir() if p.is_file())
    except OSError:
        return records
    for path in paths:
        with contextlib.suppress(OSError):
            for line in path.read_text(errors="replace").splitlines():
                with contextlib.suppress(ValueError):
                    record = json.loads(line)
                    if isinstance(record, dict):
                        records.append(record)
    return records


def settle_rss(server: Server, seconds: float = 2.0) -> int:
    """Peak RSS over a short quiet spell (the sampler thread keeps running meanwhile)."""
    assert server.sampler is not None
    time.sleep(seconds)
    return server.sampler.window()


# --- the three servers ----------------------------------------------------------------------


def smtpkit_run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "smtpkit", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
    )
    if result.returncode != 0:
        raise BenchError(f"smtpkit {' '.join(args)} failed: {result.stderr.strip()}")
    return result


def smtpkit_accepts_workers(cwd: Path) -> bool:
    help_text = smtpkit_run("serve", "--help", cwd=cwd).stdout
    return "--workers" in help_text


def make_smtpkit(
    base: Path,
    workers: int | None,
    max_connections: int = 0,
    python_args: Sequence[str] = (),
    tables: Mapping[str, Mapping[str, Any]] | None = None,
) -> Server:
    """smtpkit on a fresh data folder under ``base/smtpkit``; ``python_args`` go between the
    interpreter and ``-m smtpkit`` (``-m cProfile -o FILE`` for the profile); ``tables`` are
    merged into the config, key by key (``{"routes": {...}}``)."""
    folder = base / "smtpkit"
    folder.mkdir(parents=True)
    port = free_port()
    data = folder / "data"
    smtpkit_run(
        "init",
        str(data),
        "--domain",
        DOMAIN,
        "--hostname",
        DOMAIN,
        "--listen",
        f"{HOST}:{port}",
        cwd=folder,
    )
    config = data / "smtpkit.toml"
    if max_connections or tables:
        # Edited as data, not appended to: a second [limits] table would be invalid TOML.
        with config.open("rb") as fh:
            document = tomllib.load(fh)
        if max_connections:
            # Loopback load comes from one address: lift the per-IP and total caps.
            limits = document.setdefault("limits", {})
            limits["max_connections"] = max_connections
            limits["max_connections_per_ip"] = max_connections
        for name, values in (tables or {}).items():
            document.setdefault(name, {}).update(values)
        config.write_text(tomli_w.dumps(document))
    smtpkit_run("-c", str(config), "user", "add", RECIPIENT, cwd=folder)
    command = [sys.executable, *python_args, "-m", "smtpkit", "-c", str(config)]
    command += ["serve", "--quiet"]
    if workers is not None:
        command += ["--workers", str(workers)]
    return Server(
        "smtpkit",
        command,
        port,
        folder,
        data / "users" / RECIPIENT,
        cwd=folder,
        journal=data / "journal",
    )


def make_aiosmtpd(base: Path) -> Server:
    folder = base / "aiosmtpd"
    folder.mkdir(parents=True)
    port = free_port()
    maildir = folder / "Maildir"
    command = [
        sys.executable,
        "-m",
        "benchmarks.aiosmtpd_maildir",
        "--port",
        str(port),
        "--maildir",
        str(maildir),
    ]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return Server("aiosmtpd", command, port, folder, maildir, cwd=ROOT, env=env)


def make_sink(base: Path, count: bool = False) -> Server:
    """smtp-sink under ``base/smtp-sink``; with ``count`` it writes its running counter
    (``sess=N quit=N mesg=N``) to its log, where the relay row counts what arrived."""
    folder = base / "smtp-sink"
    folder.mkdir(parents=True)
    port = free_port()
    command = [find_program("smtp-sink")]
    if os.geteuid() == 0:
        command += ["-u", "nobody"]  # smtp-sink refuses to run as root without -u
    if count:
        command.append("-c")
    command += [f"{HOST}:{port}", "1000"]
    # smtp-sink has no clean-shutdown path: SIGTERM simply ends it.
    return Server("smtp-sink", command, port, folder, None, expect_clean_exit=False)
