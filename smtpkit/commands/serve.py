"""``smtpkit serve``: run the receiving server in the foreground until SIGTERM or SIGINT."""

from __future__ import annotations

import sys

import click

from smtpkit.commands import App, pass_app, reports_errors
from smtpkit.server.listener import bind_all
from smtpkit.server.server import Server

__all__ = ["command"]


@click.command("serve")
@click.option("--quiet", is_flag=True, help="Do not echo journal events to stderr.")
@pass_app
@reports_errors
def command(app: App, quiet: bool) -> None:
    """Receive mail for the configured domains (stops cleanly on SIGTERM/SIGINT)."""
    config = app.config
    if not config.server.users_dir.is_dir():
        raise click.ClickException(
            f"no users folder at {config.server.users_dir} (run `smtpkit init` first)"
        )
    sockets = bind_all(config.server.listen)
    where = ", ".join(str(a) for a in config.server.listen)
    click.echo(f"smtpkit: receiving for {', '.join(config.server.domains)} on {where}", err=True)
    Server(config, sockets, echo=None if quiet else sys.stderr).run()
