"""The journal: hour files, whole lines, escaping, tail across files, since, follow."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import IO, Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import smtpkit.journal
from smtpkit.journal import (
    Journal,
    escape_unprintable,
    follow,
    hour_name,
    lines_since,
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


def test_a_line_is_what_the_json_module_writes_compact(tmp_path: Path) -> None:
    # The encoder is made once per journal, not per line: the lines are still exactly the
    # json module's compact, ASCII-only form, and what JSON cannot hold is still refused.
    journal = Journal(tmp_path)
    fields: dict[str, Any] = {
        "text": "\u00e9\x1b[31m\u2028\"\\", "none": None, "yes": True, "count": 3,
        "ratio": 0.5, "to": ["a@example.org", "b@example.org"], "nested": {"k": [1, "v"]},
    }  # fmt: skip
    journal.write("stored", "s1", "127.0.0.1:5000", **fields)
    with pytest.raises(TypeError, match="not JSON serializable"):
        journal.write("stored", "s1", "127.0.0.1:5000", path=tmp_path)
    journal.close()
    (line,) = (tmp_path / hour_name(datetime.now(UTC))).read_text().splitlines()
    record = json.loads(line)
    assert record == {
        "time": record["time"], "session": "s1", "peer": "127.0.0.1:5000", "event": "stored",
        **fields,
    }  # fmt: skip
    assert line == json.dumps(record, ensure_ascii=True, separators=(",", ":"))


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


def opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the names of the hour files the journal's readers open."""
    names: list[str] = []
    real = smtpkit.journal._open

    def spy(path: Path) -> IO[bytes] | None:
        names.append(path.name)
        return real(path)

    monkeypatch.setattr(smtpkit.journal, "_open", spy)
    return names


def test_tail_reads_older_hour_files_only_as_far_as_needed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_hour(tmp_path, "2026_11_26_05", 3, 0)
    write_hour(tmp_path, "2026_11_26_06", 3, 3)
    write_hour(tmp_path, "2026_11_26_07", 3, 6)
    names = opened(monkeypatch)
    assert [json.loads(x)["event"] for x in tail(tmp_path, 3)] == ["e6", "e7", "e8"]
    assert names == ["2026_11_26_07"]
    names.clear()
    assert [json.loads(x)["event"] for x in tail(tmp_path, 4)] == ["e5", "e6", "e7", "e8"]
    assert names == ["2026_11_26_07", "2026_11_26_06"]


def naive_tail(files: list[Path], count: int, newest: Path, end: int) -> list[str]:
    """What tail means, read the simple way: whole files, split, the last ``count``."""
    lines: list[str] = []
    for path in files:
        if path.name > newest.name:
            continue
        data = path.read_bytes()
        if path == newest:
            data = data[:end]
        lines += [raw.decode() for raw in data.split(b"\n")[:-1]]
    return lines[-count:] if count else []


def test_tail_matches_whole_file_reading_at_every_block_edge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(smtpkit.journal, "BLOCK", 7)  # lines straddle many blocks
    lengths = [0, 1, 5, 6, 7, 8, 13, 14, 15, 30, 2]
    files = []
    for hour, chunk in (("04", lengths[:4]), ("05", []), ("06", lengths[4:])):
        path = tmp_path / f"2026_11_26_{hour}"
        path.write_bytes(b"".join(b"x" * n + str(i).encode() + b"\n" for i, n in enumerate(chunk)))
        files.append(path)
    with files[-1].open("ab") as fh:
        fh.write(b"partial line, still being written")
    newest = files[-1]
    for end in range(newest.stat().st_size + 1):
        for count in range(len(lengths) + 2):
            expected = naive_tail(files, count, newest, end)
            assert tail(tmp_path, count, (newest, end)) == expected, (end, count)
    # ``at`` in an older hour: newer files are not looked at.
    assert tail(tmp_path, 2, (files[0], files[0].stat().st_size)) == ["xxxxx2", "xxxxxx3"]


MEMORY_PROBE = """
import json, resource, sys
from pathlib import Path
from smtpkit.journal import tail
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
lines = tail(Path(sys.argv[1]), int(sys.argv[2]))
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"growth_kb": after - before, "lines": lines}))
"""


def test_tail_of_a_big_hour_file_reads_from_its_end(tmp_path: Path) -> None:
    one = json.dumps({"time": "2026-11-26T07:00:00.000Z", "event": "rcpt", "to": "a@b.c"})
    block = ((one + "\n") * (1024 * 1024 // (len(one) + 1))).encode()
    path = tmp_path / "2026_11_26_07"
    with path.open("wb") as fh:
        for _ in range(48):
            fh.write(block)
        fh.write(b'{"event":"last"}\n{"event":"still being writ')
    size = path.stat().st_size
    assert size > 48 * 1000 * 1000
    for count, expected in ((1, ['{"event":"last"}']), (3, [one, one, '{"event":"last"}'])):
        probe = subprocess.run(
            [sys.executable, "-c", MEMORY_PROBE, str(tmp_path), str(count)],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        result = json.loads(probe.stdout)
        assert result["lines"] == expected
        # Reading the whole file would cost at least its size (48 MB) in memory.
        assert result["growth_kb"] < 5 * 1024, f"peak memory grew {result['growth_kb']} KB"


# --- since ---------------------------------------------------------------------------------------


def at(when: str) -> str:
    return json.dumps({"time": when, "event": "e"}, separators=(",", ":"))


def write_lines(folder: Path, name: str, *lines: str) -> None:
    with (folder / name).open("a") as fh:
        fh.write("".join(line + "\n" for line in lines))


SINCE = datetime(2026, 11, 30, 4, 30, tzinfo=UTC)


@pytest.fixture
def three_hours(tmp_path: Path) -> Path:
    write_lines(tmp_path, "2026_11_30_03", at("2026-11-30T03:10:00.000Z"))
    write_lines(
        tmp_path,
        "2026_11_30_04",
        at("2026-11-30T04:00:00.000Z"),
        at("2026-11-30T04:31:00.000Z"),
        # Two workers flush in turn: lines are in write order, not quite time order.
        at("2026-11-30T04:29:59.999Z"),
        at("2026-11-30T04:30:00.000Z"),
        '{"event":"e","time":"2026-11-30T04:40:00.000Z"}',
        "not json",
    )
    write_lines(tmp_path, "2026_11_30_05", at("2026-11-30T05:01:00.000Z"), "not json either")
    return tmp_path


def test_lines_since_reads_only_the_hours_from_then_on(
    three_hours: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = opened(monkeypatch)
    assert list(lines_since(three_hours, SINCE)) == [
        at("2026-11-30T04:31:00.000Z"),
        at("2026-11-30T04:30:00.000Z"),
        '{"event":"e","time":"2026-11-30T04:40:00.000Z"}',
        at("2026-11-30T05:01:00.000Z"),
        "not json either",  # in a later hour: its file name vouches for it
    ]
    assert names == ["2026_11_30_04", "2026_11_30_05"]
    in_paris = SINCE.astimezone(timezone(timedelta(hours=1)))  # 05:30+01:00, the same instant
    assert list(lines_since(three_hours, in_paris)) == list(lines_since(three_hours, SINCE))
    assert list(lines_since(three_hours, datetime(2026, 11, 30, 6, tzinfo=UTC))) == []
    assert list(lines_since(three_hours / "missing", SINCE)) == []


def test_tail_since_gives_the_last_of_those(
    three_hours: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = opened(monkeypatch)
    assert tail(three_hours, 3, since=SINCE) == [
        '{"event":"e","time":"2026-11-30T04:40:00.000Z"}',
        at("2026-11-30T05:01:00.000Z"),
        "not json either",
    ]
    assert names == ["2026_11_30_05", "2026_11_30_04"]
    names.clear()
    assert len(tail(three_hours, 100, since=SINCE)) == 5
    assert names == ["2026_11_30_05", "2026_11_30_04"]  # never the hour before


def test_lines_since_stops_at_the_snapshot(three_hours: Path) -> None:
    snapshot = position(three_hours)
    write_lines(three_hours, "2026_11_30_05", at("2026-11-30T05:59:00.000Z"))
    since_five = datetime(2026, 11, 30, 5, tzinfo=UTC)
    # In the first hour a line must show its time: "not json either" does not.
    assert list(lines_since(three_hours, since_five, snapshot)) == [at("2026-11-30T05:01:00.000Z")]
    assert list(lines_since(three_hours, since_five))[-1] == at("2026-11-30T05:59:00.000Z")


# --- follow --------------------------------------------------------------------------------------


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
