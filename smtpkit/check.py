"""Checks of a configuration and its data folder: what ``smtpkit check`` reports, and what
``smtpkit serve`` looks at before it starts.

Read-only: nothing is created, changed or bound, and nothing is asked of DNS (``smtpkit mx
--check`` does that). Permissions are judged for the identity the server runs as, the data
folder's owner, never for whoever runs the check: to root every file looks readable. Run by
root, the judging happens as the owner (``smtpkit.owner.as_owner``), so the kernel itself
answers, ACLs included.
"""

from __future__ import annotations

import contextlib
import ipaddress
import math
import os
import pwd
import ssl
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from smtpkit.addresses import normalize_address, normalize_hostname
from smtpkit.config import Config, TlsConfig
from smtpkit.errors import UserError
from smtpkit.owner import Owner, as_owner, group_name, owner_of
from smtpkit.pidfile import PID_FILE
from smtpkit.users import MAILDIR_SUBDIRS

__all__ = ["EXPIRY_WARNING", "Problem", "check_config", "count_mailboxes"]

# A certificate this close to its end is reported: enough time to notice a renewal that
# failed (Let's Encrypt renews 30 days ahead).
EXPIRY_WARNING = timedelta(days=14)

# Files with the same problems in one folder are reported on one line naming this many.
_NAMES_SHOWN = 3

_R, _W, _X = os.R_OK, os.W_OK, os.X_OK

# The spool pool serve keeps under users/ (one folder per worker): the delivery code's
# SPOOL_FOLDER, named here so that checking does not depend on how delivery is laid out.
_SPOOL_FOLDER = ".spool"
# The outbound queue, delivery/queue.py's QUEUE_FOLDER: serve makes it, as the owner, when
# it is missing.
_QUEUE_FOLDER = "queue"

# The folder fsck keeps at the top of every ext2/3/4 filesystem: root's, and no mailbox,
# when users/ or the data folder is a filesystem of its own.
_LOST_FOUND = "lost+found"

# Judges whether the server's identity may access a path: (path, its stat, R/W/X mask).
_Judge = Callable[[str | Path, os.stat_result, int], bool]


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding, as one line of text naming the file, key, folder or address.

    ``fatal``: ``smtpkit serve`` cannot write where mail goes (a Maildir, the spool pool
    ``users/.spool``, the journal, the queue, the maildrop, the data folder itself) or its pid
    file, and must not start: it would stop there itself. ``note``: worth knowing but not
    wrong (``smtpkit check`` still exits 0); never fatal.
    """

    fatal: bool
    text: str
    note: bool = False


def check_config(config: Config, *, runs_as: Owner | None = None) -> list[Problem]:
    """Every problem of ``config`` and its data folder, in a stable order.

    ``runs_as`` is the identity the server will run as (default: the data folder's owner);
    permissions are judged for it. Changes nothing on disk. May raise ``OwnerError`` when
    root cannot take the owner's identity.
    """
    problems = [Problem(False, note, note=True) for note in config.notes]
    problems += [*_hostname_problems(config.server.hostname), *_listen_problems(config)]
    directory = config.server.directory
    scan = _Scan.of(directory)
    if scan.missing is not None:
        problems.append(Problem(True, f"server -> directory: {directory}: {scan.missing}"))
        if config.tls is not None:
            problems += _tls_content_problems(config, set())
        return problems
    owner = scan.owner
    who = runs_as if runs_as is not None else owner
    problems += _owner_problems(directory, owner, who)
    tls_files = _TlsFile.all(config)
    # Everything is looked at as this process (above); only the judging happens as `who`.
    folder = _FolderCheck(scan, owner, who, config)
    with _judge_as(directory, owner, who) as may:
        problems += folder.run(may)
        unreadable = _tls_access_problems(config, tls_files, who, may)
    problems += unreadable.values()
    problems += _tls_content_problems(config, set(unreadable))
    if scan.mailboxes is not None:
        problems += _alias_problems(config, scan.mailboxes)
    return problems


def count_mailboxes(config: Config) -> int:
    """How many Maildirs ``users/`` holds (its folders not starting with ".")."""
    try:
        with os.scandir(config.server.users_dir) as it:
            return sum(
                1
                for entry in it
                if _is_maildir(("users", entry.name)) and entry.is_dir(follow_symlinks=False)
            )
    except OSError:
        return 0


# --- server.hostname and server.listen --------------------------------------------------------

_WHY_NAME = "senders greet and check this name; an MX record must point to a real name"


def _hostname_problems(hostname: str) -> list[Problem]:
    def problem(what: str) -> list[Problem]:
        return [Problem(False, f"server -> hostname: {what}: {_WHY_NAME} (RFC 5321 5.1)")]

    try:
        ipaddress.ip_address(hostname.strip("[]"))
    except ValueError:
        pass
    else:
        return problem(f"{hostname} is an IP address, not a name")
    try:
        name = normalize_hostname(hostname)
    except UserError as exc:
        return problem(str(exc))
    if name == "localhost" or name.endswith(".localhost") or name.startswith("localhost."):
        return problem(f"{hostname} is every machine's name for itself")
    if "." not in name:
        return problem(f"{hostname} is not a full name (no dot)")
    return []


def _listen_problems(config: Config) -> list[Problem]:
    """Names where addresses belong, and no port 25. An address that cannot be bound next
    to another (twice, or beside the wildcard) is the config loader's error."""
    where = "server -> listen"
    problems: list[Problem] = []
    for address in config.server.listen:
        try:
            ipaddress.ip_address(address.host)
        except ValueError:
            problems.append(
                Problem(
                    False,
                    f"{where}: {address} is not an IP address: write the address to listen on "
                    "(like 192.0.2.1:25, 0.0.0.0:25 or [::]:25), so that what is bound does "
                    "not depend on name lookups",
                )
            )
    if all(address.port != 25 for address in config.server.listen):
        problems.append(
            Problem(
                False,
                f"{where}: nothing listens on port 25, where mail from the internet arrives "
                "(fine for tests, or behind a forward from port 25)",
                note=True,
            )
        )
    return problems


# --- the data folder ----------------------------------------------------------------------------


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


@dataclass(slots=True)
class _Entry:
    rel: str  # the path below the data folder, "/"-separated; "" for the folder itself
    parts: tuple[str, ...]  # rel, split
    path: str
    st: os.stat_result

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.st.st_mode)

    @property
    def is_link(self) -> bool:
        return stat.S_ISLNK(self.st.st_mode)


@dataclass(slots=True)
class _Scan:
    """The data folder as this process sees it: every entry, links not followed."""

    directory: Path
    missing: str | None = None  # why there is no data folder to look at
    entries: dict[str, _Entry] = field(default_factory=dict)
    unlisted: dict[str, str] = field(default_factory=dict)  # folder -> why it was not read
    ancestors: list[tuple[Path, os.stat_result]] = field(default_factory=list)
    owner: Owner = Owner(0, 0, "root")
    mailboxes: set[str] | None = None  # the mailbox names, when users/ could be read
    checker: str = field(default_factory=lambda: _user(os.geteuid()))  # who looked

    @classmethod
    def of(cls, directory: Path) -> _Scan:
        scan = cls(directory)
        try:
            st = os.stat(directory)  # the data folder itself may be a link: the admin's choice
            scan.owner = owner_of(directory)
        except FileNotFoundError:
            scan.missing = "no such folder"
            return scan
        except OSError as exc:
            scan.missing = f"cannot look at it: {exc.strerror}"
            return scan
        if not stat.S_ISDIR(st.st_mode):
            scan.missing = "not a folder"
            return scan
        scan.ancestors = _ancestors(directory)
        scan.entries[""] = _Entry("", (), str(directory), st)
        pending = [""]
        while pending:
            scan._list(pending.pop(), pending)
        # Parents before their contents, names in order: the order problems are reported in.
        scan.entries = dict(sorted(scan.entries.items(), key=lambda item: item[1].parts))
        users = scan.entries.get("users")
        if users is not None and users.is_dir and "users" not in scan.unlisted:
            scan.mailboxes = {
                e.parts[1]
                for e in scan.entries.values()
                if _is_maildir(e.parts) and (e.is_dir or (e.is_link and os.path.isdir(e.path)))
            }
        return scan

    def _list(self, rel: str, pending: list[str]) -> None:
        folder = self.directory / rel if rel else self.directory
        parts = self.entries[rel].parts
        try:
            with os.scandir(folder) as it:
                children = list(it)
        except FileNotFoundError:
            return  # removed meanwhile: a running server makes and removes files
        except OSError as exc:
            self.unlisted[rel] = exc.strerror or str(exc)
            return
        for child in children:
            if child.name == _LOST_FOUND and rel in ("", "users"):
                continue
            try:
                st = child.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            except OSError as exc:
                self.unlisted[rel] = exc.strerror or str(exc)
                continue
            inner = f"{rel}/{child.name}" if rel else child.name
            self.entries[inner] = _Entry(inner, (*parts, child.name), child.path, st)
            if stat.S_ISDIR(st.st_mode):
                pending.append(inner)


def _ancestors(path: Path) -> list[tuple[Path, os.stat_result]]:
    """The folders the kernel passes to reach ``path``, from ``/`` down, with their stat:
    those of the path as written and, where links lead elsewhere, those of its real path.
    Folders this process cannot see are left out."""
    written = Path(os.path.abspath(path)).parents
    real = Path(os.path.realpath(path)).parents
    found: dict[Path, os.stat_result] = {}
    for folder in [*reversed(written), *reversed(real)]:
        if folder in found:
            continue
        try:
            found[folder] = os.stat(folder)
        except OSError:
            continue
    return list(found.items())


def _mode_allows(st: os.stat_result, who: Owner, mask: int) -> bool:
    """What the mode bits grant ``who`` (no supplementary groups, as the workers run)."""
    mode = st.st_mode
    if who.is_root:
        return not mask & _X or stat.S_ISDIR(mode) or bool(mode & 0o111)
    if st.st_uid == who.uid:
        bits = mode >> 6
    elif st.st_gid == who.gid:
        bits = mode >> 3
    else:
        bits = mode
    return bits & mask == mask


@contextlib.contextmanager
def _judge_as(directory: Path, owner: Owner, who: Owner) -> Iterator[_Judge]:
    """Within the block, a judge of what ``who`` may do: the kernel's answer when this
    process is ``who`` or, being root, becomes the owner for the block; the mode bits when it
    can be neither (a user checking someone else's folder)."""
    with contextlib.ExitStack() as stack:
        if (who.uid, who.gid) == (owner.uid, owner.gid):
            stack.enter_context(as_owner(directory))
        if (os.geteuid(), os.getegid()) == (who.uid, who.gid):

            def kernel(path: str | Path, st: os.stat_result, mask: int) -> bool:
                return os.access(path, mask, effective_ids=True)

            yield kernel
        else:

            def bits(path: str | Path, st: os.stat_result, mask: int) -> bool:
                return _mode_allows(st, who, mask)

            yield bits


def _owner_problems(directory: Path, owner: Owner, who: Owner) -> list[Problem]:
    if owner.uid != who.uid:
        return [
            Problem(
                False,
                f"{directory}: owned by {owner.name}, but smtpkit runs as {who.name}: what "
                f"it creates would not belong to {owner.name}",
            )
        ]
    if owner.is_root:
        return [
            Problem(
                False,
                f"{directory}: owned by root, so smtpkit serve runs as root: production "
                "should give the data folder a user of its own (smtpkit init --owner USER "
                f"for a new one; for this one: useradd --system smtpkit; chown -R smtpkit: "
                f"{directory})",
            )
        ]
    return []


def _roots_files(config: Config) -> Callable[[str], bool]:
    """Which files in the data folder may be root's: the config and the backups ``smtpkit
    init --force`` keeps of it (root writes the config, even one kept in the data folder)."""
    name = config.path.name
    inside = os.path.realpath(config.path.parent) == os.path.realpath(config.server.directory)

    def roots(rel: str) -> bool:
        if not inside:
            return False
        if rel in (name, f"{name}.bak"):
            return True
        number = rel.removeprefix(f"{name}.bak.")
        return number != rel and number.isdigit()

    return roots


def _in_users(parts: tuple[str, ...]) -> bool:
    return parts[:1] == ("users",)


def _is_maildir(parts: tuple[str, ...]) -> bool:
    return (
        len(parts) == 2
        and parts[0] == "users"
        and not parts[1].startswith(".")
        and parts[1] != _LOST_FOUND
    )


def _where_mail_goes(parts: tuple[str, ...]) -> bool:
    """The folders serve writes mail through: it cannot work when one of them fails. The
    queue holds mail for other domains (and the reports owed to local senders)."""
    if parts in ((), ("users",), ("journal",), (_QUEUE_FOLDER,)):
        return True
    if not _in_users(parts):
        return False
    if parts[1] == _SPOOL_FOLDER:  # the pool, and its folder for each worker ("0", "1", ...)
        return len(parts) == 2 or (len(parts) == 3 and parts[2].isdigit())
    return _is_maildir(parts) or (
        len(parts) == 3 and _is_maildir(parts[:2]) and parts[2] in MAILDIR_SUBDIRS
    )


def _modes(mode: int) -> str:
    return f"{stat.S_IMODE(mode):04o}"


class _FolderCheck:
    """Type, access, owner and mode of everything under the data folder."""

    def __init__(self, scan: _Scan, owner: Owner, who: Owner, config: Config) -> None:
        self.scan = scan
        self.domains = config.server.domains
        self.roots = _roots_files(config)
        self.owner = owner
        self.who = who
        self.may: _Judge = lambda path, st, mask: True
        self.lines: list[Problem | _FileGroup] = []
        self.groups: dict[tuple[str, str], _FileGroup] = {}
        self.blocked: set[str] = set()  # folders the server cannot pass: nothing below is judged
        self.denied: set[str] = set()  # entries with an access problem

    def show(self, rel: str) -> str:
        return rel if rel else str(self.scan.directory)

    def add(self, fatal: bool, text: str) -> None:
        self.lines.append(Problem(fatal, text))

    def run(self, may: _Judge) -> list[Problem]:
        """The problems, access judged by ``may``."""
        scan = self.scan
        self.may = may
        self._reach_directory()
        for entry in scan.entries.values():
            parts = entry.parts
            if parts[:1] == ("maildrop",):
                self._maildrop(entry)
                continue
            if parts == (PID_FILE,):
                self._pid_file(entry)
            if entry.is_link:
                self._link(entry)
                continue
            self._kind(entry)
            self._access(entry)
            self._owner_and_mode(entry)
            if _is_maildir(parts) and entry.is_dir:
                self._maildir(entry)
        if "users" not in scan.entries and "" not in scan.unlisted:
            self.add(True, "users: no such folder, so no mailbox (smtpkit user add creates it)")
        elif scan.mailboxes is not None and not scan.mailboxes:
            self.add(False, "users: no mailbox yet (smtpkit user add ADDRESS)")
        for rel, why in scan.unlisted.items():
            entry = scan.entries[rel]
            if rel not in self.denied and not self._below_blocked(entry.parts):
                self.add(
                    False,
                    f"cannot check {self.show(rel)}: {why} for {scan.checker} (run smtpkit "
                    f"check as root or as {self.who.name})",
                )
        return [line if isinstance(line, Problem) else line.problem() for line in self.lines]

    def _maildrop(self, entry: _Entry) -> None:
        """``maildrop/`` is meant to be written by everyone (mode 1733, sticky, not listable:
        smtpkit-sendmail drops files there) and its files are the dropping users'."""
        if len(entry.parts) > 1 or self._below_blocked(entry.parts):
            return
        st = entry.st
        mode = stat.S_IMODE(st.st_mode)
        owner = self.owner
        if entry.is_link or not entry.is_dir:
            self.add(True, "maildrop: not a folder (smtpkit serve makes it, mode 1733)")
        elif st.st_uid != owner.uid:
            # serve opens it as the owner and takes over only a folder it has just made:
            # root never changes the owner of what it finds in a folder the owner controls
            self.add(
                True,
                f"maildrop: owned by {_user(st.st_uid)}, not by {owner.name}, so smtpkit "
                f"serve cannot take it over (chown {owner.name}:{group_name(owner.gid)} "
                f"{entry.path}; serve then sets its mode, 1733)",
            )
        elif not self.may(entry.path, st, _R | _X):
            self.add(True, self._denial("read", entry.rel, st))
        elif mode != 0o1733:
            who = self.who
            fixed = who.is_root or who.uid == st.st_uid
            how = "smtpkit serve sets it right" if fixed else f"smtpkit runs as {who.name}"
            self.add(not fixed, f"maildrop: mode {mode:04o}; it must be mode 1733 ({how})")

    def _pid_file(self, entry: _Entry) -> None:
        """``smtpkit.pid``, which serve locks and then replaces at every start, as the
        owner: a file root left there (a server run as root, then the folder given away)
        stops it."""
        if self._below_blocked(entry.parts):
            return
        st = entry.st
        if entry.is_link or not stat.S_ISREG(st.st_mode):
            self.add(
                True, f"{PID_FILE}: not a regular file, where serve writes its pid (remove it)"
            )
        elif not self.may(entry.path, st, _W):
            self.add(
                True,
                f"{self._denial('write', entry.rel, st)} (once no server runs for this "
                "folder, remove it)",
            )
        else:
            return
        self.denied.add(entry.rel)

    def _below_blocked(self, parts: tuple[str, ...]) -> bool:
        """True when ``parts`` or a folder above it is one the server cannot pass."""
        blocked = self.blocked
        return bool(blocked) and any("/".join(parts[:n]) in blocked for n in range(len(parts) + 1))

    def _denial(self, verb: str, rel: str, st: os.stat_result, blocker: str = "") -> str:
        what = f"{blocker} is owned by" if blocker else "owned by"
        return (
            f"cannot {verb} {self.show(rel)}: {what} {_user(st.st_uid)}, mode "
            f"{_modes(st.st_mode)}; smtpkit runs as {self.who.name}"
        )

    def _reach_directory(self) -> None:
        """The folders above the data folder must let the server through."""
        for folder, st in self.scan.ancestors:
            if not self.may(folder, st, _X):
                self.add(True, self._denial("read", "", st, blocker=str(folder)))
                self.blocked.add("")
                self.denied.add("")
                return

    def _link(self, entry: _Entry) -> None:
        if not _in_users(entry.parts):
            return  # elsewhere (tls/cert.pem -> /etc/letsencrypt/...) links are the admin's
        try:
            target = os.readlink(entry.path)
        except OSError:
            target = "?"
        self.add(
            _where_mail_goes(entry.parts),
            f"{entry.rel}: a symbolic link (to {target}): serve refuses to deliver through "
            "links under users/ (451 4.3.0); make it a real folder or file",
        )

    def _kind(self, entry: _Entry) -> None:
        parts = entry.parts
        if entry.is_dir:
            return
        if _is_maildir(parts):
            self.add(False, f"{entry.rel}: not a folder, so no mailbox (a mailbox is a Maildir)")
        elif _where_mail_goes(parts) and (len(parts) < 3 or parts[1] != _SPOOL_FOLDER):
            self.add(True, f"{entry.rel}: not a folder, where serve needs one")

    def _maildir(self, entry: _Entry) -> None:
        parts = entry.parts
        name = parts[1]
        if entry.rel in self.scan.unlisted:
            return
        for sub in MAILDIR_SUBDIRS:
            if f"{entry.rel}/{sub}" not in self.scan.entries:
                self.add(
                    True,
                    f"{entry.rel}/{sub}: no such folder (a Maildir needs tmp/, new/ and cur/)",
                )
        domains = self.domains
        try:
            reached = normalize_address(name, domains, utf8=True) == name
        except UserError:
            reached = False
        if not reached:
            self.add(
                False,
                f"{entry.rel}: no address reaches this folder: mailboxes are named by "
                f"lower-case addresses in server.domains ({', '.join(domains)})",
            )

    def _needs(self, entry: _Entry) -> int:
        """What the server must be able to do with a folder: read (and pass) everything it
        opens, write where mail, spool files and the journal are made."""
        parts = entry.parts
        if not entry.is_dir:
            return 0
        if not parts:
            # serve writes its pid file here at every start (a new file renamed over the old
            # one), and makes journal/, queue/ and maildrop/ when they are missing
            return _R | _W | _X
        if not _where_mail_goes(parts) or _is_maildir(parts):
            return _R | _X
        return _R | _W | _X

    def _access(self, entry: _Entry) -> None:
        needs = self._needs(entry)
        if not needs or self._below_blocked(entry.parts):
            return
        st = entry.st
        verb = ""
        if needs & _W and not self.may(entry.path, st, _W | _X):
            verb = "write"
        elif not self.may(entry.path, st, _R | _X):
            verb = "read"
        if not verb:
            return
        self.add(_where_mail_goes(entry.parts), self._denial(verb, entry.rel, st))
        self.denied.add(entry.rel)
        if not self.may(entry.path, st, _X):
            self.blocked.add(entry.rel)

    def _owner_and_mode(self, entry: _Entry) -> None:
        st = entry.st
        issues: list[str] = []
        owners = (self.owner.uid, 0) if self.roots(entry.rel) else (self.owner.uid,)
        if st.st_uid not in owners and entry.rel not in self.denied:
            issues.append(f"owned by {_user(st.st_uid)}, not by {self.owner.name}")
        writers = [
            who
            for who, bit in (("group", stat.S_IWGRP), ("others", stat.S_IWOTH))
            if st.st_mode & bit
        ]
        if writers:
            issues.append(f"writable by {' and '.join(writers)}")
        if _in_users(entry.parts) and st.st_mode & stat.S_IROTH and not _marker(entry, st):
            issues.append("readable by others")
        if not issues:
            return
        text = "; ".join(issues)
        if entry.is_dir or not entry.parts:
            self.add(False, f"{self.show(entry.rel)}: {text} (mode {_modes(st.st_mode)})")
            return
        folder, _, name = entry.rel.rpartition("/")
        group = self.groups.get((folder, text))
        if group is None:
            group = self.groups[(folder, text)] = _FileGroup(folder, self.show(folder), text)
            self.lines.append(group)
        group.files.append((name, st))


def _marker(entry: _Entry, st: os.stat_result) -> bool:
    """Dovecot's empty ``dovecot-uidvalidity.<hex>`` marker in a mailbox: made mode 0444
    whatever the umask, and holding nothing to read."""
    return (
        not entry.is_dir and st.st_size == 0 and entry.parts[-1].startswith("dovecot-uidvalidity.")
    )


@dataclass(slots=True)
class _FileGroup:
    """Files of one folder with the same problems: one line, however many there are."""

    rel: str  # the folder below the data folder ("" for the data folder itself)
    folder: str  # the folder as shown
    issues: str
    files: list[tuple[str, os.stat_result]] = field(default_factory=list)

    def problem(self) -> Problem:
        if len(self.files) == 1:
            name, st = self.files[0]
            shown = f"{self.rel}/{name}" if self.rel else name
            return Problem(False, f"{shown}: {self.issues} (mode {_modes(st.st_mode)})")
        names = ", ".join(name for name, _ in self.files[:_NAMES_SHOWN])
        more = len(self.files) - _NAMES_SHOWN
        if more > 0:
            names += f" and {more} more"
        return Problem(False, f"{self.folder}: {len(self.files)} files {self.issues}: {names}")


# --- TLS ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _TlsFile:
    what: str  # "certificate" or "key"
    path: Path
    st: os.stat_result | None  # None: not there
    ancestors: list[tuple[Path, os.stat_result]]

    @classmethod
    def all(cls, config: Config) -> list[_TlsFile]:
        if config.tls is None:
            return []
        found = []
        for what, path in (("certificate", config.tls.certificate), ("key", config.tls.key)):
            try:
                st: os.stat_result | None = os.stat(path)
            except OSError:
                st = None
            found.append(cls(what, path, st, _ancestors(path) if st else []))
        return found


def _show_path(config: Config, path: Path) -> str:
    try:
        return path.relative_to(config.server.directory).as_posix()
    except ValueError:
        return str(path)


def _tls_access_problems(
    config: Config, files: Sequence[_TlsFile], who: Owner, may: _Judge
) -> dict[str, Problem]:
    """The certificate or key the server's identity cannot read ("certificate", "key"), each
    with its problem. Serve started by root reads them with root's rights in its supervisor,
    at start-up and on SIGHUP; serve started as the owner reads them itself."""
    unreadable: dict[str, Problem] = {}
    for file in files:
        if file.st is None:
            continue  # reported with the contents
        blocker = next(
            ((folder, st) for folder, st in file.ancestors if not may(folder, st, _X)), None
        )
        if blocker is None and may(file.path, file.st, _R):
            continue
        folder, st = blocker if blocker is not None else (None, file.st)
        owned = f"{folder} is owned by" if folder is not None else "owned by"
        unreadable[file.what] = Problem(
            False,
            f"cannot read tls -> {file.what} {_show_path(config, file.path)}: {owned} "
            f"{_user(st.st_uid)}, mode {_modes(st.st_mode)}; smtpkit runs as {who.name} "
            "(serve started as root loads it with root's rights, at start-up and on SIGHUP; "
            f"started as {who.name}, it cannot)",
        )
    return unreadable


def _tls_content_problems(config: Config, denied: set[str]) -> list[Problem]:
    """The certificate and key as files: there, parseable, a pair, in date, for our name."""
    tls = config.tls
    if tls is None:
        return []
    problems: list[Problem] = []
    cert_show = _show_path(config, tls.certificate)
    key_show = _show_path(config, tls.key)
    data: dict[str, bytes] = {}
    for what, path, shown in (
        ("certificate", tls.certificate, cert_show),
        ("key", tls.key, key_show),
    ):
        try:
            data[what] = path.read_bytes()
        except FileNotFoundError:
            problems.append(Problem(False, f"tls -> {what}: {shown}: no such file"))
        except OSError as exc:
            if what not in denied:
                problems.append(
                    Problem(
                        False,
                        f"cannot check tls -> {what} {shown}: {exc.strerror} for "
                        f"{_user(os.geteuid())} (run smtpkit check as root)",
                    )
                )
    certs: list[x509.Certificate] = []
    if "certificate" in data:
        try:
            certs = x509.load_pem_x509_certificates(data["certificate"])
        except ValueError:
            problems.append(
                Problem(False, f"tls -> certificate: {cert_show}: no PEM certificate in it")
            )
    key = None
    if "key" in data:
        try:
            key = serialization.load_pem_private_key(data["key"], password=None)
        except TypeError:
            problems.append(
                Problem(
                    False,
                    f"tls -> key: {key_show}: encrypted with a passphrase, which serve cannot "
                    "enter (write it unencrypted, mode 0600)",
                )
            )
        except (ValueError, UnsupportedAlgorithm):
            problems.append(Problem(False, f"tls -> key: {key_show}: no PEM private key in it"))
    if not certs:
        return problems
    leaf = certs[0]  # the server's own certificate comes first, then its chain
    if key is not None and _public(key.public_key()) != _public(leaf.public_key()):
        problems.append(
            Problem(
                False,
                f"tls -> key: {key_show} is not the key of {cert_show}: serve cannot load "
                "the pair (replace both from the same issuance)",
            )
        )
    elif key is not None:
        problems += _ssl_problems(tls, cert_show)
    problems += _validity_problems(leaf, cert_show)
    problems += _name_problems(leaf, cert_show, config.server.hostname)
    return problems


def _ssl_problems(tls: TlsConfig, cert_show: str) -> list[Problem]:
    """What the ssl module (OpenSSL, as serve uses it) says of a pair that looks right: it
    also refuses keys too weak for its security level."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(tls.certificate, tls.key)
    except ssl.SSLError as exc:
        why = exc.reason.lower().replace("_", " ") if exc.reason else str(exc)
        return [Problem(False, f"tls -> certificate: {cert_show}: OpenSSL refuses it ({why})")]
    except OSError:
        return []  # the files changed meanwhile: nothing to say about them
    return []


def _public(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _validity_problems(cert: x509.Certificate, shown: str) -> list[Problem]:
    now = datetime.now(UTC)
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    renew = "renew it, then send smtpkit serve SIGHUP"
    where = f"tls -> certificate: {shown}"
    if end <= now:
        return [
            Problem(
                False,
                f"{where}: expired on {end:%Y-%m-%d}: senders that verify certificates refuse "
                f"it ({renew})",
            )
        ]
    if start > now:
        return [
            Problem(
                False,
                f"{where}: not valid before {start:%Y-%m-%d %H:%M} UTC: senders that verify "
                "certificates refuse it until then (is this machine's clock right?)",
            )
        ]
    if end - now <= EXPIRY_WARNING:
        days = math.ceil((end - now) / timedelta(days=1))
        return [
            Problem(
                False,
                f"{where}: expires on {end:%Y-%m-%d}, in {days} day{'s' if days != 1 else ''} "
                f"({renew})",
            )
        ]
    return []


def _names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    names: list[str] = [str(n).lower() for n in san.get_values_for_type(x509.DNSName)]
    names += [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    return names


def _covers(pattern: str, name: str) -> bool:
    """RFC 6125 6.4.3: an exact match, or a wildcard as the whole left-most label."""
    if pattern == name:
        return True
    if pattern.startswith("*."):
        _, dot, rest = name.partition(".")
        return bool(dot) and rest == pattern[2:] and "." in rest
    return False


def _name_problems(cert: x509.Certificate, shown: str, hostname: str) -> list[Problem]:
    try:
        name = str(ipaddress.ip_address(hostname.strip("[]")))
    except ValueError:
        try:
            name = normalize_hostname(hostname)
        except UserError:
            return []  # reported with server.hostname
    names = _names(cert)
    if any(_covers(pattern, name) for pattern in names):
        return []
    named = f"names {', '.join(names)}" if names else "names no host (no subjectAltName)"
    return [
        Problem(
            False,
            f"tls -> certificate: {shown} {named}, not server.hostname {name}: senders that "
            "verify certificates (MTA-STS, DANE with names) will not deliver over it",
        )
    ]


# --- aliases and postmaster ---------------------------------------------------------------------


def _alias_problems(config: Config, mailboxes: set[str]) -> list[Problem]:
    problems: list[Problem] = []
    aliases = config.aliases
    for source, targets in aliases.items():
        where = f"aliases -> {source}"
        chained = [t for t in targets if t not in mailboxes and t in aliases]
        missing = [t for t in targets if t not in mailboxes and t not in aliases]
        if missing:
            have = "has" if len(missing) == 1 else "have"
            problems.append(
                Problem(
                    False,
                    f"{where}: {', '.join(missing)} {have} no mailbox (smtpkit user add "
                    f"{' '.join(missing)})",
                )
            )
        for target in chained:
            problems.append(
                Problem(
                    False,
                    f"{where}: {target} is an alias, not a mailbox, and aliases do not lead "
                    f"to aliases (name the mailboxes of {target} here)",
                )
            )
        if source in mailboxes and source not in targets:
            problems.append(
                Problem(
                    False,
                    f"{where}: hides the mailbox users/{source}, which receives nothing: the "
                    f"alias wins (add {source} to the alias's addresses to keep both)",
                )
            )
    for domain in config.server.domains:
        postmaster = f"postmaster@{domain}"
        if postmaster in aliases or postmaster in mailboxes:
            continue  # an alias with no mailbox behind it is reported above
        # [aliases] name ASCII addresses only: an international mailbox is no target.
        named = sorted(m for m in mailboxes if m.isascii())
        mine = [m for m in named if m.endswith(f"@{domain}")] or named
        fix = (
            f'add "{postmaster}" = "{mine[0]}" to [aliases]'
            if mine
            else f"smtpkit user add you@{domain}"
        )
        problems.append(
            Problem(
                False,
                f"aliases: {postmaster} reaches no mailbox, and every domain must have one "
                f"(RFC 5321 4.5.1): {fix}",
            )
        )
    return problems
