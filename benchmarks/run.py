"""One command: smtpkit against aiosmtpd (durable Maildir) and smtp-sink, on loopback.

    python -m benchmarks.run [--quick] [--rounds 3] [--shapes 20x1KB,20x1MB] [--json PATH]
                             [--servers smtpkit,aiosmtpd,smtp-sink] [--smtpkit-workers N]
                             [--idle 10000] [--big] [--no-throughput] [--dir DIR] [--keep]

Each server runs alone, on a fresh port and a fresh data folder, and is driven by Postfix's
``smtp-source`` at the shapes below. A round is the wall time of one ``smtp-source`` run;
after each round the Maildir is counted: every message sent must be a file in ``new/``, else
the run fails (exit 1). The table gives the median of the rounds (min-max), the ratios, a disk
probe (the storage ceiling) and the peak RSS of each server's process tree; the same goes to
JSON. ``--idle N`` and ``--big`` add the memory checks. Needs ``smtp-source`` and ``smtp-sink``
(Debian: ``apt-get install postfix``) and aiosmtpd (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w  # smtpkit's own dependency: rewrites the benchmark's smtpkit.toml

ROOT = Path(__file__).resolve().parent.parent
if not __package__:  # run as `python benchmarks/run.py`: make `benchmarks` importable
    sys.path.insert(0, str(ROOT))

from benchmarks.diskprobe import probe  # noqa: E402

DOMAIN = "bench.test"
SENDER = f"sender@{DOMAIN}"
RECIPIENT = f"user@{DOMAIN}"
HOST = "127.0.0.1"
SERVERS = ("smtpkit", "aiosmtpd", "smtp-sink")
QUICK_DIVISOR = 20
IDLE_TARGET_MB = 150.0
DEFAULT_JSON = ROOT / "benchmarks" / "results" / "latest.json"


class BenchError(Exception):
    """A failed run: lost messages, a client error, a server that died. Exit status 1."""


@dataclass(frozen=True, slots=True)
class Shape:
    name: str
    sessions: int
    messages: int
    length: int

    def reduced(self, divisor: int) -> Shape:
        messages = max(self.sessions, self.messages // divisor)
        return Shape(self.name, self.sessions, messages, self.length)

    @property
    def source_args(self) -> list[str]:
        return ["-s", str(self.sessions), "-m", str(self.messages), "-l", str(self.length)]


SHAPES = (
    Shape("1x1KB", 1, 2000, 1024),
    Shape("20x1KB", 20, 10000, 1024),
    Shape("100x1KB", 100, 10000, 1024),
    Shape("20x1MB", 20, 500, 1_000_000),
)


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


def rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def tree_rss_kb(pid: int) -> tuple[int, int]:
    """Summed VmRSS of the process tree (kB) and how many processes it has."""
    pids = process_tree(pid)
    return sum(rss_kb(p) for p in pids), len(pids)


class RssSampler:
    """Samples a process tree's summed RSS every ``interval`` seconds in a thread.

    ``window()`` returns the peak since the previous call; ``peak`` is the peak of the whole run.
    """

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_kb = 0
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
        with self._lock:
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


def mb(kb: int) -> float:
    return round(kb / 1024, 1)


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


def make_smtpkit(base: Path, workers: int | None, max_connections: int = 0) -> Server:
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
    if max_connections:
        # Loopback load comes from one address: lift the per-IP and total caps for the test.
        with config.open("rb") as fh:
            document = tomllib.load(fh)
        limits = document.setdefault("limits", {})
        limits["max_connections"] = max_connections
        limits["max_connections_per_ip"] = max_connections
        config.write_text(tomli_w.dumps(document))
    smtpkit_run("-c", str(config), "user", "add", RECIPIENT, cwd=folder)
    command = [sys.executable, "-m", "smtpkit", "-c", str(config), "serve", "--quiet"]
    if workers is not None:
        command += ["--workers", str(workers)]
    return Server("smtpkit", command, port, folder, data / "users" / RECIPIENT, cwd=folder)


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


def make_sink(base: Path) -> Server:
    folder = base / "smtp-sink"
    folder.mkdir(parents=True)
    port = free_port()
    command = [find_program("smtp-sink")]
    if os.geteuid() == 0:
        command += ["-u", "nobody"]  # smtp-sink refuses to run as root without -u
    command += [f"{HOST}:{port}", "1000"]
    # smtp-sink has no clean-shutdown path: SIGTERM simply ends it.
    return Server("smtp-sink", command, port, folder, None, expect_clean_exit=False)


# --- one round ------------------------------------------------------------------------------


def count_new(maildir: Path) -> int:
    return sum(1 for _ in os.scandir(maildir / "new"))


def set_aside(folder: Path) -> None:
    """Start the next round with an empty folder, without deleting this round's files: ext4
    skips recently freed inodes when allocating (``recently_deleted``), so deleting 10,000
    files between rounds would make the next round's file creations scan past all of them.
    The whole work folder is deleted once, at the end of the run."""
    folder.rename(folder.with_name(f"{folder.name}.done.{uuid.uuid4().hex}"))
    folder.mkdir()


def drive(source: str, shape: Shape, port: int, timeout: float) -> float:
    """Run smtp-source once; return its wall time in seconds. Any client error is fatal."""
    command = [source, *shape.source_args, "-f", SENDER, "-t", RECIPIENT, f"{HOST}:{port}"]
    began = time.perf_counter()
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchError(
            f"smtp-source {shape.name} did not finish within {timeout:.0f} s"
        ) from None
    elapsed = time.perf_counter() - began
    errors = result.stderr.strip()
    if result.returncode != 0 or "fatal" in errors or "error" in errors.lower():
        raise BenchError(
            f"smtp-source {shape.name} failed (exit {result.returncode}): {errors or '(no output)'}"
        )
    return elapsed


def verify_stored(server: Server, shape: Shape) -> int:
    """Every message smtp-source saw accepted must already be a file in new/ (250 = durable)."""
    if server.maildir is None:
        return 0
    stored = count_new(server.maildir)
    if stored != shape.messages:
        raise BenchError(
            f"{server.name} {shape.name}: {shape.messages} messages accepted but {stored} "
            f"files in {server.maildir / 'new'}"
        )
    sample = next(os.scandir(server.maildir / "new"))
    if sample.stat().st_size < shape.length:
        raise BenchError(
            f"{server.name} {shape.name}: stored file {sample.path} has "
            f"{sample.stat().st_size} bytes, less than the {shape.length}-byte payload"
        )
    left = list(os.scandir(server.maildir / "tmp"))
    if left:
        raise BenchError(f"{server.name} {shape.name}: {len(left)} files left in tmp/")
    set_aside(server.maildir / "new")
    return stored


def measure_server(
    server: Server, shapes: Sequence[Shape], rounds: int, source: str, timeout: float
) -> dict[str, Any]:
    """Start ``server``, run every shape ``rounds`` times, stop it; results per shape."""
    os.sync()  # leave the previous server's writeback out of this one's rounds
    server.start()
    assert server.sampler is not None
    results: dict[str, Any] = {"shapes": {}}
    try:
        for shape in shapes:
            rates: list[float] = []
            seconds: list[float] = []
            peak_kb = 0
            stored = 0
            for number in range(1, rounds + 1):
                server.check_alive()
                server.sampler.window()
                elapsed = drive(source, shape, server.port, timeout)
                window_kb = server.sampler.window()
                server.check_alive()
                stored += verify_stored(server, shape)
                peak_kb = max(peak_kb, window_kb)
                rates.append(shape.messages / elapsed)
                seconds.append(elapsed)
                print(
                    f"  {server.name:<9} {shape.name:<8} round {number}/{rounds}: "
                    f"{rates[-1]:>8,.0f} msgs/s ({elapsed:.2f} s), RSS {mb(window_kb)} MB",
                    flush=True,
                )
                os.sync()
            results["shapes"][shape.name] = {
                "messages": shape.messages,
                "sessions": shape.sessions,
                "length": shape.length,
                "rounds": [round(r, 1) for r in rates],
                "seconds": [round(s, 3) for s in seconds],
                "median": round(statistics.median(rates), 1),
                "min": round(min(rates), 1),
                "max": round(max(rates), 1),
                "peak_rss_mb": mb(peak_kb),
                "stored": stored if server.maildir is not None else None,
                "sent": shape.messages * rounds,
            }
        results["peak_rss_mb"] = mb(server.sampler.peak_kb)
        results["max_processes"] = server.sampler.max_processes
    finally:
        code = server.stop()
    results["exit_status"] = code
    problems = server.log_problems()
    if problems:
        results["log_problems"] = problems
    if server.stragglers:
        raise BenchError(
            f"{server.name}: {server.stragglers} process(es) outlived the server "
            f"(exit status {code}) and had to be killed"
        )
    if server.expect_clean_exit and code != 0:
        raise BenchError(f"{server.name} exited with status {code} on SIGTERM\n{server.log_tail()}")
    return results


# --- memory checks --------------------------------------------------------------------------


def read_reply(sock: socket.socket, pending: bytearray) -> tuple[int, str]:
    """Read one (possibly multi-line) SMTP reply; ``pending`` keeps bytes read past it."""
    lines: list[str] = []
    while True:
        end = pending.find(b"\r\n")
        if end < 0:
            data = sock.recv(65536)
            if not data:
                raise BenchError("connection closed while waiting for a reply")
            pending += data
            continue
        line = bytes(pending[:end]).decode("ascii", "replace")
        del pending[: end + 2]
        lines.append(line)
        if len(line) < 4 or line[3] != "-":
            return int(line[:3]), "\n".join(lines)


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


def settle_rss(server: Server, seconds: float = 2.0) -> int:
    """Peak RSS over a short quiet spell (the sampler thread keeps running meanwhile)."""
    assert server.sampler is not None
    time.sleep(seconds)
    return server.sampler.window()


def idle_check(
    base: Path, connections: int, workers: int | None, open_files: int
) -> dict[str, Any]:
    """Hold ``connections`` idle sessions (greeted, then silent) and read smtpkit's RSS."""
    needed = connections + 256
    if open_files < needed:
        raise BenchError(
            f"--idle {connections} needs about {needed} open files per process, but "
            f"RLIMIT_NOFILE allows {open_files}: raise the hard limit (as root: `ulimit -Hn "
            f"{needed + 1000}`, or LimitNOFILE= in a systemd unit) or use a smaller N"
        )
    server = make_smtpkit(base / "idle", workers, max_connections=connections + 100)
    os.sync()
    server.start()
    socks: list[socket.socket] = []
    greeted = 0
    refused = 0
    try:
        before_kb = settle_rss(server, 1.0)
        began = time.monotonic()
        batch = 100
        for first in range(0, connections, batch):
            group = []
            try:
                for _ in range(min(batch, connections - first)):
                    s = socket.create_connection((HOST, server.port), timeout=30)
                    socks.append(s)
                    group.append(s)
                for s in group:
                    greeting = s.recv(512)
                    if greeting.startswith(b"220"):
                        greeted += 1
                    else:
                        refused += 1
            except OSError as exc:
                raise BenchError(
                    f"idle: connection {len(socks) + 1} of {connections} failed: {exc}"
                ) from None
            server.check_alive()
        opened_in = time.monotonic() - began
        held_kb = settle_rss(server, 3.0)
        _, processes = tree_rss_kb(server.process.pid if server.process else 0)
        server.check_alive()
    finally:
        for s in socks:
            s.close()
        code = server.stop()
    if refused or greeted != connections:
        raise BenchError(
            f"idle: {greeted} of {connections} connections greeted with 220 ({refused} refused)"
        )
    result = {
        "connections": connections,
        "greeted": greeted,
        "seconds_to_open": round(opened_in, 2),
        "rss_before_mb": mb(before_kb),
        "rss_idle_mb": mb(held_kb),
        "kb_per_connection": round((held_kb - before_kb) / connections, 2),
        "processes": processes,
        "target_mb": IDLE_TARGET_MB,
        "target_met": mb(held_kb) < IDLE_TARGET_MB,
        "exit_status": code,
    }
    if code != 0 or server.stragglers:
        raise BenchError(
            f"smtpkit exited with status {code} after the idle check, "
            f"{server.stragglers} process(es) left running"
        )
    return result


def big_check(base: Path, megabytes: int, workers: int | None) -> dict[str, Any]:
    """Stream one ``megabytes`` MB message against the default 10 MB limit; RSS must stay flat."""
    server = make_smtpkit(base / "big", workers)
    os.sync()
    server.start()
    assert server.sampler is not None and server.maildir is not None
    line = b"X" * 78 + b"\r\n"
    chunk = line * (1024 * 1024 // len(line))
    pending = bytearray()
    try:
        before_kb = settle_rss(server, 1.0)
        with socket.create_connection((HOST, server.port), timeout=120) as s:
            steps = [
                (None, 220),
                (b"EHLO bench.client\r\n", 250),
                (f"MAIL FROM:<{SENDER}>\r\n".encode(), 250),
                (f"RCPT TO:<{RECIPIENT}>\r\n".encode(), 250),
                (b"DATA\r\n", 354),
            ]
            for command, expected in steps:
                if command:
                    s.sendall(command)
                code, text = read_reply(s, pending)
                if code != expected:
                    raise BenchError(f"big: expected {expected}, got {text!r}")
            began = time.monotonic()
            try:
                for _ in range(megabytes):
                    s.sendall(chunk)
                s.sendall(b".\r\n")
            except OSError as exc:
                raise BenchError(f"big: the server stopped reading mid-message: {exc}") from None
            code, text = read_reply(s, pending)
            streamed_in = time.monotonic() - began
            during_kb = server.sampler.window()
            s.sendall(b"QUIT\r\n")
            with contextlib.suppress(BenchError, OSError):
                read_reply(s, pending)
        after_kb = settle_rss(server, 1.0)
        stored = count_new(server.maildir)
        left = sum(1 for _ in os.scandir(server.maildir / "tmp"))
    finally:
        code_exit = server.stop()
    sent = megabytes * len(chunk)
    result = {
        "mebibytes": round(sent / 2**20, 1),
        "reply": text,
        "reply_code": code,
        "seconds": round(streamed_in, 2),
        "rss_before_mb": mb(before_kb),
        "rss_peak_mb": mb(during_kb),
        "rss_after_mb": mb(after_kb),
        "growth_mb": mb(during_kb - before_kb),
        "stored_files": stored,
        "tmp_files_left": left,
        "exit_status": code_exit,
        "processes_left": server.stragglers,
    }
    if code != 552 or stored or left or code_exit != 0 or server.stragglers:
        raise BenchError(f"big: expected 552 and nothing stored, got {result}")
    return result


# --- report ---------------------------------------------------------------------------------


def machine_info(folder: Path) -> dict[str, Any]:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    filesystem = "unknown"
    with contextlib.suppress(OSError, subprocess.SubprocessError, IndexError):
        out = subprocess.run(
            ["df", "-T", str(folder)], capture_output=True, text=True, timeout=10
        ).stdout
        filesystem = out.splitlines()[1].split()[1]
    commit = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        git = ["git", "-C", str(ROOT)]
        head = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        )
        dirty = subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True)
        if head.returncode == 0:
            commit = head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "filesystem": filesystem,
        "data_dir": str(folder),
        "python": platform.python_version(),
        "smtpkit_commit": commit,
    }


def machine_line(m: dict[str, Any]) -> str:
    return (
        f"{m['cpus']} CPUs ({m['cpu_model']}), Linux {m['kernel']}, {m['filesystem']} "
        f"({m['data_dir']}), Python {m['python']}"
        + (f", smtpkit {m['smtpkit_commit']}" if m["smtpkit_commit"] else "")
    )


def _rate(entry: dict[str, Any] | None) -> str:
    if not entry:
        return "-"
    if entry["min"] == entry["max"]:
        return f"{entry['median']:,.0f}"
    return f"{entry['median']:,.0f} ({entry['min']:,.0f}-{entry['max']:,.0f})"


def _ratio(top: float | None, bottom: float | None) -> str:
    if not top or not bottom:
        return "-"
    return f"{top / bottom:.2f}x"


def table(report: dict[str, Any], shapes: Sequence[Shape]) -> str:
    servers = report["servers"]
    probe4 = (report.get("disk_probe") or {}).get("4_threads")

    def entry(server: str, shape: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = servers.get(server, {}).get("shapes", {}).get(shape)
        return found

    def median(server: str, shape: str) -> float | None:
        found = entry(server, shape)
        return float(found["median"]) if found else None

    def rss(server: str, shape: str) -> str:
        found = entry(server, shape)
        return f"{found['peak_rss_mb']:.0f}" if found else "-"

    head = (
        "| shape | smtpkit msgs/s (min-max) | aiosmtpd | smtp-sink | smtpkit/aiosmtpd "
        "| smtpkit/sink | smtpkit/disk-probe (4 threads) | peak RSS MB smtpkit / aiosmtpd / sink |"
    )
    rows = [head, "|" + "---|" * 8]
    for shape in shapes:
        k, a, s = (median(name, shape.name) for name in SERVERS)
        rows.append(
            f"| {shape.name} (-s {shape.sessions} -m {shape.messages} -l {shape.length}) "
            f"| {_rate(entry('smtpkit', shape.name))} | {_rate(entry('aiosmtpd', shape.name))} "
            f"| {_rate(entry('smtp-sink', shape.name))} | {_ratio(k, a)} | {_ratio(k, s)} "
            f"| {_ratio(k, probe4)} "
            f"| {rss('smtpkit', shape.name)} / {rss('aiosmtpd', shape.name)} "
            f"/ {rss('smtp-sink', shape.name)} |"
        )
    return "\n".join(rows)


def write_json(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")


# --- command line ---------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="Benchmark smtpkit against aiosmtpd (durable Maildir) and smtp-sink.",
    )
    names = ",".join(s.name for s in SHAPES)
    parser.add_argument("--quick", action="store_true", help=f"counts / {QUICK_DIVISOR}, 1 round")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per shape (default 3)")
    parser.add_argument("--shapes", default=names, help=f"comma-separated subset of {names}")
    parser.add_argument("--servers", default=",".join(SERVERS), help="comma-separated subset")
    parser.add_argument("--smtpkit-workers", type=int, default=None, metavar="N")
    parser.add_argument("--timeout", type=float, default=300.0, help="per smtp-source run (s)")
    parser.add_argument("--probe-seconds", type=float, default=None, help="default 5 (quick 1)")
    parser.add_argument("--idle", type=int, default=0, metavar="N", help="hold N idle sessions")
    parser.add_argument("--big", action="store_true", help="one 100 MB message vs the 10 MB limit")
    parser.add_argument("--big-mb", type=int, default=100, help="size of the --big message (MiB)")
    parser.add_argument("--no-throughput", action="store_true", help="only --idle / --big")
    parser.add_argument("--dir", type=Path, default=None, help="parent of the data folders")
    parser.add_argument("--keep", action="store_true", help="keep the data folders")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="results file")
    args = parser.parse_args(argv)
    wanted = [n.strip() for n in args.shapes.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in {s.name for s in SHAPES}]
    if unknown:
        parser.error(f"unknown shape {unknown[0]!r}; choose from {names}")
    args.shape_list = [s for s in SHAPES if s.name in wanted]
    if args.quick:
        args.shape_list = [s.reduced(QUICK_DIVISOR) for s in args.shape_list]
    servers = [n.strip() for n in args.servers.split(",") if n.strip()]
    bad = [n for n in servers if n not in SERVERS]
    if bad:
        parser.error(f"unknown server {bad[0]!r}; choose from {','.join(SERVERS)}")
    args.server_list = [n for n in SERVERS if n in servers]
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.probe_seconds is None:
        args.probe_seconds = 1.0 if args.quick else 5.0
    return args


@contextlib.contextmanager
def work_folder(parent: Path | None, keep: bool) -> Iterator[Path]:
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="smtpkit-bench-", dir=parent))
    try:
        yield folder
    finally:
        if keep:
            print(f"data kept in {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


def run_probe(base: Path, seconds: float, report: dict[str, Any], when: str) -> None:
    """Disk probe before and after the servers: this disk's speed drifts (a shared VM's does).

    The ratio uses the better of the two runs, the harder ceiling to be measured against.
    """
    os.sync()
    # Kept until the whole run ends (see probe): deleting them now would tax the servers.
    one, four = probe(base, 1, seconds, keep=True), probe(base, 4, seconds, keep=True)
    entry = report.setdefault("disk_probe", {"seconds": seconds})
    entry[when] = {"1_thread": round(one.per_second, 1), "4_threads": round(four.per_second, 1)}
    for key in ("1_thread", "4_threads"):
        entry[key] = max(v[key] for k, v in entry.items() if k in ("before", "after"))
    print(
        f"disk probe {when} (fsync'd 1 KB file creations/s): 1 thread "
        f"{one.per_second:,.0f}, 4 threads {four.per_second:,.0f}",
        flush=True,
    )


def run(args: argparse.Namespace, base: Path, report: dict[str, Any]) -> None:
    open_files = raise_open_files_limit()
    report["machine"] = machine_info(base)
    print("machine:", machine_line(report["machine"]), flush=True)
    workers: int | None = None
    if args.smtpkit_workers is not None:
        if smtpkit_accepts_workers(base):
            workers = args.smtpkit_workers
        else:
            print("note: `smtpkit serve` has no --workers option; --smtpkit-workers ignored")
    report["smtpkit_workers"] = workers if workers is not None else "default"

    if not args.no_throughput and args.shape_list:
        if "aiosmtpd" in args.server_list and importlib.util.find_spec("aiosmtpd") is None:
            raise BenchError("aiosmtpd is not installed: pip install -e '.[bench]'")
        source = find_program("smtp-source")
        run_probe(base, args.probe_seconds, report, "before")
        factories = {
            "smtpkit": lambda: make_smtpkit(base, workers, max_connections=1000),
            "aiosmtpd": lambda: make_aiosmtpd(base),
            "smtp-sink": lambda: make_sink(base),
        }
        for name in args.server_list:
            server = factories[name]()
            report["servers"][name] = measure_server(
                server, args.shape_list, args.rounds, source, args.timeout
            )
        run_probe(base, args.probe_seconds, report, "after")
        print()
        print(table(report, args.shape_list))
        report["table"] = table(report, args.shape_list)
        probes = report["disk_probe"]
        print(
            f"disk probe (best of before/after, fsync'd 1 KB files/s): "
            f"1 thread {probes['1_thread']:,.0f}, 4 threads {probes['4_threads']:,.0f}"
        )
        for name, result in report["servers"].items():
            note = f"{name}: peak RSS {result['peak_rss_mb']} MB"
            note += f" over {result['max_processes']} process(es)"
            print(note)
            for problem in result.get("log_problems", []):
                print(f"  {name} log: {problem}")

    if args.idle:
        print(f"idle: opening {args.idle} connections to smtpkit ...", flush=True)
        idle = idle_check(base, args.idle, workers, open_files)
        report["idle"] = idle
        verdict = "met" if idle["target_met"] else "NOT met"
        print(
            f"idle: {idle['connections']} idle connections: smtpkit RSS {idle['rss_idle_mb']} MB "
            f"(before {idle['rss_before_mb']} MB, {idle['kb_per_connection']} KB/connection, "
            f"{idle['processes']} process(es)); target < {IDLE_TARGET_MB:.0f} MB {verdict}"
        )
    if args.big:
        big = big_check(base, args.big_mb, workers)
        report["big"] = big
        print(
            f"big: {big['mebibytes']} MiB message vs 10 MB limit: reply {big['reply']!r} "
            f"after {big['seconds']} s; RSS before {big['rss_before_mb']} MB, peak "
            f"{big['rss_peak_mb']} MB, after {big['rss_after_mb']} MB"
        )
    print("machine:", machine_line(report["machine"]))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    report: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "quick": args.quick,
        "rounds": args.rounds,
        "servers": {},
    }
    status = 0
    began = time.monotonic()
    with work_folder(args.dir, args.keep) as base:
        try:
            run(args, base, report)
        except BenchError as exc:
            print(f"\nBENCHMARK FAILED: {exc}", file=sys.stderr)
            report["error"] = str(exc)
            status = 1
        except KeyboardInterrupt:
            report["error"] = "interrupted"
            status = 130
    report["seconds"] = round(time.monotonic() - began, 1)
    write_json(args.json, report)
    print(f"results written to {args.json} ({report['seconds']} s)")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
