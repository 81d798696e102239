"""The ``smtpkit`` command line: the root group and the one App object shared by subcommands.

Errors become messages only here, at the command-line boundary: library code raises
``SmtpkitError`` and never prints or exits; ``reports_errors`` turns it into ``Error: <one
line>`` and exit status 1.

Exit status: 2 when the command line itself is wrong (an unknown option, a bad option value, a
malformed argument, or one that can never be valid here: an address outside the configured
domains, the same address twice, an --owner that is no user on this system); 1 when a sound
request cannot be carried out in the current state (no or a bad config file, a user that
already exists or does not, a mailbox still in use, a folder that is not empty, a failed
write).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import ParamSpec, TypeVar

import click

from smtpkit import __version__
from smtpkit.config import CONFIG_ENV, Config, default_config_path, load_config
from smtpkit.errors import SmtpkitError
from smtpkit.signals import release_server_signals

__all__ = ["App", "cli", "main", "pass_app", "reports_errors"]

P = ParamSpec("P")
R = TypeVar("R")


class App:
    """Per-invocation state: where the config is, and the config once loaded.

    ``config_given`` tells whether the path was chosen (``-c`` or ``$SMTPKIT_CONFIG``) rather
    than the default ``./smtpkit.toml``: ``smtpkit init`` writes the config there then.
    """

    def __init__(self, config_path: Path | None) -> None:
        self.config_given = config_path is not None
        self.config_path = config_path if config_path is not None else default_config_path()
        self._config: Config | None = None

    def use_config(self, path: Path) -> None:
        """A ``-c`` given after the subcommand: it wins over the one before."""
        self.config_given = True
        self.config_path = path
        self._config = None

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.config_path)
        return self._config


def reports_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn ``SmtpkitError`` into click's ``Error: ...`` line and exit status 1."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except SmtpkitError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper


pass_app = click.make_pass_decorator(App)

_CONFIG_HELP = f"Config file [default: ${CONFIG_ENV} or ./smtpkit.toml]."


def _config_after_subcommand(
    ctx: click.Context, param: click.Parameter, value: Path | None
) -> None:
    if value is not None:
        app = ctx.find_object(App)
        if app is not None:  # always there: the root group made it before parsing this
            app.use_config(value)


def config_option() -> click.Option:
    """``-c/--config`` for a subcommand, so that ``smtpkit user add -c FILE ...`` works as
    well as ``smtpkit -c FILE user add ...``. It reads no environment variable: the root
    option already did, and a ``-c`` typed after the subcommand must win over it."""
    return click.Option(
        ["-c", "--config", "_config_path"],
        type=click.Path(dir_okay=False, path_type=Path),
        expose_value=False,
        callback=_config_after_subcommand,
        help=_CONFIG_HELP,
    )


#: Each subcommand's module, imported only when that command runs (or is listed by
#: ``--help``): a cron job's ``smtpkit user list`` does not load the server, DNS and mail
#: authentication code of every other command.
_SUBCOMMANDS: dict[str, str] = {
    name: f"smtpkit.commands.{name}"
    for name in (
        "init", "user", "serve", "status", "reload", "journal", "mx", "dns", "tls", "dkim",
        "check", "queue", "sendmail",
    )
}  # fmt: skip


class _LazyGroup(click.Group):
    """The root group: finds a subcommand's module by its name and imports it then."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *_SUBCOMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in _SUBCOMMANDS:
            module = importlib.import_module(_SUBCOMMANDS[cmd_name])
            command: click.Command = module.command
            _with_config_option(command)
            self.add_command(command, cmd_name)
        return self.commands.get(cmd_name)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar=CONFIG_ENV,
    help=_CONFIG_HELP,
)
@click.version_option(__version__, prog_name="smtpkit")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None) -> None:
    """smtpkit: a small, durable mail server for your own domain."""
    if ctx.invoked_subcommand != "serve":
        # Held back by the entry point in case this was `serve`: every other command keeps
        # the default actions (a hangup ends `journal tail -f`, for example).
        release_server_signals()
    ctx.obj = App(config_path)


def _with_config_option(command: click.Command) -> None:
    """Give ``command`` and every subcommand below it the shared ``-c/--config``: added
    here, in one place, so that no command can miss it or carry a copy that drifts."""
    command.params.append(config_option())
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _with_config_option(sub)


def main() -> None:
    cli(prog_name="smtpkit")
