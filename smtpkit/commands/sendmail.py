"""``smtpkit sendmail``: the same program as ``smtpkit-sendmail``, as a subcommand.

sendmail's options are not click's (``-FCronDaemon`` would read as a cluster of flags, and
options may follow the recipients), so this command parses nothing itself: every argument
goes, as given, to the one parser and implementation in ``smtpkit.sendmail_main``. Its exit
status follows sysexits.h, like every sendmail's, not the 0/1/2 of the other commands.
"""

from __future__ import annotations

import sys

import click

from smtpkit.commands import App, pass_app
from smtpkit.config import CONFIG_ENV
from smtpkit.sendmail_main import run

__all__ = ["command"]


class _Verbatim(click.Command):
    """A command whose arguments all reach its callback untouched, as ``argv``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.params["argv"] = tuple(args)
        return []


@click.command("sendmail", cls=_Verbatim, add_help_option=False)
@pass_app
def command(app: App, argv: tuple[str, ...]) -> None:
    """Send a message from standard input (sendmail's options; --help)."""
    status = run(
        argv,
        prog="smtpkit sendmail",
        default_config=app.config_path,
        stdin=sys.stdin.buffer,
        stdout=sys.stdout,
        stderr=sys.stderr,
        config_default=f"-c, ${CONFIG_ENV}, else ./smtpkit.toml",
    )
    click.get_current_context().exit(status)
