"""``smtpkit queue``: the outbound queue, as the data folder holds it (server running or not).

Changes (flush, delete, bounce) go through the queue runner when a server runs (it holds the
queue's lock), and are made directly on the files when none does: see
``smtpkit.outbound.control``. ``import`` moves another node's entries in, whether or not a
server runs (``smtpkit.outbound.transfer``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from smtpkit.commands import App, pass_app, reports_errors
from smtpkit.config import Config
from smtpkit.delivery.queue import (
    QUEUE_FOLDER,
    QueueEntry,
    format_time,
    read_entry,
    read_queue,
    set_node,
)
from smtpkit.journal import Journal, escape_unprintable
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


# What an envelope holds came in part from elsewhere: a remote server's reply (last_error,
# decoded with "replace", so any control character survives), the host that gave it, a
# client's addresses (an ENVID is printable ASCII, checked when read). The readable output
# shows them through the journal's escaping (ARCHITECTURE.md, "Invariants": everything a
# client says is data), so that no escape sequence reaches the admin's terminal; --json
# escapes them as JSON does.
_shown = escape_unprintable


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
        click.echo(f"{_shown(e.id)}  {_age(e.age):>6}  {e.size:>8}  <{_shown(e.sender)}>")
        for r in e.recipients:
            error = f"  ({_shown(r.last_error)})" if r.last_error else ""
            click.echo(f"    {_shown(r.state):<9} {_shown(r.address)}{error}")
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
    click.echo(f"id:        {_shown(e.id)}")
    click.echo(f"sender:    <{_shown(e.sender)}>")
    click.echo(f"arrived:   {format_time(e.arrived)} ({_age(e.age)} ago)")
    click.echo(f"size:      {e.size}")
    if e.dsn.ret or e.dsn.envid:
        click.echo(f"dsn:       RET={e.dsn.ret or '-'} ENVID={e.dsn.envid or '-'}")
    for r in e.recipients:
        click.echo(f"recipient: <{_shown(r.address)}>")
        click.echo(f"  state:        {_shown(r.state)}")
        click.echo(f"  attempts:     {r.attempts}")
        if r.waiting:
            click.echo(f"  next attempt: {format_time(r.next_attempt)}")
        if r.remote:
            click.echo(f"  remote:       {_shown(r.remote)}")
        if r.last_error:
            click.echo(f"  last error:   {_shown(r.last_error)}")
        notify = r.dsn.to_dict()["notify"]
        if notify is not None:
            click.echo(f"  notify:       {','.join(notify)}")


def _report_signature(config: Config) -> Callable[[bytes], bytes] | None:
    """The DKIM signing of the reports this command posts, as a running server signs its
    own (server/checks.py): the libraries loaded as the user who ran the command, the keys
    read as the data folder's owner. None without keys."""
    from smtpkit.server.checks import load_mailauth, signature

    signer = load_mailauth(config)
    return functools.partial(signature, signer) if signer is not None else None


def _change(app: App, request: Request) -> bool:
    """Carry out ``request`` here when no server runs (True); else hand it to the running
    server's queue runner and wait (False)."""
    from smtpkit.outbound.admin import carry_out  # the report machinery, only when needed

    folder = _folder(app)
    set_node(app.config.server.hostname)  # reports queued here are named after this node
    sign = _report_signature(app.config) if request.operation == "bounce" else None
    # Run by root on a service user's data folder: every file written is the owner's.
    with as_owner(app.config.server.directory):
        folder.mkdir(mode=0o700, exist_ok=True)
        with queue_lock(folder) as mine:
            if mine:
                carry_out(app.config, request, sign=sign)
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


@command.command("import")
@click.argument("source", metavar="DIR", type=click.Path(path_type=Path, file_okay=False))
@pass_app
@reports_errors
def import_(app: App, source: Path) -> None:
    """Move a dead node's queue (its DIR/queue, or its data folder DIR) into this one.

    Each complete entry is made durable here before it is removed there; an id already
    taken here gets a new name; what is not a complete entry stays in DIR. A running
    server sends what arrives at once; otherwise it does when it starts.
    """
    from smtpkit.outbound.transfer import import_queue

    if not any(source.glob("*.env")) and (source / QUEUE_FOLDER).is_dir():
        source = source / QUEUE_FOLDER  # the dead node's data folder was given
    folder = _folder(app)
    directory = app.config.server.directory
    with as_owner(directory):
        folder.mkdir(mode=0o700, exist_ok=True)
        report = import_queue(source, folder)
        journal = Journal(app.config.server.journal_dir)
        try:
            for done in report.imported:
                journal.write("imported", done.new_id, "-", id=done.new_id, source=str(source),
                              source_id=done.old_id, already=done.already)  # fmt: skip
            for skipped in report.skipped:
                journal.write("import_skipped", "-", "-", source=str(source),
                              name=skipped.name, reason=skipped.reason)  # fmt: skip
        finally:
            journal.close()
    count = len(report.imported)
    click.echo(f"Imported {count} message{'s' if count != 1 else ''} from {source} into {folder}.")
    for done in report.imported:
        waiting = f"{done.waiting} recipient{'s' if done.waiting != 1 else ''} waiting"
        if done.already:
            click.echo(f"  {done.new_id}  (already here from an earlier import; {waiting})")
        elif done.new_id != done.old_id:
            click.echo(f"  {done.old_id} -> {done.new_id}  (renamed: the id was taken; {waiting})")
        else:
            click.echo(f"  {done.new_id}  ({waiting})")
    if report.ignored:
        click.echo(
            f"Ignored {len(report.ignored)} message file(s) without an envelope: never "
            "acknowledged (their node stopped while receiving them), so owed to nobody."
        )
    if report.skipped:
        click.echo(f"Left {len(report.skipped)} in {source}:")
        for skipped in report.skipped:
            click.echo(f"  {skipped.name}: {skipped.reason}")
        raise click.ClickException(
            f"{len(report.skipped)} file(s) in {source} were not imported (see above)"
        )
