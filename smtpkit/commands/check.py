"""``smtpkit check``: what would stop mail, found without changing anything."""

from __future__ import annotations

import json

import click

from smtpkit.check import Problem, check_config, count_mailboxes
from smtpkit.commands import App, pass_app, reports_errors
from smtpkit.errors import ConfigError

__all__ = ["command"]


def _count(n: int, what: str, plural: str) -> str:
    return f"{n} {what if n == 1 else plural}"


@click.command("check")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='One JSON object per problem, {"fatal": ..., "note": ..., "text": ...}; nothing '
    "when there is none.",
)
@pass_app
@reports_errors
def command(app: App, as_json: bool) -> None:
    """Check the config and the data folder: one line per problem.

    That the config loads; that the data folder and all in it belong to its owner (the
    user smtpkit runs as), who can write where mail goes, with nothing writable by group
    or others and no mail readable by others; that every Maildir has real tmp/, new/ and
    cur/ folders and no symbolic links; that the TLS certificate and key are readable, a
    pair, in date and for server.hostname; that every alias and each domain's postmaster
    reach a mailbox; the listen addresses and server.hostname.

    Changes nothing, binds nothing and asks no DNS (`smtpkit mx --check` tells whether
    your MX records lead here). Exit status 0 when there is no problem (notes do not
    count), 1 when there is one.
    """
    try:
        config = app.config
    except ConfigError as exc:
        _show([Problem(True, str(exc))], as_json)
        click.get_current_context().exit(1)
    problems = check_config(config)
    _show(problems, as_json)
    if any(not problem.note for problem in problems):
        click.get_current_context().exit(1)
    if not as_json:
        mailboxes = count_mailboxes(config)
        click.echo(
            f"ok: {app.config_path}: no problems ({_count(mailboxes, 'mailbox', 'mailboxes')}, "
            f"{_count(len(config.aliases), 'alias', 'aliases')})"
        )


def _show(problems: list[Problem], as_json: bool) -> None:
    for problem in problems:
        if as_json:
            line = {"fatal": problem.fatal, "note": problem.note, "text": problem.text}
            click.echo(json.dumps(line))
        else:
            click.echo(f"{'note' if problem.note else 'error'}: {problem.text}")
