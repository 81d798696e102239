"""``smtpkit user add|list|remove|passwd``: the owner writes, counts by flag over every folder,
aliases kept whole, all-or-nothing adds, passwords in Dovecot's format, one exit-code rule,
``-c`` after the subcommand."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from smtpkit.auth import PasswordFile
from smtpkit.commands import cli
from smtpkit.commands import user as user_command
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


def run(
    runner: CliRunner, config: Path, *args: str, input: str | bytes | None = None
) -> tuple[int, list[str]]:
    result = runner.invoke(cli, ["-c", str(config), *args], input=input)
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
    assert run(runner, config, "user", "passwd", "bob@example.net", "--stdin", input="pw\n")[0] == 0
    assert run(runner, config, "user", "list") == (
        0,
        [
            "ADDRESS              NEW   SEEN  PASSWORD",
            "alice@example.org      3      3  no",
            "bob@example.net        0      0  yes",
        ],
    )
    code, lines = run(runner, config, "user", "list", "--json")
    assert code == 0
    assert [json.loads(line) for line in lines] == [
        {
            "address": "alice@example.org",
            "new": 3,
            "seen": 3,
            "password": False,
            "folders": {"INBOX": {"new": 2, "seen": 2}, "Archive": {"new": 1, "seen": 1}},
        },
        {
            "address": "bob@example.net",
            "new": 0,
            "seen": 0,
            "password": True,
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


# --- passwd -----------------------------------------------------------------------------


def passwords(config: Path) -> PasswordFile:
    return PasswordFile(config.parent / "passwd")


def test_passwd_from_stdin_takes_the_line_without_its_ending(
    runner: CliRunner, config: Path
) -> None:
    run(runner, config, "user", "add", "alice@example.org", "bob@example.net")
    assert run(
        runner, config, "user", "passwd", "Alice@Example.org", "--stdin", input=" two words \n"
    ) == (0, ["Password set for alice@example.org"])
    assert run(
        runner, config, "user", "passwd", "bob@example.net", "--stdin", input="crlf\r\nnext line\n"
    ) == (0, ["Password set for bob@example.net"])
    path = config.parent / "passwd"
    assert path.stat().st_mode & 0o777 == 0o640
    assert [line.split(":", 1)[0] for line in path.read_text().splitlines()] == [
        "alice@example.org",
        "bob@example.net",
    ]
    assert passwords(config).verify("alice@example.org", " two words ")
    assert not passwords(config).verify("alice@example.org", "two words")
    assert passwords(config).verify("bob@example.net", "crlf")
    # Bytes that are no UTF-8 are the password as given, as a client would send them.
    assert run(
        runner, config, "user", "passwd", "bob@example.net", "--stdin", input=b"caf\xe9\n"
    ) == (0, ["Password set for bob@example.net"])
    assert passwords(config).verify("bob@example.net", b"caf\xe9")


def test_passwd_asks_twice_on_a_terminal(
    runner: CliRunner, config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run(runner, config, "user", "add", "alice@example.org")
    monkeypatch.setattr(user_command, "_stdin_is_terminal", lambda: True)
    result = runner.invoke(
        cli,
        ["-c", str(config), "user", "passwd", "alice@example.org"],
        input="one\ntwo\nsecret\nsecret\n",
    )
    assert result.exit_code == 0
    assert result.stdout.splitlines() == ["Password set for alice@example.org"]
    assert result.stderr.splitlines() == [
        "New password for alice@example.org: ",
        "Repeat it: ",
        "Error: The two entered values do not match.",
        "New password for alice@example.org: ",
        "Repeat it: ",
    ]
    assert passwords(config).verify("alice@example.org", "secret")


def test_passwd_without_a_terminal_needs_stdin(runner: CliRunner, config: Path) -> None:
    run(runner, config, "user", "add", "alice@example.org")
    code, lines = run(runner, config, "user", "passwd", "alice@example.org", input="secret\n")
    assert (code, lines[-1]) == (
        2,
        "Error: standard input is no terminal to ask for the password on: give --stdin to read "
        "it from there",
    )
    assert not (config.parent / "passwd").exists()


@pytest.mark.parametrize(
    ("given", "error"),
    [
        ("\n", "the password is empty"),
        ("", "the password is empty"),
        ("x" * 1025 + "\n", "the password is 1025 bytes long; at most 1024 are allowed"),
        ("x" * 5000, "the password is 1027 bytes long; at most 1024 are allowed"),
        ("a\x00b\n", "the password holds a NUL, CR or LF character, which no login can send"),
    ],
)
def test_passwd_refuses_an_unusable_password(
    runner: CliRunner, config: Path, given: str, error: str
) -> None:
    run(runner, config, "user", "add", "alice@example.org")
    code, lines = run(runner, config, "user", "passwd", "alice@example.org", "--stdin", input=given)
    assert (code, lines[-1]) == (2, f"Error: {error}")
    assert not (config.parent / "passwd").exists()


def test_passwd_of_exactly_1024_bytes_is_fine(runner: CliRunner, config: Path) -> None:
    run(runner, config, "user", "add", "alice@example.org")
    password = "é" * 512
    assert run(
        runner, config, "user", "passwd", "alice@example.org", "--stdin", input=password + "\n"
    ) == (0, ["Password set for alice@example.org"])
    assert passwords(config).verify("alice@example.org", password)


def test_passwd_needs_a_mailbox_and_a_local_address(runner: CliRunner, config: Path) -> None:
    assert run(runner, config, "user", "passwd", "bob@example.org", "--stdin", input="pw\n") == (
        1,
        ["Error: no such user: bob@example.org (add it first with smtpkit user add)"],
    )
    code, lines = run(runner, config, "user", "passwd", "x@elsewhere.test", "--stdin", input="pw\n")
    assert (code, lines[-1]) == (
        2,
        "Error: Invalid value for 'ADDRESS': 'x@elsewhere.test' is not in a local domain "
        "(configured: example.org, example.net)",
    )
    assert not (config.parent / "passwd").exists()


def test_remove_takes_the_password_too(runner: CliRunner, config: Path) -> None:
    run(runner, config, "user", "add", "alice@example.org", "bob@example.org")
    for user in ("alice", "bob"):
        run(runner, config, "user", "passwd", f"{user}@example.org", "--stdin", input="pw\n")
    assert run(runner, config, "user", "remove", "bob@example.org") == (
        0,
        ["Removed bob@example.org", "Removed the password of bob@example.org"],
    )
    assert passwords(config).addresses() == {"alice@example.org"}
    # A password left behind by a mailbox removed by hand goes alone.
    (config.parent / "users" / "alice@example.org" / "new").rmdir()
    for sub in ("cur", "tmp", ""):
        (config.parent / "users" / "alice@example.org" / sub).rmdir()
    assert run(runner, config, "user", "remove", "alice@example.org", "--force") == (
        0,
        ["Removed the password of alice@example.org (it had no mailbox)"],
    )
    assert passwords(config).addresses() == set()
    assert run(runner, config, "user", "remove", "alice@example.org") == (
        1,
        ["Error: no such user: alice@example.org"],
    )


def test_a_failed_removal_says_the_password_is_gone(
    runner: CliRunner, config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run(runner, config, "user", "add", "alice@example.org", "bob@example.org")
    run(runner, config, "user", "passwd", "bob@example.org", "--stdin", input="pw\n")

    def remove(self: UserStore, address: str, *, force: bool = False) -> None:
        raise UserError(f"cannot remove mailbox {self.users_dir / address}: Busy")

    monkeypatch.setattr(UserStore, "remove", remove)
    box = config.parent / "users" / "bob@example.org"
    assert run(runner, config, "user", "remove", "bob@example.org") == (
        1,
        [
            f"Error: cannot remove mailbox {box}: Busy; its password is removed already (set it "
            "again with `smtpkit user passwd bob@example.org`)"
        ],
    )
    assert not passwords(config).has("bob@example.org")


def test_the_password_file_belongs_to_the_data_folders_owner(
    runner: CliRunner, open_tmp_path: Path
) -> None:
    if os.geteuid() != 0:
        unavailable("writing as another user needs root (CI runs as root)")
    nobody = lookup_user("nobody")
    config = make(runner, open_tmp_path, "--owner", "nobody")
    run(runner, config, "user", "add", "alice@example.org")
    assert run(runner, config, "user", "passwd", "alice@example.org", "--stdin", input="pw\n") == (
        0,
        ["Password set for alice@example.org"],
    )
    info = (open_tmp_path / "d" / "passwd").lstat()
    assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (nobody.uid, nobody.gid, 0o640)
