"""``smtpkit user add|list|remove``: manage the Maildir users of the local domains."""

from __future__ import annotations

import json
from typing import Any

import click

from smtpkit.commands import App, pass_app, reports_errors
from smtpkit.config import Config, update_config
from smtpkit.users import UserStore

__all__ = ["command"]


def _store(app: App) -> UserStore:
    cfg = app.config
    return UserStore(cfg.server.users_dir, cfg.server.domains)


@click.group("user")
def command() -> None:
    """Add, list and remove mail users."""


@command.command("add")
@click.argument("addresses", nargs=-1, required=True)
@pass_app
@reports_errors
def add(app: App, addresses: tuple[str, ...]) -> None:
    """Create a mailbox for each ADDRESS (local-part@one-of-your-domains)."""
    store = _store(app)
    canonical = [store.normalize(a) for a in addresses]  # validate all before creating any
    for address in canonical:
        path = store.add(address)
        click.echo(f"Added {address} ({path})")
    _route_postmaster(app, canonical[0])


def _route_postmaster(app: App, first_user: str) -> None:
    """RFC 5321 4.5.1: every domain needs a postmaster. Unless configured otherwise, the first
    user added receives it: recorded as an alias in the config file."""
    cfg = app.config
    store = _store(app)
    missing = [
        f"postmaster@{d}"
        for d in cfg.server.domains
        if f"postmaster@{d}" not in cfg.aliases and not store.exists(f"postmaster@{d}")
    ]
    if not missing:
        return

    def add_aliases(data: dict[str, Any]) -> None:
        aliases = data.setdefault("aliases", {})
        for source in missing:
            aliases[source] = first_user

    if not update_config(cfg.path, add_aliases):
        for source in missing:
            click.echo(f'Note: add to [aliases] in {cfg.path}: "{source}" = "{first_user}"')
        return
    for source in missing:
        click.echo(f"Mail for {source} goes to {first_user} (aliases in {cfg.path})")


@command.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per user.")
@pass_app
@reports_errors
def list_(app: App, as_json: bool) -> None:
    """List users with their counts of new and seen messages."""
    users = _store(app).list()
    if as_json:
        for u in users:
            click.echo(json.dumps({"address": u.address, "new": u.new, "seen": u.seen}))
        return
    if not users:
        click.echo("No users yet: add one with `smtpkit user add you@example.org`.")
        return
    width = max(len(u.address) for u in users)
    click.echo(f"{'ADDRESS':<{width}}  {'NEW':>5}  {'SEEN':>5}")
    for u in users:
        click.echo(f"{u.address:<{width}}  {u.new:>5}  {u.seen:>5}")


@command.command("remove")
@click.argument("address")
@click.option("--force", is_flag=True, help="Delete the mailbox even if it holds mail.")
@pass_app
@reports_errors
def remove(app: App, address: str, force: bool) -> None:
    """Delete the mailbox of ADDRESS (refused while it holds mail, unless --force)."""
    store = _store(app)
    canonical = store.normalize(address)
    store.remove(canonical, force=force)
    click.echo(f"Removed {canonical}")
    _warn_aliases(app.config, canonical)


def _warn_aliases(cfg: Config, address: str) -> None:
    for source, targets in cfg.aliases.items():
        if address in targets:
            click.echo(f"Note: alias {source} still points to {address} ({cfg.path})")
