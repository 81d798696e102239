"""``smtpkit init``: the data folder's owner, the config at -c, --force backups, --listen."""

from __future__ import annotations

import os
import secrets
import stat
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from smtpkit.commands import cli
from smtpkit.config import load_config
from smtpkit.owner import Owner, as_owner, lookup_user
from tests.conftest import unavailable


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def service_user() -> Iterator[Owner]:
    """A system user of its own (and its group), as a package would create for smtpkit."""
    if os.geteuid() != 0:
        unavailable("giving a folder to another user needs root (CI runs as root)")
    name = f"smtpkit-test-{secrets.token_hex(3)}"
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        check=True,
        capture_output=True,
    )
    try:
        yield lookup_user(name)
    finally:
        subprocess.run(["userdel", name], check=True, capture_output=True)


def ownership(path: Path) -> tuple[int, int, int]:
    info = path.lstat()
    return info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)


def next_steps(config: Path) -> list[str]:
    return [
        "Next steps:",
        f"  smtpkit -c {config} user add you@example.org",
        f"  smtpkit -c {config} serve",
        f"  smtpkit -c {config} mx --check",
    ]


def test_owner_gets_the_folder_and_what_is_inside(
    runner: CliRunner, open_tmp_path: Path, service_user: Owner
) -> None:
    data = open_tmp_path / "data"
    name = service_user.name
    result = runner.invoke(cli, ["init", str(data), "--domain", "example.org", "--owner", name])
    assert result.exit_code == 0, result.output
    config = data / "smtpkit.toml"
    assert result.output.splitlines() == [
        f"Created {config}, {data / 'users'}/ and {data / 'journal'}/ "
        f"(data folder owned by {name}:{name}).",
        f"Note: {name} can replace {config}, as it lies in {data}: for a service, keep the "
        "config out of its reach (smtpkit -c /etc/smtpkit/smtpkit.toml init ...).",
        *next_steps(config),
    ]
    uid, gid = service_user.uid, service_user.gid
    # 0751: every local user may pass through to the maildrop (smtpkit-sendmail).
    assert ownership(data) == (uid, gid, 0o751)
    assert ownership(data / "maildrop") == (uid, gid, 0o1733)
    assert ownership(data / "users") == (uid, gid, 0o700)
    assert ownership(data / "journal") == (uid, gid, 0o750)
    assert ownership(config) == (0, 0, 0o644)  # the config is root's
    assert tomllib.loads(config.read_text())["server"]["directory"] == "."


def test_config_in_etc_and_data_in_var_lib(
    runner: CliRunner, open_tmp_path: Path, service_user: Owner, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The layout for a service: the config root's in /etc, the data the service user's.
    monkeypatch.chdir(open_tmp_path)
    config = open_tmp_path / "etc" / "smtpkit" / "smtpkit.toml"
    data = open_tmp_path / "var" / "lib" / "smtpkit"
    name = service_user.name
    result = runner.invoke(
        cli,
        ["-c", str(config), "init", "var/lib/smtpkit", "--domain", "example.org", "--owner", name],
    )
    assert result.exit_code == 0, result.output
    relative = Path("var/lib/smtpkit")
    assert result.output.splitlines() == [
        f"Created {config}, {relative / 'users'}/ and {relative / 'journal'}/ "
        f"(data folder owned by {name}:{name}).",
        *next_steps(config),
    ]
    assert tomllib.loads(config.read_text())["server"]["directory"] == str(data)
    assert load_config(config).server.users_dir == data / "users"
    assert not (data / "smtpkit.toml").exists()
    assert ownership(config) == (0, 0, 0o644)
    assert ownership(config.parent) == (0, 0, 0o755)
    for parent in (open_tmp_path / "var", open_tmp_path / "var" / "lib"):
        assert ownership(parent) == (0, 0, 0o755)  # the owner can pass through
    assert ownership(data) == (service_user.uid, service_user.gid, 0o751)
    assert ownership(data / "users") == (service_user.uid, service_user.gid, 0o700)


def test_the_environment_variable_chooses_the_config_path(
    runner: CliRunner, tmp_path: Path
) -> None:
    config = tmp_path / "etc" / "mail.toml"
    result = runner.invoke(
        cli,
        ["init", str(tmp_path / "data"), "--domain", "example.org"],
        env={"SMTPKIT_CONFIG": str(config)},
    )
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == (
        f"Created {config}, {tmp_path / 'data' / 'users'}/ and {tmp_path / 'data' / 'journal'}/ "
        "(data folder owned by root:root)."
    )
    assert tomllib.loads(config.read_text())["server"]["directory"] == str(tmp_path / "data")
    assert not (tmp_path / "data" / "smtpkit.toml").exists()


def test_config_after_the_subcommand_wins_over_the_environment(
    runner: CliRunner, tmp_path: Path
) -> None:
    config = tmp_path / "chosen.toml"
    result = runner.invoke(
        cli,
        ["init", str(tmp_path / "data"), "--domain", "example.org", "-c", str(config)],
        env={"SMTPKIT_CONFIG": str(tmp_path / "env.toml")},
    )
    assert result.exit_code == 0, result.output
    assert tomllib.loads(config.read_text())["server"]["directory"] == str(tmp_path / "data")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chosen.toml", "data"]


def test_an_unknown_owner_is_a_usage_error(runner: CliRunner, tmp_path: Path) -> None:
    data = tmp_path / "data"
    result = runner.invoke(
        cli, ["init", str(data), "--domain", "example.org", "--owner", "smtpkit-no-such-user"]
    )
    assert result.exit_code == 2
    assert result.output.splitlines()[-1] == (
        "Error: Invalid value for '--owner': no such user: 'smtpkit-no-such-user' "
        "(create it first, e.g. useradd --system smtpkit-no-such-user)"
    )
    assert not data.exists()


def test_a_folder_with_files_of_another_user_is_not_taken_over(
    runner: CliRunner, open_tmp_path: Path, service_user: Owner
) -> None:
    data = open_tmp_path / "data"
    data.mkdir(mode=0o755)
    (data / "root-file").write_text("x")
    name = service_user.name
    result = runner.invoke(cli, ["init", str(data), "--domain", "example.org", "--owner", name])
    assert (result.exit_code, result.output) == (
        1,
        f"Error: {data} is not empty and belongs to root, not {name}: give a new or empty "
        f"folder, or one that {name} owns\n",
    )
    assert ownership(data) == (0, 0, 0o755)
    assert sorted(os.listdir(data)) == ["root-file"]
    assert ownership(data / "root-file")[:2] == (0, 0)


def test_an_empty_folder_is_taken_over(
    runner: CliRunner, open_tmp_path: Path, service_user: Owner
) -> None:
    data = open_tmp_path / "data"
    data.mkdir(mode=0o755)
    result = runner.invoke(
        cli, ["init", str(data), "--domain", "example.org", "--owner", service_user.name]
    )
    assert result.exit_code == 0, result.output
    assert ownership(data) == (service_user.uid, service_user.gid, 0o751)


def test_a_folder_of_the_owner_may_hold_files(
    runner: CliRunner, open_tmp_path: Path, service_user: Owner
) -> None:
    data = open_tmp_path / "data"
    data.mkdir(mode=0o700)
    os.chown(data, service_user.uid, service_user.gid)
    (data / "notes").write_text("mine")
    os.chown(data / "notes", service_user.uid, service_user.gid)
    result = runner.invoke(
        cli, ["init", str(data), "--domain", "example.org", "--owner", service_user.name]
    )
    assert result.exit_code == 0, result.output
    # Left as it was, but for the search bit others need to reach the maildrop.
    assert ownership(data) == (service_user.uid, service_user.gid, 0o701)
    assert (data / "notes").read_text() == "mine"
    assert ownership(data / "users")[:2] == (service_user.uid, service_user.gid)


def test_only_root_can_give_a_folder_away(runner: CliRunner, open_tmp_path: Path) -> None:
    if os.geteuid() != 0:
        unavailable("acting as another user needs root (CI runs as root)")
    nobody = lookup_user("nobody")
    home = open_tmp_path / "home"
    home.mkdir()
    os.chown(home, nobody.uid, nobody.gid)
    with as_owner(home):  # init run by nobody
        result = runner.invoke(
            cli, ["init", str(home / "d"), "--domain", "example.org", "--owner", "root"]
        )
    assert (result.exit_code, result.output) == (
        1,
        f"Error: cannot give {home / 'd'} to root: only root can (run as root, or leave out "
        "--owner)\n",
    )
    assert os.listdir(home) == []


def test_force_keeps_the_old_config_as_bak(runner: CliRunner, tmp_path: Path) -> None:
    data = tmp_path / "d"
    args = ["init", str(data), "--domain", "example.org"]
    first = [*args, "--hostname", "mx.example.org", "--listen", "127.0.0.1:2525"]
    assert runner.invoke(cli, first).exit_code == 0
    config = data / "smtpkit.toml"
    with config.open("a") as fh:
        fh.write(
            '\n[aliases]\n"postmaster@example.org" = "alice@example.org"\n'
            '\n[tls]\ncertificate = "tls/cert.pem"\nkey = "tls/key.pem"\n'
        )
    config.chmod(0o640)
    old = config.read_text()
    result = runner.invoke(cli, [*args, "--force"])
    assert result.exit_code == 0, result.output
    backup = data / "smtpkit.toml.bak"
    assert result.output.splitlines()[:2] == [
        f"Kept the previous config as {backup} (the new one lacks or changes: "
        "server.hostname, server.listen, [aliases], [tls]).",
        f"Created {config}, {data / 'users'}/ and {data / 'journal'}/ "
        "(data folder owned by root:root).",
    ]
    assert backup.read_text() == old
    assert stat.S_IMODE(backup.stat().st_mode) == 0o640
    assert "aliases" not in tomllib.loads(config.read_text())
    # Once more: the first backup, which holds the aliases, is never overwritten.
    second = config.read_text()
    result = runner.invoke(cli, [*args, "--force"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == f"Kept the previous config as {backup}.1."
    assert backup.read_text() == old
    assert (data / "smtpkit.toml.bak.1").read_text() == second
    assert sorted(p.name for p in data.iterdir()) == [
        "journal",
        "maildrop",
        "smtpkit.toml",
        "smtpkit.toml.bak",
        "smtpkit.toml.bak.1",
        "users",
    ]


@pytest.mark.parametrize(
    ("listen", "error"),
    [
        (["999.1.1.1:25"], "'999.1.1.1:25': 999.1.1.1 is not an IP address"),
        (["localhost:25"], "'localhost:25': localhost is not an IP address"),
        (["mx.example.org:25"], "'mx.example.org:25': mx.example.org is not an IP address"),
        (["127.0.0.1:25", "127.0.0.1:25"], "'127.0.0.1:25' is given twice"),
        (["[::1]:25", "[0:0::1]:25"], "'[0:0::1]:25' is the same address as '[::1]:25'"),
        (
            ["0.0.0.0:25", "127.0.0.1:25"],
            "'127.0.0.1:25' overlaps '0.0.0.0:25': 0.0.0.0 listens on every IPv4 address",
        ),
        (
            ["[::1]:25", "[::]:25"],
            "'[::]:25' overlaps '[::1]:25': :: listens on every IPv6 address",
        ),
        (["127.0.0.1:0"], "'127.0.0.1:0': port must be 1-65535"),
        (["::1:25"], "'::1:25' is not HOST:PORT (write IPv6 as [::1]:25)"),
        (["[localhost]:25"], "'localhost' is not an IPv6 address"),
    ],
)
def test_listen_must_be_distinct_ip_addresses(
    runner: CliRunner, tmp_path: Path, listen: list[str], error: str
) -> None:
    args = ["init", str(tmp_path / "d"), "--domain", "example.org"]
    for entry in listen:
        args += ["--listen", entry]
    result = runner.invoke(cli, args)
    assert result.exit_code == 2
    assert result.output.splitlines()[-1] == f"Error: Invalid value for '--listen': {error}"
    assert not (tmp_path / "d").exists()


def test_both_wildcards_and_other_ports_are_fine(runner: CliRunner, tmp_path: Path) -> None:
    listen = ["0.0.0.0:25", "[::]:25", "127.0.0.1:2525", "[::1]:2525"]
    args = ["init", str(tmp_path / "d"), "--domain", "example.org"]
    for entry in listen:
        args += ["--listen", entry]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    config = load_config(tmp_path / "d" / "smtpkit.toml")
    assert [str(a) for a in config.server.listen] == listen
