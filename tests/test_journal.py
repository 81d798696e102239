"""The journal: hour files, whole lines, escaping, tail across files, follow."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtpkit.journal import (
    Journal,
    escape_unprintable,
    follow,
    hour_name,
    position,
    render,
    tail,
)


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


# --- what a client sends never reaches a terminal raw --------------------------------------------

HOSTILE = "a\x9b31m\u2028b\x85c\x1b[31md\u2002code=250 \x7f\u00fc\U000e0001"


def test_written_lines_are_printable_ascii_with_json_escapes(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.write("helo", "s1", "127.0.0.1:5000", name=HOSTILE, extended=True)
    journal.close()
    data = (tmp_path / hour_name(datetime.now(UTC))).read_bytes()
    line = data.decode("ascii")
    assert line.endswith("\n") and line[:-1].isprintable()
    assert line.split(',"event":')[1] == (
        '"helo","name":"a\\u009b31m\\u2028b\\u0085c\\u001b[31md\\u2002code=250 '
        '\\u007f\\u00fc\\udb40\\udc01","extended":true}\n'
    )
    assert json.loads(line)["name"] == HOSTILE


def test_escape_unprintable_keeps_json_valid_and_printable_text_as_is() -> None:
    raw = json.dumps({"name": HOSTILE, "city": "Zürich"}, ensure_ascii=False)
    safe = escape_unprintable(raw)
    assert safe == (
        '{"name": "a\\u009b31m\\u2028b\\u0085c\\u001b[31md\\u2002code=250 '
        '\\u007fü\\udb40\\udc01", "city": "Zürich"}'
    )
    assert json.loads(safe) == {"name": HOSTILE, "city": "Zürich"}
    assert escape_unprintable("plain ü line") == "plain ü line"


def helo(name: Any) -> str:
    return render({"time": "T", "session": "s", "peer": "p", "event": "helo", "name": name})


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("mx.example.org", "name=mx.example.org"),
        ("bücher.example", "name=bücher.example"),  # printable non-ASCII stays readable
        ("a\x9b31mb", 'name="a\\u009b31mb"'),  # C1 control (CSI)
        ("a\u2028b", 'name="a\\u2028b"'),  # line separator
        ("a\x85b", 'name="a\\u0085b"'),  # next line (NEL)
        ("\x1b[31mred", 'name="\\u001b[31mred"'),  # ANSI colour sequence
        ("x\u2002code=250", 'name="x\\u2002code=250"'),  # EN SPACE faking a field
        ("x code=250", 'name="x code=250"'),
        ("a=b", 'name="a=b"'),
        ('say "hi"', 'name="say \\"hi\\""'),
        ("back\\slash", 'name="back\\\\slash"'),
        ("tab\there", 'name="tab\\there"'),
        ("\u202eevil", 'name="\\u202eevil"'),  # right-to-left override
        ("", 'name=""'),
    ],
)
def test_render_escapes_and_quotes_values(name: str, shown: str) -> None:
    assert helo(name) == f"T s p helo {shown}"


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


def test_render_shows_none_booleans_and_lists_plainly() -> None:
    record = {
        "time": "T",
        "session": "s",
        "peer": "p",
        "event": "mail",
        "size": None,
        "extended": True,
        "ok": False,
        "ratio": 0.5,
        "listen": ["127.0.0.1:25", "[::1]:25"],
        "none": [],
        "odd": ["a b", "c,d", "\x1b", None, True, 7],
    }
    assert render(record) == (
        "T s p mail size=- extended=yes ok=no ratio=0.5 listen=127.0.0.1:25,[::1]:25 none=- "
        'odd="a b","c,d","\\u001b",-,yes,7'
    )


def test_render_escapes_the_head_fields_too() -> None:
    record = {"time": "T\x1b[2J", "session": "s 1", "peer": "p", "event": "x\u2028y"}
    assert render(record) == '"T\\u001b[2J" "s 1" p "x\\u2028y"'
    assert render({"event": "close"}) == "? - - close"


@given(st.text())
def test_a_rendered_value_is_its_text_or_a_json_string_of_it(text: str) -> None:
    line = render({"time": "T", "session": "s", "peer": "p", "event": "e", "k": text})
    assert line.isprintable()
    assert line.startswith("T s p e k=")
    shown = line.removeprefix("T s p e k=")
    if shown.startswith('"'):
        value, end = json.JSONDecoder().raw_decode(shown)
        assert (value, end) == (text, len(shown))  # one string, nothing after it
    else:
        assert shown == text and " " not in shown and "=" not in shown


# --- tail ----------------------------------------------------------------------------------------


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
    assert tail(tmp_path / "missing", 5) == []


def test_follow_crosses_the_hour_rollover(tmp_path: Path) -> None:
    write_hour(tmp_path, "2026_11_26_06", 2, 0)
    start = position(tmp_path)
    steps = iter(range(10))

    # The injected sleep is where time would pass: the writer acts there, so the test needs
    # no real waiting.
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
