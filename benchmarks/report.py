"""What the run prints and writes: the table and its ratios, the notes under it, the machine
line, and the JSON file."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT
from benchmarks.probes import IDLE_TARGET_MB
from benchmarks.servers import SERVERS
from benchmarks.shapes import Shape

__all__ = [
    "big_line",
    "idle_line",
    "machine_info",
    "machine_line",
    "paired_line",
    "paired_ratios",
    "profile_lines",
    "relay_lines",
    "table",
    "throughput_notes",
    "write_json",
]


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


# --- the table ------------------------------------------------------------------------------


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


# --- the relay row --------------------------------------------------------------------------


def _per_second(messages: int, seconds: list[float]) -> str:
    return f"{messages / statistics.median(seconds):,.0f}" if seconds else "-"


def relay_lines(relay: dict[str, Any]) -> list[str]:
    """The relay row, a table of its own (its peers are not the main table's), and its notes:
    what smtp-source alone took (acceptance), or why Postfix has no figure."""
    ours, theirs = relay["smtpkit"], relay["postfix"]
    messages, length = relay["messages"], relay["length"]
    size = f"{length // 1024}KB" if length < 1_000_000 else f"{length // 1_000_000}MB"
    label = f"relay {messages}x{size} (-s {relay['sessions']} -m {messages} -l {length})"
    measured = "median" in theirs
    postfix = _rate(theirs) if measured else "not measured"
    rss = f"{ours['peak_rss_mb']:.0f} / " + (f"{theirs['peak_rss_mb']:.0f}" if measured else "-")
    lines = [
        "| relay, end to end (smtp-source -> relay -> smtp-sink) | smtpkit msgs/s (min-max) "
        "| Postfix msgs/s (min-max) | smtpkit/Postfix | peak RSS MB smtpkit / Postfix |",
        "|" + "---|" * 5,
        f"| {label} | {_rate(ours)} | {postfix} "
        f"| {_ratio(ours['median'], theirs.get('median'))} | {rss} |",
    ]
    if not measured:
        lines.append(f"relay: Postfix not measured: {theirs['error']}")
        return lines
    lines.append(
        f"relay: accepted (smtp-source's own time, median): smtpkit "
        f"{_per_second(messages, ours['source_seconds'])} msgs/s, Postfix "
        f"{_per_second(messages, theirs['source_seconds'])} msgs/s; Postfix "
        f"{theirs.get('version', '')} with its defaults, {theirs['max_processes']} processes "
        f"at most (RSS summed over them)"
    )
    if "note" in theirs:
        lines.append(f"relay: Postfix: {theirs['note']}")
    for name, result in (("smtpkit", ours), ("Postfix", theirs)):
        for problem in result.get("log_problems", []):
            lines.append(f"  relay {name} log: {problem}")
    return lines


# --- the notes under it ---------------------------------------------------------------------


def _syncs_line(name: str, result: dict[str, Any]) -> str | None:
    """smtpkit's syncfs calls over its whole run, when its journal's stop events carry them."""
    syncs = result.get("syncfs")
    if not syncs:
        return None
    stored = sum(shape.get("stored") or 0 for shape in result["shapes"].values())
    line = (
        f"{name}: {syncs['syncs']:,} syncfs calls by {syncs['workers']} worker(s), "
        f"{syncs['syncs_shared']:,} more covered by another worker's"
    )
    if stored:
        line += f"; {syncs['syncs'] / stored:.3f} per message ({stored:,} stored, all shapes)"
    return line


def throughput_notes(report: dict[str, Any]) -> list[str]:
    """The lines under the table: the disk probe's best, and per server its peak RSS, its
    syncfs calls (smtpkit) and any error lines in its log."""
    probes = report["disk_probe"]
    lines = [
        f"disk probe (best of before/after, fsync'd 1 KB files/s): "
        f"1 thread {probes['1_thread']:,.0f}, 4 threads {probes['4_threads']:,.0f}"
    ]
    for name, result in report["servers"].items():
        note = f"{name}: peak RSS {result['peak_rss_mb']} MB"
        if result.get("peak_pss_mb"):
            note += f" (PSS {result['peak_pss_mb']} MB at a round's end: shared pages once)"
        note += f" over {result['max_processes']} process(es)"
        lines.append(note)
        syncs = _syncs_line(name, result)
        if syncs is not None:
            lines.append(syncs)
        for problem in result.get("log_problems", []):
            lines.append(f"  {name} log: {problem}")
    return lines


PAIR = ("smtpkit", "aiosmtpd")


def paired_ratios(
    servers: dict[str, Any], pair: tuple[str, str] = PAIR
) -> dict[str, dict[str, Any]]:
    """Per shape run by both servers of ``pair`` (smtpkit and aiosmtpd unless told), the
    ratio of their rates round by round (round i against round i: they ran seconds apart,
    under the same conditions of the machine), with the smallest and the median of those
    ratios."""
    ours, theirs = (servers.get(name, {}).get("shapes", {}) for name in pair)
    paired: dict[str, dict[str, Any]] = {}
    for shape, entry in ours.items():
        if shape not in theirs:
            continue
        ratios = [a / b for a, b in zip(entry["rounds"], theirs[shape]["rounds"], strict=True)]
        paired[shape] = {
            "/".join(pair): [round(r, 3) for r in ratios],
            "min": round(min(ratios), 3),
            "median": round(statistics.median(ratios), 3),
        }
    return paired


def paired_line(paired: dict[str, dict[str, Any]], pair: tuple[str, str] = PAIR) -> str | None:
    """The line under the table for ``paired_ratios``: per shape the median ratio of the
    rounds and, with more than one round, the smallest."""
    if not paired:
        return None
    parts = []
    for shape, entry in paired.items():
        part = f"{shape} {entry['median']:.2f}x"
        if len(entry["/".join(pair)]) > 1:
            part += f" (worst {entry['min']:.2f}x)"
        parts.append(part)
    return (
        f"paired rounds {'/'.join(pair)} (round i against round i, run seconds apart): "
        + ", ".join(parts)
    )


def profile_lines(profile: dict[str, Any]) -> list[str]:
    """The ``--profile`` summary: what was profiled, then one line per function."""
    if "error" in profile:
        return [f"profile: {profile['error']}"]
    shapes = ", ".join(profile["shapes"])
    if profile["unit"] == "samples":
        head = (
            f"profile ({profile['tool']}, {profile['target']}; one extra round each of "
            f"{shapes}, {profile['seconds']} s at {profile['rate']} Hz): "
            f"{profile['total']:,} samples of working threads"
        )
        threads = ", ".join(f"{name} {share}%" for name, share in profile["threads"].items())
        lines = [head, f"  by thread: {threads}", "   own %  samples  function (file)"]
        lines += [
            f"  {row['share']:5.1f}%  {row['own']:>7,}  {row['function']}" for row in profile["top"]
        ]
        return lines
    head = (
        f"profile ({profile['tool']}, {profile['target']}; one round each of {shapes}): "
        f"{profile['total']:.2f} s of own time, plus {profile['waiting_seconds']:.2f} s "
        f"waiting in the selector (left out)"
    )
    lines = [head, "   own %    own s     calls  function (file:line)"]
    lines += [
        f"  {row['share']:5.1f}%  {row['own']:7.3f}  {row['calls']:>8,}  {row['function']}"
        for row in profile["top"]
    ]
    return lines


def idle_line(idle: dict[str, Any]) -> str:
    verdict = "met" if idle["target_met"] else "NOT met"
    return (
        f"idle: {idle['connections']} idle connections: smtpkit RSS {idle['rss_idle_mb']} MB "
        f"(before {idle['rss_before_mb']} MB, {idle['kb_per_connection']} KB/connection, "
        f"{idle['processes']} process(es)); target < {IDLE_TARGET_MB:.0f} MB {verdict}"
    )


def big_line(big: dict[str, Any]) -> str:
    return (
        f"big: {big['mebibytes']} MiB message vs 10 MB limit: reply {big['reply']!r} "
        f"after {big['seconds']} s; RSS before {big['rss_before_mb']} MB, peak "
        f"{big['rss_peak_mb']} MB, after {big['rss_after_mb']} MB"
    )


def write_json(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
