"""``smtpkit queue import DIR`` with click's CliRunner: what it prints, its exit code, and
its journal lines. The moving itself is tests/test_transfer.py; a running server picking the
entries up and delivering them is tests/e2e/test_lmtp.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from smtpkit.commands import cli
from smtpkit.delivery.queue import read_queue
from tests.test_transfer import make_entry


@pytest.fixture
def config(tmp_path: Path) -> Path:
    result = CliRunner().invoke(cli, ["init", str(tmp_path / "live"), "--domain", "example.org"])
    assert result.exit_code == 0, result.output
    return tmp_path / "live" / "smtpkit.toml"


def journal_lines(config: Path, event: str) -> list[dict[str, object]]:
    lines = []
    for path in sorted((config.parent / "journal").iterdir()):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if record["event"] == event:
                lines.append(record)
    return lines


def test_a_dead_nodes_data_folder_is_imported(config: Path, tmp_path: Path) -> None:
    dead = tmp_path / "dead"
    make_entry(dead / "queue", "aaaa.1-1234")
    make_entry(config.parent / "queue", "bbbb.1-1234")  # this node's own mail stays
    make_entry(dead / "queue", "bbbb.1-1234", b"Subject: theirs\r\n\r\nx\r\n")
    (dead / "queue" / "halfway.1-1234").write_bytes(b"cut off by the crash")
    result = CliRunner().invoke(cli, ["-c", str(config), "queue", "import", str(dead)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    queue = config.parent / "queue"
    assert lines[0] == f"Imported 2 messages from {dead / 'queue'} into {queue}."
    assert lines[1] == "  aaaa.1-1234  (1 recipient waiting)"
    assert lines[2].startswith("  bbbb.1-1234 -> bbbb.1-1234-")
    assert lines[2].endswith("  (renamed: the id was taken; 1 recipient waiting)")
    assert lines[3].startswith("Ignored 1 message file(s) without an envelope")
    assert len(read_queue(queue)) == 3
    assert sorted(p.name for p in (dead / "queue").iterdir()) == [".lock", "halfway.1-1234"]
    imported = journal_lines(config, "imported")
    assert [(r["source_id"], r["already"]) for r in imported] == [
        ("aaaa.1-1234", False),
        ("bbbb.1-1234", False),
    ]


def test_what_cannot_be_imported_is_listed_and_fails(config: Path, tmp_path: Path) -> None:
    dead = tmp_path / "dead"
    make_entry(dead, "good.1-1234")
    make_entry(dead, "short.1-1234", size=999)
    result = CliRunner().invoke(cli, ["-c", str(config), "queue", "import", str(dead)])
    assert result.exit_code == 1
    assert result.stdout.splitlines()[1:] == [
        "  good.1-1234  (1 recipient waiting)",
        f"Left 1 in {dead}:",
        "  short.1-1234: the message is 23 bytes, its envelope says 999",
    ]
    assert result.stderr == f"Error: 1 file(s) in {dead} were not imported (see above)\n"
    (skipped,) = journal_lines(config, "import_skipped")
    assert skipped["name"] == "short.1-1234"


def test_no_such_folder(config: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["-c", str(config), "queue", "import", str(tmp_path / "nowhere")]
    )
    assert result.exit_code == 1
    assert result.stderr == f"Error: {tmp_path / 'nowhere'} is not a folder\n"
