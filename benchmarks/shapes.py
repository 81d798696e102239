"""The load: ``smtp-source`` runs at fixed shapes, and the check that every message is stored.

A round is the wall time of one ``smtp-source`` run. After each round the Maildir is counted:
every message ``smtp-source`` saw accepted must already be a file in ``new/`` (a ``250`` means
durable), and ``tmp/`` must be empty; else the run fails.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
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
    "measure_server",
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


def measure_server(
    server: Server,
    shapes: Sequence[Shape],
    rounds: int,
    source: str,
    timeout: float,
    profiler: RoundProfiler | None = None,
) -> dict[str, Any]:
    """Start ``server``, run every shape ``rounds`` times, stop it; results per shape.

    With a ``profiler`` that wants a shape, one more round of it runs under the profiler after
    the measured ones: the profiler's cost stays out of the table.
    """
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
            if profiler is not None and profiler.wants(server, shape):
                with profiler.recording(server, shape):
                    rate = unmeasured_round(server, shape, source, timeout)
                print(
                    f"  {server.name:<9} {shape.name:<8} profiled round: "
                    f"{rate:>8,.0f} msgs/s (not in the table)",
                    flush=True,
                )
                os.sync()
        results["peak_rss_mb"] = mb(server.sampler.peak_kb)
        results["max_processes"] = server.sampler.max_processes
        results["peak_pss_mb"] = mb(server.sampler.peak_pss_kb)
    finally:
        code = server.stop()
    results["exit_status"] = code
    syncs = server.syncs()
    if syncs is not None:
        results["syncfs"] = syncs
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
