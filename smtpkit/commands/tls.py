"""``smtpkit tls self-signed``: a certificate and key for STARTTLS, and ``[tls]`` in the config."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import click
import tomli_w

from smtpkit.commands import App, pass_app, reports_errors
from smtpkit.config import Config, update_config
from smtpkit.owner import as_owner
from smtpkit.tls import (
    DEFAULT_DAYS,
    KEY_TYPES,
    MAX_DAYS,
    KeyType,
    TlsError,
    san_name,
    write_self_signed,
)

__all__ = ["command"]


@click.group("tls")
def command() -> None:
    """Certificates for STARTTLS."""


def _check_hostname(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A --hostname the certificate cannot name is a usage error, before any file is written."""
    if value is not None:
        try:
            san_name(value)
        except TlsError as exc:
            raise click.BadParameter(str(exc), ctx=ctx, param=param) from None
    return value


@command.command("self-signed")
@click.option(
    "--hostname",
    callback=_check_hostname,
    help="Name the certificate is for [default: server.hostname].",
)
@click.option(
    "--days",
    type=click.IntRange(1, MAX_DAYS),
    default=DEFAULT_DAYS,
    show_default=True,
    help="Days the certificate is valid.",
)
@click.option(
    "--key-type",
    type=click.Choice(KEY_TYPES),
    default="ecdsa",
    show_default=True,
    help="ecdsa (P-256) or rsa (2048 bits).",
)
@click.option("--force", is_flag=True, help="Replace an existing certificate and key.")
@pass_app
@reports_errors
def self_signed(app: App, hostname: str | None, days: int, key_type: str, force: bool) -> None:
    """Write DIR/tls/cert.pem and DIR/tls/key.pem, self-signed, and enable STARTTLS.

    DIR is the config's server.directory (created by `smtpkit init`); the files belong to its
    owner. For testing and a first start: senders on port 25
    encrypt to a self-signed certificate too; replace it with a CA-signed one later (same
    paths, then SIGHUP to `smtpkit serve`).
    """
    cfg = app.config
    directory = cfg.server.directory
    if not directory.is_dir():
        raise click.ClickException(f"no data folder at {directory} (run `smtpkit init` first)")
    folder = directory / "tls"
    # The files are the data folder owner's, as the server's workers (which run as that user)
    # read them again on SIGHUP; the config update below stays root's.
    # cryptography loads its OpenSSL backend on first use. Load it now, as the user who
    # started the command: the files are written as the data folder's owner, who may be
    # unable to read the folder Python is installed in (root's home, for one). Here, not at
    # import: every other command would pay for it.
    import cryptography.hazmat.backends.openssl.backend  # noqa: F401

    with as_owner(directory):
        made = write_self_signed(
            folder / "cert.pem",
            folder / "key.pem",
            hostname or cfg.server.hostname,
            days=days,
            key_type=cast(KeyType, key_type),
            force=force,
        )
    until = made.not_after.strftime("%Y-%m-%d")
    click.echo(f"Wrote {made.certificate}: self-signed for {made.hostname}, until {until}")
    click.echo(f"Wrote {made.key}: {made.key_type}, mode 0600")
    click.echo(f"SHA-256 fingerprint: {made.sha256}")
    _enable(cfg, made.certificate, made.key)


def _config_path(cfg: Config, path: Path) -> str:
    """``path`` as the config should name it: relative to the config's folder when inside it."""
    base = cfg.path.resolve().parent
    try:
        return path.resolve().relative_to(base).as_posix()
    except ValueError:
        return str(path.resolve())


def _enable(cfg: Config, certificate: Path, key: Path) -> None:
    """Point ``[tls]`` at the new files, unless it already names some."""
    if cfg.tls is not None:
        if (cfg.tls.certificate.resolve(), cfg.tls.key.resolve()) == (
            certificate.resolve(),
            key.resolve(),
        ):
            click.echo("A running `smtpkit serve` loads the new certificate on SIGHUP.")
        else:
            click.echo(
                f"Note: [tls] in {cfg.path} names {cfg.tls.certificate} and {cfg.tls.key}, "
                "not these files: it is left as it is."
            )
        return
    section = {"certificate": _config_path(cfg, certificate), "key": _config_path(cfg, key)}

    def add_tls(data: dict[str, Any]) -> None:
        data["tls"] = section  # replaces an empty [tls] table, the only kind that loads as None

    if not update_config(cfg.path, add_tls):
        click.echo(f"Note: add to {cfg.path} to offer STARTTLS:")
        for line in tomli_w.dumps({"tls": section}).splitlines():
            click.echo(f"  {line}")
        return
    click.echo(f"Added [tls] to {cfg.path}: restart `smtpkit serve` to offer STARTTLS.")
