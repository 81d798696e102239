"""``smtpkit dkim keygen|list`` with CliRunner: exact output, exit codes, the key files and
the records printed for them."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from smtpkit.commands import cli
from smtpkit.commands.dkim import default_selector, zone_line
from smtpkit.mailauth.keys import DkimKey, load_keys
from smtpkit.owner import lookup_user
from tests.conftest import unavailable


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def config(runner: CliRunner, tmp_path: Path) -> Path:
    result = runner.invoke(
        cli,
        ["init", str(tmp_path / "d"), "--domain", "example.org", "--domain", "example.net"]
        + ["--hostname", "mx.example.org"],
    )
    assert result.exit_code == 0, result.output
    return tmp_path / "d" / "smtpkit.toml"


def run(runner: CliRunner, config: Path, *args: str) -> tuple[int, list[str]]:
    result = runner.invoke(cli, ["-c", str(config), "dkim", *args])
    return result.exit_code, result.output.splitlines()


def joined(line: str) -> str:
    """The text of a zone-file TXT line: its quoted strings, joined as a verifier joins them
    (RFC 6376 3.6.2.2). Every string is at most 255 bytes."""
    strings = re.findall(r'"((?:[^"\\]|\\.)*)"', line)
    assert strings and all(len(s.encode()) <= 255 for s in strings)
    return "".join(strings)


def only_key(directory: Path) -> DkimKey:
    [(_, keys)] = load_keys(directory).items()
    [key] = keys
    return key


def expected(key: DkimKey, description: str) -> list[str]:
    return [
        f"Wrote {key.path}: {description}, mode 0600",
        f"Publish this TXT record so that receivers can verify mail from {key.domain}:",
        zone_line(key.record_name, key.txt_record()),
        "Once it is published, `smtpkit dns check` verifies it.",
    ]


def test_keygen_default_rsa_key(runner: CliRunner, config: Path) -> None:
    before = default_selector()
    code, lines = run(runner, config, "keygen", "example.org")
    assert code == 0, lines
    directory = config.parent
    key = only_key(directory)
    assert key.selector in {before, default_selector()}  # a month may begin meanwhile
    assert (key.domain, key.algorithm) == ("example.org", "rsa")
    assert key.path == directory / "dkim" / "example.org" / f"{key.selector}.key"
    assert lines == expected(key, "rsa 2048")
    assert stat.S_IMODE(key.path.stat().st_mode) == 0o600
    # The record line as a zone file takes it, and as verifiers read it.
    name = f"{key.selector}._domainkey.example.org."
    assert lines[2].startswith(f'{name} IN TXT "v=DKIM1; k=rsa; p=MIIB')
    assert joined(lines[2]) == key.txt_record()
    assert len(re.findall(r'"[^"]*"', lines[2])) == 2  # 2048-bit RSA: more than 255 bytes
    assert len(re.findall(r'"[^"]*"', lines[2])[0]) == 255 + 2


def test_keygen_ed25519_with_a_selector(runner: CliRunner, config: Path) -> None:
    code, lines = run(
        runner, config, "keygen", "EXAMPLE.net", "--type", "ed25519", "--selector", "Ed1"
    )
    assert code == 0, lines
    key = only_key(config.parent)
    assert (key.domain, key.selector, key.algorithm) == ("example.net", "ed1", "ed25519")
    assert key.path == config.parent / "dkim" / "example.net" / "ed1.key"
    assert lines == expected(key, "ed25519")
    assert lines[2] == f'ed1._domainkey.example.net. IN TXT "{key.txt_record()}"'
    assert stat.S_IMODE(key.path.stat().st_mode) == 0o600


def test_an_international_domain_is_written_as_its_a_label(
    runner: CliRunner, tmp_path: Path
) -> None:
    result = runner.invoke(cli, ["init", str(tmp_path / "d"), "--domain", "bücher.example"])
    assert result.exit_code == 0, result.output
    config = tmp_path / "d" / "smtpkit.toml"
    code, lines = run(runner, config, "keygen", "Bücher.example", "--selector", "s1")
    assert code == 0, lines
    key = only_key(config.parent)
    assert key.record_name == "s1._domainkey.xn--bcher-kva.example"
    assert lines == expected(key, "rsa 2048")


def test_an_existing_selector_is_refused(runner: CliRunner, config: Path) -> None:
    assert run(runner, config, "keygen", "example.org", "--selector", "s1")[0] == 0
    path = config.parent / "dkim" / "example.org" / "s1.key"
    before = path.read_bytes()
    for extra in ([], ["--type", "ed25519"]):
        code, lines = run(runner, config, "keygen", "example.org", "--selector", "s1", *extra)
        assert (code, lines) == (1, [f"Error: {path} already exists (choose another --selector)"])
    assert path.read_bytes() == before
    # The same selector for another domain is another record.
    assert run(runner, config, "keygen", "example.net", "--selector", "s1")[0] == 0


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["keygen", "example.com"],
         "Error: Invalid value for 'DOMAIN': example.com is not one of server.domains in "
         "{config} (example.org, example.net)"),
        (["keygen", "mail.example.org"],
         "Error: Invalid value for 'DOMAIN': mail.example.org is not one of server.domains in "
         "{config} (example.org, example.net)"),
        (["keygen", "bad_domain!"],
         "Error: Invalid value for 'DOMAIN': 'bad_domain!' is not a valid domain name"),
        (["keygen", "example.org", "--selector", "a/b"],
         "Error: Invalid value for '--selector': invalid DKIM selector 'a/b': letters, digits, "
         "'-' and '.'"),
        (["keygen", "example.org", "--selector", "-a"],
         "Error: Invalid value for '--selector': invalid DKIM selector '-a': letters, digits, "
         "'-' and '.'"),
        (["keygen", "example.org", "--type", "dsa"],
         "Error: Invalid value for '--type': 'dsa' is not one of 'rsa', 'ed25519'."),
        (["keygen"], "Error: Missing argument 'DOMAIN'."),
    ],
)  # fmt: skip
def test_usage_errors(runner: CliRunner, config: Path, args: list[str], error: str) -> None:
    code, lines = run(runner, config, *args)
    assert (code, lines[-1]) == (2, error.format(config=config))
    assert not (config.parent / "dkim").exists()


def test_no_data_folder(runner: CliRunner, tmp_path: Path) -> None:
    config = tmp_path / "smtpkit.toml"
    config.write_text('[server]\ndirectory = "data"\ndomains = ["example.org"]\n')
    error = f"Error: no data folder at {tmp_path / 'data'} (run `smtpkit init` first)"
    for args in (["keygen", "example.org"], ["list"]):
        assert run(runner, config, *args) == (1, [error])
    assert not (tmp_path / "data").exists()


def test_no_config_file(runner: CliRunner, tmp_path: Path) -> None:
    missing = tmp_path / "none.toml"
    code, lines = run(runner, missing, "keygen", "example.org")
    assert code == 1 and len(lines) == 1
    assert lines[0].startswith("Error: config file not found") and lines[0].endswith(f"({missing})")


def test_list(runner: CliRunner, config: Path) -> None:
    for args in (
        ["example.org", "--selector", "s202611"],
        ["example.org", "--selector", "ed202611", "--type", "ed25519"],
        ["example.net", "--selector", "mail"],
    ):
        assert run(runner, config, "keygen", *args)[0] == 0
    folder = config.parent / "dkim"
    assert run(runner, config, "list") == (
        0,
        [
            f"DOMAIN       SELECTOR  TYPE     {'FILE':<{len(str(folder)) + 25}}  RECORD",
            f"example.net  mail      rsa      {folder}/example.net/mail.key      "
            "mail._domainkey.example.net",
            f"example.org  ed202611  ed25519  {folder}/example.org/ed202611.key  "
            "ed202611._domainkey.example.org",
            f"example.org  s202611   rsa      {folder}/example.org/s202611.key   "
            "s202611._domainkey.example.org",
        ],
    )


def test_list_json(runner: CliRunner, config: Path) -> None:
    assert run(runner, config, "keygen", "example.org", "--selector", "s1")[0] == 0
    assert (
        run(runner, config, "keygen", "example.org", "--selector", "s2", "--type", "ed25519")[0]
        == 0
    )
    keys = load_keys(config.parent)["example.org"]
    code, lines = run(runner, config, "list", "--json")
    assert code == 0
    assert [json.loads(line) for line in lines] == [
        {
            "domain": "example.org",
            "selector": key.selector,
            "type": key.algorithm,
            "file": str(key.path),
            "record": key.record_name,
            "txt": key.txt_record(),
        }
        for key in keys
    ]


def test_list_without_keys(runner: CliRunner, config: Path) -> None:
    notice = "No DKIM keys yet: make one with `smtpkit dkim keygen example.org`.\n"
    result = runner.invoke(cli, ["-c", str(config), "dkim", "list"])
    assert (result.exit_code, result.stdout, result.stderr) == (0, notice, "")
    # --json keeps stdout to JSON lines: the notice goes to stderr.
    result = runner.invoke(cli, ["-c", str(config), "dkim", "list", "--json"])
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", notice)


def test_list_names_a_bad_key_file(runner: CliRunner, config: Path) -> None:
    folder = config.parent / "dkim" / "example.org"
    folder.mkdir(parents=True)
    (folder / "s1.key").write_text("not a key\n")
    code, lines = run(runner, config, "list")
    assert code == 1 and len(lines) == 1
    assert lines[0].startswith(f"Error: {folder / 's1.key'}: not a DKIM private key")


@pytest.mark.parametrize(
    ("text", "strings"),
    [
        ("", ['""']),
        ("v=DKIM1; k=ed25519; p=abc", ['"v=DKIM1; k=ed25519; p=abc"']),
        ("a" * 255, ['"' + "a" * 255 + '"']),
        ("a" * 256, ['"' + "a" * 255 + '"', '"a"']),
        ("b" * 600, ['"' + "b" * 255 + '"', '"' + "b" * 255 + '"', '"' + "b" * 90 + '"']),
        ('say "hi" \\ bye', ['"say \\"hi\\" \\\\ bye"']),
    ],
)
def test_zone_line(text: str, strings: list[str]) -> None:
    assert zone_line("s1._domainkey.example.org", text) == (
        f"s1._domainkey.example.org. IN TXT {' '.join(strings)}"
    )


def test_default_selector_names_the_month() -> None:
    assert default_selector(datetime(2026, 11, 30, 23, 59, tzinfo=UTC)) == "s202611"
    assert default_selector(datetime(2027, 1, 1, tzinfo=UTC)) == "s202701"


def test_keys_belong_to_the_data_folders_owner(runner: CliRunner, open_tmp_path: Path) -> None:
    if os.geteuid() != 0:
        unavailable("writing as another user needs root (CI runs as root)")
    nobody = lookup_user("nobody")
    data = open_tmp_path / "d"
    result = runner.invoke(cli, ["init", str(data), "--domain", "example.org", "--owner", "nobody"])
    assert result.exit_code == 0, result.output
    config = data / "smtpkit.toml"
    # As a real process: everything the command needs must be loaded before it takes on the
    # owner's identity, who may not be able to read where Python lives.
    for args in (["keygen", "example.org", "--selector", "s1"], ["list", "--json"]):
        done = subprocess.run(
            [sys.executable, "-m", "smtpkit", "-c", str(config), "dkim", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert (done.returncode, done.stderr) == (0, ""), args
    key = only_key(data)
    for path, mode in (
        (data / "dkim", 0o700),
        (data / "dkim" / "example.org", 0o700),
        (key.path, 0o600),
    ):
        info = path.lstat()
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (
            nobody.uid,
            nobody.gid,
            mode,
        )
    assert json.loads(done.stdout)["txt"] == key.txt_record()
