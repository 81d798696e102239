"""``smtpkit journal tail``: read the journal, readable or as raw JSON lines."""

from __future__ import annotations

import json

import click

from smtpkit.commands import App, pass_app, reports_errors
from smtpkit.journal import escape_unprintable, follow, position, render, tail

__all__ = ["command"]


@click.group("journal")
def command() -> None:
    """Read the server's journal (one JSON line per event, one file per hour)."""


def _show(line: str, as_json: bool) -> str:
    # Lines written before the journal escaped everything may hold raw control characters.
    if as_json:
        return escape_unprintable(line)
    try:
        record = json.loads(line, strict=False)  # strict=False: raw controls inside strings
    except ValueError:
        return escape_unprintable(line)
    return render(record) if isinstance(record, dict) else escape_unprintable(line)


@command.command("tail")
@click.option(
    "-n",
    "count",
    default=20,
    show_default=True,
    type=click.IntRange(min=0),
    help="How many of the last events to show.",
)
@click.option("-f", "--follow", "keep", is_flag=True, help="Keep printing new events.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the JSON lines (characters that are not printable as \\uXXXX escapes).",
)
@pass_app
@reports_errors
def tail_(app: App, count: int, keep: bool, as_json: bool) -> None:
    """Show the last events across the hour files."""
    directory = app.config.server.journal_dir
    if not directory.is_dir():
        raise click.ClickException(f"no journal folder at {directory}")
    # One snapshot of the end: tail prints up to it and follow goes on from it, so no line
    # written in between is lost or printed twice.
    at = position(directory)
    for line in tail(directory, count, at):
        click.echo(_show(line, as_json))
    if keep:
        try:
            for line in follow(directory, at):
                click.echo(_show(line, as_json))
        except KeyboardInterrupt:
            pass
