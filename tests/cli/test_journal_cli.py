"""``smtpkit journal tail`` with click's CliRunner: exact output and exit codes."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

import smtpkit.commands.journal
from smtpkit.commands import cli
from smtpkit.journal import Position, follow, hour_name


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


def event(when: datetime, name: str = "e", **fields: object) -> str:
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"
    record = {"time": stamp, "session": "s1", "peer": "192.0.2.1:4000", "event": name, **fields}
    return json.dumps(record, separators=(",", ":"))


def add(config: Path, *lines: str) -> None:
    """Append lines to the hour file each belongs to (by its time)."""
    for line in lines:
        when = datetime.fromisoformat(json.loads(line)["time"].replace("Z", "+00:00"))
        with (journal_dir(config) / hour_name(when)).open("a") as fh:
            fh.write(line + "\n")


def tail(runner: CliRunner, config: Path, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(cli, ["-c", str(config), "journal", "tail", *args])
    return result.exit_code, result.stdout, result.stderr


T0 = datetime(2026, 11, 30, 3, 50, tzinfo=UTC)


def test_default_is_the_last_20_events_readable(runner: CliRunner, config: Path) -> None:
    add(config, *(event(T0 + timedelta(minutes=i), f"e{i}", n=i) for i in range(25)))
    code, out, err = tail(runner, config)
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        f"{(T0 + timedelta(minutes=i)):%Y-%m-%dT%H:%M}:00.000Z s1 192.0.2.1:4000 e{i} n={i}"
        for i in range(5, 25)
    ]
    code, out, err = tail(runner, config, "-n", "2", "--json")
    assert (code, out, err) == (
        0,
        f"{event(T0 + timedelta(minutes=23), 'e23', n=23)}\n"
        f"{event(T0 + timedelta(minutes=24), 'e24', n=24)}\n",
        "",
    )


# A line as older versions wrote it (ensure_ascii=False): C1 controls, Unicode spaces and
# separators raw in the file (JSON itself escapes only the C0 controls).
RAW = json.dumps(
    {
        "time": "2026-11-30T04:31:00.000Z",
        "session": "s1",
        "peer": "192.0.2.1:4000",
        "event": "helo",
        "name": "evil\x1b[31m\u2028\x85\x9b\u2002code=250",
        "extended": True,
        "size": None,
    },
    ensure_ascii=False,
    separators=(",", ":"),
)


def test_json_output_escapes_control_characters_of_old_lines(
    runner: CliRunner, config: Path
) -> None:
    add(config, RAW)
    with (journal_dir(config) / "2026_11_30_04").open("a") as fh:
        fh.write("garbage \x1b]0;title\x07\n")
    code, out, err = tail(runner, config, "--json")
    assert (code, err) == (0, "")
    assert out == (
        '{"time":"2026-11-30T04:31:00.000Z","session":"s1","peer":"192.0.2.1:4000",'
        '"event":"helo","name":"evil\\u001b[31m\\u2028\\u0085\\u009b\\u2002code=250",'
        '"extended":true,"size":null}\n'
        "garbage \\u001b]0;title\\u0007\n"
    )
    assert json.loads(out.splitlines()[0]) == json.loads(RAW)


def test_readable_output_escapes_and_quotes(runner: CliRunner, config: Path) -> None:
    add(config, RAW)
    with (journal_dir(config) / "2026_11_30_04").open("a") as fh:
        fh.write("garbage \x1b]0;title\x07\n")
    code, out, err = tail(runner, config)
    assert (code, err) == (0, "")
    assert out == (
        "2026-11-30T04:31:00.000Z s1 192.0.2.1:4000 helo "
        'name="evil\\u001b[31m\\u2028\\u0085\\u009b\\u2002code=250" extended=yes size=-\n'
        "garbage \\u001b]0;title\\u0007\n"
    )


def test_an_empty_journal_says_so(runner: CliRunner, config: Path) -> None:
    folder = journal_dir(config)
    assert tail(runner, config) == (0, f"No journal events yet in {folder}.\n", "")
    # --json keeps stdout to JSON lines: the notice goes to stderr.
    assert tail(runner, config, "--json") == (0, "", f"No journal events yet in {folder}.\n")
    assert tail(runner, config, "--since", "1h") == (0, f"No journal events yet in {folder}.\n", "")
    assert tail(runner, config, "-n", "0") == (0, "", "")  # none asked for, none missing
    (folder / hour_name(datetime.now(UTC))).touch()  # the server has just started the hour
    assert tail(runner, config) == (0, f"No journal events yet in {folder}.\n", "")


def test_no_journal_folder_is_an_error(runner: CliRunner, config: Path) -> None:
    journal_dir(config).rmdir()
    assert tail(runner, config) == (1, "", f"Error: no journal folder at {journal_dir(config)}\n")


def test_since_a_date_shows_all_events_from_then(runner: CliRunner, config: Path) -> None:
    lines = [event(T0 + timedelta(minutes=20 * i), f"e{i}") for i in range(6)]  # 03:50..05:30
    add(config, *lines)
    assert tail(runner, config, "--since", "2026-11-30T04:30", "--json") == (
        0,
        "".join(line + "\n" for line in lines[2:]),
        "",
    )
    assert tail(runner, config, "--since", "2026-11-30T04:30", "-n", "2", "--json") == (
        0,
        "".join(line + "\n" for line in lines[4:]),
        "",
    )
    # An explicit offset is converted to UTC; a date alone is its midnight.
    assert tail(runner, config, "--since", "2026-11-30T05:10+01:00", "--json")[1] == (
        "".join(line + "\n" for line in lines[1:])
    )
    assert tail(runner, config, "--since", "2026-11-30", "-n", "1") == (
        0,
        "2026-11-30T05:30:00.000Z s1 192.0.2.1:4000 e5\n",
        "",
    )


def test_since_an_age(runner: CliRunner, config: Path) -> None:
    now = datetime.now(UTC)
    old, recent, newest = (event(now - timedelta(minutes=m), f"m{m}") for m in (130, 20, 5))
    add(config, old, recent, newest)
    assert tail(runner, config, "--since", "1h", "--json") == (0, f"{recent}\n{newest}\n", "")
    assert tail(runner, config, "--since", "30m", "-n", "1", "--json") == (0, f"{newest}\n", "")
    assert tail(runner, config, "--since", "3h", "--json")[1] == f"{old}\n{recent}\n{newest}\n"
    assert tail(runner, config, "--since", "1d", "-n", "5", "--json")[1].count("\n") == 3
    before = datetime.now(UTC).replace(microsecond=0)
    code, out, err = tail(runner, config, "--since", "90s", "--json")
    after = datetime.now(UTC)
    assert (code, out) == (0, "")
    prefix, suffix = "No journal events since ", f"Z in {journal_dir(config)}.\n"
    assert err.startswith(prefix) and err.endswith(suffix), err
    shown = datetime.fromisoformat(err.removeprefix(prefix).removesuffix(suffix))
    assert (
        before - timedelta(seconds=90) <= shown.replace(tzinfo=UTC) <= after - timedelta(seconds=90)
    )


def test_since_with_nothing_after_it_says_so(runner: CliRunner, config: Path) -> None:
    add(config, event(T0))
    folder = journal_dir(config)
    assert tail(runner, config, "--since", "2026-12-01") == (
        0,
        f"No journal events since 2026-12-01T00:00:00Z in {folder}.\n",
        "",
    )
    assert tail(runner, config, "--since", "2026-12-01T00:00", "--json") == (
        0,
        "",
        f"No journal events since 2026-12-01T00:00:00Z in {folder}.\n",
    )


@pytest.mark.parametrize("value", ["yesterday", "2026-13-01", "5y", "-1h", "", "1h30m"])
def test_a_bad_since_is_a_usage_error(runner: CliRunner, config: Path, value: str) -> None:
    code, out, err = tail(runner, config, "--since", value)
    assert (code, out) == (2, "")
    assert err.splitlines()[-1] == (
        f"Error: Invalid value for '--since': {value!r} is neither an age such as 30m, 1h or "
        "2d nor a UTC date such as 2026-11-30 or 2026-11-30T04:00"
    )


def test_help_says_what_n_means_with_since(runner: CliRunner, config: Path) -> None:
    result = runner.invoke(cli, ["journal", "tail", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert (
        "-n N How many of the last events to show [default: 20; with --since: all since then]"
        in text
    )
    assert (
        "--since TIME Only events at or after TIME: an age (30m, 1h, 2d) or a UTC date "
        "(2026-11-30, 2026-11-30T04:00). With -n N: the last N of those." in text
    )


def test_follow_goes_on_from_where_since_ended(
    runner: CliRunner, config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = event(T0, "first"), event(T0 + timedelta(minutes=1), "second")
    add(config, first)
    later = event(T0 + timedelta(minutes=71), "later")  # in a later hour file

    def one_more(directory: Path, start: Position) -> Iterator[str]:
        # The writer acts where follow would sleep: no real waiting, and follow must
        # still find both lines written after the command's snapshot, each once.
        written: list[str] = []

        def sleep(_: float) -> None:
            if not written:
                add(config, second, later)
                written.append("yes")

        got: list[str] = []
        stop: Callable[[], bool] = lambda: len(got) >= 2  # noqa: E731
        for line in follow(directory, start, sleep=sleep, stop=stop):
            got.append(line)
            yield line

    monkeypatch.setattr(smtpkit.commands.journal, "follow", one_more)
    assert tail(runner, config, "--since", "2026-11-30T03:00", "-f", "--json") == (
        0,
        f"{first}\n{second}\n{later}\n",
        "",
    )
