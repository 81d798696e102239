"""The journal: hour files, whole lines, tail across files, follow across the rollover."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from smtpkit.journal import Journal, follow, hour_name, position, render, tail


def test_write_and_flush_appends_json_lines(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.write("connect", "s1", "127.0.0.1:5000")
    journal.write("rcpt", "s1", "127.0.0.1:5000", to="a@example.org", code=250)
    assert list(tmp_path.iterdir()) == [tmp_path / hour_name(datetime.now(UTC))]
    assert (tmp_path / hour_name(datetime.now(UTC))).read_text() == ""  # buffered until flush
    journal.close()
    lines = [
        json.loads(x) for x in (tmp_path / hour_name(datetime.now(UTC))).read_text().splitlines()
    ]
    assert [(r["event"], r["session"], r["peer"]) for r in lines] == [
        ("connect", "s1", "127.0.0.1:5000"),
        ("rcpt", "s1", "127.0.0.1:5000"),
    ]
    assert lines[1]["to"] == "a@example.org" and lines[1]["code"] == 250
    assert datetime.fromisoformat(lines[0]["time"].replace("Z", "+00:00")).tzinfo is not None


def test_render_is_one_readable_line() -> None:
    record = {
        "time": "T",
        "session": "s",
        "peer": "p",
        "event": "rcpt",
        "to": "a@b.c",
        "code": 550,
        "text": "550 5.1.1 No such user here",
    }
    assert render(record) == 'T s p rcpt to=a@b.c code=550 text="550 5.1.1 No such user here"'


def write_hour(folder: Path, name: str, count: int, start: int = 0) -> None:
    with (folder / name).open("a") as fh:
        for i in range(start, start + count):
            fh.write(json.dumps({"event": f"e{i}"}) + "\n")


def test_tail_spans_hour_files_in_order(tmp_path: Path) -> None:
    write_hour(tmp_path, "2026_11_26_06", 3, 0)
    write_hour(tmp_path, "2026_11_26_07", 2, 3)
    (tmp_path / "notes.txt").write_text("ignored\n")
    events = [json.loads(x)["event"] for x in tail(tmp_path, 4)]
    assert events == ["e1", "e2", "e3", "e4"]
    assert tail(tmp_path, 0) == []
    assert len(tail(tmp_path, 100)) == 5


def test_follow_crosses_the_hour_rollover(tmp_path: Path) -> None:
    write_hour(tmp_path, "2026_11_26_06", 2, 0)
    start = position(tmp_path)
    steps = iter(range(10))

    def sleep(_: float) -> None:
        step = next(steps)
        if step == 0:
            write_hour(tmp_path, "2026_11_26_06", 1, 2)  # late line in the old hour
            write_hour(tmp_path, "2026_11_26_07", 2, 3)  # the new hour begins

    got = []
    for line in follow(tmp_path, start, sleep=sleep, stop=lambda: len(got) >= 3):
        got.append(json.loads(line)["event"])
        if len(got) >= 3:
            break
    assert got == ["e2", "e3", "e4"]
