"""``smtpkit tls self-signed`` with CliRunner: exact output, exit codes, files and config."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from smtpkit.commands import cli
from smtpkit.config import load_config
from smtpkit.owner import lookup_user
from tests.conftest import unavailable


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def config(runner: CliRunner, tmp_path: Path) -> Path:
    result = runner.invoke(
        cli,
        ["init", str(tmp_path / "d"), "--domain", "example.org", "--hostname", "mx.example.org"],
    )
    assert result.exit_code == 0, result.output
    return tmp_path / "d" / "smtpkit.toml"


def certificate(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def expected_lines(folder: Path, hostname: str, key_type: str = "ECDSA P-256") -> list[str]:
    cert = certificate(folder / "cert.pem")
    until = cert.not_valid_after_utc.strftime("%Y-%m-%d")
    fingerprint = cert.fingerprint(hashes.SHA256()).hex(":").upper()
    return [
        f"Wrote {folder / 'cert.pem'}: self-signed for {hostname}, until {until}",
        f"Wrote {folder / 'key.pem'}: {key_type}, mode 0600",
        f"SHA-256 fingerprint: {fingerprint}",
    ]


def test_self_signed_writes_files_and_enables_tls(runner: CliRunner, config: Path) -> None:
    result = runner.invoke(cli, ["-c", str(config), "tls", "self-signed"])
    assert result.exit_code == 0, result.output
    folder = config.parent / "tls"
    assert result.output.splitlines() == [
        *expected_lines(folder, "mx.example.org"),
        f"Added [tls] to {config}: restart `smtpkit serve` to offer STARTTLS.",
    ]
    assert tomllib.loads(config.read_text())["tls"] == {
        "certificate": "tls/cert.pem",
        "key": "tls/key.pem",
    }
    tls = load_config(config).tls
    assert tls is not None
    assert (tls.certificate, tls.key) == (folder / "cert.pem", folder / "key.pem")
    assert (folder / "key.pem").stat().st_mode & 0o777 == 0o600
    cert = certificate(folder / "cert.pem")
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["mx.example.org"]
    left = cert.not_valid_after_utc - datetime.now(UTC)
    assert timedelta(days=364) < left <= timedelta(days=365)
    key = load_pem_private_key((folder / "key.pem").read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert sorted(p.name for p in folder.iterdir()) == ["cert.pem", "key.pem"]


def test_existing_files_are_kept_without_force(runner: CliRunner, config: Path) -> None:
    assert runner.invoke(cli, ["-c", str(config), "tls", "self-signed"]).exit_code == 0
    folder = config.parent / "tls"
    before = (folder / "cert.pem").read_bytes(), (folder / "key.pem").read_bytes()
    result = runner.invoke(cli, ["-c", str(config), "tls", "self-signed"])
    assert result.exit_code == 1
    assert result.output == (
        f"Error: {folder / 'cert.pem'} already exists (use --force to replace it)\n"
    )
    assert ((folder / "cert.pem").read_bytes(), (folder / "key.pem").read_bytes()) == before


def test_force_replaces_and_leaves_the_config_alone(runner: CliRunner, config: Path) -> None:
    assert runner.invoke(cli, ["-c", str(config), "tls", "self-signed"]).exit_code == 0
    folder = config.parent / "tls"
    old_serial = certificate(folder / "cert.pem").serial_number
    config_text = config.read_text()
    result = runner.invoke(
        cli,
        [
            "-c",
            str(config),
            "tls",
            "self-signed",
            "--force",
            "--hostname",
            "Mail.Example.org",
            "--days",
            "30",
            "--key-type",
            "rsa",
        ],
    )
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        *expected_lines(folder, "mail.example.org", "RSA 2048"),
        "A running `smtpkit serve` loads the new certificate on SIGHUP.",
    ]
    cert = certificate(folder / "cert.pem")
    assert cert.serial_number != old_serial
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["mail.example.org"]
    assert timedelta(days=29) < cert.not_valid_after_utc - datetime.now(UTC) <= timedelta(days=30)
    key = load_pem_private_key((folder / "key.pem").read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    assert (folder / "key.pem").stat().st_mode & 0o777 == 0o600
    assert config.read_text() == config_text


def test_a_commented_config_gets_instructions_not_a_rewrite(
    runner: CliRunner, config: Path
) -> None:
    text = "# my mail server\n" + config.read_text()
    config.write_text(text)
    result = runner.invoke(cli, ["-c", str(config), "tls", "self-signed"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[3:] == [
        f"Note: add to {config} to offer STARTTLS:",
        "  [tls]",
        '  certificate = "tls/cert.pem"',
        '  key = "tls/key.pem"',
    ]
    assert config.read_text() == text


def test_tls_pointing_elsewhere_is_left_as_it_is(runner: CliRunner, config: Path) -> None:
    with config.open("a") as fh:
        fh.write('\n[tls]\ncertificate = "/etc/ssl/mx.pem"\nkey = "/etc/ssl/mx.key"\n')
    text = config.read_text()
    result = runner.invoke(cli, ["-c", str(config), "tls", "self-signed"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[3:] == [
        f"Note: [tls] in {config} names /etc/ssl/mx.pem and /etc/ssl/mx.key, not these files: "
        "it is left as it is."
    ]
    assert config.read_text() == text


def test_files_go_to_the_data_directory(runner: CliRunner, tmp_path: Path) -> None:
    config = tmp_path / "etc" / "smtpkit.toml"
    config.parent.mkdir()
    config.write_text(
        '[server]\nhostname = "mx.example.org"\ndirectory = "../var/mail"\n'
        'domains = ["example.org"]\n'
    )
    (tmp_path / "var" / "mail").mkdir(parents=True)
    result = runner.invoke(cli, ["-c", str(config), "tls", "self-signed"])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "etc" / ".." / "var" / "mail" / "tls"
    assert result.output.splitlines()[:3] == expected_lines(folder, "mx.example.org")
    real = (tmp_path / "var" / "mail" / "tls").resolve()
    assert tomllib.loads(config.read_text())["tls"] == {
        "certificate": str(real / "cert.pem"),
        "key": str(real / "key.pem"),
    }
    tls = load_config(config).tls
    assert tls is not None and tls.certificate.resolve() == real / "cert.pem"


def test_no_data_folder_no_files(runner: CliRunner, tmp_path: Path) -> None:
    config = tmp_path / "smtpkit.toml"
    config.write_text('[server]\ndirectory = "data"\ndomains = ["example.org"]\n')
    text = config.read_text()
    result = runner.invoke(cli, ["-c", str(config), "tls", "self-signed"])
    assert (result.exit_code, result.output) == (
        1,
        f"Error: no data folder at {tmp_path / 'data'} (run `smtpkit init` first)\n",
    )
    assert not (tmp_path / "data").exists()
    assert config.read_text() == text


def test_files_belong_to_the_data_folders_owner(runner: CliRunner, open_tmp_path: Path) -> None:
    if os.geteuid() != 0:
        unavailable("writing as another user needs root (CI runs as root)")
    nobody = lookup_user("nobody")
    data = open_tmp_path / "d"
    result = runner.invoke(
        cli,
        ["init", str(data), "--domain", "example.org", "--hostname", "mx.example.org"]
        + ["--owner", "nobody"],
    )
    assert result.exit_code == 0, result.output
    config = data / "smtpkit.toml"
    # As a real process: everything the command needs must be loaded before it takes on the
    # owner's identity, who may not be able to read where Python lives.
    result = subprocess.run(
        [sys.executable, "-m", "smtpkit", "-c", str(config), "tls", "self-signed"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stderr) == (0, "")
    folder = data / "tls"
    assert result.stdout.splitlines() == [
        *expected_lines(folder, "mx.example.org"),
        f"Added [tls] to {config}: restart `smtpkit serve` to offer STARTTLS.",
    ]
    for path, mode in ((folder, 0o700), (folder / "key.pem", 0o600), (folder / "cert.pem", 0o644)):
        info = path.lstat()
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (
            nobody.uid,
            nobody.gid,
            mode,
        )
    assert config.stat().st_uid == 0  # the config stays root's
    assert sorted(p.name for p in folder.iterdir()) == ["cert.pem", "key.pem"]


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--hostname", "bad host"],
         "Error: Invalid value for '--hostname': 'bad host' is not a valid host name"),
        (["--hostname", "bad_host!"],
         "Error: Invalid value for '--hostname': 'bad_host!' is not a valid host name"),
        (["--hostname", "mx..example.org"],
         "Error: Invalid value for '--hostname': 'mx..example.org' is not a valid host name"),
        (["--days", "0"],
         "Error: Invalid value for '--days': 0 is not in the range 1<=x<=36500."),
        (["--key-type", "dsa"],
         "Error: Invalid value for '--key-type': 'dsa' is not one of 'ecdsa', 'rsa'."),
    ],
)  # fmt: skip
def test_bad_options(runner: CliRunner, config: Path, args: list[str], error: str) -> None:
    # Usage errors (exit 2), each naming its option on the last line; nothing is written.
    result = runner.invoke(cli, ["-c", str(config), "tls", "self-signed", *args])
    assert result.exit_code == 2
    assert result.output.splitlines()[-1] == error
    assert not (config.parent / "tls").exists()


def test_international_hostname_keeps_the_sharp_s(runner: CliRunner, config: Path) -> None:
    # IDNA 2008, as smtpkit mx and every current mail server look the name up: faß.example is
    # xn--fa-hia.example, a domain of its own, not fass.example (Python's IDNA 2003 codec).
    result = runner.invoke(
        cli, ["-c", str(config), "tls", "self-signed", "--hostname", "faß.example"]
    )
    assert result.exit_code == 0, result.output
    folder = config.parent / "tls"
    assert result.output.splitlines()[:3] == expected_lines(folder, "xn--fa-hia.example")
    san = certificate(folder / "cert.pem").extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert san.value.get_values_for_type(x509.DNSName) == ["xn--fa-hia.example"]


def test_no_config_file(runner: CliRunner, tmp_path: Path) -> None:
    missing = tmp_path / "none.toml"
    result = runner.invoke(cli, ["-c", str(missing), "tls", "self-signed"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: config file not found")
    assert result.output.endswith(f"({missing})\n") and result.output.count("\n") == 1
