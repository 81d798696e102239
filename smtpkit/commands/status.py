"""``smtpkit status``: does ``smtpkit serve`` run for this data folder, and what has it done?

Whether it runs comes from the pid file, verified (``smtpkit.pidfile``): the process holding
the file's lock, and only if its command line is ``smtpkit serve``. A pid file nobody holds
is stale and says nothing about any process, even a live one with that number. Then:

- the pid, the uptime and the workers (its live child processes; a server without a
  supervisor serves in its own process: 1), from ``/proc``;
- the listeners of the config, with their roles (what the server bound when it started,
  unless the config changed since);
- the queue: messages waiting in ``DIR/queue`` (their envelope files, counted, not read);
- the last hour of the journal, counted by event:

  ===========  ===========================================================================
  connections  ``connect`` lines: every session, blocklisted clients included (a client
               turned away at a connection limit has no session and is not counted)
  accepted     ``stored`` lines: messages committed to Maildirs or the queue, from SMTP
               clients and from ``smtpkit-sendmail``
  refused      ``rejected`` lines (a message refused at its final dot, or a dropped file
               refused) plus ``mail`` and ``rcpt`` lines with a code of 400 or more (a
               sender or a recipient refused, for now or for good): each refusal a client
               was told of in a transaction. Refusals before MAIL (a blocklist, HELO, AUTH)
               are not counted.
  deferred     ``deferred`` lines of the queue runner: a recipient of a queued message that
               is to be tried again later (one per recipient and attempt)
  ===========  ===========================================================================

The queue and the journal are shown whether the server runs or not; where they cannot be
read (a user who is neither root nor the data folder's owner), they are shown as unknown and
the exit status still says whether the server runs, for monitoring that runs as such a user.

Exit status, as ``systemctl status`` (the LSB convention for status actions):

====  ===================================================================================
0     smtpkit serve is running for this data folder
1     error: no or a bad config file; a pid file that cannot be read or trusted (a symbolic
      link, a locked one whose holder's command line cannot be read)
2     usage error
3     not running: no pid file, or a stale one (its process is gone, or the process it
      names, or the one that locks it, is not smtpkit serve); LSB's 1 for "dead with a pid
      file" would be an error here, and the stale file is said on the first line instead
====  ===================================================================================
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from smtpkit.commands import App, pass_app, reports_errors
from smtpkit.config import Config
from smtpkit.delivery.queue import QUEUE_FOLDER
from smtpkit.journal import lines_since
from smtpkit.pidfile import Probe, ProcessFacts, State, probe, process_facts

__all__ = ["NOT_RUNNING", "command", "count_journal", "count_queue", "describe_uptime"]

NOT_RUNNING = 3
WINDOW = timedelta(hours=1)
ENVELOPE = ".env"  # one per queued message (delivery/queue.py), written last, renamed into place
_COUNTED = re.compile(r'"event":"(connect|stored|rejected|mail|rcpt|deferred)"')


@dataclass(slots=True)
class Counts:
    connections: int = 0
    accepted: int = 0
    refused: int = 0
    deferred: int = 0


def count_journal(journal_dir: Path, since: datetime) -> Counts:
    """The table of the module docstring, for the events at or after ``since``. Only the
    hour files from ``since``'s hour are read, line by line; a line is parsed only when its
    ``code`` decides (``mail``, ``rcpt``). The journal escapes every quote inside a value,
    so ``"event":"..."`` is found only as the event field itself."""
    counts = Counts()
    for line in lines_since(journal_dir, since):
        found = _COUNTED.search(line)
        if found is None:
            continue
        event = found.group(1)
        if event == "connect":
            counts.connections += 1
        elif event == "stored":
            counts.accepted += 1
        elif event == "rejected":
            counts.refused += 1
        elif event == "deferred":
            counts.deferred += 1
        else:
            try:
                code = json.loads(line).get("code")
            except (ValueError, AttributeError):
                continue
            if isinstance(code, int) and code >= 400:
                counts.refused += 1
    return counts


def count_queue(folder: Path) -> int:
    """Messages in the queue: complete entries, by their envelope files (hidden temporary
    envelopes are not entries yet). No folder: none."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return 0
    return sum(1 for n in names if n.endswith(ENVELOPE) and not n.startswith("."))


def describe_uptime(seconds: float) -> str:
    whole = max(0, int(seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def _stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _server(directory: Path) -> tuple[Probe, ProcessFacts | None]:
    """The verified server and its facts. A server that exits between the probe and the
    reading of ``/proc`` is probed again, so the answer is never a mix of two moments."""
    found = probe(directory)
    for _ in range(3):
        if found.state is not State.RUNNING or found.pid is None:
            return found, None
        facts = process_facts(found.pid)
        if facts is not None:
            return found, facts
        found = probe(directory)
    return found, None


def _report(config: Config, found: Probe, facts: ProcessFacts | None) -> dict[str, Any]:
    now = datetime.now(UTC)
    running = found.state is State.RUNNING
    report: dict[str, Any] = {
        "state": str(found.state),
        "running": running,
        "pid": found.pid if running else None,
        "pid_file": str(found.path),
        "stale": found.reason if found.state is State.STALE else None,
        "started": None,
        "uptime": None,
        "workers": None,
    }
    if running and facts is not None:
        report["started"] = _stamp(now - timedelta(seconds=facts.uptime))
        report["uptime"] = int(facts.uptime)
        report["workers"] = facts.workers
    report["listeners"] = [
        {"address": str(a), "host": a.host, "port": a.port, "role": str(a.role)}
        for a in config.server.listen
    ]
    folder = config.server.directory / QUEUE_FOLDER
    queue: dict[str, Any] = {"folder": str(folder), "messages": None}
    try:
        queue["messages"] = count_queue(folder)
    except OSError as exc:
        queue["error"] = f"cannot read {folder}: {exc.strerror}"
    report["queue"] = queue
    since = now - WINDOW
    hour: dict[str, Any] = {"since": _stamp(since)}
    try:
        counts = count_journal(config.server.journal_dir, since)
    except OSError as exc:
        hour.update(dict.fromkeys(("connections", "accepted", "refused", "deferred")))
        hour["error"] = f"cannot read {exc.filename or config.server.journal_dir}: {exc.strerror}"
    else:
        hour.update(
            connections=counts.connections,
            accepted=counts.accepted,
            refused=counts.refused,
            deferred=counts.deferred,
        )
    report["last_hour"] = hour
    return report


def _headline(report: dict[str, Any]) -> str:
    if report["running"]:
        details = [f"pid {report['pid']}"]
        if report["uptime"] is not None:
            workers = report["workers"]
            details.append(f"up {describe_uptime(report['uptime'])}")
            details.append(f"{workers} worker{'s' if workers != 1 else ''}")
        return f"smtpkit serve is running ({', '.join(details)})"
    kind = "stale pid file" if report["state"] == State.STALE else "no pid file"
    return f"smtpkit serve is not running ({kind} {report['pid_file']})"


def _lines(report: dict[str, Any]) -> list[str]:
    lines = [_headline(report)]
    if report["running"]:
        lines.append(f"  pid file:   {report['pid_file']}")
        if report["started"] is not None:
            lines.append(f"  started:    {report['started']}")
    elif report["stale"] is not None:
        lines.append(f"  stale:      {report['stale']}")
    for i, listener in enumerate(report["listeners"]):
        label = "listen:" if i == 0 else ""
        lines.append(f"  {label:<11} {listener['address']} ({listener['role']})")
    queue = report["queue"]
    if queue["messages"] is None:
        lines.append(f"  queue:      unknown ({queue['error']})")
    else:
        count = queue["messages"]
        lines.append(
            f"  queue:      {count} message{'s' if count != 1 else ''} in {queue['folder']}"
        )
    hour = report["last_hour"]
    if hour["connections"] is None:
        lines.append(f"  last hour:  unknown ({hour['error']})")
    else:
        lines.append(
            f"  last hour:  {hour['connections']} connections, {hour['accepted']} accepted, "
            f"{hour['refused']} refused, {hour['deferred']} deferred"
        )
    return lines


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of lines.")
@pass_app
@reports_errors
def command(app: App, as_json: bool) -> None:
    """Whether smtpkit serve runs for this data folder (exit 0; 3 when not), its pid,
    uptime and workers, the listeners, the queue and the last hour's counts."""
    config = app.config
    found, facts = _server(config.server.directory)
    report = _report(config, found, facts)
    if as_json:
        click.echo(json.dumps(report, ensure_ascii=True))
    else:
        for line in _lines(report):
            click.echo(line)
    click.get_current_context().exit(0 if report["running"] else NOT_RUNNING)
