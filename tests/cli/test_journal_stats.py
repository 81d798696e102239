"""``smtpkit journal stats`` and ``smtpkit journal prune`` with click's CliRunner: exact
output, the JSON document, the PNG chart, exit codes."""

from __future__ import annotations

import importlib.util
import json
import os
import pwd
import shutil
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

import smtpkit.commands.journal
from smtpkit.commands import cli
from smtpkit.journal import hour_name
from smtpkit.journalstats import REASONS
from tests.conftest import unavailable
from tests.test_journalstats import END, write_journal

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def config(runner: CliRunner, tmp_path: Path) -> Path:
    result = runner.invoke(cli, ["init", str(tmp_path / "d"), "--domain", "example.org"])
    assert result.exit_code == 0, result.output
    return tmp_path / "d" / "smtpkit.toml"


def journal_dir(config: Path) -> Path:
    return config.parent / "journal"


def hold_clock(monkeypatch: pytest.MonkeyPatch, now: datetime) -> None:
    monkeypatch.setattr(smtpkit.commands.journal, "_now", lambda: now)


@pytest.fixture
def journal(config: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The journal of tests/test_journalstats.py, the clock held at 07:40 of its last hour."""
    write_journal(journal_dir(config), monkeypatch)
    hold_clock(monkeypatch, END)
    return config


def run(runner: CliRunner, config: Path, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(cli, ["-c", str(config), "journal", *args])
    return result.exit_code, result.stdout, result.stderr


def stats(runner: CliRunner, config: Path, *args: str) -> tuple[int, str, str]:
    return run(runner, config, "stats", "--since", "2026-11-30T04:10", *args)


TABLE = """\
Journal statistics from 2026-11-30 04:10 to 2026-11-30 07:40 UTC (4 hour files, 73 lines)

hour (UTC)        conns  TLS  accepted  refused  rcpt refused  why (messages; recipients)
2026-11-30 04:00      7  60%         2        7             2  \
bare_lf 1, blocklisted 1, spf 1, dmarc 1, limits 1, other 2; relay 1, unknown_user 1
2026-11-30 05:00      2   0%         2        7             3  \
size 1, policy 3, spam 1, other 2; relay 1, unknown_user 1, limits 1
2026-11-30 06:00      0    -         0        0             0
2026-11-30 07:00      1   0%         1        0             0
total                10  38%         5       14             5  \
size 1, bare_lf 1, policy 3, blocklisted 1, spf 1, dmarc 1, spam 1, limits 1, other 4; \
relay 2, unknown_user 2, limits 1

Top sender domains (messages accepted):
  example.com  2
  <>           1
  example.net  1
  example.org  1

Top peer addresses (connections):
  192.0.2.1    4
  192.0.2.2    1
  192.0.2.3    1
  192.0.2.4    1
  192.0.2.9    1
  2001:db8::5  1
  203.0.113.7  1

Totals: 10 connections, 8 sessions (38% with TLS), 5 messages accepted, 14 refused, \
5 recipients refused.
Refused by reason:  messages  recipients
  relay                    0           2
  unknown_user             0           2
  size                     1           0
  bare_lf                  1           0
  policy                   3           0
  blocklisted              1           0
  spf                      1           0
  dmarc                    1           0
  spam                     1           0
  limits                   1           1
  other                    4           0
"""


def test_table(runner: CliRunner, journal: Path) -> None:
    assert stats(runner, journal) == (0, TABLE, "")


def test_json(runner: CliRunner, journal: Path) -> None:
    code, out, err = stats(runner, journal, "--json")
    assert (code, err) == (0, "")
    doc = json.loads(out)
    assert (doc["since"], doc["until"], doc["files"], doc["lines"]) == (
        "2026-11-30T04:10:00Z",
        "2026-11-30T07:40:00Z",
        4,
        73,
    )
    assert [h["hour"] for h in doc["hours"]] == [
        "2026-11-30T04:00:00Z",
        "2026-11-30T05:00:00Z",
        "2026-11-30T06:00:00Z",
        "2026-11-30T07:00:00Z",
    ]
    first = doc["hours"][0]
    assert first == {
        "hour": "2026-11-30T04:00:00Z",
        "connections": 7,
        "sessions": 5,
        "tls_sessions": 3,
        "tls_share": 0.6,
        "accepted": 2,
        "refused": 7,
        "refused_by_reason": {
            "relay": 0,
            "unknown_user": 0,
            "size": 0,
            "bare_lf": 1,
            "policy": 0,
            "blocklisted": 1,
            "spf": 1,
            "dmarc": 1,
            "spam": 0,
            "limits": 1,
            "other": 2,
        },
        "recipients_refused": 2,
        "recipients_refused_by_reason": {
            "relay": 1,
            "unknown_user": 1,
            "size": 0,
            "bare_lf": 0,
            "policy": 0,
            "blocklisted": 0,
            "spf": 0,
            "dmarc": 0,
            "spam": 0,
            "limits": 0,
            "other": 0,
        },
    }
    assert doc["hours"][2]["tls_share"] is None
    assert doc["totals"]["accepted"] == 5
    assert doc["totals"]["tls_share"] == 0.375
    assert doc["top_sender_domains"][:2] == [
        {"domain": "example.com", "messages": 2},
        {"domain": "<>", "messages": 1},
    ]
    assert doc["top_peers"][0] == {"address": "192.0.2.1", "connections": 4}


def need_matplotlib() -> None:
    if importlib.util.find_spec("matplotlib") is None:
        unavailable("matplotlib not installed: pip install -e '.[test]' installs it")


def test_plot_writes_a_png(runner: CliRunner, journal: Path, tmp_path: Path) -> None:
    need_matplotlib()
    from matplotlib.image import imread

    chart = tmp_path / "stats.png"
    code, out, err = stats(runner, journal, "--plot", str(chart))
    assert (code, out, err) == (0, f"{TABLE}Chart written to {chart}.\n", "")
    data = chart.read_bytes()
    assert data[:8] == PNG
    assert len(data) > 1000
    assert imread(str(chart)).shape == (480, 800, 4)  # 8 x 4.8 inches at 100 dpi
    # With --json, stdout stays one JSON document.
    code, out, err = stats(runner, journal, "--json", "--plot", str(chart))
    assert (code, err) == (0, f"Chart written to {chart}.\n")
    assert json.loads(out)["files"] == 4


def test_plot_without_matplotlib(
    runner: CliRunner, journal: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib: ImportError
    chart = tmp_path / "stats.png"
    assert stats(runner, journal, "--plot", str(chart)) == (
        1,
        "",
        "Error: --plot needs matplotlib: install it where smtpkit is "
        "(pip install 'smtpkit[plot]')\n",
    )
    assert not chart.exists()


def test_plot_into_a_missing_folder(runner: CliRunner, journal: Path, tmp_path: Path) -> None:
    need_matplotlib()
    chart = tmp_path / "no" / "stats.png"
    code, out, err = stats(runner, journal, "--plot", str(chart))
    assert (code, out) == (1, TABLE)
    assert err == f"Error: cannot write {chart}: No such file or directory\n"


@pytest.mark.parametrize("value", ["yesterday", "2026-13-01", "5y", "-1h", ""])
def test_a_bad_since_is_a_usage_error(runner: CliRunner, journal: Path, value: str) -> None:
    code, out, err = run(runner, journal, "stats", "--since", value)
    assert (code, out) == (2, "")
    assert err.splitlines()[-1] == (
        f"Error: Invalid value for '--since': {value!r} is neither an age such as 30m, 1h or "
        "2d nor a UTC date such as 2026-11-30 or 2026-11-30T04:00"
    )


def test_no_hour_file_in_the_span(runner: CliRunner, journal: Path) -> None:
    folder = journal_dir(journal)
    notice = f"No journal files since 2026-12-01 00:00 UTC in {folder}.\n"
    assert run(runner, journal, "stats", "--since", "2026-12-01") == (0, notice, "")
    code, out, err = run(runner, journal, "stats", "--since", "2026-12-01", "--json")
    assert (code, err) == (0, notice)
    doc = json.loads(out)
    assert (doc["files"], doc["hours"], doc["top_peers"]) == (0, [], [])


def test_since_defaults_to_the_last_24_hours(runner: CliRunner, config: Path) -> None:
    now = datetime.now(UTC)

    def connect(when: datetime, session: str) -> None:
        stamp = when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"
        line = json.dumps(
            {"time": stamp, "session": session, "peer": "192.0.2.1:1", "event": "connect"},
            separators=(",", ":"),
        )
        with (journal_dir(config) / hour_name(when)).open("a") as fh:
            fh.write(line + "\n")

    connect(now - timedelta(hours=30), "old")
    connect(now - timedelta(hours=2), "new")
    code, out, err = run(runner, config, "stats", "--json")
    assert (code, err) == (0, "")
    doc = json.loads(out)
    assert (doc["files"], doc["totals"]["connections"]) == (1, 1)
    since = datetime.fromisoformat(doc["since"].replace("Z", "+00:00"))
    assert (
        timedelta(hours=24) <= now - since + timedelta(seconds=1) < timedelta(hours=24, minutes=1)
    )


def test_no_journal_folder_is_an_error(runner: CliRunner, config: Path) -> None:
    journal_dir(config).rmdir()
    error = f"Error: no journal folder at {journal_dir(config)}\n"
    assert run(runner, config, "stats") == (1, "", error)
    assert run(runner, config, "prune", "--older-than", "30d") == (1, "", error)


# --- prune -------------------------------------------------------------------------------------
NOW = datetime(2026, 11, 30, 8, 32, tzinfo=UTC)


@pytest.fixture
def old_files(config: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Hour files around ``NOW`` (the clock held there), and files that are not hour files."""
    hold_clock(monkeypatch, NOW)
    folder = journal_dir(config)
    sizes = {
        "2026_11_30_08": 10,  # the current hour
        "2026_11_30_07": 10,
        "2026_11_30_06": 10,
        "2026_11_29_08": 10,  # ends 2026-11-29 09:00
        "2026_11_29_07": 10,  # ends 2026-11-29 08:00
        "2026_10_01_00": 3000,
        "2026_10_01_00.gz": 10,
        "notes": 10,
    }
    for name, size in sizes.items():
        (folder / name).write_bytes(b"x" * size)
    (folder / "2026_10_02_00").mkdir()  # a folder with an hour's name
    return config


def names(config: Path) -> list[str]:
    return sorted(os.listdir(journal_dir(config)))


ALL = [
    "2026_10_01_00",
    "2026_10_01_00.gz",
    "2026_10_02_00",
    "2026_11_29_07",
    "2026_11_29_08",
    "2026_11_30_06",
    "2026_11_30_07",
    "2026_11_30_08",
    "notes",
]


def test_prune_dry_run_removes_nothing(runner: CliRunner, old_files: Path) -> None:
    folder = journal_dir(old_files)
    assert run(runner, old_files, "prune", "--older-than", "1d", "--dry-run") == (
        0,
        f"would remove {folder}/2026_10_01_00 (2.9 KiB)\n"
        f"would remove {folder}/2026_11_29_07 (10 bytes)\n"
        "Would remove 2 hour files (2.9 KiB) older than 2026-11-29 08:32 UTC.\n",
        "",
    )
    assert names(old_files) == ALL


def test_prune_removes_ended_hours_only(runner: CliRunner, old_files: Path) -> None:
    folder = journal_dir(old_files)
    assert run(runner, old_files, "prune", "--older-than", "1d") == (
        0,
        f"removed {folder}/2026_10_01_00 (2.9 KiB)\n"
        f"removed {folder}/2026_11_29_07 (10 bytes)\n"
        "Removed 2 hour files (2.9 KiB) older than 2026-11-29 08:32 UTC.\n",
        "",
    )
    assert names(old_files) == [n for n in ALL if n not in ("2026_10_01_00", "2026_11_29_07")]
    # 06 ended at 07:00, before 07:32; 07 ends at 08:00: kept, and the current hour too.
    assert run(runner, old_files, "prune", "--older-than", "1h") == (
        0,
        f"removed {folder}/2026_11_29_08 (10 bytes)\n"
        f"removed {folder}/2026_11_30_06 (10 bytes)\n"
        "Removed 2 hour files (20 bytes) older than 2026-11-30 07:32 UTC.\n",
        "",
    )
    assert names(old_files) == [
        "2026_10_01_00.gz",
        "2026_10_02_00",
        "2026_11_30_07",
        "2026_11_30_08",
        "notes",
    ]
    assert run(runner, old_files, "prune", "--older-than", "1h") == (
        0,
        f"No hour files older than 2026-11-30 07:32 UTC in {folder}.\n",
        "",
    )


@pytest.mark.parametrize("value", ["0h", "0d", "30m", "1.5d", "abc", "", "-1d", "30", "1w"])
def test_a_bad_age_is_a_usage_error(runner: CliRunner, old_files: Path, value: str) -> None:
    code, out, err = run(runner, old_files, "prune", "--older-than", value)
    assert (code, out) == (2, "")
    assert err.splitlines()[-1] == (
        f"Error: Invalid value for '--older-than': {value!r} is not an age of at least 1h "
        "such as 30d or 12h"
    )
    assert names(old_files) == ALL


def test_prune_needs_an_age(runner: CliRunner, old_files: Path) -> None:
    code, out, err = run(runner, old_files, "prune")
    assert (code, out) == (2, "")
    assert err.splitlines()[-1] == "Error: Missing option '--older-than'."


def test_prune_removes_as_the_owner(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run by root on a folder a service user owns, prune acts as that user: from a journal
    folder only root may write to, nothing can be removed."""
    if os.geteuid() != 0:
        unavailable("needs root to act as another user (CI runs the tests as root)")
    nobody = pwd.getpwnam("nobody")
    hold_clock(monkeypatch, NOW)
    # Not under pytest's temporary folders, which only root may enter.
    top = Path(tempfile.mkdtemp(prefix="smtpkit-prune-"))
    try:
        top.chmod(0o755)
        directory = top / "d"
        result = runner.invoke(cli, ["init", str(directory), "--domain", "example.org"])
        assert result.exit_code == 0, result.output
        folder = directory / "journal"
        (folder / "2026_10_01_00").write_text("old")
        os.chown(directory, nobody.pw_uid, nobody.pw_gid)
        folder.chmod(0o755)  # root's, and not writable by the owner
        config = directory / "smtpkit.toml"
        assert run(runner, config, "prune", "--older-than", "1d") == (
            1,
            "",
            f"Error: cannot remove {folder}/2026_10_01_00: Permission denied\n",
        )
        assert (folder / "2026_10_01_00").exists()
        assert os.geteuid() == 0  # root again afterwards
        # Once the owner may write to it, the file goes.
        os.chown(folder, nobody.pw_uid, nobody.pw_gid)
        code, out, _ = run(runner, config, "prune", "--older-than", "1d")
        assert (code, out.splitlines()[0]) == (0, f"removed {folder}/2026_10_01_00 (3 bytes)")
    finally:
        shutil.rmtree(top)


def test_columns_align_numbers_to_the_right() -> None:
    rows = [["", "a.example", "206", ""], ["", "bb.example", "2", ""]]
    assert smtpkit.commands.journal._aligned(rows, left=2) == [
        "  a.example   206",
        "  bb.example    2",
    ]


def test_every_reason_has_a_colour_of_its_own() -> None:
    colours = smtpkit.commands.journal._COLOURS
    assert list(colours) == list(REASONS)
    assert len(set(colours.values())) == len(colours)
