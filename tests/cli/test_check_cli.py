"""``smtpkit check`` with CliRunner: exact lines and exit codes.

The data folders belong to ``nobody`` (see tests/test_check.py); run as root, as CI does.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from smtpkit.commands import App
from smtpkit.commands.check import command
from tests.conftest import unavailable
from tests.test_check import RUNS_AS, Site, snapshot


@pytest.fixture
def site(open_tmp_path: Path) -> Site:
    if os.geteuid() != 0:
        unavailable("checking as the data folder's owner needs root (CI runs as root)")
    return Site(open_tmp_path / "mail")


def check(config: Path, *args: str) -> Result:
    return CliRunner().invoke(command, list(args), obj=App(config))


def test_no_problem_is_one_ok_line_and_exit_0(site: Site) -> None:
    result = check(site.config_path)
    assert (result.exit_code, result.output) == (
        0,
        f"ok: {site.config_path}: no problems (2 mailboxes, 2 aliases)\n",
    )


def test_one_mailbox_and_one_alias_are_counted_as_such(site: Site) -> None:
    site.settings["server"]["domains"] = ["example.org"]
    del site.settings["aliases"]["postmaster@example.net"]
    site.write()
    for sub in ("tmp", "new", "cur"):
        (site.directory / "users/bob@example.org" / sub).rmdir()
    (site.directory / "users/bob@example.org").rmdir()
    result = check(site.config_path)
    assert (result.exit_code, result.output) == (
        0,
        f"ok: {site.config_path}: no problems (1 mailbox, 1 alias)\n",
    )


def test_problems_are_error_lines_and_exit_1(site: Site) -> None:
    site.settings["server"]["hostname"] = "localhost"
    site.settings["aliases"]["sales@example.org"] = "carol@example.org"
    site.write()
    os.chown(site.directory / "users/alice@example.org/new", 0, 0)
    result = check(site.config_path)
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "error: server -> hostname: localhost is every machine's name for itself: senders "
        "greet and check this name; an MX record must point to a real name (RFC 5321 5.1)",
        f"error: cannot write users/alice@example.org/new: owned by root, mode 0700; {RUNS_AS}",
        "error: aliases -> sales@example.org: carol@example.org has no mailbox (smtpkit user "
        "add carol@example.org)",
    ]


def test_a_note_alone_still_exits_0(site: Site) -> None:
    site.settings["server"]["listen"] = ["127.0.0.1:2525"]
    site.write()
    result = check(site.config_path)
    assert (result.exit_code, result.output.splitlines()) == (
        0,
        [
            "note: server -> listen: nothing listens on port 25, where mail from the internet "
            "arrives (fine for tests, or behind a forward from port 25)",
            f"ok: {site.config_path}: no problems (2 mailboxes, 2 aliases)",
        ],
    )


def test_a_config_that_does_not_load_is_one_error_line(site: Site) -> None:
    site.settings["limits"] = {"max_errors": 0}
    site.write()
    result = check(site.config_path)
    line = f"limits -> max_errors: must be a positive integer, got 0 ({site.config_path})"
    assert (result.exit_code, result.output) == (1, f"error: {line}\n")
    result = check(site.config_path, "--json")
    assert (result.exit_code, result.output) == (
        1,
        json.dumps({"fatal": True, "note": False, "text": line}) + "\n",
    )


def test_no_config_file(open_tmp_path: Path) -> None:
    missing = open_tmp_path / "smtpkit.toml"
    result = check(missing)
    assert result.exit_code == 1
    assert result.output == (
        "error: config file not found (create one with `smtpkit init DIR --domain "
        "example.org`, or point -c/--config or $SMTPKIT_CONFIG at it) "
        f"({missing})\n"
    )


def test_json_is_one_object_per_problem_and_nothing_when_all_is_well(site: Site) -> None:
    result = check(site.config_path, "--json")
    assert (result.exit_code, result.output) == (0, "")
    os.chmod(site.directory / "journal", 0o550)
    site.settings["server"]["listen"] = ["127.0.0.1:2525"]
    site.write()
    result = check(site.config_path, "--json")
    assert result.exit_code == 1
    assert [json.loads(line) for line in result.output.splitlines()] == [
        {
            "fatal": False,
            "note": True,
            "text": "server -> listen: nothing listens on port 25, where mail from the "
            "internet arrives (fine for tests, or behind a forward from port 25)",
        },
        {
            "fatal": True,
            "note": False,
            "text": f"cannot write journal: owned by nobody, mode 0550; {RUNS_AS}",
        },
    ]


def test_check_writes_nothing(site: Site) -> None:
    (site.directory / "journal").rmdir()
    os.chown(site.directory / "users/bob@example.org/cur", 0, 0)
    before = snapshot(site.directory)
    result = check(site.config_path)
    assert result.exit_code == 1
    assert snapshot(site.directory) == before


def test_help_says_what_is_checked_and_where_dns_is(open_tmp_path: Path) -> None:
    result = CliRunner().invoke(command, ["--help"], obj=App(open_tmp_path / "x.toml"))
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "Changes nothing, binds nothing and asks no DNS (`smtpkit mx --check` tells" in text
    assert "Exit status 0 when there is no problem (notes do not count), 1 when there is" in text
