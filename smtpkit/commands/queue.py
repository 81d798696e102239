"""``smtpkit queue``: the outbound queue, as the data folder holds it (server running or not).

Changes (flush, delete, bounce) go through the queue runner when a server runs (it holds the
queue's lock), and are made directly on the files when none does: see
``smtpkit.outbound.control``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from smtpkit.commands import App, pass_app, reports_errors
from smtpkit.delivery.queue import QUEUE_FOLDER, QueueEntry, format_time, read_entry, read_queue
from smtpkit.outbound.control import Request, queue_lock, send_request
from smtpkit.owner import as_owner

__all__ = ["command"]


@click.group("queue")
def command() -> None:
    """Show and steer the mail waiting for other domains (DIR/queue)."""


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def _folder(app: App) -> Path:
    return app.config.server.directory / QUEUE_FOLDER


def _as_json(entry: QueueEntry) -> dict[str, Any]:
    data = entry.to_json()
    del data["version"]
    data["age"] = int(entry.age)
    nxt = entry.next_attempt
    data["next_attempt"] = format_time(nxt) if nxt is not None else None
    return data


def _entry(app: App, entry_id: str) -> QueueEntry:
    entry = read_entry(_folder(app), entry_id)
    if entry is None:
        raise click.ClickException(f"no message {entry_id!r} in the queue ({_folder(app)})")
    return entry


@command.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per queued message.")
@pass_app
@reports_errors
def list_(app: App, as_json: bool) -> None:
    """What is queued: id, age, size, sender, and each recipient with its state."""
    entries = read_queue(_folder(app))
    if as_json:
        for e in entries:
            click.echo(json.dumps(_as_json(e), ensure_ascii=True))
        return
    if not entries:
        click.echo("The queue is empty.")
        return
    for e in entries:
        click.echo(f"{e.id}  {_age(e.age):>6}  {e.size:>8}  <{e.sender}>")
        for r in e.recipients:
            error = f"  ({r.last_error})" if r.last_error else ""
            click.echo(f"    {r.state:<9} {r.address}{error}")
    total = len(entries)
    click.echo(f"{total} message{'s' if total != 1 else ''} in the queue.")


@command.command("show")
@click.argument("entry_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="The entry as one JSON object.")
@pass_app
@reports_errors
def show(app: App, entry_id: str, as_json: bool) -> None:
    """One message: its envelope, and each recipient's state, attempts, last reply and
    next try."""
    e = _entry(app, entry_id)
    if as_json:
        click.echo(json.dumps(_as_json(e), ensure_ascii=True))
        return
    click.echo(f"id:        {e.id}")
    click.echo(f"sender:    <{e.sender}>")
    click.echo(f"arrived:   {format_time(e.arrived)} ({_age(e.age)} ago)")
    click.echo(f"size:      {e.size}")
    if e.dsn.ret or e.dsn.envid:
        click.echo(f"dsn:       RET={e.dsn.ret or '-'} ENVID={e.dsn.envid or '-'}")
    for r in e.recipients:
        click.echo(f"recipient: <{r.address}>")
        click.echo(f"  state:        {r.state}")
        click.echo(f"  attempts:     {r.attempts}")
        if r.waiting:
            click.echo(f"  next attempt: {format_time(r.next_attempt)}")
        if r.remote:
            click.echo(f"  remote:       {r.remote}")
        if r.last_error:
            click.echo(f"  last error:   {r.last_error}")
        notify = r.dsn.to_dict()["notify"]
        if notify is not None:
            click.echo(f"  notify:       {','.join(notify)}")


def _change(app: App, request: Request) -> bool:
    """Carry out ``request`` here when no server runs (True); else hand it to the running
    server's queue runner and wait (False)."""
    from smtpkit.outbound.admin import carry_out  # the report machinery, only when needed

    folder = _folder(app)
    # Run by root on a service user's data folder: every file written is the owner's.
    with as_owner(app.config.server.directory):
        folder.mkdir(mode=0o700, exist_ok=True)
        with queue_lock(folder) as mine:
            if mine:
                carry_out(app.config, request)
                return True
        send_request(folder, request)
    return False


@command.command("flush")
@click.argument("entry_id", metavar="[ID]", required=False)
@pass_app
@reports_errors
def flush(app: App, entry_id: str | None) -> None:
    """Try again now: one message, or every waiting one."""
    if entry_id is not None:
        _entry(app, entry_id)
    here = _change(app, Request("flush", entry_id))
    what = f"message {entry_id}" if entry_id else "every waiting message"
    if here:
        click.echo(f"Marked {what} to be tried now; no server is running to try it.")
    else:
        click.echo(f"The server is trying {what} now.")


@command.command("delete")
@click.argument("entry_id", metavar="ID")
@pass_app
@reports_errors
def delete(app: App, entry_id: str) -> None:
    """Remove a message from the queue, telling no one."""
    _entry(app, entry_id)
    _change(app, Request("delete", entry_id))
    click.echo(f"Deleted {entry_id} from the queue.")


@command.command("bounce")
@click.argument("entry_id", metavar="ID")
@pass_app
@reports_errors
def bounce(app: App, entry_id: str) -> None:
    """Give up on a message now: its waiting recipients fail, and the sender gets a
    report."""
    _entry(app, entry_id)
    _change(app, Request("bounce", entry_id))
    click.echo(f"Returned {entry_id} to its sender.")
