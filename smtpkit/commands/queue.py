"""``smtpkit queue``: the outbound queue, as the data folder holds it (server running or not)."""

from __future__ import annotations

import json

import click

from smtpkit.commands import App, pass_app, reports_errors
from smtpkit.delivery.queue import QUEUE_FOLDER, read_queue

__all__ = ["command"]


@click.group("queue")
def command() -> None:
    """Show the mail waiting for other domains (DIR/queue)."""


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


@command.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per queued message.")
@pass_app
@reports_errors
def list_(app: App, as_json: bool) -> None:
    """What is queued: id, age, size, sender, and each recipient with its state."""
    entries = read_queue(app.config.server.directory / QUEUE_FOLDER)
    if as_json:
        for e in entries:
            click.echo(
                json.dumps(
                    {
                        "id": e.id,
                        "arrived": e.arrived,
                        "age": int(e.age),
                        "size": e.size,
                        "sender": e.sender,
                        "recipients": list(e.recipients),
                    },
                    ensure_ascii=True,
                )
            )
        return
    if not entries:
        click.echo("The queue is empty.")
        return
    for e in entries:
        click.echo(f"{e.id}  {_age(e.age):>6}  {e.size:>8}  <{e.sender}>")
        for r in e.recipients:
            error = f"  ({r['last_error']})" if r.get("last_error") else ""
            click.echo(f"    {r['state']:<9} {r['address']}{error}")
    total = len(entries)
    click.echo(f"{total} message{'s' if total != 1 else ''} in the queue.")
