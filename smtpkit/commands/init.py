"""``smtpkit init``: create a data folder with its config, ``users/`` and ``journal/``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from smtpkit.addresses import normalize_domain
from smtpkit.commands import reports_errors
from smtpkit.config import CONFIG_NAME, parse_config, parse_listen, write_config
from smtpkit.errors import ConfigError, UserError
from smtpkit.fsutil import make_dirs

__all__ = ["command"]


@click.command("init")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--domain", "domains", multiple=True, required=True, help="A local domain (repeatable)."
)
@click.option("--hostname", help="Name in the greeting and Received headers [default: FQDN].")
@click.option(
    "--listen", "listen", multiple=True, help="HOST:PORT to listen on (repeatable) [0.0.0.0:25]."
)
@click.option("--force", is_flag=True, help="Overwrite an existing smtpkit.toml.")
@reports_errors
def command(
    directory: Path,
    domains: tuple[str, ...],
    hostname: str | None,
    listen: tuple[str, ...],
    force: bool,
) -> None:
    """Create DIRECTORY/smtpkit.toml, DIRECTORY/users/ and DIRECTORY/journal/."""
    config_path = directory / CONFIG_NAME
    if config_path.exists() and not force:
        raise click.ClickException(f"{config_path} already exists (use --force to overwrite)")
    try:
        clean_domains = [normalize_domain(d) for d in domains]
    except UserError as exc:
        raise click.BadParameter(str(exc), param_hint="--domain") from None
    for text in listen:
        try:
            parse_listen(text)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--listen") from None
    server: dict[str, Any] = {}
    if hostname:
        server["hostname"] = hostname
    server["listen"] = list(listen) or ["0.0.0.0:25"]
    server["directory"] = "."
    server["domains"] = list(dict.fromkeys(clean_domains))
    data: dict[str, Any] = {"server": server}
    try:
        parse_config(data, config_path)  # what we write must load
        # Explicit modes whatever the umask (under umask 000 mkdir would give 0777).
        make_dirs(directory, 0o750)
        make_dirs(directory / "users", 0o700)
        make_dirs(directory / "journal", 0o750)
        write_config(config_path, data)
    except OSError as exc:
        where = exc.filename or directory
        raise ConfigError(f"cannot create: {exc.strerror}", path=where) from None
    first = server["domains"][0]
    click.echo(f"Created {config_path}, {directory / 'users'}/ and {directory / 'journal'}/.")
    click.echo("Next steps:")
    click.echo(f"  smtpkit -c {config_path} user add you@{first}")
    click.echo(f"  smtpkit -c {config_path} serve")
    click.echo(f"  smtpkit -c {config_path} mx --check")
