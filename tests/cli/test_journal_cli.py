"""``smtpkit journal tail`` with click's CliRunner: exact output and exit codes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from smtpkit.commands import cli
from smtpkit.journal import hour_name


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
