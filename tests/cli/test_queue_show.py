"""``smtpkit queue list`` and ``queue show`` with click's CliRunner: what a remote server or a
client put into an envelope (a reply's text, a host name) reaches the admin's
terminal only escaped, and ``--json`` gives it back exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from smtpkit.commands import cli
from smtpkit.delivery.queue import QueuedRecipient
from tests.test_transfer import make_entry

ENTRY = "aaaa.1-1234"
# A remote server's reply as the queue runner keeps it (decoded with "replace", so every
# character survives): clear the screen, retitle the terminal (OSC ... BEL), a C1 CSI, NEL,
# a line separator, CR, NUL, DEL, backspaces and a bidirectional override.
HOSTILE = "550 5.1.1 gone\x1b[2J\x1b]0;owned\x07 \x9b31m\x85\u2028\r\x00\x7f\x08\x08\u202e!"
ESCAPED = (
    "550 5.1.1 gone\\u001b[2J\\u001b]0;owned\\u0007 \\u009b31m\\u0085\\u2028\\u000d"
    "\\u0000\\u007f\\u0008\\u0008\\u202e!"
)
HOST = "mx\x1b[1m.remote.example"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    result = CliRunner().invoke(cli, ["init", str(tmp_path / "live"), "--domain", "example.org"])
    assert result.exit_code == 0, result.output
    recipient = QueuedRecipient(
        "bob@remote.example",
        state="deferred",
        attempts=1,
        next_attempt=1_900_000_000.0,
        last_error=HOSTILE,
        remote=HOST,
    )
    config = tmp_path / "live" / "smtpkit.toml"
    make_entry(config.parent / "queue", ENTRY, recipients=[recipient])
    return config


def run(config: Path, *args: str) -> str:
    result = CliRunner().invoke(cli, ["-c", str(config), "queue", *args])
    assert (result.exit_code, result.stderr) == (0, ""), result.output
    return result.stdout


def terminal_safe(text: str) -> bool:
    return all(c.isprintable() or c == "\n" for c in text)


def test_list_escapes_a_remote_reply(config: Path) -> None:
    out = run(config, "list")
    assert terminal_safe(out), out
    lines = out.splitlines()
    assert lines[0].startswith(f"{ENTRY}  ") and lines[0].endswith("  <alice@example.net>")
    assert lines[1:] == [
        f"    deferred  bob@remote.example  ({ESCAPED})",
        "1 message in the queue.",
    ]


def test_show_escapes_a_remote_reply_and_its_host(config: Path) -> None:
    out = run(config, "show", ENTRY)
    assert terminal_safe(out), out
    lines = out.splitlines()
    assert "  remote:       mx\\u001b[1m.remote.example" in lines
    assert f"  last error:   {ESCAPED}" in lines


@pytest.mark.parametrize("command", [["list", "--json"], ["show", ENTRY, "--json"]])
def test_json_escapes_and_keeps_every_character(config: Path, command: list[str]) -> None:
    out = run(config, *command)
    assert out.isascii() and terminal_safe(out), out
    (line,) = out.splitlines()
    (recipient,) = json.loads(line)["recipients"]
    assert (recipient["last_error"], recipient["remote"]) == (HOSTILE, HOST)
    assert "\\u001b[2J\\u001b]0;owned\\u0007 \\u009b31m\\u0085\\u2028\\r\\u0000" in line
