"""Smoke test of the benchmark harness: a reduced, bounded ``python -m benchmarks.run``.

It asserts that the harness works (every message sent is counted stored, the memory checks
report) and nothing about speed: timings on a shared CI machine mean nothing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.relay import sink_count
from benchmarks.report import paired_line, paired_ratios, relay_lines
from benchmarks.servers import Server
from tests.conftest import IN_CI, need_program, unavailable

ROOT = Path(__file__).resolve().parent.parent


def relay_available() -> bool:
    """The relay row starts a Postfix of its own, whose master must run as root (CI's does)."""
    if os.geteuid() == 0:
        need_program("postfix", "postfix")
        return True
    if IN_CI:
        pytest.fail("the relay row needs root in CI: it starts a Postfix instance")
    return False


def servers_available() -> list[str]:
    need_program("smtp-source", "postfix")
    need_program("smtp-sink", "postfix")
    servers = ["smtpkit", "smtp-sink"]
    if importlib.util.find_spec("aiosmtpd") is not None:
        servers.insert(1, "aiosmtpd")
    elif IN_CI:
        pytest.fail("aiosmtpd not installed: install the bench extra (pip install -e '.[bench]')")
    return servers


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_quick_benchmark_counts_every_message_stored(tmp_path: Path) -> None:
    servers = servers_available()
    relay = relay_available()
    results = tmp_path / "results.json"
    command = [
        sys.executable,
        "-m",
        "benchmarks.run",
        "--quick",
        "--servers",
        ",".join(servers),
        "--probe-seconds",
        "0.3",
        "--idle",
        "50",
        "--big",
        "--big-mb",
        "12",
        "--dir",
        str(tmp_path / "data"),
        "--json",
        str(results),
    ]
    if not relay:
        command.append("--no-relay")
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=140)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(results.read_text())
    assert "error" not in report
    assert set(report["servers"]) == set(servers)
    shapes = ("1x1KB", "20x1KB", "100x1KB", "20x1MB")
    for name, server in report["servers"].items():
        assert server["exit_status"] == 0 or name == "smtp-sink"
        # Both memory figures: RSS (shared pages once per process) and PSS (shared once).
        assert server["peak_rss_mb"] > 0 and server["peak_pss_mb"] > 0
        assert set(server["shapes"]) == set(shapes)
        for shape in server["shapes"].values():
            assert len(shape["rounds"]) == 1
            assert shape["median"] > 0
            if name != "smtp-sink":
                assert shape["stored"] == shape["sent"] == shape["messages"]
    assert report["disk_probe"]["4_threads"] > 0
    assert report["idle"]["greeted"] == 50
    assert report["big"]["reply_code"] == 552
    assert report["big"]["stored_files"] == 0
    assert "| shape |" in done.stdout
    if "aiosmtpd" in servers:
        # smtpkit's round i against aiosmtpd's round i: one ratio per round, each shape.
        assert set(report["paired"]) == set(shapes)
        for shape_name, entry in report["paired"].items():
            ours = report["servers"]["smtpkit"]["shapes"][shape_name]["rounds"][0]
            theirs = report["servers"]["aiosmtpd"]["shapes"][shape_name]["rounds"][0]
            assert entry["smtpkit/aiosmtpd"] == [round(ours / theirs, 3)]
            assert entry["min"] == entry["median"] == entry["smtpkit/aiosmtpd"][0]
        line = paired_line(report["paired"])
        assert line is not None and line in done.stdout.splitlines()
        assert line.startswith("paired rounds smtpkit/aiosmtpd (round i against round i")
    if relay:
        row = report["relay"]
        assert row["messages"] == 100
        for name in ("smtpkit", "postfix"):
            assert "error" not in row[name], row[name]
            assert row[name]["delivered"] == row[name]["sent"] == row["messages"]
            assert row[name]["median"] > 0
        assert row["ratio"] > 0
        assert "| relay 100x1KB" in done.stdout
    assert "machine: " in done.stdout
    # Nothing left behind: the data folders are removed unless --keep.
    assert list((tmp_path / "data").iterdir()) == []


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_servers_take_turns_in_an_order_reversed_every_round(tmp_path: Path) -> None:
    servers = servers_available()
    if "aiosmtpd" not in servers:
        unavailable("aiosmtpd not installed: install the bench extra (pip install -e '.[bench]')")
    results = tmp_path / "results.json"
    command = [sys.executable, "-m", "benchmarks.run", "--quick", "--rounds", "3"]
    command += ["--shapes", "1x1KB,20x1KB", "--servers", ",".join(servers), "--no-relay"]
    command += ["--probe-seconds", "0.1", "--dir", str(tmp_path / "data")]
    command += ["--json", str(results)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=80)
    assert done.returncode == 0, done.stdout + done.stderr
    turns = [
        (words[1], words[0], words[3])  # shape, server, round
        for words in (line.split() for line in done.stdout.splitlines())
        if len(words) > 3 and words[2] == "round"
    ]
    expected = []
    for shape in ("1x1KB", "20x1KB"):
        for number, order in enumerate((servers, servers[::-1], servers), start=1):
            expected += [(shape, name, f"{number}/3:") for name in order]
    assert turns == expected
    report = json.loads(results.read_text())
    for shape in ("1x1KB", "20x1KB"):
        ours = report["servers"]["smtpkit"]["shapes"][shape]["rounds"]
        theirs = report["servers"]["aiosmtpd"]["shapes"][shape]["rounds"]
        ratios = report["paired"][shape]["smtpkit/aiosmtpd"]
        assert ratios == [round(a / b, 3) for a, b in zip(ours, theirs, strict=True)]
    assert paired_line(report["paired"]) in done.stdout.splitlines()


def test_paired_ratios_pair_round_i_with_round_i() -> None:
    def rounds(*rates: float) -> dict[str, object]:
        return {"rounds": list(rates)}

    servers = {
        "smtpkit": {"shapes": {"20x1KB": rounds(2600, 1300, 2000), "20x1MB": rounds(90)}},
        "aiosmtpd": {"shapes": {"20x1KB": rounds(1000, 500, 1000), "20x1MB": rounds(100)}},
        "smtp-sink": {"shapes": {"20x1KB": rounds(9000, 9000, 9000)}},
    }
    paired = paired_ratios(servers)
    assert paired == {
        # Not the ratio of the medians (2000 / 1000): round i against round i.
        "20x1KB": {"smtpkit/aiosmtpd": [2.6, 2.6, 2.0], "min": 2.0, "median": 2.6},
        "20x1MB": {"smtpkit/aiosmtpd": [0.9], "min": 0.9, "median": 0.9},
    }
    assert paired_line(paired) == (
        "paired rounds smtpkit/aiosmtpd (round i against round i, run seconds apart): "
        "20x1KB 2.60x (worst 2.00x), 20x1MB 0.90x"
    )
    del servers["aiosmtpd"]
    assert paired_ratios(servers) == {}
    assert paired_line({}) is None


def test_sink_count_reads_the_last_whole_counter(tmp_path: Path) -> None:
    sink = Server("smtp-sink", [], 0, tmp_path, None, log=tmp_path / "smtp-sink.log")
    assert sink_count(sink) == 0  # no log yet
    # smtp-sink -c rewrites one line with \r; a counter cut off mid-number must not count.
    sink.log.write_bytes(b"sess=0 quit=0 mesg=1\rsess=1 quit=1 mesg=19\rsess=1 quit=1 mesg=2")
    assert sink_count(sink) == 19


def test_relay_row_says_why_postfix_is_missing() -> None:
    entry = {"median": 1000.0, "min": 990.0, "max": 1010.0, "peak_rss_mb": 110.0}
    relay = {
        "messages": 2000,
        "sessions": 20,
        "length": 1024,
        "smtpkit": {**entry, "source_seconds": [2.0]},
        "postfix": {"error": "Postfix's master daemon must start as root"},
    }
    lines = relay_lines(relay)
    assert lines[2].startswith("| relay 2000x1KB (-s 20 -m 2000 -l 1024) | 1,000 (990-1,010) |")
    assert "| not measured | - |" in lines[2]
    assert lines[3] == "relay: Postfix not measured: Postfix's master daemon must start as root"


def test_runs_as_a_script_too() -> None:
    done = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "--quick" in done.stdout


def test_unknown_shape_is_a_usage_error() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--shapes", "7x7KB"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "unknown shape '7x7KB'" in done.stderr


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_compare_runs_two_versions_side_by_side(tmp_path: Path) -> None:
    """``benchmarks.compare REV``: this tree and REV's code (from a temporary worktree, which
    is removed again), rounds taking turns, a row per shape and the paired line."""
    need_program("smtp-source", "postfix")
    need_program("git", "git")
    command = [sys.executable, "-m", "benchmarks.compare", "HEAD", "--quick"]
    command += ["--rounds", "2", "--shapes", "20x1KB", "--dir", str(tmp_path)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=140)
    assert done.returncode == 0, done.stdout + done.stderr
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    other = f"HEAD ({head[:7]})"
    lines = done.stdout.splitlines()
    # Two rounds of each version, taking turns: this tree, HEAD, then HEAD, this tree.
    turns = [re.match(r"\s+(.+?) 20x1KB\s+round (\d)/2: ", line) for line in lines]
    assert [(m.group(1), m.group(2)) for m in turns if m] == [
        ("this tree", "1"),
        (other, "1"),
        (other, "2"),
        ("this tree", "2"),
    ]
    header = lines.index(
        f"| shape | this tree msgs/s | {other} msgs/s "
        f"| this tree/{other} (median of rounds) | worst round |"
    )
    assert lines[header + 1] == "|---|---|---|---|---|"
    cells = [cell.strip() for cell in lines[header + 2].split("|")[1:-1]]
    assert cells[0] == "20x1KB"
    assert float(cells[1].replace(",", "")) > 0 and float(cells[2].replace(",", "")) > 0
    assert 0 < float(cells[4]) <= float(cells[3])
    paired = f"paired rounds this tree/{other} (round i against round i, run seconds apart): "
    assert lines[header + 3].startswith(paired + "20x1KB ")
    worktrees = subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "list"], capture_output=True, text=True, check=True
    ).stdout
    assert str(tmp_path) not in worktrees
    assert list(tmp_path.iterdir()) == []
