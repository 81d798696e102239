"""Smoke test of the benchmark harness: a reduced, bounded ``python -m benchmarks.run``.

It asserts that the harness works (every message sent is counted stored, the memory checks
report) and nothing about speed: timings on a shared CI machine mean nothing.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import IN_CI, need_program

ROOT = Path(__file__).resolve().parent.parent


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
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=140)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(results.read_text())
    assert "error" not in report
    assert set(report["servers"]) == set(servers)
    shapes = ("1x1KB", "20x1KB", "100x1KB", "20x1MB")
    for name, server in report["servers"].items():
        assert server["exit_status"] == 0 or name == "smtp-sink"
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
    assert "machine: " in done.stdout
    # Nothing left behind: the data folders are removed unless --keep.
    assert list((tmp_path / "data").iterdir()) == []


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
