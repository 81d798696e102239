"""``smtpkit init``: create a data folder with its config, ``users/`` and ``journal/``.

With ``--owner NAME`` the data folder belongs to that system user: root creates the folder,
gives it to NAME while it is still empty, and creates everything inside it as NAME. The config
is root's: written at ``-c PATH`` (or ``$SMTPKIT_CONFIG``) when given, such as
``/etc/smtpkit/smtpkit.toml``, else as ``DIR/smtpkit.toml``.
"""

from __future__ import annotations

import errno
import ipaddress
import itertools
import os
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click

from smtpkit.addresses import normalize_domain
from smtpkit.commands import App, pass_app, reports_errors
from smtpkit.config import (
    CONFIG_NAME,
    DEFAULT_LISTEN,
    ListenAddress,
    parse_config,
    parse_listen,
    write_config,
)
from smtpkit.errors import ConfigError, UserError
from smtpkit.fsutil import fsync_dir, make_dirs, place_durably, unique_name, write_all
from smtpkit.maildrop import ensure_maildrop
from smtpkit.owner import Owner, OwnerError, as_owner, group_name, lookup_user, owner_of

__all__ = ["check_listen", "command"]

_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def check_listen(texts: Sequence[str]) -> list[ListenAddress]:
    """Parse listen addresses as the server binds them: an IP literal (IPv4, or IPv6 in
    brackets) and a port, each address once, and no specific address next to the wildcard
    of its family on the same port (the second bind would fail). Raises ``ValueError``
    naming the entry."""
    found: list[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int, str]] = []
    addresses = []
    for text in texts:
        address = parse_listen(text)
        try:
            ip = ipaddress.ip_address(address.host)
        except ValueError:
            raise ValueError(f"{text!r}: {address.host} is not an IP address") from None
        for other_ip, other_port, other in found:
            if (other_ip, other_port) == (ip, address.port):
                why = "is given twice" if other == text else f"is the same address as {other!r}"
                raise ValueError(f"{text!r} {why}")
            if other_port == address.port and other_ip.version == ip.version:
                wildcard = next((i for i in (ip, other_ip) if i.is_unspecified), None)
                if wildcard is not None:
                    raise ValueError(
                        f"{text!r} overlaps {other!r}: {wildcard} listens on every "
                        f"IPv{ip.version} address"
                    )
        found.append((ip, address.port, text))
        addresses.append(address)
    return addresses


def _listen(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    try:
        check_listen(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None
    return value


def _domains(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> list[str]:
    try:
        return list(dict.fromkeys(normalize_domain(d) for d in value))
    except UserError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


def _owner(ctx: click.Context, param: click.Parameter, value: str | None) -> Owner | None:
    if value is None:
        return None
    try:
        return lookup_user(value)
    except OwnerError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


@click.command("init")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--domain",
    "domains",
    multiple=True,
    required=True,
    callback=_domains,
    help="A local domain (repeatable).",
)
@click.option("--hostname", help="Name in the greeting and Received headers [default: FQDN].")
@click.option(
    "--listen",
    "listen",
    multiple=True,
    callback=_listen,
    help=f"IP:PORT to listen on, IPv6 as [::1]:25 (repeatable) [{', '.join(DEFAULT_LISTEN)}].",
)
@click.option(
    "--owner",
    metavar="USER",
    callback=_owner,
    help="The existing system user that owns DIRECTORY and all the server writes in it "
    "[default: whoever runs init].",
)
@click.option(
    "--force",
    is_flag=True,
    help="Overwrite an existing config file, keeping the old one as FILE.bak (FILE.bak.1, "
    "... when that exists).",
)
@pass_app
@reports_errors
def command(
    app: App,
    directory: Path,
    domains: list[str],
    hostname: str | None,
    listen: tuple[str, ...],
    owner: Owner | None,
    force: bool,
) -> None:
    """Create the config file, DIRECTORY/users/ and DIRECTORY/journal/.

    The config goes to -c PATH (or $SMTPKIT_CONFIG) when given, naming DIRECTORY by its
    absolute path; else to DIRECTORY/smtpkit.toml. With --owner, DIRECTORY must be new,
    empty, or the owner's already.
    """
    if app.config_given:
        config_path = app.config_path
        where = os.path.abspath(directory)
    else:
        config_path = directory / CONFIG_NAME
        where = "."
    server: dict[str, Any] = {}
    if hostname:
        server["hostname"] = hostname
    # Written out even when it is the default: the admin sees where the server listens.
    server["listen"] = list(listen) or list(DEFAULT_LISTEN)
    server["directory"] = where
    server["domains"] = domains
    data: dict[str, Any] = {"server": server}
    parse_config(data, config_path)  # what we write must load
    existing = config_path.exists() or config_path.is_symlink()
    if existing and not force:
        raise click.ClickException(f"{config_path} already exists (use --force to overwrite)")
    if owner is not None:
        _check_folder(directory, owner)
    try:
        _make_data_folder(directory, owner)
        _make_inside(directory)
        backup = _keep_backup(config_path) if existing else None
        make_dirs(config_path.parent, 0o755)
        write_config(config_path, data)
    except OSError as exc:
        raise ConfigError(
            f"cannot create: {exc.strerror}", path=exc.filename or directory
        ) from None
    if backup is not None:
        click.echo(f"Kept the previous config as {backup}{_differences(backup, data)}.")
    now = owner_of(directory)
    click.echo(
        f"Created {config_path}, {directory / 'users'}/ and {directory / 'journal'}/ "
        f"(data folder owned by {now.name}:{group_name(now.gid)})."
    )
    inside = Path(os.path.abspath(config_path)).is_relative_to(os.path.abspath(directory))
    if not now.is_root and inside:
        click.echo(
            f"Note: {now.name} can replace {config_path}, as it lies in {directory}: for a "
            "service, keep the config out of its reach (smtpkit -c /etc/smtpkit/smtpkit.toml "
            "init ...)."
        )
    first = domains[0]
    click.echo("Next steps:")
    click.echo(f"  smtpkit -c {config_path} user add you@{first}")
    click.echo(f"  smtpkit -c {config_path} serve")
    click.echo(f"  smtpkit -c {config_path} mx --check")


def _check_folder(directory: Path, owner: Owner) -> None:
    """An existing DIRECTORY is taken over only when empty or the owner's already: root never
    hands over files it did not create, nor chowns anything that another user controls."""
    if not directory.exists():
        return
    holder = owner_of(directory)
    if holder.uid != owner.uid and any(directory.iterdir()):
        raise click.ClickException(
            f"{directory} is not empty and belongs to {holder.name}, not {owner.name}: give a "
            f"new or empty folder, or one that {owner.name} owns"
        )


def _make_data_folder(directory: Path, owner: Owner | None) -> None:
    """Create DIRECTORY (0750) and give it to ``owner``, through its descriptor and while it
    is still empty, so that nothing already inside changes hands."""
    if owner is None:
        make_dirs(directory, 0o750)
        return
    created = not directory.exists()
    if created:
        make_dirs(directory.parent, 0o755)  # the owner must be able to pass through
        os.mkdir(directory, 0o750)
    fd = os.open(directory, _DIRECTORY_FLAGS)
    try:
        if os.fstat(fd).st_uid != owner.uid:
            if os.listdir(fd):
                raise click.ClickException(f"{directory} is no longer empty: nothing changed")
            try:
                os.fchown(fd, owner.uid, owner.gid)
            except PermissionError:
                raise click.ClickException(
                    f"cannot give {directory} to {owner.name}: only root can (run as root, or "
                    "leave out --owner)"
                ) from None
            os.fchmod(fd, 0o750)
        elif created:
            os.fchmod(fd, 0o750)  # mkdir applied the umask
    except BaseException:
        if created:
            os.rmdir(directory)
        raise
    finally:
        os.close(fd)


def _make_inside(directory: Path) -> None:
    """``users/`` and ``journal/``, created as the folder's owner."""
    with as_owner(directory) as owner:
        try:
            make_dirs(directory / "users", 0o700)
            make_dirs(directory / "journal", 0o750)
            ensure_maildrop(directory)  # for smtpkit-sendmail, even before serve runs
        except PermissionError as exc:
            if owner.is_root:
                raise
            raise ConfigError(
                f"cannot create as {owner.name}: {exc.strerror} (every folder above "
                f"{directory} must let {owner.name} through)",
                path=exc.filename,
            ) from None


def _keep_backup(path: Path) -> Path:
    """Keep the config about to be replaced as ``NAME.bak``, or ``NAME.bak.1``, ``.2``, ...
    when that exists: never overwritten, since an older backup may be the only copy of
    settings an earlier ``--force`` dropped. The backup appears whole or not at all, with
    the mode of the original."""
    for n in itertools.count():
        backup = path.with_name(f"{path.name}.bak" + (f".{n}" if n else ""))
        try:
            # A hard link is atomic, refuses to replace an existing name, and keeps the
            # original file (its mode and owner) as it is: the new config is a new file.
            os.link(path, backup, follow_symlinks=False)
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EXDEV, errno.EOPNOTSUPP, errno.EMLINK):
                raise
            if os.path.lexists(backup):
                continue
            _copy(path, backup)
        fsync_dir(path.parent)
        return backup
    raise AssertionError("unreachable")


def _copy(path: Path, backup: Path) -> None:
    """For a filesystem without hard links: a durable copy renamed into place."""
    data = path.read_bytes()
    mode = path.stat().st_mode & 0o7777
    tmp = backup.with_name(f".{backup.name}.{unique_name()}.tmp")
    place_durably(tmp, backup, lambda fd: write_all(fd, data), mode=mode)
    os.chmod(backup, mode)  # the umask narrowed the mode at creation


def _differences(backup: Path, new: Mapping[str, Any]) -> str:
    """``" (the new one lacks or changes: [aliases], server.listen)"``, or nothing."""
    if backup.is_symlink():
        return ""  # nothing is read through a link in a folder another user may control
    try:
        old = tomllib.loads(backup.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    changed = []
    old_server, new_server = old.get("server"), new.get("server", {})
    if isinstance(old_server, dict):
        changed += [f"server.{k}" for k, v in old_server.items() if new_server.get(k) != v]
    changed += [f"[{s}]" for s, v in old.items() if s != "server" and new.get(s) != v]
    return f" (the new one lacks or changes: {', '.join(changed)})" if changed else ""
