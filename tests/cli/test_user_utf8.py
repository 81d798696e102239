"""``smtpkit user`` with international addresses: one mailbox, and one password line, under
the canonical name (NFC, lower case, the domain's A-label) whichever spelling is given, found
again by any spelling; no alias for one, since [aliases] take ASCII only."""

from __future__ import annotations

import json
import tomllib
import unicodedata
from pathlib import Path

import pytest
from click.testing import CliRunner

from smtpkit.commands import cli
from smtpkit.config import load_config

MÜLLER = "müller@xn--bcher-kva.example"


def nfd(text: str) -> str:
    return unicodedata.normalize("NFD", text)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def make(runner: CliRunner, folder: Path, domain: str) -> Path:
    result = runner.invoke(
        cli, ["init", str(folder / "d"), "--domain", domain, "--domain", "example.org"]
    )
    assert result.exit_code == 0, result.output
    return folder / "d" / "smtpkit.toml"


@pytest.fixture(params=["bücher.example", "xn--bcher-kva.example"])
def config(request: pytest.FixtureRequest, runner: CliRunner, tmp_path: Path) -> Path:
    """A data folder whose first domain is given as its U-label or as its A-label."""
    return make(runner, tmp_path, request.param)


def run(
    runner: CliRunner, config: Path, *args: str, input: str | None = None
) -> tuple[int, list[str]]:
    result = runner.invoke(cli, ["-c", str(config), *args], input=input)
    return result.exit_code, result.output.splitlines()


def folders(config: Path) -> list[str]:
    return sorted(p.name for p in (config.parent / "users").iterdir())


@pytest.mark.parametrize(
    "spelling",
    [
        "müller@bücher.example",
        nfd("müller@bücher.example"),
        "Müller@BÜCHER.example",
        nfd("MÜLLER@xn--bcher-kva.example"),
    ],
)
def test_add_stores_the_canonical_name(runner: CliRunner, config: Path, spelling: str) -> None:
    code, lines = run(runner, config, "user", "add", spelling)
    users = config.parent / "users"
    assert (code, lines[0]) == (0, f"Added {MÜLLER} ({users / MÜLLER})")
    assert folders(config) == [MÜLLER]
    assert MÜLLER.encode() == b"m\xc3\xbcller@xn--bcher-kva.example"  # NFC on disk
    for sub in ("tmp", "new", "cur"):
        assert (users / MÜLLER / sub).is_dir()


def test_one_mailbox_for_both_forms(runner: CliRunner, config: Path) -> None:
    assert run(runner, config, "user", "add", "müller@bücher.example")[0] == 0
    code, lines = run(runner, config, "user", "add", nfd("müller@bücher.example"))
    assert code == 1
    assert lines[0].startswith(f"Error: user {MÜLLER} already exists")
    both = ["müller@bücher.example", nfd("Müller@xn--bcher-kva.example")]
    code, lines = run(runner, config, "user", "add", "jörg@bücher.example", *both)
    assert code == 2
    assert lines[-1] == (
        f"Error: Invalid value for 'ADDRESS': {both[1]!r} is the same address as {both[0]!r}"
    )
    assert folders(config) == [MÜLLER]


def test_list_shows_them(runner: CliRunner, config: Path) -> None:
    assert run(runner, config, "user", "add", "alice@example.org", "Jörg@bücher.example")[0] == 0
    (config.parent / "users" / "jörg@xn--bcher-kva.example" / "new" / "1.M1P1Q1.h").write_text(
        "Subject: x\n\n"
    )
    assert run(runner, config, "user", "list") == (
        0,
        [
            "ADDRESS                       NEW   SEEN  PASSWORD",
            "alice@example.org               0      0  no",
            "jörg@xn--bcher-kva.example      1      0  no",
        ],
    )
    code, lines = run(runner, config, "user", "list", "--json")
    assert code == 0
    assert [json.loads(line)["address"] for line in lines] == [
        "alice@example.org",
        "jörg@xn--bcher-kva.example",
    ]


@pytest.mark.parametrize(
    "spelling",
    [nfd("müller@bücher.example"), "MÜLLER@xn--bcher-kva.example", "müller@BÜCHER.EXAMPLE"],
)
def test_remove_finds_them_by_any_spelling(runner: CliRunner, config: Path, spelling: str) -> None:
    run(runner, config, "user", "add", "alice@example.org", "müller@bücher.example")
    assert run(runner, config, "user", "remove", spelling) == (0, [f"Removed {MÜLLER}"])
    assert folders(config) == ["alice@example.org"]


def test_passwd_sets_the_password_under_the_canonical_name(runner: CliRunner, config: Path) -> None:
    run(runner, config, "user", "add", "alice@example.org", "müller@bücher.example")
    passwd = config.parent / "passwd"
    for spelling in (nfd("müller@bücher.example"), "Müller@xn--bcher-kva.example"):
        assert run(runner, config, "user", "passwd", spelling, "--stdin", input="pw\n") == (
            0,
            [f"Password set for {MÜLLER}"],
        )
        # One line, replaced in place: NFC bytes, lower case, the A-label.
        (line,) = passwd.read_bytes().splitlines()
        assert line.startswith(MÜLLER.encode() + b":{ARGON2ID}$argon2id$")
    assert run(runner, config, "user", "list")[1][1:] == [
        "alice@example.org                 0      0  no",
        "müller@xn--bcher-kva.example      0      0  yes",
    ]
    assert run(runner, config, "user", "passwd", "jörg@bücher.example", "--stdin", input="x\n") == (
        1,
        ["Error: no such user: jörg@xn--bcher-kva.example (add it first with smtpkit user add)"],
    )
    assert run(runner, config, "user", "remove", nfd("MÜLLER@bücher.example")) == (
        0,
        [f"Removed {MÜLLER}", f"Removed the password of {MÜLLER}"],
    )
    assert passwd.read_bytes() == b""


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("\u212aelvin@bücher.example", "U+212A KELVIN SIGN is a duplicate of 'K'"),
        ("ｍüller@bücher.example", "U+FF4D FULLWIDTH LATIN SMALL LETTER M is a fullwidth form"),
        ("ﬁsché@bücher.example", "U+FB01 LATIN SMALL LIGATURE FI is a ligature of 'fi'"),
        ("müller@ｂücher.example", "U+FF42 FULLWIDTH LATIN SMALL LETTER B is a fullwidth form"),
        ("müller/x@bücher.example", "bad local part 'müller/x'"),
        ("müller@andere.example", "is not in a local domain"),
    ],
)
def test_add_refuses_look_alikes(runner: CliRunner, config: Path, address: str, why: str) -> None:
    code, lines = run(runner, config, "user", "add", address)
    assert code == 2
    assert lines[-1].startswith(f"Error: Invalid value for 'ADDRESS': {address!r} ")
    assert why in lines[-1]
    assert folders(config) == []


def test_the_postmaster_alias_goes_to_an_ascii_user(runner: CliRunner, config: Path) -> None:
    assert run(runner, config, "user", "add", "müller@bücher.example", "bob@example.org") == (
        0,
        [
            f"Added {MÜLLER} ({config.parent / 'users' / MÜLLER})",
            f"Added bob@example.org ({config.parent / 'users' / 'bob@example.org'})",
            "Mail for postmaster@xn--bcher-kva.example goes to bob@example.org (aliases in "
            f"{config})",
            f"Mail for postmaster@example.org goes to bob@example.org (aliases in {config})",
        ],
    )
    load_config(config)


def test_only_international_users_leave_postmaster_to_the_admin(
    runner: CliRunner, config: Path
) -> None:
    text = config.read_text()
    code, lines = run(runner, config, "user", "add", "müller@bücher.example")
    assert (code, lines[1:]) == (
        0,
        [
            f"Note: postmaster@{domain} has no mailbox and no alias, and [aliases] take ASCII "
            "addresses only: add an ASCII user, or a postmaster mailbox, for it"
            for domain in ("xn--bcher-kva.example", "example.org")
        ],
    )
    assert config.read_text() == text


def test_removing_the_postmaster_user_never_routes_it_to_an_international_one(
    runner: CliRunner, config: Path
) -> None:
    run(runner, config, "user", "add", "bob@example.org", "müller@bücher.example")
    code, lines = run(runner, config, "user", "remove", "bob@example.org", "--force")
    assert code == 0, lines
    assert tomllib.loads(config.read_text()).get("aliases", {}) == {}
    assert load_config(config).aliases == {}
    assert folders(config) == [MÜLLER]
