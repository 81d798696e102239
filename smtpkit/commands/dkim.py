"""``smtpkit dkim keygen|list``: the DKIM keys of the configured domains, and the TXT records
that publish them.

A key is a file, ``DIR/dkim/DOMAIN/SELECTOR.key`` (``smtpkit.mailauth.keys``), written as the
data folder's owner, who signs with it. Every key of a domain signs that domain's mail; to
retire one, remove its file (and, a few days later, its record).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import click
from cryptography.hazmat.primitives.asymmetric import rsa

from smtpkit.addresses import normalize_domain
from smtpkit.commands import App, pass_app, reports_errors
from smtpkit.config import Config
from smtpkit.errors import UserError
from smtpkit.mailauth.keys import (
    ALGORITHMS,
    KEYS_FOLDER,
    RSA_BITS,
    DkimKey,
    generate,
    load_keys,
    parse_selector,
)
from smtpkit.owner import as_owner

__all__ = ["command", "default_selector", "zone_line"]

# RFC 1035 3.3.14: a TXT record is a list of character-strings of at most 255 octets each;
# a DKIM verifier joins them without a separator (RFC 6376 3.6.2.2).
_MAX_STRING = 255


def default_selector(today: datetime | None = None) -> str:
    """``sYYYYMM`` of the current month (UTC): a key made later gets a name of its own, so
    rotating keys never means replacing a record that mail in transit still needs."""
    return f"s{(today or datetime.now(UTC)):%Y%m}"


def zone_line(name: str, text: str) -> str:
    """The record as one zone-file line (RFC 1035 5.1), its text split into quoted strings
    of at most 255 bytes."""
    data = text.encode("ascii")
    parts = [data[i : i + _MAX_STRING] for i in range(0, len(data), _MAX_STRING)] or [b""]
    quoted = " ".join(
        '"' + part.decode("ascii").replace("\\", "\\\\").replace('"', '\\"') + '"' for part in parts
    )
    return f"{name}. IN TXT {quoted}"


def _describe(key: DkimKey) -> str:
    """``rsa 2048`` or ``ed25519``: the size is worth telling for RSA only."""
    if isinstance(key.private, rsa.RSAPrivateKey):
        return f"rsa {key.private.key_size}"
    return key.algorithm


def _check_domain(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """A DOMAIN that is no domain name at all is a usage error before the config is read."""
    try:
        return normalize_domain(value)
    except UserError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


def _check_selector(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return parse_selector(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


def _data_folder(cfg: Config) -> Path:
    directory = cfg.server.directory
    if not directory.is_dir():
        raise click.ClickException(f"no data folder at {directory} (run `smtpkit init` first)")
    # cryptography loads its OpenSSL backend on first use: load it as the user who started
    # the command, before acting as the data folder's owner, who may be unable to read the
    # folder Python is installed in (see `smtpkit tls self-signed`).
    import cryptography.hazmat.backends.openssl.backend  # noqa: F401

    return directory


@click.group("dkim")
def command() -> None:
    """DKIM keys: outgoing mail is signed with every key of its From: domain."""


@command.command("keygen")
@click.argument("domain", callback=_check_domain)
@click.option(
    "--selector",
    callback=_check_selector,
    help="The key's name in DNS (SELECTOR._domainkey.DOMAIN) [default: s + this month, "
    "as s202611].",
)
@click.option(
    "--type",
    "key_type",
    type=click.Choice(ALGORITHMS),
    default="rsa",
    show_default=True,
    help=f"rsa ({RSA_BITS} bits) or ed25519 (RFC 8463; not every receiver verifies it yet: "
    "make it in addition to an RSA key).",
)
@pass_app
@reports_errors
def keygen(app: App, domain: str, selector: str | None, key_type: str) -> None:
    """Make a DKIM key for DOMAIN, one of server.domains, and print its TXT record.

    The key goes to DIR/dkim/DOMAIN/SELECTOR.key (mode 0600), written as the data folder's
    owner. The default selector names the month (s202611): a key made next month, to replace
    this one, gets a new name and this one's record can stay published until mail signed
    with it has been delivered. An existing selector is never overwritten.

    The record is printed as one zone-file line, its text split into quoted strings of at
    most 255 bytes (an RSA key's text is longer); a DNS provider's web form wants the text
    alone, joined: `smtpkit dkim list --json` gives it as "txt".
    """
    cfg = app.config
    if domain not in cfg.server.domains:
        raise click.BadParameter(
            f"{domain} is not one of server.domains in {cfg.path} "
            f"({', '.join(cfg.server.domains)})",
            ctx=click.get_current_context(),
            param_hint="'DOMAIN'",
        )
    directory = _data_folder(cfg)
    selector = selector or default_selector()
    try:
        with as_owner(directory):
            key = generate(directory, domain, selector, key_type)
    except FileExistsError as exc:
        if exc.errno is None:  # generate's own: the selector has a key, maybe a record too
            raise click.ClickException(f"{exc} (choose another --selector)") from None
        raise click.ClickException(f"cannot write {exc.filename}: {exc.strerror}") from None
    except OSError as exc:
        where = exc.filename or directory / KEYS_FOLDER / domain
        raise click.ClickException(f"cannot write {where}: {exc.strerror or exc}") from None
    click.echo(f"Wrote {key.path}: {_describe(key)}, mode 0600")
    click.echo(f"Publish this TXT record so that receivers can verify mail from {domain}:")
    click.echo(zone_line(key.record_name, key.txt_record()))
    click.echo("Once it is published, `smtpkit dns check` verifies it.")


@command.command("list")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='One JSON object per key, with its TXT record\'s text (joined) as "txt".',
)
@pass_app
@reports_errors
def list_(app: App, as_json: bool) -> None:
    """List the DKIM keys: domain, selector, type, file and the name of the record.

    With no keys, one line says so (on stderr with --json); the exit status is 0. A key file
    that cannot be read, as the data folder's owner who signs with it, is an error.
    """
    cfg = app.config
    directory = _data_folder(cfg)
    with as_owner(directory):
        found = load_keys(directory)
    keys = [key for domain in sorted(found) for key in found[domain]]
    if not keys:
        notice = f"No DKIM keys yet: make one with `smtpkit dkim keygen {cfg.server.domains[0]}`."
        click.echo(notice, err=as_json)  # --json keeps stdout to JSON lines
        return
    if as_json:
        for key in keys:
            record = {
                "domain": key.domain,
                "selector": key.selector,
                "type": key.algorithm,
                "file": str(key.path),
                "record": key.record_name,
                "txt": key.txt_record(),
            }
            click.echo(json.dumps(record))
        return
    rows = [("DOMAIN", "SELECTOR", "TYPE", "FILE", "RECORD")]
    rows += [(k.domain, k.selector, k.algorithm, str(k.path), k.record_name) for k in keys]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [f"{cell:<{width}}" for cell, width in zip(row, widths, strict=False)]
        click.echo("  ".join([*cells, row[-1]]))  # the last column unpadded
