"""``smtpkit user add|list|remove|passwd``: manage the Maildir users of the local domains and
their passwords.

Mailboxes and the password file are written as the data folder's owner (``as_owner``): run as
root, these commands never create a file the service cannot use. The config file stays root's.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import click

from smtpkit.addresses import normalize_address
from smtpkit.auth import (
    MAX_PASSWORD_BYTES,
    PasswordError,
    PasswordFile,
    check_password,
    load_hasher,
)
from smtpkit.commands import App, pass_app, reports_errors
from smtpkit.config import Config, load_config, update_config
from smtpkit.errors import SmtpkitError, UserError
from smtpkit.owner import as_owner
from smtpkit.users import UserStore

__all__ = ["command"]


def _store(cfg: Config) -> UserStore:
    return UserStore(cfg.server.users_dir, cfg.server.domains)


@contextlib.contextmanager
def _as_owner(cfg: Config) -> Iterator[UserStore]:
    """The user store, used as the data folder's owner; refused (exit 1) without ``users/``,
    the same refusal as ``smtpkit serve``'s."""
    store = _store(cfg)
    store.require_folder()
    load_hasher()  # before becoming the owner (see load_hasher)
    with as_owner(cfg.server.directory):
        yield store


def _passwords(cfg: Config) -> PasswordFile:
    return PasswordFile.in_folder(cfg.server.directory, cfg.server.domains)


def _address(store: UserStore, text: str) -> str:
    """An ADDRESS argument that is no local address is a usage error (exit 2)."""
    try:
        return store.normalize(text)
    except UserError as exc:
        raise click.BadParameter(
            str(exc), ctx=click.get_current_context(), param_hint="'ADDRESS'"
        ) from None


@click.group("user")
def command() -> None:
    """Add, list and remove mail users; set their passwords."""


@command.command("add")
@click.argument("addresses", metavar="ADDRESS...", nargs=-1, required=True)
@pass_app
@reports_errors
def add(app: App, addresses: tuple[str, ...]) -> None:
    """Create a mailbox for each ADDRESS (local-part@one-of-your-domains).

    All or nothing: every ADDRESS is checked first, and if creating one fails, those already
    created are removed again. An international ADDRESS (müller@bücher.example) is stored
    under its canonical name: the local part in NFC and lower case, the domain as its A-label
    (müller@xn--bcher-kva.example); any spelling of it finds that mailbox.
    """
    cfg = app.config
    store = _store(cfg)
    given: dict[str, str] = {}
    for text in addresses:
        address = _address(store, text)
        if address in given:
            earlier = given[address]
            why = "is given twice" if earlier == text else f"is the same address as {earlier!r}"
            raise click.BadParameter(
                f"{text!r} {why}", ctx=click.get_current_context(), param_hint="'ADDRESS'"
            )
        given[address] = text
    canonical = list(given)
    store.require_folder()
    for address in canonical:
        path = store.users_dir / address
        if path.exists() or path.is_symlink():
            raise UserError(f"user {address} already exists ({path})")
        _refuse_shadowing(cfg, address)
    created: list[str] = []
    with _as_owner(cfg):
        try:
            for address in canonical:
                store.add(address)
                created.append(address)
        except SmtpkitError as exc:
            raise UserError(f"{exc}{_undo(store, created)}") from None
    for address in canonical:
        click.echo(f"Added {address} ({store.users_dir / address})")
    # An alias names an ASCII address (the config takes no other), so the postmaster goes to
    # the first ASCII user added, if there is one.
    postmaster = next((address for address in canonical if address.isascii()), None)
    _route_postmaster(cfg, store, lambda domain: postmaster)
    if postmaster is None:
        _note_no_postmaster(cfg, store)


def _note_no_postmaster(cfg: Config, store: UserStore) -> None:
    """Say which domains still lack a postmaster after a run that added only international
    users: [aliases] cannot name them, so nothing was routed."""
    for domain in cfg.server.domains:
        source = f"postmaster@{domain}"
        if source not in cfg.aliases and not store.exists(source):
            click.echo(
                f"Note: {source} has no mailbox and no alias, and [aliases] take ASCII "
                "addresses only: add an ASCII user, or a postmaster mailbox, for it"
            )


def _refuse_shadowing(cfg: Config, address: str) -> None:
    """An alias wins over a mailbox of the same address (the router looks aliases up first):
    such a mailbox would never receive mail, so it is not created."""
    targets = cfg.aliases.get(address)
    if targets is not None:
        raise UserError(
            f"{address} is an alias (to {', '.join(targets)}) in {cfg.path}, and a mailbox of "
            f'the same address would never receive mail: remove "{address}" from [aliases] '
            "first, or choose another address"
        )


def _undo(store: UserStore, created: list[str]) -> str:
    """Remove the mailboxes this run created (they are empty); the words to add to the
    error that stopped it."""
    left: list[str] = []
    for address in created:
        try:
            store.remove(address, force=True)
        except SmtpkitError:
            left.append(address)
    if left:
        return f"; could not remove again what was added: {', '.join(left)}"
    if created:
        return f"; nothing added ({', '.join(created)} removed again)"
    return "; nothing added"


def _route_postmaster(cfg: Config, store: UserStore, pick: Callable[[str], str | None]) -> None:
    """RFC 5321 4.5.1: every domain needs a postmaster. One that has neither an alias nor a
    mailbox goes to the user ``pick(domain)`` names: recorded as an alias in the config file."""
    missing: dict[str, str] = {}
    for domain in cfg.server.domains:
        source = f"postmaster@{domain}"
        if source in cfg.aliases or store.exists(source):
            continue
        target = pick(domain)
        if target is not None:
            missing[source] = target
    if not missing:
        return

    def add_aliases(data: dict[str, Any]) -> None:
        aliases = data.setdefault("aliases", {})
        aliases.update(missing)

    if not update_config(cfg.path, add_aliases):
        for source, target in missing.items():
            click.echo(f'Note: add to [aliases] in {cfg.path}: "{source}" = "{target}"')
        return
    for source, target in missing.items():
        click.echo(f"Mail for {source} goes to {target} (aliases in {cfg.path})")


@command.command("list")
@click.option(
    "--json", "as_json", is_flag=True, help="One JSON object per user, with counts per folder."
)
@pass_app
@reports_errors
def list_(app: App, as_json: bool) -> None:
    """List users with their counts of new and seen messages.

    NEW counts the messages without the Maildir S (seen) flag, whether still in new/ or
    already in cur/: unread mail, as Dovecot's UNSEEN and mail clients count it. SEEN counts
    those with the flag. Both cover the whole mailbox: the inbox and every sub-folder
    (.Archive, .Sent, ...); --json gives the counts per folder too. PASSWORD says whether the
    user can log in (smtpkit user passwd).
    """
    with _as_owner(app.config) as store:
        users = store.list()
        with_password = _passwords(app.config).addresses()
    if as_json:
        for u in users:
            folders = {f.name: {"new": f.new, "seen": f.seen} for f in u.folders}
            record = {
                "address": u.address,
                "new": u.new,
                "seen": u.seen,
                "password": u.address in with_password,
                "folders": folders,
            }
            click.echo(json.dumps(record))
        return
    if not users:
        click.echo("No users yet: add one with `smtpkit user add you@example.org`.")
        return
    width = max(len(u.address) for u in users)
    click.echo(f"{'ADDRESS':<{width}}  {'NEW':>5}  {'SEEN':>5}  PASSWORD")
    for u in users:
        password = "yes" if u.address in with_password else "no"
        click.echo(f"{u.address:<{width}}  {u.new:>5}  {u.seen:>5}  {password}")


@dataclass(frozen=True, slots=True)
class _AliasChange:
    """One alias that pointed to a removed user; ``after`` empty: the alias goes."""

    source: str
    before: tuple[str, ...]
    after: tuple[str, ...]

    def describe(self) -> str:
        was = f"(was {', '.join(self.before)})"
        if self.after:
            return f"{self.source}: now {', '.join(self.after)} {was}"
        if self.source.startswith("postmaster@"):
            return f"{self.source}: removed {was}; no user is left to receive it"
        return f"{self.source}: removed {was}"

    def by_hand(self) -> str:
        """The edit to make in [aliases], as a TOML line or a deletion."""
        if not self.after:
            return f'delete "{self.source}"'
        # Addresses are plain ASCII without quotes or backslashes: each is a TOML string as is.
        targets = [f'"{t}"' for t in self.after]
        value = targets[0] if len(targets) == 1 else f"[{', '.join(targets)}]"
        return f'"{self.source}" = {value}'


def _replacement(remaining: list[str], domain: str) -> str | None:
    """Who receives a postmaster whose user goes: the first remaining user of its domain,
    else the first of any domain; an ASCII one, since [aliases] take no other."""
    named = [a for a in remaining if a.isascii()]
    same = [a for a in named if a.rpartition("@")[2] == domain]
    pool = same or named
    return pool[0] if pool else None


def _alias_changes(cfg: Config, remaining: list[str], removed: str) -> list[_AliasChange]:
    changes = []
    for source, targets in cfg.aliases.items():
        if removed not in targets:
            continue
        after = tuple(t for t in targets if t != removed)
        if not after and source.startswith("postmaster@"):
            replacement = _replacement(remaining, source.rpartition("@")[2])
            after = (replacement,) if replacement is not None else ()
        changes.append(_AliasChange(source, targets, after))
    return changes


def _apply_alias_changes(cfg: Config, changes: list[_AliasChange]) -> bool:
    """Write ``changes`` into the config; False (nothing written) for a commented file."""
    wanted = {c.source: c for c in changes}

    def change(data: dict[str, Any]) -> None:
        aliases: dict[str, Any] = data.get("aliases", {})
        for key in list(aliases):
            # The file may spell an address in another case than its canonical form.
            item = wanted.get(normalize_address(key, cfg.server.domains))
            if item is None:
                continue
            if item.after:
                aliases[key] = item.after[0] if len(item.after) == 1 else list(item.after)
            else:
                del aliases[key]

    return update_config(cfg.path, change)


@command.command("remove")
@click.argument("address")
@click.option(
    "--force",
    is_flag=True,
    help="Remove it even if its mailbox holds mail (deleted with it) or aliases point to it "
    "(taken out of them; a postmaster alias goes to another user).",
)
@pass_app
@reports_errors
def remove(app: App, address: str, force: bool) -> None:
    """Delete the mailbox of ADDRESS, and its password.

    Refused while any folder of the mailbox holds mail or an alias points to ADDRESS, unless
    --force: then the messages are deleted, aliases pointing only to ADDRESS are removed,
    lists lose it, and postmaster aliases go to another user (of the same domain if there is
    one). A password left without a mailbox is removed alone.
    """
    cfg = app.config
    canonical = _address(_store(cfg), address)
    with _as_owner(cfg) as store:
        if not store.exists(canonical):
            if _remove_password(cfg, canonical):
                click.echo(f"Removed the password of {canonical} (it had no mailbox)")
                return
            raise UserError(f"no such user: {canonical}")
        held = store.count(canonical)
        remaining = [a for a in store.addresses() if a != canonical]
    pointing = [source for source, targets in cfg.aliases.items() if canonical in targets]
    if not force and (held.total or pointing):
        reasons = []
        if held.total:
            reasons.append(f"its mailbox holds {held.describe()}")
        if pointing:
            reasons.append(f"aliases point to it: {', '.join(pointing)}")
        raise UserError(
            f"not removing {canonical}: {'; '.join(reasons)} (use --force to remove it anyway)"
        )
    changes = _alias_changes(cfg, remaining, canonical)
    if changes:
        # The aliases first: if the config cannot be rewritten nothing has happened yet, and
        # no alias is left pointing to a mailbox that is gone.
        if not _apply_alias_changes(cfg, changes):
            lines = "".join(f"\n  {c.by_hand()}" for c in changes)
            raise UserError(
                f"not removing {canonical}: aliases point to it and {cfg.path} has comments, "
                f"so smtpkit does not rewrite it; change [aliases] by hand first:{lines}"
            )
        click.echo(f"Updated [aliases] in {cfg.path}:")
        for c in changes:
            click.echo(f"  {c.describe()}")
    with _as_owner(cfg) as store:
        # The password first: no one can log in as a user whose mailbox is gone, even if
        # removing the mailbox fails half-way.
        had_password = _remove_password(cfg, canonical)
        try:
            held = store.remove(canonical, force=force)
        except SmtpkitError as exc:
            if not had_password:
                raise
            raise UserError(
                f"{exc}; its password is removed already (set it again with "
                f"`smtpkit user passwd {canonical}`)"
            ) from None
    if held.total:
        click.echo(f"Removed {canonical} and its {held.describe()}")
    else:
        click.echo(f"Removed {canonical}")
    if had_password:
        click.echo(f"Removed the password of {canonical}")
    if canonical.startswith("postmaster@"):
        # A postmaster mailbox that goes leaves its domain without one: route it to a user.
        _route_postmaster(load_config(cfg.path), store, lambda d: _replacement(remaining, d))
    if changes:
        click.echo("Restart `smtpkit serve` for the new aliases to take effect.")


def _remove_password(cfg: Config, address: str) -> bool:
    """Remove the password of ``address`` (an international address too, its line in any
    spelling); False when it had none."""
    return _passwords(cfg).remove(address)


def _stdin_is_terminal() -> bool:
    return sys.stdin.isatty()


def _read_password(address: str, from_stdin: bool) -> str:
    """The new password: one line of standard input with ``--stdin`` (only its line ending
    taken off; bytes that are no UTF-8 kept as they are), else asked twice on the terminal."""
    if from_stdin:
        # One byte more than a password and its CR LF may take: a longer line is refused.
        line = sys.stdin.buffer.readline(MAX_PASSWORD_BYTES + 3)
        line = line.removesuffix(b"\n").removesuffix(b"\r")
        return line.decode("utf-8", "surrogateescape")
    if not _stdin_is_terminal():
        raise click.UsageError(
            "standard input is no terminal to ask for the password on: give --stdin to read "
            "it from there"
        )
    password: str = click.prompt(
        f"New password for {address}",
        hide_input=True,
        confirmation_prompt="Repeat it",
        err=True,
    )
    return password


@command.command("passwd")
@click.argument("address")
@click.option(
    "--stdin",
    "from_stdin",
    is_flag=True,
    help="Read the password from the first line of standard input (for scripts).",
)
@pass_app
@reports_errors
def passwd(app: App, address: str, from_stdin: bool) -> None:
    """Set the password ADDRESS logs in with.

    The password to send mail with (SMTP submission) and, through Dovecot, to read it. Asks
    for it twice on the terminal, or reads one line from standard input with --stdin.
    It is stored as an Argon2id hash in the data folder's passwd file, which Dovecot reads
    too (examples/dovecot-smtpkit.conf); a running server uses it from the next login on.
    An international ADDRESS (müller@bücher.example) is stored under its canonical name, as
    its mailbox is (müller@xn--bcher-kva.example); it logs in to submission in any spelling
    of that name.
    """
    cfg = app.config
    canonical = _address(_store(cfg), address)
    with _as_owner(cfg) as store:
        if not store.exists(canonical):
            raise UserError(f"no such user: {canonical} (add it first with smtpkit user add)")
    password = _read_password(canonical, from_stdin)
    try:
        check_password(password)
    except PasswordError as exc:
        raise click.UsageError(str(exc)) from None
    with _as_owner(cfg):
        _passwords(cfg).set(canonical, password)
    click.echo(f"Password set for {canonical}")
