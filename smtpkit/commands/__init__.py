"""The ``smtpkit`` command line: the root group and the one App object shared by subcommands.

Library errors (``SmtpkitError``) become ``Error: <one line>`` and exit status 1 here and only
here (DESIGN convention 11); click's usage errors exit 2.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import click

from smtpkit import __version__
from smtpkit.config import CONFIG_ENV, Config, default_config_path, load_config
from smtpkit.errors import SmtpkitError
from smtpkit.signals import release_server_signals

__all__ = ["App", "cli", "main", "pass_app", "reports_errors"]

P = ParamSpec("P")
R = TypeVar("R")


class App:
    """Per-invocation state: where the config is, and the config once loaded."""

    def __init__(self, config_path: Path | None) -> None:
        self.config_path = config_path if config_path is not None else default_config_path()
        self._config: Config | None = None

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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar=CONFIG_ENV,
    help=f"Config file [default: ${CONFIG_ENV} or ./smtpkit.toml].",
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


def _register() -> None:
    from smtpkit.commands import init, journal, mx, serve, tls, user

    for module in (init, user, serve, journal, mx, tls):
        command: Any = module.command
        cli.add_command(command)


_register()


def main() -> None:
    cli(prog_name="smtpkit")
