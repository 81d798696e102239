"""``--profile``: where smtpkit's time goes during the 1 KB shapes.

With py-spy installed (``pip install py-spy``; it is no dependency of smtpkit), every 1 KB shape
gets one more round on the measured smtpkit, after its measured rounds, while
``py-spy record --subprocesses --threads --format raw`` samples the server's process tree
(its workers, each with its event loop and its delivery thread). The samples are summed over
those rounds and each is charged to the function it was in (own time). Samples of threads
py-spy finds idle (sleeping in the selector) are left out, as py-spy does by default; waits
for the disk count.

Without py-spy (or when it cannot attach), cProfile: a forked worker cannot be profiled from
outside, so one more smtpkit runs with one worker, in its own process, under
``python -m cProfile -o FILE -m smtpkit ... serve``, for one round of each 1 KB shape, and
pstats gives the functions with the most own time (``tottime``). cProfile sees only the thread
that started it, the event loop; the delivery thread's time is not in it. Waiting in the
selector is left out of the list: it holds the idle time between rounds too.

The profiled rounds never count in the table: a profiler slows what it watches.
"""

from __future__ import annotations

import contextlib
import os
import pstats
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, BenchError
from benchmarks.servers import Server, make_smtpkit
from benchmarks.shapes import Shape, unmeasured_round

__all__ = [
    "TOOLS",
    "SpyRecorder",
    "cprofile_run",
    "find_py_spy",
    "summarise_pstats",
    "summarise_raw",
]

TOOLS = ("auto", "py-spy", "cprofile")
TOP = 15
SPY_RATE = 100  # samples per second and thread (py-spy's default)
# The selector's wait: under cProfile it also holds the time between rounds.
_WAIT = re.compile(r"<method '(poll|select)' of 'select\.")
# py-spy's raw format: 'process PID:"command line";' per process level, then with --threads
# 'thread (TID): NAME;', then the frames, outermost first, then a space and the sample count.
_PROCESS = re.compile(r'process \d+:"[^"]*";')
_THREAD = re.compile(r"thread \(\d+\)(?:: ([^;]*))?;")
_LIBRARY = re.compile(r".*/(?:site-packages|lib/python3\.\d+)/")


def find_py_spy() -> str | None:
    return shutil.which("py-spy")


def _short(path: str) -> str:
    """A source file as a reader knows it: relative to the checkout or to its library."""
    root = f"{ROOT}{os.sep}"
    if path.startswith(root):
        return path[len(root) :]
    if _LIBRARY.match(path):
        return _LIBRARY.sub("", path, count=1)
    return os.path.basename(path)


# --- py-spy ---------------------------------------------------------------------------------


class SpyRecorder:
    """py-spy on the measured smtpkit, for one extra round of each 1 KB shape.

    ``error`` says why it stopped trying (py-spy could not attach or wrote nothing); the
    caller then falls back to cProfile.
    """

    def __init__(self, program: str, folder: Path) -> None:
        self.program = program
        self.folder = folder
        self.files: list[Path] = []
        self.shapes: list[str] = []
        self.seconds = 0.0
        self.error: str | None = None

    def wants(self, server: Server, shape: Shape) -> bool:
        return server.name == "smtpkit" and shape.small and self.error is None

    @contextlib.contextmanager
    def recording(self, server: Server, shape: Shape) -> Iterator[None]:
        self.folder.mkdir(parents=True, exist_ok=True)
        out = self.folder / f"py-spy-{shape.name}.txt"
        log = self.folder / f"py-spy-{shape.name}.log"
        spy = self._start(server.pid, out, log)
        began = time.monotonic()
        try:
            yield
        finally:
            if spy is not None:
                self._finish(spy, out, log, shape, time.monotonic() - began)

    def _start(self, pid: int, out: Path, log: Path) -> subprocess.Popen[bytes] | None:
        command = [
            self.program,
            "record",
            "--pid",
            str(pid),
            "--subprocesses",
            "--threads",
            "--nolineno",
            "--format",
            "raw",
            "--rate",
            str(SPY_RATE),
            "--output",
            str(out),
        ]
        with log.open("wb") as fh:
            spy = subprocess.Popen(command, stdout=fh, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if b"Sampling process" in log.read_bytes():
                return spy
            if spy.poll() is not None:
                break
            time.sleep(0.05)
        _stop(spy)
        self.error = f"py-spy did not start sampling: {_tail(log)}"
        return None

    def _finish(
        self, spy: subprocess.Popen[bytes], out: Path, log: Path, shape: Shape, seconds: float
    ) -> None:
        _stop(spy)
        if out.is_file() and out.stat().st_size > 0:
            self.files.append(out)
            self.shapes.append(shape.name)
            self.seconds += seconds
        else:
            self.error = f"py-spy wrote no samples: {_tail(log)}"

    def summary(self) -> dict[str, Any]:
        result = summarise_raw(_lines(self.files))
        result.update(
            tool="py-spy",
            target="the measured smtpkit's processes, all threads",
            shapes=self.shapes,
            seconds=round(self.seconds, 2),
            rate=SPY_RATE,
        )
        return result


def _stop(spy: subprocess.Popen[bytes]) -> None:
    """py-spy writes its file when interrupted, as on Ctrl-C."""
    if spy.poll() is None:
        spy.send_signal(signal.SIGINT)
        try:
            spy.wait(timeout=60)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait()


def _tail(log: Path) -> str:
    with contextlib.suppress(OSError):
        lines = log.read_text(errors="replace").strip().splitlines()
        return " / ".join(lines[-3:]) or "(no output)"
    return "(no output)"


def _lines(files: Iterable[Path]) -> Iterator[str]:
    for path in files:
        with path.open(errors="replace") as fh:
            yield from fh


def summarise_raw(lines: Iterable[str], top: int = TOP) -> dict[str, Any]:
    """py-spy's raw (collapsed) stacks -> samples per thread name and the ``top`` functions
    by own samples (the innermost frame of each stack)."""
    own: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        stack += ";"
        while (process := _PROCESS.match(stack)) is not None:
            stack = stack[process.end() :]
        thread = "?"
        if (found := _THREAD.match(stack)) is not None:
            thread = found.group(1) or "?"
            stack = stack[found.end() :]
        frames = [frame for frame in stack.split(";") if frame]
        own[frames[-1] if frames else "(no Python frame)"] += samples
        threads[thread] += samples
        total += samples
    return {
        "unit": "samples",
        "total": total,
        "threads": {name: _share(n, total) for name, n in threads.most_common()},
        "top": [
            {"function": name, "own": n, "share": _share(n, total)}
            for name, n in own.most_common(top)
        ],
    }


def _share(part: float, total: float) -> float:
    return round(100 * part / total, 1) if total else 0.0


# --- cProfile -------------------------------------------------------------------------------


def cprofile_run(
    base: Path, shapes: Sequence[Shape], source: str, timeout: float
) -> dict[str, Any]:
    """One more smtpkit, one worker, under cProfile, for one round of each 1 KB shape."""
    small = [shape for shape in shapes if shape.small]
    folder = base / "profile"
    stats = folder / "smtpkit.pstats"
    server = make_smtpkit(
        folder,
        workers=1,
        max_connections=1000,
        python_args=["-m", "cProfile", "-o", str(stats)],
    )
    os.sync()
    server.start()
    began = time.monotonic()
    try:
        for shape in small:
            rate = unmeasured_round(server, shape, source, timeout)
            print(
                f"  {'smtpkit':<9} {shape.name:<8} round under cProfile: "
                f"{rate:>8,.0f} msgs/s (not in the table)",
                flush=True,
            )
    finally:
        code = server.stop()
    seconds = time.monotonic() - began
    if code != 0 or server.stragglers:
        raise BenchError(
            f"smtpkit under cProfile exited with status {code}, "
            f"{server.stragglers} process(es) left running\n{server.log_tail()}"
        )
    if not stats.is_file():
        raise BenchError(f"cProfile wrote no {stats}\n{server.log_tail()}")
    result = summarise_pstats(stats)
    result.update(
        tool="cProfile",
        target="a separate smtpkit with 1 worker, its event loop thread",
        shapes=[shape.name for shape in small],
        seconds=round(seconds, 2),
        python=sys.version.split()[0],
    )
    return result


def summarise_pstats(path: Path, top: int = TOP) -> dict[str, Any]:
    """The ``top`` functions by own time (``tottime``) in a cProfile file, the selector's
    wait left out (and reported apart)."""
    stats: dict[tuple[str, int, str], tuple[int, int, float, float, Any]]
    stats = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
    waited = 0.0
    rows: list[tuple[float, int, str]] = []
    for (filename, line, name), (_, calls, tottime, _, _) in stats.items():
        if filename == "~" and _WAIT.search(name):
            waited += tottime
            continue
        label = name if filename == "~" else f"{name} ({_short(filename)}:{line})"
        rows.append((tottime, calls, label))
    rows.sort(reverse=True)
    total = sum(tottime for tottime, _, _ in rows)
    return {
        "unit": "seconds",
        "total": round(total, 3),
        "waiting_seconds": round(waited, 3),
        "top": [
            {
                "function": label,
                "own": round(tottime, 3),
                "share": _share(tottime, total),
                "calls": calls,
            }
            for tottime, calls, label in rows[:top]
        ],
    }
