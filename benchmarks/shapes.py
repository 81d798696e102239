"""The load: ``smtp-source`` runs at fixed shapes, and the check that every message is stored.

A round is the wall time of one ``smtp-source`` run. After each round the Maildir is counted:
every message ``smtp-source`` saw accepted must already be a file in ``new/`` (a ``250`` means
durable), and ``tmp/`` must be empty; else the run fails.

The servers compared run side by side and take turns, round by round (``measure_servers``):
on a shared machine whose speed drifts from one minute to the next, round i of each server
ran under about the same conditions, and their ratio round by round is what can be compared.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from benchmarks.common import HOST, RECIPIENT, SENDER, BenchError, mb
from benchmarks.servers import Server

__all__ = [
    "QUICK_DIVISOR",
    "SHAPES",
    "RoundProfiler",
    "Shape",
    "count_new",
    "measure_servers",
    "pick_shapes",
    "unmeasured_round",
]

QUICK_DIVISOR = 20


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

    @property
    def small(self) -> bool:
        """A 1 KB shape: the ones bound by per-message work rather than by bytes."""
        return self.length <= 1024


SHAPES = (
    Shape("1x1KB", 1, 2000, 1024),
    Shape("20x1KB", 20, 10000, 1024),
    Shape("100x1KB", 100, 10000, 1024),
    Shape("20x1MB", 20, 500, 1_000_000),
)


def pick_shapes(text: str) -> list[Shape]:
    """The shapes named in ``text`` (comma-separated), in table order; ValueError naming
    the first unknown one."""
    wanted = [name.strip() for name in text.split(",") if name.strip()]
    known = {shape.name for shape in SHAPES}
    unknown = [name for name in wanted if name not in known]
    if unknown:
        names = ",".join(shape.name for shape in SHAPES)
        raise ValueError(f"unknown shape {unknown[0]!r}; choose from {names}")
    return [shape for shape in SHAPES if shape.name in wanted]


class RoundProfiler(Protocol):
    """Something that records a server's processes during one extra round of a shape."""

    def wants(self, server: Server, shape: Shape) -> bool: ...

    def recording(
        self, server: Server, shape: Shape
    ) -> contextlib.AbstractContextManager[None]: ...


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


def unmeasured_round(server: Server, shape: Shape, source: str, timeout: float) -> float:
    """One round outside the table (a profiled one), verified like the others; its rate."""
    server.check_alive()
    elapsed = drive(source, shape, server.port, timeout)
    server.check_alive()
    verify_stored(server, shape)
    return shape.messages / elapsed


def _one_round(server: Server, shape: Shape, source: str, timeout: float) -> tuple[float, int, int]:
    """One measured round of ``shape`` on ``server``: its wall time (s), its peak RSS (kB) and
    the messages found stored; its writeback is synced before the next round, whichever
    server runs that."""
    assert server.sampler is not None
    server.check_alive()
    server.sampler.window()
    elapsed = drive(source, shape, server.port, timeout)
    window_kb = server.sampler.window()
    server.check_alive()
    stored = verify_stored(server, shape)
    os.sync()
    return elapsed, window_kb, stored


def _measure_shape(
    servers: Sequence[Server], shape: Shape, rounds: int, source: str, timeout: float
) -> dict[str, dict[str, Any]]:
    """``rounds`` rounds of ``shape``: in each, every server runs once, seconds apart, the
    order reversed from one round to the next (the first server of round 1 runs last in round
    2), so that round i of two servers ran under the same conditions of the machine."""
    seconds: dict[str, list[float]] = {server.name: [] for server in servers}
    peak_kb = dict.fromkeys(seconds, 0)
    stored = dict.fromkeys(seconds, 0)
    for number in range(1, rounds + 1):
        for server in servers if number % 2 else reversed(servers):
            elapsed, window_kb, found = _one_round(server, shape, source, timeout)
            stored[server.name] += found
            seconds[server.name].append(elapsed)
            peak_kb[server.name] = max(peak_kb[server.name], window_kb)
            rate = shape.messages / elapsed
            print(
                f"  {server.name:<9} {shape.name:<8} round {number}/{rounds}: "
                f"{rate:>8,.0f} msgs/s ({elapsed:.2f} s), RSS {mb(window_kb)} MB",
                flush=True,
            )
    results: dict[str, dict[str, Any]] = {}
    for server in servers:
        rates = [shape.messages / s for s in seconds[server.name]]
        results[server.name] = {
            "messages": shape.messages,
            "sessions": shape.sessions,
            "length": shape.length,
            "rounds": [round(r, 1) for r in rates],
            "seconds": [round(s, 3) for s in seconds[server.name]],
            "median": round(statistics.median(rates), 1),
            "min": round(min(rates), 1),
            "max": round(max(rates), 1),
            "peak_rss_mb": mb(peak_kb[server.name]),
            "stored": stored[server.name] if server.maildir is not None else None,
            "sent": shape.messages * rounds,
        }
    return results


def _stop_servers(servers: Sequence[Server], results: dict[str, dict[str, Any]]) -> list[str]:
    """Stop every server, even when stopping one fails; record each one's exit status, syncfs
    calls and log problems in ``results``; return what went wrong (stragglers, an exit that
    was not clean, a server that did not stop)."""
    problems: list[str] = []
    for server in servers:
        try:
            code = server.stop()
        except BenchError as exc:
            problems.append(str(exc))
            code = None
        result = results[server.name]
        result["exit_status"] = code
        syncs = server.syncs()
        if syncs is not None:
            result["syncfs"] = syncs
        logged = server.log_problems()
        if logged:
            result["log_problems"] = logged
        if server.stragglers:
            problems.append(
                f"{server.name}: {server.stragglers} process(es) outlived the server "
                f"(exit status {code}) and had to be killed"
            )
        elif server.expect_clean_exit and code not in (0, None):
            problems.append(
                f"{server.name} exited with status {code} on SIGTERM\n{server.log_tail()}"
            )
    return problems


def measure_servers(
    servers: Sequence[Server],
    shapes: Sequence[Shape],
    rounds: int,
    source: str,
    timeout: float,
    profiler: RoundProfiler | None = None,
) -> dict[str, dict[str, Any]]:
    """Start every server, run every shape ``rounds`` times on each, stop them all; results
    per server, then per shape.

    The servers run side by side, each on its own port and data folder, but only one at a
    time takes load: for each shape, round by round, every server runs its round, in an order
    reversed every round (see ``_measure_shape``). Round i of two servers therefore ran
    seconds apart, and their ratio leaves out most of the drift of a shared machine's speed.

    With a ``profiler`` that wants a shape, one more round of it runs under the profiler after
    the measured ones: the profiler's cost stays out of the table.
    """
    os.sync()  # leave earlier writeback (the disk probe's) out of the rounds
    results: dict[str, dict[str, Any]] = {server.name: {"shapes": {}} for server in servers}
    started: list[Server] = []
    try:
        for server in servers:
            server.start()  # a server that fails to start stops itself
            started.append(server)
        for shape in shapes:
            for name, result in _measure_shape(started, shape, rounds, source, timeout).items():
                results[name]["shapes"][shape.name] = result
            for server in started:
                if profiler is not None and profiler.wants(server, shape):
                    with profiler.recording(server, shape):
                        rate = unmeasured_round(server, shape, source, timeout)
                    print(
                        f"  {server.name:<9} {shape.name:<8} profiled round: "
                        f"{rate:>8,.0f} msgs/s (not in the table)",
                        flush=True,
                    )
                    os.sync()
        for server in started:
            assert server.sampler is not None
            results[server.name]["peak_rss_mb"] = mb(server.sampler.peak_kb)
            results[server.name]["max_processes"] = server.sampler.max_processes
            results[server.name]["peak_pss_mb"] = mb(server.sampler.peak_pss_kb)
    except BaseException:
        # The failure is the news; what stopping the servers then found goes with it.
        for problem in _stop_servers(started, results):
            print(f"while stopping the servers: {problem}", file=sys.stderr, flush=True)
        raise
    problems = _stop_servers(started, results)
    if problems:
        raise BenchError("\n".join(problems))
    return results
