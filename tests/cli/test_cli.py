"""CLI tests with click's CliRunner: exact output and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from smtpkit.commands import cli


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def init(runner: CliRunner, tmp_path: Path, *extra: str) -> Path:
    result = runner.invoke(
        cli,
        [
            "init",
            str(tmp_path / "d"),
            "--domain",
            "Example.org",
            "--domain",
            "example.net",
            "--hostname",
            "mx.example.org",
            "--listen",
            "127.0.0.1:2525",
            *extra,
        ],
    )
    assert result.exit_code == 0, result.output
    return tmp_path / "d" / "smtpkit.toml"


def test_init_writes_config_and_folders(runner: CliRunner, tmp_path: Path) -> None:
    config = init(runner, tmp_path)
    data = tomllib.loads(config.read_text())
    assert data == {
        "server": {
            "hostname": "mx.example.org",
            "listen": ["127.0.0.1:2525"],
            "directory": ".",
            "domains": ["example.org", "example.net"],
        }
    }
    assert (tmp_path / "d" / "users").is_dir() and (tmp_path / "d" / "journal").is_dir()


def test_init_prints_next_steps(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(cli, ["init", str(tmp_path / "d"), "--domain", "example.org"])
    config = tmp_path / "d" / "smtpkit.toml"
    assert result.output.splitlines() == [
        f"Created {config}, {tmp_path / 'd' / 'users'}/ and {tmp_path / 'd' / 'journal'}/ "
        "(data folder owned by root:root).",
        "Next steps:",
        f"  smtpkit -c {config} user add you@example.org",
        f"  smtpkit -c {config} serve",
        f"  smtpkit -c {config} mx --check",
    ]


def test_init_refuses_to_overwrite_without_force(runner: CliRunner, tmp_path: Path) -> None:
    config = init(runner, tmp_path)
    result = runner.invoke(cli, ["init", str(tmp_path / "d"), "--domain", "other.org"])
    assert result.exit_code == 1
    assert result.output == f"Error: {config} already exists (use --force to overwrite)\n"
    result = runner.invoke(cli, ["init", str(tmp_path / "d"), "--domain", "other.org", "--force"])
    assert result.exit_code == 0
    assert tomllib.loads(config.read_text())["server"]["domains"] == ["other.org"]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--domain", "bad_domain"], "Invalid value for '--domain': 'bad_domain' is not a valid"),
        (["--domain", "a.org", "--listen", "localhost"], "Invalid value for '--listen':"),
        ([], "Missing option '--domain'"),
    ],
)
def test_init_usage_errors_exit_2(
    runner: CliRunner, tmp_path: Path, args: list[str], fragment: str
) -> None:
    result = runner.invoke(cli, ["init", str(tmp_path / "d"), *args])
    assert result.exit_code == 2
    assert fragment in result.output
    assert not (tmp_path / "d" / "smtpkit.toml").exists()


def test_user_add_list_remove(runner: CliRunner, tmp_path: Path) -> None:
    config = init(runner, tmp_path)
    c = ["-c", str(config)]
    result = runner.invoke(cli, [*c, "user", "add", "Alice@Example.org", "bob@example.net"])
    assert result.exit_code == 0, result.output
    users = tmp_path / "d" / "users"
    assert result.output.splitlines() == [
        f"Added alice@example.org ({users / 'alice@example.org'})",
        f"Added bob@example.net ({users / 'bob@example.net'})",
        f"Mail for postmaster@example.org goes to alice@example.org (aliases in {config})",
        f"Mail for postmaster@example.net goes to alice@example.org (aliases in {config})",
    ]
    for sub in ("tmp", "new", "cur"):
        assert (users / "alice@example.org" / sub).is_dir()
    assert tomllib.loads(config.read_text())["aliases"] == {
        "postmaster@example.org": "alice@example.org",
        "postmaster@example.net": "alice@example.org",
    }
    (users / "bob@example.net" / "new" / "1.M1P1Q1.host").write_bytes(b"Subject: x\r\n\r\n")
    (users / "bob@example.net" / "cur" / "2.M1P1Q1.host:2,S").write_bytes(b"Subject: y\r\n\r\n")
    result = runner.invoke(cli, [*c, "user", "list"])
    assert result.output.splitlines() == [
        "ADDRESS              NEW   SEEN  PASSWORD",
        "alice@example.org      0      0  no",
        "bob@example.net        1      1  no",
    ]
    result = runner.invoke(cli, [*c, "user", "list", "--json"])
    assert [json.loads(line) for line in result.output.splitlines()] == [
        {
            "address": "alice@example.org",
            "new": 0,
            "seen": 0,
            "password": False,
            "folders": {"INBOX": {"new": 0, "seen": 0}},
        },
        {
            "address": "bob@example.net",
            "new": 1,
            "seen": 1,
            "password": False,
            "folders": {"INBOX": {"new": 1, "seen": 1}},
        },
    ]
    result = runner.invoke(cli, [*c, "user", "remove", "bob@example.net"])
    assert result.exit_code == 1
    assert result.output == (
        "Error: not removing bob@example.net: its mailbox holds 2 messages (2 in INBOX) "
        "(use --force to remove it anyway)\n"
    )
    result = runner.invoke(cli, [*c, "user", "remove", "bob@example.net", "--force"])
    assert (result.exit_code, result.output) == (
        0,
        "Removed bob@example.net and its 2 messages (2 in INBOX)\n",
    )
    assert not (users / "bob@example.net").exists()
    result = runner.invoke(cli, [*c, "user", "remove", "alice@example.org"])
    assert (result.exit_code, result.output) == (
        1,
        "Error: not removing alice@example.org: aliases point to it: postmaster@example.org, "
        "postmaster@example.net (use --force to remove it anyway)\n",
    )
    assert (users / "alice@example.org").is_dir()


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("../../etc@example.org", "bad local part '../../etc'"),
        ("a/b@example.org", "bad local part 'a/b'"),
        ("a\x00b@example.org", "spaces or control characters"),
        ("a\nb@example.org", "spaces or control characters"),
        ("user%other.test@example.org", "bad local part 'user%other.test'"),
        (".dot@example.org", "bad local part '.dot'"),
        ("a..b@example.org", "bad local part 'a..b'"),
        ("alice@example.org.", "bad domain 'example.org.'"),
        ("noat", "expected local-part@domain"),
    ],
)
def test_user_add_refuses_unsafe_addresses(
    runner: CliRunner, tmp_path: Path, address: str, why: str
) -> None:
    config = init(runner, tmp_path)
    result = runner.invoke(cli, ["-c", str(config), "user", "add", address])
    assert result.exit_code == 2
    assert result.output.splitlines()[-1] == (
        f"Error: Invalid value for 'ADDRESS': {address!r} is not a valid address: {why}"
    )
    assert sorted(p.name for p in (tmp_path / "d" / "users").iterdir()) == []


def test_user_add_other_domain_and_duplicate(runner: CliRunner, tmp_path: Path) -> None:
    config = init(runner, tmp_path)
    result = runner.invoke(cli, ["-c", str(config), "user", "add", "x@elsewhere.test"])
    assert result.exit_code == 2
    assert result.output.splitlines()[-1] == (
        "Error: Invalid value for 'ADDRESS': 'x@elsewhere.test' is not in a local domain "
        "(configured: example.org, example.net)"
    )
    runner.invoke(cli, ["-c", str(config), "user", "add", "x@example.org"])
    result = runner.invoke(cli, ["-c", str(config), "user", "add", "X@example.org"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: user x@example.org already exists")


def test_user_add_keeps_a_commented_config(runner: CliRunner, tmp_path: Path) -> None:
    config = tmp_path / "smtpkit.toml"
    text = '# my server\n[server]\ndomains = ["example.org"]\n'
    config.write_text(text)
    (tmp_path / "users").mkdir()
    result = runner.invoke(cli, ["-c", str(config), "user", "add", "a@example.org"])
    assert result.exit_code == 0
    assert result.output.splitlines()[-1] == (
        f'Note: add to [aliases] in {config}: "postmaster@example.org" = "a@example.org"'
    )
    assert config.read_text() == text


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            "[server]\n",
            "server -> domains: is required: the list of domains this server receives for",
        ),
        (
            '[server]\ndomains = ["example.org"]\nmax_recipients = 0\n',
            "server -> max_recipients: must be a positive integer, got 0",
        ),
        (
            '[server]\ndomains = ["example.org"]\nmax_recipients = "ten"\n',
            "server -> max_recipients: must be a positive integer, got 'ten'",
        ),
        (
            '[server]\ndomains = ["example.org"]\nlisten = ["nowhere"]\n',
            "server -> listen: 'nowhere' is not HOST:PORT (write IPv6 as [::1]:25)",
        ),
        (
            '[server]\ndomains = ["example.org"]\nlisten = ["[::1]:99999"]\n',
            "server -> listen: '[::1]:99999': port must be 1-65535",
        ),
        ('[server]\ndomains = ["example.org"]\ncolour = "blue"\n', "server -> colour: unknown key"),
        (
            '[server]\ndomains = ["example.org"]\n[limits]\ncommand_timeout = -1\n',
            "limits -> command_timeout: must be a positive number of seconds, got -1",
        ),
        (
            '[server]\ndomains = ["example.org"]\n'
            '[aliases]\n"postmaster@example.org" = "x@other.test"\n',
            "aliases -> postmaster@example.org: 'x@other.test' is not in a local domain "
            "(configured: example.org)",
        ),
        ('[server]\ndomains = ["example.org"]\n[sever]\n', "sever: unknown section"),
        ("[server\n", "not valid TOML: "),
    ],
)
def test_config_errors_name_file_and_key(
    runner: CliRunner, tmp_path: Path, toml: str, message: str
) -> None:
    config = tmp_path / "smtpkit.toml"
    config.write_text(toml)
    result = runner.invoke(cli, ["-c", str(config), "user", "list"])
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {message}")
    assert result.output.rstrip("\n").endswith(f"({config})")
    assert result.output.count("\n") == 1


def test_missing_config_and_env_var(runner: CliRunner, tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    result = runner.invoke(cli, ["user", "list"], env={"SMTPKIT_CONFIG": str(missing)})
    assert result.exit_code == 1
    assert result.output == (
        "Error: config file not found (create one with `smtpkit init DIR --domain example.org`, "
        f"or point -c/--config or $SMTPKIT_CONFIG at it) ({missing})\n"
    )
    config = init(runner, tmp_path)
    result = runner.invoke(cli, ["user", "list", "--json"], env={"SMTPKIT_CONFIG": str(config)})
    assert (result.exit_code, result.output) == (0, "")


def test_default_config_is_found_in_current_folder(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    init(runner, tmp_path)
    monkeypatch.chdir(tmp_path / "d")
    monkeypatch.delenv("SMTPKIT_CONFIG", raising=False)
    result = runner.invoke(cli, ["user", "add", "z@example.org"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "d" / "users" / "z@example.org" / "new").is_dir()


@pytest.mark.parametrize(
    "args",
    [
        ["user", "add", "-c", "{config}", "a@example.org"],
        ["user", "add", "a@example.org", "--config", "{config}"],
        ["user", "-c", "{config}", "list"],
        ["user", "list", "-c", "{config}"],
        ["user", "remove", "a@example.org", "-c", "{config}"],
        ["journal", "tail", "-c", "{config}"],
        ["tls", "self-signed", "-c", "{config}"],
        ["mx", "--check", "-c", "{config}"],
    ],
)
def test_config_after_the_subcommand_wins(
    runner: CliRunner, tmp_path: Path, args: list[str]
) -> None:
    wrong = tmp_path / "wrong.toml"
    missing = tmp_path / "missing.toml"
    filled = [a.replace("{config}", str(missing)) for a in args]
    for before in (["-c", str(wrong)], []):
        result = runner.invoke(cli, [*before, *filled], env={"SMTPKIT_CONFIG": str(wrong)})
        assert result.exit_code == 1
        assert result.output.startswith("Error: config file not found")
        assert result.output.endswith(f"({missing})\n")


def test_serve_takes_config_after_the_subcommand(tmp_path: Path) -> None:
    config = tmp_path / "smtpkit.toml"
    config.write_text('[server]\ndomains = ["example.org"]\nlisten = ["127.0.0.1:1"]\n')
    served = subprocess.run(
        [sys.executable, "-m", "smtpkit", "-c", str(tmp_path / "wrong.toml"), "serve", "-c"]
        + [str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (served.returncode, served.stderr) == (
        1,
        f"Error: no users folder at {tmp_path / 'users'} (run `smtpkit init` first)\n",
    )
