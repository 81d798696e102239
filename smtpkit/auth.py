"""Passwords for authenticated submission: one file, ``DIR/passwd``, in Dovecot's passwd-file
format, so that smtpkit (AUTH on 587/465) and Dovecot (IMAP) log the same users in with the
same passwords.

Each line is ``address:{ARGON2ID}$argon2id$v=19$m=...,t=...,p=...$salt$hash``, optionally
followed by Dovecot's further colon-separated fields (uid, gid, gecos, home, shell, extra
fields), which a rewrite keeps as they are. Empty lines and lines starting with ``#`` are
Dovecot's comments and are kept too. A line smtpkit cannot use (no address, another scheme, a
damaged hash, an address written in another form than Dovecot looks it up in) is skipped and
reported by ``PasswordFile.problems()``; it never makes ``verify`` fail for other users.

Addresses may be international (RFC 6531): each is written in its canonical form, the mailbox
name of ``smtpkit.addresses`` (``normalize_address(..., utf8=True)``: the local part in NFC and
lower case, the domain as its A-label), exactly as ``smtpkit user passwd`` writes it and as its
mailbox folder is named. A login may spell the address any way that maps to that form (NFD,
upper case, a U-label domain); look-alikes (U+212A KELVIN SIGN, fullwidth letters) are no
address at all, so they never reach the password of the user they resemble.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argon2

from smtpkit.addresses import normalize_address
from smtpkit.errors import SmtpkitError, UserError
from smtpkit.fsutil import fsync_dir, place_durably, unique_name, write_all

__all__ = [
    "ARGON2_MEMORY_KIB",
    "ARGON2_PARALLELISM",
    "ARGON2_TIME_COST",
    "MAX_PASSWORD_BYTES",
    "PASSWD_FILE",
    "PASSWD_MODE",
    "SCHEME",
    "PasswordError",
    "PasswordFile",
    "PasswordFileError",
    "check_password",
    "hash_password",
]

PASSWD_FILE = "passwd"  # the file's name in the data folder
# Group-readable: Dovecot's auth process (user dovecot) reads the file through the data
# folder's group (examples/dovecot-smtpkit.conf); nobody else may.
PASSWD_MODE = 0o640
SCHEME = "{ARGON2ID}"

# Argon2id with OWASP's Password Storage Cheat Sheet setting m=19 MiB, t=2, p=1 (one of its
# equally strong argon2id settings): 15-20 ms per verification on one current core. Of those
# settings, this one keeps memory low, since the server verifies in a small thread pool and
# each verification in flight holds m. p=1 because Dovecot verifies through libsodium, which
# runs Argon2 on one thread, lane after lane: more lanes would buy no speed there. It is also
# what Dovecot's own `doveadm pw -s ARGON2ID` writes. Salt 16 bytes and tag 32 bytes, as in
# RFC 9106's recommended settings (section 4; argon2-cffi's defaults).
ARGON2_TIME_COST = 2
ARGON2_MEMORY_KIB = 19 * 1024
ARGON2_PARALLELISM = 1

# Longer passwords are refused rather than hashed: the hashing cost hardly depends on the
# length, but a bound keeps anyone from handing the verifier megabytes.
MAX_PASSWORD_BYTES = 1024


@cache
def _argon2() -> tuple[argon2.PasswordHasher, type[Exception], type[Exception]]:
    """argon2 and its hasher, imported on first use: every smtpkit command imports this
    module, and only password checks and changes need the library."""
    import argon2
    from argon2.exceptions import InvalidHashError, VerificationError

    hasher = argon2.PasswordHasher(
        time_cost=ARGON2_TIME_COST,
        memory_cost=ARGON2_MEMORY_KIB,
        parallelism=ARGON2_PARALLELISM,
        hash_len=32,
        salt_len=16,
        type=argon2.Type.ID,
    )
    return hasher, VerificationError, InvalidHashError


def load_hasher() -> None:
    """Import argon2 now, as the user who started the program: a command or worker that
    later runs as the data folder's owner may be unable to read the folder Python's
    packages live in (root's home, for one)."""
    _argon2()


# Verified against when the address has no usable password, so that an unknown user costs
# the same time as a known one with a wrong password: the time of a failed login tells
# nobody which users exist. Its password is a random string nobody kept; its parameters are
# the ones above (a test keeps them equal).
_DUMMY_HASH = (
    "$argon2id$v=19$m=19456,t=2,p=1$5o1a5Xb2LHNCPPi8nztSng"
    "$k2e3rwdOeazN/Ujid/mGJ6WdVt28x6tIaHW5EUnYCNU"
)

# NUL separates the fields of AUTH PLAIN (RFC 4616 2), and CR or LF end a command line: no
# client could send a password holding one of them.
_FORBIDDEN = ("\x00", "\r", "\n")


class PasswordError(UserError):
    """A new password that cannot be used: empty, too long, or holding NUL, CR or LF."""


class PasswordFileError(SmtpkitError):
    """The password file cannot be read or written. For a login, a temporary failure
    (RFC 4954 ``454 4.7.0``): whether the password is right is unknown."""


def _encode(password: str | bytes) -> bytes:
    if isinstance(password, bytes):
        return password
    try:
        # surrogateescape: bytes that were no UTF-8 on the way in go out unchanged.
        return password.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise PasswordError("the password is not valid text") from None


def check_password(password: str) -> None:
    """Raise ``PasswordError`` for a password that cannot be set: empty, over
    ``MAX_PASSWORD_BYTES`` in UTF-8, or holding NUL, CR or LF."""
    secret = _encode(password)
    if not secret:
        raise PasswordError("the password is empty")
    if len(secret) > MAX_PASSWORD_BYTES:
        raise PasswordError(
            f"the password is {len(secret)} bytes long; at most {MAX_PASSWORD_BYTES} are allowed"
        )
    if any(c in password for c in _FORBIDDEN):
        raise PasswordError("the password holds a NUL, CR or LF character, which no login can send")


def hash_password(password: str) -> str:
    """The passwd-file form of ``password``: ``{ARGON2ID}$argon2id$v=19$m=19456,t=2,p=1$...``
    with a fresh random salt. Raises ``PasswordError`` as ``check_password`` does."""
    check_password(password)
    return SCHEME + _argon2()[0].hash(_encode(password))


def _matches(encoded: str, secret: bytes) -> bool:
    """One Argon2 verification; libargon2 compares the tags in constant time."""
    hasher, mismatch, broken = _argon2()
    try:
        return hasher.verify(encoded, secret)
    except (mismatch, broken):
        return False


def _usable_hash(field: str) -> tuple[str | None, str | None]:
    """(the Argon2 string, None) for a password field smtpkit can verify, else (None, why)."""
    if not field:
        return None, "the password field is empty"
    if not field.startswith("{") or "}" not in field:
        return (
            None,
            f"the password has no scheme (expected {SCHEME}; set it with smtpkit user passwd)",
        )
    scheme, _, encoded = field.partition("}")
    if scheme.upper() + "}" != SCHEME:
        return None, (
            f"the password scheme {scheme}}} is not one smtpkit verifies (expected {SCHEME}; "
            "set it again with smtpkit user passwd)"
        )
    try:
        import argon2

        params = argon2.extract_parameters(encoded)
    except _argon2()[2]:
        return None, f"the password is no valid {SCHEME} hash"
    if params.type is not argon2.Type.ID:
        return None, f"the password is no valid {SCHEME} hash"
    return encoded, None


def _split(line: str) -> tuple[str, str, str] | None:
    """(user, password field, the rest with its leading colon) of a passwd-file line; None for
    a comment or an empty line, as Dovecot skips them."""
    if line.endswith("\r"):
        line = line[:-1]  # Dovecot's line reader drops a CR before the LF
    if not line or line.startswith("#"):
        return None
    user, _, rest = line.partition(":")
    field, colon, extra = rest.partition(":")
    return user, field, colon + extra


def _canonical(user: str) -> str | None:
    try:
        return normalize_address(user, utf8=True)
    except UserError:
        return None


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """What one version of the file says: usable hashes by address, and the problems."""

    key: tuple[int, ...] | None  # identity of the file version read (None: no file)
    hashes: dict[str, str]
    problems: tuple[str, ...]


_EMPTY = _Snapshot(None, {}, ())
_NS = 1_000_000_000


class PasswordFile:
    """The password file ``path`` (``DIR/passwd``), for the addresses of ``domains`` (any
    address when None).

    Reading methods see the file as it is now: it is read again whenever its inode, size or
    modification time changed, so a password set by ``smtpkit user passwd`` counts at the
    next login, with no reload. They raise ``PasswordFileError`` when the file exists but
    cannot be read. All methods are thread-safe.
    """

    def __init__(self, path: Path, domains: tuple[str, ...] | None = None) -> None:
        self.path = path
        self.domains = domains
        self._lock = threading.Lock()
        self._snapshot: _Snapshot | None = None

    @classmethod
    def in_folder(cls, directory: Path, domains: tuple[str, ...] | None = None) -> PasswordFile:
        """The password file of the data folder ``directory``."""
        return cls(directory / PASSWD_FILE, domains)

    # --- reading ------------------------------------------------------------------------

    def verify(self, address: str, password: str | bytes) -> bool:
        """True when ``password`` is the password of ``address``.

        Slow on purpose (one Argon2 verification, 15-20 ms): call it off the event loop; it
        releases the GIL while it hashes, so a thread pool verifies in parallel.
        An address without a usable password, or no valid address at all, costs the same
        verification (against a fixed hash) and gives False. A password over
        ``MAX_PASSWORD_BYTES`` gives False at once, whoever the user. Raises
        ``PasswordFileError`` when the file cannot be read.
        """
        try:
            secret = _encode(password)
        except PasswordError:
            # A str no client could have sent (a lone surrogate) is simply a wrong password.
            secret = str(password).encode("utf-8", "surrogatepass")
        hashes = self._current().hashes
        if len(secret) > MAX_PASSWORD_BYTES:
            return False
        encoded = hashes.get(self._lookup_key(address) or "")
        if encoded is None:
            _matches(_DUMMY_HASH, secret)
            return False
        return _matches(encoded, secret)

    def has(self, address: str) -> bool:
        """True when ``address`` has a password smtpkit can verify."""
        return (self._lookup_key(address) or "") in self._current().hashes

    def addresses(self) -> set[str]:
        """The addresses with a password smtpkit can verify."""
        return set(self._current().hashes)

    def problems(self) -> tuple[str, ...]:
        """One line per skipped line of the file, such as ``passwd line 3: ...``; the lines'
        passwords are never quoted."""
        return self._current().problems

    def _lookup_key(self, address: str) -> str | None:
        try:
            return normalize_address(address, self.domains, utf8=True)
        except UserError:
            return None

    def _current(self) -> _Snapshot:
        with self._lock:
            snapshot = self._snapshot
            try:
                st = os.stat(self.path, follow_symlinks=False)
            except FileNotFoundError:
                self._snapshot = _EMPTY
                return _EMPTY
            except OSError as exc:
                raise self._error("read", exc) from None
            if snapshot is None or snapshot.key != _identity(st):
                snapshot = self._snapshot = self._load()
            return snapshot

    def _load(self) -> _Snapshot:
        try:
            data, st = self._read()
        except FileNotFoundError:
            return _EMPTY
        except OSError as exc:
            raise self._error("read", exc) from None
        hashes: dict[str, str] = {}
        first: dict[str, int] = {}
        problems: list[str] = []
        for number, line in enumerate(data.decode("utf-8", "surrogateescape").split("\n"), 1):
            why = self._judge(line, number, hashes, first)
            if why is not None:
                problems.append(f"{self.path.name} line {number}: {why}")
        return _Snapshot(_identity(st), hashes, tuple(problems))

    def _judge(
        self, line: str, number: int, hashes: dict[str, str], first: dict[str, int]
    ) -> str | None:
        """Take one line into ``hashes``; what is wrong with it, if anything."""
        fields = _split(line)
        if fields is None:
            return None
        user, field, _ = fields
        if ":" not in line:
            # No user name to show: a line without a colon may be a password pasted alone.
            return f"no ':' (expected address:{SCHEME}hash)"
        try:
            address = normalize_address(user, self.domains, utf8=True)
        except UserError as exc:
            return str(exc)
        if address != user:
            # Dovecot looks logins up lower-cased (auth_username_format = %Lu), exactly: it
            # neither normalizes Unicode nor maps a U-label domain to its A-label.
            return f"{_shown(user)} must be written {address} (as Dovecot looks it up)"
        if address in first:
            return f"{address} is there again: Dovecot and smtpkit use line {first[address]}"
        first[address] = number
        encoded, why = _usable_hash(field)
        if encoded is None:
            return f"{address}: {why}"
        hashes[address] = encoded
        return None

    def _read(self) -> tuple[bytes, os.stat_result]:
        """The file's bytes with the stat of the very version read; no symbolic link."""
        fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            chunks = []
            while chunk := os.read(fd, 1 << 16):
                chunks.append(chunk)
            return b"".join(chunks), st
        finally:
            os.close(fd)

    def _error(self, doing: str, exc: OSError) -> PasswordFileError:
        if exc.errno == errno.ELOOP:
            return PasswordFileError(f"cannot {doing} {self.path}: a symbolic link")
        return PasswordFileError(f"cannot {doing} {self.path}: {exc.strerror}")

    # --- writing ------------------------------------------------------------------------

    def set(self, address: str, password: str) -> bool:
        """Set the password of ``address`` (a fresh Argon2id hash), replacing any line it
        has, with that line's further fields, and any other spelling of it; False when the
        address had no line before. The line names the canonical form (an international
        address too). Raises ``UserError`` for an address outside ``domains`` or a
        look-alike, ``PasswordError`` for an unusable password."""
        canonical = normalize_address(address, self.domains, utf8=True)
        hashed = hash_password(password)
        with self._rewriting() as lines:
            place = [i for i, line in enumerate(lines) if _owner(line) == canonical]
            if not place:
                lines.append(f"{canonical}:{hashed}")
            else:
                old = lines[place[0]]
                fields = _split(old)
                rest = fields[2] if fields is not None else ""
                crlf = "\r" if old.endswith("\r") else ""
                lines[place[0]] = f"{canonical}:{hashed}{rest}{crlf}"
                for index in reversed(place[1:]):
                    del lines[index]
        return bool(place)

    def remove(self, address: str) -> bool:
        """Remove every line of ``address`` (in any spelling); False when there was none."""
        canonical = normalize_address(address, self.domains, utf8=True)
        with self._rewriting() as lines:
            before = len(lines)
            lines[:] = [line for line in lines if _owner(line) != canonical]
            removed = len(lines) != before
        return removed

    @contextmanager
    def _rewriting(self) -> Iterator[list[str]]:
        """The file's lines (without their LF) to change in place; written back atomically
        (mode 0640) when they changed. Rewrites of one folder's file take turns: two at
        once would each write their own copy and lose the other's change."""
        folder = self.path.parent
        try:
            lock = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise self._error("write", exc) from None
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                data, before = self._read()
                previous: int | None = before.st_mtime_ns
            except FileNotFoundError:
                data, previous = b"", None
            except OSError as exc:
                raise self._error("read", exc) from None
            text = data.decode("utf-8", "surrogateescape")
            lines = text.split("\n")
            if lines[-1] == "":
                lines.pop()  # the final LF ends the last line, it starts none
            original = list(lines)
            yield lines
            if lines == original:
                return
            out = "".join(f"{line}\n" for line in lines).encode("utf-8", "surrogateescape")
            try:
                self._write(out, previous)
            except OSError as exc:
                raise self._error("write", exc) from None
        finally:
            os.close(lock)  # releases the lock

    def _write(self, data: bytes, previous: int | None) -> None:
        """Replace the file with ``data``; ``previous`` is the replaced version's mtime (ns)."""

        def fill(fd: int) -> None:
            # The mode exactly, whatever the umask: Dovecot's group must be able to read.
            os.fchmod(fd, PASSWD_MODE)
            write_all(fd, data)
            # Dovecot rereads a passwd-file only when its size or its mtime in whole seconds
            # changed, and a new password leaves the size as it was: each version gets a
            # later second than the one before, a second ahead of the clock if need be (only
            # when passwords change faster than one a second), or Dovecot would keep
            # accepting the old password.
            if previous is not None:
                mtime = os.fstat(fd).st_mtime_ns
                if mtime // _NS <= previous // _NS:
                    later = (previous // _NS + 1) * _NS
                    os.utime(fd, ns=(later, later))

        tmp = self.path.with_name(f".{self.path.name}.{unique_name()}.tmp")
        place_durably(tmp, self.path, fill, mode=PASSWD_MODE)
        fsync_dir(self.path.parent)


def _shown(user: str) -> str:
    """A user name as a problem line quotes it. A decomposed (NFD) name looks just like its
    NFC form on a terminal, so it is said to be one, with its code points escaped."""
    if unicodedata.is_normalized("NFC", user):
        return repr(user)
    return f"{ascii(user)} (decomposed: not in NFC)"


def _owner(line: str) -> str | None:
    """The canonical address a line belongs to, whatever its spelling or its password."""
    fields = _split(line)
    if fields is None or ":" not in line:
        return None
    return _canonical(fields[0])


def _identity(st: os.stat_result) -> tuple[int, ...]:
    """What changes whenever the file does: a rewrite makes a new inode, an edit in place
    changes the size or the modification time."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
