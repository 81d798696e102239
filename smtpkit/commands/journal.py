"""``smtpkit journal tail``: read the journal, readable or as raw JSON lines."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import click

from smtpkit.commands import App, pass_app, reports_errors
from smtpkit.journal import escape_unprintable, follow, lines_since, position, render, tail

__all__ = ["command"]

DEFAULT_COUNT = 20
_AGE = re.compile(r"(\d{1,9})([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def _parse_since(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    """``--since``: an age (``30m``, ``1h``, ``2d``) or a date in UTC (``2026-11-30``,
    ``2026-11-30T04:00``; an explicit offset is converted)."""
    if value is None:
        return None
    text = value.strip()
    age = _AGE.fullmatch(text)
    try:
        if age is not None:
            return datetime.now(UTC) - timedelta(**{_UNITS[age[2]]: int(age[1])})
        when = datetime.fromisoformat(text)
    except (ValueError, OverflowError):
        raise click.BadParameter(
            f"{text!r} is neither an age such as 30m, 1h or 2d nor a UTC date such as "
            "2026-11-30 or 2026-11-30T04:00",
            ctx,
            param,
        ) from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


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
    metavar="N",
    type=click.IntRange(min=0),
    help=f"How many of the last events to show [default: {DEFAULT_COUNT}; with --since: "
    "all since then].",
)
@click.option(
    "--since",
    "start",
    metavar="TIME",
    callback=_parse_since,
    help="Only events at or after TIME: an age (30m, 1h, 2d) or a UTC date (2026-11-30, "
    "2026-11-30T04:00). With -n N: the last N of those.",
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
def tail_(app: App, count: int | None, start: datetime | None, keep: bool, as_json: bool) -> None:
    """Show the last events across the hour files, oldest first.

    With no events to show, one line says so (on stderr with --json); the exit status is 0.
    """
    directory = app.config.server.journal_dir
    if not directory.is_dir():
        raise click.ClickException(f"no journal folder at {directory}")
    # One snapshot of the end: tail prints up to it and follow goes on from it, so no line
    # written in between is lost or printed twice.
    at = position(directory)
    lines: Iterable[str]
    if start is None:
        lines = tail(directory, DEFAULT_COUNT if count is None else count, at)
    elif count is None:
        lines = lines_since(directory, start, at)
    else:
        lines = tail(directory, count, at, since=start)
    shown = 0
    for line in lines:
        click.echo(_show(line, as_json))
        shown += 1
    if shown == 0 and count != 0:
        if at[0] is None or start is None:
            notice = f"No journal events yet in {directory}."
        else:
            notice = f"No journal events since {start:%Y-%m-%dT%H:%M:%S}Z in {directory}."
        click.echo(notice, err=as_json)  # --json keeps stdout to JSON lines
    if keep:
        try:
            for line in follow(directory, at):
                click.echo(_show(line, as_json))
        except KeyboardInterrupt:
            pass
