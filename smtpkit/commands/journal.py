"""``smtpkit journal tail``, ``stats`` and ``prune``: read the journal, readable or as raw JSON
lines; count what it says; remove old hour files."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click

from smtpkit.commands import App, pass_app, reports_errors
from smtpkit.journal import escape_unprintable, follow, lines_since, position, render, tail
from smtpkit.journalstats import REASONS, Hour, Stats, compute, expired
from smtpkit.owner import as_owner

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


# --- stats ------------------------------------------------------------------------------------
def _now() -> datetime:
    """The end of a span and the clock of prune's cut-off: one function, so that tests can
    hold the clock."""
    return datetime.now(UTC)


def _when(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC"


def _span(stats: Stats) -> str:
    return f"from {stats.start:%Y-%m-%d %H:%M} to {_when(stats.end)}"


Plotter = Callable[[Stats, Path], None]

# One colour per reason, the same in every chart; green is the accepted messages' alone.
_COLOURS = {
    "relay": "#d62728",
    "unknown_user": "#ff7f0e",
    "size": "#8c564b",
    "bare_lf": "#e377c2",
    "policy": "#9467bd",
    "blocklisted": "#393b79",
    "spf": "#bcbd22",
    "dmarc": "#17becf",
    "spam": "#1f77b4",
    "limits": "#7f7f7f",
    "other": "#c7c7c7",
}


def _plotter() -> Plotter:
    """The chart writer, imported only for --plot (and before any counting, so that a
    missing matplotlib is said at once): it is an optional extra, and importing it takes
    longer than counting a day of a small server's journal."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        raise click.ClickException(
            "--plot needs matplotlib: install it where smtpkit is (pip install 'smtpkit[plot]')"
        ) from None

    def plot(stats: Stats, path: Path) -> None:
        # A Figure on an Agg canvas of its own, not pyplot: no global state, no display.
        hours = stats.hours
        figure = Figure(figsize=(max(8.0, 0.4 * len(hours) + 3.0), 4.8), dpi=100)
        FigureCanvasAgg(figure)
        axes = figure.add_subplot()
        where = list(range(len(hours)))
        width = 0.4
        left = [x - width / 2 for x in where]
        right = [x + width / 2 for x in where]
        axes.bar(left, [h.accepted for h in hours], width, label="accepted", color="#2ca02c")
        totals = stats.total().refused
        bottom = [0] * len(hours)
        for reason in REASONS:
            if not totals[reason]:
                continue
            counts = [h.refused[reason] for h in hours]
            colour = _COLOURS.get(reason, "#000000")
            label = f"refused: {reason}"
            axes.bar(right, counts, width, bottom=bottom, label=label, color=colour)
            bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
        step = max(1, -(-len(hours) // 24))  # at most 24 labels, however long the span
        axes.set_xticks(where[::step])
        axes.set_xticklabels(
            [f"{h.start:%m-%d %H}h" for h in hours[::step]], rotation=45, ha="right"
        )
        axes.yaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_xlabel("hour (UTC)")
        axes.set_ylabel("messages")
        axes.set_title(f"Messages per hour, {_span(stats)}", fontsize="medium")
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
        figure.tight_layout()
        figure.savefig(path, format="png")

    return plot


def _reasons(counts: Counter[str]) -> str:
    return ", ".join(f"{reason} {counts[reason]}" for reason in REASONS if counts[reason])


def _why(hour: Hour) -> str:
    messages, recipients = _reasons(hour.refused), _reasons(hour.recipients_refused)
    if not messages and not recipients:
        return ""
    return f"{messages or '-'}; {recipients or '-'}"


def _share(hour: Hour) -> str:
    share = hour.tls_share
    return "-" if share is None else f"{share:.0%}"


def _aligned(rows: list[list[str]], left: int = 1) -> list[str]:
    """Columns two spaces apart: the first ``left`` and the last to the left, the numbers
    between them to the right."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    last = len(widths) - 1
    lines = []
    for row in rows:
        cells = [
            cell if i == last else cell.ljust(widths[i]) if i < left else cell.rjust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


def _table(stats: Stats) -> list[str]:
    """The readable report: one row per hour, the top lists, then the totals."""
    header = ["hour (UTC)", "conns", "TLS", "accepted", "refused", "rcpt refused"]
    rows = [[*header, "why (messages; recipients)"]]
    total = stats.total()
    for hour in [*stats.hours, total]:
        label = "total" if hour.start is None else f"{hour.start:%Y-%m-%d %H}:00"
        rows.append(
            [
                label,
                str(hour.connections),
                _share(hour),
                str(hour.accepted),
                str(sum(hour.refused.values())),
                str(sum(hour.recipients_refused.values())),
                _why(hour),
            ]
        )
    lines = [
        f"Journal statistics {_span(stats)} ({stats.files} hour files, {stats.lines} lines)",
        "",
        *_aligned(rows),
    ]
    for title, top in (
        ("Top sender domains (messages accepted)", stats.top_sender_domains()),
        ("Top peer addresses (connections)", stats.top_peers()),
    ):
        lines += ["", f"{title}:"]
        if top:
            lines += _aligned([["", name, str(n), ""] for name, n in top], left=2)
        else:
            lines.append("  none")
    refused = sum(total.refused.values())
    recipients = sum(total.recipients_refused.values())
    lines += [
        "",
        f"Totals: {total.connections} connections, {total.sessions} sessions "
        f"({_share(total)} with TLS), {total.accepted} messages accepted, {refused} refused, "
        f"{recipients} recipients refused.",
    ]
    if refused or recipients:
        reasons = [["Refused by reason:", "messages", "recipients"]]
        for reason in REASONS:
            if total.refused[reason] or total.recipients_refused[reason]:
                counts = [str(total.refused[reason]), str(total.recipients_refused[reason])]
                reasons.append([f"  {reason}", *counts])
        reasons[0].append("")  # the last column is left-aligned: keep the counts out of it
        for row in reasons[1:]:
            row.append("")
        lines += _aligned(reasons)
    return lines


def _journal_dir(app: App) -> Path:
    directory = app.config.server.journal_dir
    if not directory.is_dir():
        raise click.ClickException(f"no journal folder at {directory}")
    return directory


@command.command("stats")
@click.option(
    "--since",
    "start",
    metavar="TIME",
    default="24h",
    show_default=True,
    callback=_parse_since,
    help="Count events at or after TIME: an age (24h, 7d) or a UTC date (2026-11-30, "
    "2026-11-30T04).",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON document: since, until, reasons, hours (one object per hour), "
    "totals, top_sender_domains, top_peers.",
)
@click.option(
    "--plot",
    "chart",
    metavar="FILE.png",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also draw messages accepted and refused per hour (refused stacked by reason) into "
    "a PNG file; needs matplotlib (pip install 'smtpkit[plot]').",
)
@pass_app
@reports_errors
def stats_(app: App, start: datetime | None, as_json: bool, chart: Path | None) -> None:
    """Count connections, messages accepted and refused, recipients refused, TLS, per hour.

    Refusals are sorted into a small closed set of reasons: relay, unknown_user, size,
    bare_lf, policy, blocklisted, spf, dmarc, spam, limits, other. A journal with no hour
    file in the span is said on one line (on stderr with --json); the exit status is 0.
    """
    plot = _plotter() if chart is not None else None
    directory = _journal_dir(app)
    assert start is not None  # --since has a default
    try:
        stats = compute(directory, start, _now())
    except OSError as exc:
        raise click.ClickException(f"cannot read the journal: {exc}") from None
    if as_json:
        click.echo(json.dumps(stats.to_json(), indent=2))
    if not stats.files:
        click.echo(f"No journal files since {_when(stats.start)} in {directory}.", err=as_json)
        return
    if not as_json:
        for line in _table(stats):
            click.echo(line)
    if plot is not None and chart is not None:
        try:
            plot(stats, chart)
        except OSError as exc:
            raise click.ClickException(f"cannot write {chart}: {exc.strerror or exc}") from None
        click.echo(f"Chart written to {chart}.", err=as_json)


# --- prune ------------------------------------------------------------------------------------
_RETENTION = re.compile(r"(\d{1,6})([hd])")


def _parse_retention(ctx: click.Context, param: click.Parameter, value: str) -> timedelta:
    """``--older-than``: whole days or hours, at least one hour: the current hour's file is
    never old enough, and minutes would promise a precision that hour files do not have."""
    text = value.strip()
    found = _RETENTION.fullmatch(text)
    if found is None or int(found[1]) == 0:
        raise click.BadParameter(
            f"{text!r} is not an age of at least 1h such as 30d or 12h", ctx, param
        )
    return timedelta(**{_UNITS[found[2]]: int(found[1])})


def _size(count: int) -> str:
    if count < 1024:
        return f"{count} bytes"
    size = count / 1024
    for unit in ("KiB", "MiB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


@command.command("prune")
@click.option(
    "--older-than",
    "age",
    metavar="AGE",
    required=True,
    callback=_parse_retention,
    help="Remove the hour files whose every event is older than AGE: days or hours "
    "(30d, 12h; at least 1h).",
)
@click.option("--dry-run", is_flag=True, help="Only show what would be removed.")
@pass_app
@reports_errors
def prune(app: App, age: timedelta, dry_run: bool) -> None:
    """Remove old hour files of the journal, never the current hour's, never another file.

    Each file removed (or, with --dry-run, that would be) is shown, then the total; the
    exit status is 0 when nothing is old enough too. Run by root, it removes as the data
    folder's owner.
    """
    directory = _journal_dir(app)
    now = _now()
    cutoff = now - age
    verb = "Would remove" if dry_run else "Removed"
    count = size = 0
    with as_owner(app.config.server.directory):
        try:
            old = expired(directory, cutoff, now)
        except OSError as exc:
            raise click.ClickException(f"cannot read {directory}: {exc.strerror or exc}") from None
        for path, length in old:
            if not dry_run:
                try:
                    path.unlink()
                except FileNotFoundError:
                    continue  # another prune was first
                except OSError as exc:
                    raise click.ClickException(
                        f"cannot remove {path}: {exc.strerror or exc}"
                    ) from None
            click.echo(f"{verb.lower()} {path} ({_size(length)})")
            count += 1
            size += length
    if not count:
        click.echo(f"No hour files older than {_when(cutoff)} in {directory}.")
        return
    files = "hour file" if count == 1 else "hour files"
    click.echo(f"{verb} {count} {files} ({_size(size)}) older than {_when(cutoff)}.")
