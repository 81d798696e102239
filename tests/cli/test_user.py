"""``smtpkit user add|list|remove``: the owner writes, counts by flag over every folder,
aliases kept whole, all-or-nothing adds, one exit-code rule, ``-c`` after the subcommand."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from smtpkit.commands import cli
from smtpkit.errors import UserError
from smtpkit.owner import lookup_user
from smtpkit.users import UserStore
from tests.conftest import unavailable


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def make(runner: CliRunner, folder: Path, *extra: str) -> Path:
    result = runner.invoke(
        cli,
        ["init", str(folder / "d"), "--domain", "example.org", "--domain", "example.net", *extra],
    )
    assert result.exit_code == 0, result.output
    return folder / "d" / "smtpkit.toml"


@pytest.fixture
def config(runner: CliRunner, tmp_path: Path) -> Path:
    return make(runner, tmp_path)


def run(runner: CliRunner, config: Path, *args: str) -> tuple[int, list[str]]:
    result = runner.invoke(cli, ["-c", str(config), *args])
    return result.exit_code, result.output.splitlines()


def put(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"Subject: x\r\n\r\n")


def set_aliases(config: Path, aliases: str) -> None:
    text = config.read_text().split("\n[aliases]")[0]
    config.write_text(f"{text}\n[aliases]\n{aliases}")


# --- the owner writes -------------------------------------------------------------------


def test_mailboxes_belong_to_the_data_folders_owner(runner: CliRunner, open_tmp_path: Path) -> None:
    if os.geteuid() != 0:
        unavailable("writing as another user needs root (CI runs as root)")
    nobody = lookup_user("nobody")
    config = make(runner, open_tmp_path, "--owner", "nobody")
    assert run(runner, config, "user", "add", "alice@example.org", "bob@example.org")[0] == 0
    users = open_tmp_path / "d" / "users"
    box = users / "alice@example.org"
    made = [box, *box.rglob("*")]
    assert sorted(str(p.relative_to(users)) for p in made) == [
        "alice@example.org",
        "alice@example.org/cur",
        "alice@example.org/new",
        "alice@example.org/tmp",
    ]
    for path in made:
        info = path.lstat()
        assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (nobody.uid, nobody.gid, 0o700)
    assert config.stat().st_uid == 0  # the config, with the postmaster alias, stays root's
    put(users / "bob@example.org" / "new", "1.M1P1Q1.h")  # root's file in the owner's tree
    assert run(runner, config, "user", "remove", "bob@example.org", "--force") == (
        0,
        ["Removed bob@example.org and its 1 message (1 in INBOX)"],
    )
    assert sorted(os.listdir(users)) == ["alice@example.org"]


# --- list -------------------------------------------------------------------------------


def test_list_counts_the_seen_flag_over_every_folder(runner: CliRunner, config: Path) -> None:
    assert run(runner, config, "user", "add", "alice@example.org", "bob@example.net")[0] == 0
    users = config.parent / "users"
    alice = users / "alice@example.org"
    put(alice / "new", "1.M1P1Q1.h")
    put(alice / "cur", "2.M1P1Q1.h:2,", "3.M1P1Q1.h:2,FS", "4.M1P1Q1.h:2,RS")
    put(alice / ".Archive" / "cur", "5.M1P1Q1.h:2,S")
    put(alice / ".Archive" / "new", "6.M1P1Q1.h")
    for hidden in (".spool", ".adding.carol@example.org", ".removing.dave@example.org", ".x"):
        put(users / hidden / "new", "7.M1P1Q1.h")
    assert run(runner, config, "user", "list") == (
        0,
        [
            "ADDRESS              NEW   SEEN",
            "alice@example.org      3      3",
            "bob@example.net        0      0",
        ],
    )
    code, lines = run(runner, config, "user", "list", "--json")
    assert code == 0
    assert [json.loads(line) for line in lines] == [
        {
            "address": "alice@example.org",
            "new": 3,
            "seen": 3,
            "folders": {"INBOX": {"new": 2, "seen": 2}, "Archive": {"new": 1, "seen": 1}},
        },
        {
            "address": "bob@example.net",
            "new": 0,
            "seen": 0,
            "folders": {"INBOX": {"new": 0, "seen": 0}},
        },
    ]


def test_list_help_says_what_new_means(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["user", "list", "--help"])
    text = " ".join(result.output.split())
    assert "NEW counts the messages without the Maildir S (seen) flag, whether still in new/ or" \
        " already in cur/" in text  # fmt: skip


# --- remove -----------------------------------------------------------------------------


def test_remove_refuses_mail_in_any_folder(runner: CliRunner, config: Path) -> None:
    run(runner, config, "user", "add", "alice@example.org", "bob@example.org")
    bob = config.parent / "users" / "bob@example.org"
    put(bob / ".Archive" / "cur", "1.M1P1Q1.h:2,S", "2.M1P1Q1.h:2,S")
    put(bob / ".Archive.2024" / "new", "3.M1P1Q1.h")
    assert run(runner, config, "user", "remove", "bob@example.org") == (
        1,
        [
            "Error: not removing bob@example.org: its mailbox holds 3 messages (2 in Archive, "
            "1 in Archive.2024) (use --force to remove it anyway)"
        ],
    )
    assert bob.is_dir()
    assert run(runner, config, "user", "remove", "bob@example.org", "--force") == (
        0,
        ["Removed bob@example.org and its 3 messages (2 in Archive, 1 in Archive.2024)"],
    )
    assert not bob.exists()


def test_remove_refuses_a_user_aliases_point_to(runner: CliRunner, config: Path) -> None:
    run(runner, config, "user", "add", "alice@example.org", "bob@example.org", "carol@example.net")
    set_aliases(
        config,
        '"postmaster@example.org" = "alice@example.org"\n'
        '"postmaster@example.net" = "Alice@example.org"\n'
        '"info@example.org" = "alice@example.org"\n'
        '"team@example.org" = ["alice@example.org", "bob@example.org", "carol@example.net"]\n'
        '"sales@example.org" = "bob@example.org"\n',
    )
    put(config.parent / "users" / "alice@example.org" / "new", "1.M1P1Q1.h")
    text = config.read_text()
    assert run(runner, config, "user", "remove", "alice@example.org") == (
        1,
        [
            "Error: not removing alice@example.org: its mailbox holds 1 message (1 in INBOX); "
            "aliases point to it: postmaster@example.org, postmaster@example.net, "
            "info@example.org, team@example.org (use --force to remove it anyway)"
        ],
    )
    assert config.read_text() == text
    assert run(runner, config, "user", "remove", "alice@example.org", "--force") == (
        0,
        [
            f"Updated [aliases] in {config}:",
            "  postmaster@example.org: now bob@example.org (was alice@example.org)",
            "  postmaster@example.net: now carol@example.net (was alice@example.org)",
            "  info@example.org: removed (was alice@example.org)",
            "  team@example.org: now bob@example.org, carol@example.net "
            "(was alice@example.org, bob@example.org, carol@example.net)",
            "Removed alice@example.org and its 1 message (1 in INBOX)",
            "Restart `smtpkit serve` for the new aliases to take effect.",
        ],
    )
    assert tomllib.loads(config.read_text())["aliases"] == {
        "postmaster@example.org": "bob@example.org",
        "postmaster@example.net": "carol@example.net",
        "team@example.org": ["bob@example.org", "carol@example.net"],
        "sales@example.org": "bob@example.org",
    }
    assert not (config.parent / "users" / "alice@example.org").exists()


def test_postmaster_goes_to_a_user_of_another_domain_or_nowhere(
    runner: CliRunner, config: Path
) -> None:
    run(runner, config, "user", "add", "alice@example.org", "bob@example.net")
    assert run(runner, config, "user", "remove", "alice@example.org", "--force") == (
        0,
        [
            f"Updated [aliases] in {config}:",
            "  postmaster@example.org: now bob@example.net (was alice@example.org)",
            "  postmaster@example.net: now bob@example.net (was alice@example.org)",
            "Removed alice@example.org",
            "Restart `smtpkit serve` for the new aliases to take effect.",
        ],
    )
    assert run(runner, config, "user", "remove", "bob@example.net", "--force") == (
        0,
        [
            f"Updated [aliases] in {config}:",
            "  postmaster@example.org: removed (was bob@example.net); no user is left to "
            "receive it",
            "  postmaster@example.net: removed (was bob@example.net); no user is left to "
            "receive it",
            "Removed bob@example.net",
            "Restart `smtpkit serve` for the new aliases to take effect.",
        ],
    )
    assert tomllib.loads(config.read_text()).get("aliases", {}) == {}


def test_a_commented_config_gets_the_lines_to_change_first(runner: CliRunner, config: Path) -> None:
    run(runner, config, "user", "add", "alice@example.org", "bob@example.org")
    set_aliases(
        config,
        "# kept by hand\n"
        '"postmaster@example.org" = "alice@example.org"\n'
        '"postmaster@example.net" = "alice@example.org"\n'
        '"info@example.org" = "alice@example.org"\n'
        '"team@example.org" = ["alice@example.org", "bob@example.org"]\n',
    )
    text = config.read_text()
    assert run(runner, config, "user", "remove", "alice@example.org", "--force") == (
        1,
        [
            f"Error: not removing alice@example.org: aliases point to it and {config} has "
            "comments, so smtpkit does not rewrite it; change [aliases] by hand first:",
            '  "postmaster@example.org" = "bob@example.org"',
            '  "postmaster@example.net" = "bob@example.org"',
            '  delete "info@example.org"',
            '  "team@example.org" = "bob@example.org"',
        ],
    )
    assert config.read_text() == text
    assert (config.parent / "users" / "alice@example.org").is_dir()


def test_removing_a_postmaster_mailbox_routes_postmaster_to_a_user(
    runner: CliRunner, config: Path
) -> None:
    set_aliases(config, '"postmaster@example.net" = "postmaster@example.org"\n')
    run(runner, config, "user", "add", "postmaster@example.org", "alice@example.org")
    assert run(runner, config, "user", "remove", "postmaster@example.org", "--force") == (
        0,
        [
            f"Updated [aliases] in {config}:",
            "  postmaster@example.net: now alice@example.org (was postmaster@example.org)",
            "Removed postmaster@example.org",
            f"Mail for postmaster@example.org goes to alice@example.org (aliases in {config})",
            "Restart `smtpkit serve` for the new aliases to take effect.",
        ],
    )


# --- add --------------------------------------------------------------------------------


def test_add_refuses_an_address_that_is_an_alias(runner: CliRunner, config: Path) -> None:
    run(runner, config, "user", "add", "alice@example.org")
    assert run(runner, config, "user", "add", "bob@example.org", "Postmaster@example.org") == (
        1,
        [
            f"Error: postmaster@example.org is an alias (to alice@example.org) in {config}, "
            "and a mailbox of the same address would never receive mail: remove "
            '"postmaster@example.org" from [aliases] first, or choose another address'
        ],
    )
    assert sorted(os.listdir(config.parent / "users")) == ["alice@example.org"]


def test_add_without_a_users_folder_is_refused_as_serve_refuses_it(
    runner: CliRunner, tmp_path: Path
) -> None:
    config = tmp_path / "smtpkit.toml"
    config.write_text('[server]\ndomains = ["example.org"]\ndirectory = "data"\n')
    message = f"Error: no users folder at {tmp_path / 'data' / 'users'} (run `smtpkit init` first)"
    assert run(runner, config, "user", "add", "alice@example.org") == (1, [message])
    assert run(runner, config, "user", "list") == (1, [message])
    assert run(runner, config, "user", "remove", "alice@example.org") == (1, [message])
    assert not (tmp_path / "data").exists()
    served = subprocess.run(
        [sys.executable, "-m", "smtpkit", "-c", str(config), "serve"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (served.returncode, served.stderr) == (1, message + "\n")


@pytest.mark.parametrize(
    ("addresses", "error"),
    [
        (["a@example.org", "a@example.org"], "'a@example.org' is given twice"),
        (
            ["a@example.org", "A@Example.org"],
            "'A@Example.org' is the same address as 'a@example.org'",
        ),
        (["a@example.org", "noat"], "'noat' is not a valid address: expected local-part@domain"),
        (
            ["a@example.org", "x@elsewhere.test"],
            "'x@elsewhere.test' is not in a local domain (configured: example.org, example.net)",
        ),
        (
            ["../../etc@example.org"],
            "'../../etc@example.org' is not a valid address: bad local part '../../etc'",
        ),
        (
            ["a\nb@example.org"],
            "'a\\nb@example.org' is not a valid address: spaces or control characters",
        ),
    ],
)
def test_bad_address_arguments_are_usage_errors(
    runner: CliRunner, config: Path, addresses: list[str], error: str
) -> None:
    code, lines = run(runner, config, "user", "add", *addresses)
    assert (code, lines[-1]) == (2, f"Error: Invalid value for 'ADDRESS': {error}")
    assert os.listdir(config.parent / "users") == []


def test_a_bad_address_to_remove_is_a_usage_error(runner: CliRunner, config: Path) -> None:
    code, lines = run(runner, config, "user", "remove", "x@elsewhere.test")
    assert (code, lines[-1]) == (
        2,
        "Error: Invalid value for 'ADDRESS': 'x@elsewhere.test' is not in a local domain "
        "(configured: example.org, example.net)",
    )


def test_all_are_checked_before_any_is_added(runner: CliRunner, config: Path) -> None:
    run(runner, config, "user", "add", "bob@example.org")
    users = config.parent / "users"
    assert run(runner, config, "user", "add", "alice@example.org", "bob@example.org") == (
        1,
        [f"Error: user bob@example.org already exists ({users / 'bob@example.org'})"],
    )
    assert sorted(os.listdir(users)) == ["bob@example.org"]
    assert run(runner, config, "user", "remove", "nobody@example.org") == (
        1,
        ["Error: no such user: nobody@example.org"],
    )


def test_a_failure_half_way_removes_what_was_added(
    runner: CliRunner, config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_add = UserStore.add

    def add(self: UserStore, address: str) -> Path:
        if address == "carol@example.org":
            raise UserError(f"cannot create mailbox {self.users_dir / address}: No space left")
        return real_add(self, address)

    monkeypatch.setattr(UserStore, "add", add)
    users = config.parent / "users"
    args = ["user", "add", "alice@example.org", "bob@example.org", "carol@example.org"]
    assert run(runner, config, *args) == (
        1,
        [
            f"Error: cannot create mailbox {users / 'carol@example.org'}: No space left; "
            "nothing added (alice@example.org, bob@example.org removed again)"
        ],
    )
    assert os.listdir(users) == []
    assert "aliases" not in tomllib.loads(config.read_text())
