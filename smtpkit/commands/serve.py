"""``smtpkit serve``: run the receiving server in the foreground until SIGTERM or SIGINT."""

from __future__ import annotations

import os
import pwd
import sys

import click

from smtpkit.check import check_config
from smtpkit.commands import App, pass_app, reports_errors
from smtpkit.owner import Owner, owner_of
from smtpkit.pidfile import acquire_pid_file
from smtpkit.server.listener import bind_all
from smtpkit.server.server import make_tls_contexts, serve
from smtpkit.signals import defer_server_signals

__all__ = ["command"]


def _my_name() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


@click.command("serve")
@click.option("--quiet", is_flag=True, help="Do not echo journal events to stderr.")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    help="Worker processes [default: server.workers, else the number of CPUs].",
)
@pass_app
@reports_errors
def command(app: App, quiet: bool, workers: int | None) -> None:
    """Receive mail for the configured domains (stops cleanly on SIGTERM/SIGINT)."""
    # Until the server's handlers exist, a SIGHUP must wait rather than kill (the entry
    # point already did this when started as `smtpkit serve`).
    defer_server_signals()
    # Files and folders the server creates are never readable by others, whatever umask
    # the shell or unit left (each also gets an explicit mode where it is made).
    os.umask(0o027)
    config = app.config
    if not config.server.users_dir.is_dir():
        raise click.ClickException(
            f"no users folder at {config.server.users_dir} (run `smtpkit init` first)"
        )
    owner = owner_of(config.server.directory)
    as_root = os.geteuid() == 0
    # Started by root with the data folder given to a service user (`init --owner`): bind,
    # read the certificate, then run the workers as that user (root stays, supervising).
    run_as = owner if as_root and not owner.is_root else None
    # The checks of `smtpkit check`, for the user the workers run as: only what stops mail
    # from being stored (users' Maildirs, the spool, the journal, the queue, the maildrop)
    # or the start itself (the pid file) stops the start, before anything is bound; the
    # rest is said once here, as `check` would. Listen addresses that cannot all be bound
    # never get here: the config loader refuses them.
    runs_as = None if as_root else Owner(os.geteuid(), os.getegid(), _my_name())
    problems = check_config(config, runs_as=runs_as)
    fatal = [problem.text for problem in problems if problem.fatal]
    for text in fatal[1:]:
        click.echo(f"Error: {text}", err=True)
    if fatal:
        raise click.ClickException(fatal[0])
    # A broken certificate is one error line before anything starts.
    tls = make_tls_contexts(config.tls) if config.tls is not None else None
    sockets = bind_all(config.server.listen)
    # Bound: now the data folder is claimed, before anything in it is written. A server
    # already running for it stops this one here (on its port, bind_all already did).
    pid_file = acquire_pid_file(config.server.directory)
    count = workers or config.server.workers
    where = ", ".join(str(a) for a in config.server.listen)
    domains = ", ".join(config.server.domains)
    who = owner.name if run_as is not None or not as_root else "root"
    click.echo(f"smtpkit: receiving for {domains} on {where} ({count} workers, as {who})", err=True)
    for problem in problems:
        kind = "note" if problem.note else "warning"
        click.echo(f"smtpkit: {kind}: {problem.text}", err=True)
    echo = None if quiet else sys.stderr

    def log(text: str) -> None:
        click.echo(f"smtpkit: {text}", err=True)

    try:
        status = serve(config, sockets, workers=count, echo=echo, tls=tls, log=log, run_as=run_as)
    finally:
        pid_file.release()
    if status != 0:
        raise click.ClickException("workers kept failing; see the messages above")
