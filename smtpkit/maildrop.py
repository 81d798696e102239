"""The maildrop: where ``smtpkit sendmail`` leaves mail from local programs for the server.

Like Postfix's postdrop, sendmail never talks to the network: it writes the message into
``DIR/maildrop/`` and exits. Any local user may drop a message there, even while the server
is stopped; the running server picks each file up, reads it with ``read`` as untrusted input,
takes the sender from the file's owner (never from its content), delivers it and removes it.

The file format (version 2)::

    smtpkit-maildrop 2\\n
    sender <JSON>\\n          null (no -f), or the -f address as given ("" for -f '<>')
    full-name <JSON>\\n       null (no -F), or the -F name
    recipients <JSON>\\n      a non-empty array of non-empty strings
    flags <JSON>\\n           an array of distinct names: "extract-recipients" (-t),
                             "ignore-dots" (-i, -oi)
    dsn <JSON>\\n             {"notify": ..., "ret": ..., "envid": ...}: the DSN requests
                             (RFC 3461) of -N, -R and -V, each null when not given; NOTIFY
                             as the queue envelope keeps it (an array of "NEVER", or of
                             "SUCCESS", "FAILURE", "DELAY" in that order), RET "FULL" or
                             "HDRS", the ENVID decoded (printable ASCII)
    \\n
    <the message: every line ending in CRLF>

Version 1 is the same without the ``dsn`` line. ``drop`` writes version 1 whenever no DSN
option was given, so that a server of an older release (still running while the package is
upgraded) reads what most programs drop; ``read`` takes both.

The envelope lines end in a bare LF and are printable ASCII: each value is JSON written with
``ensure_ascii``, so no recipient, sender or name can contain a line break, a NUL or a second
field, whatever it holds. Decoded strings may hold any character but NUL, and must be valid
Unicode. The envelope is at most ``MAX_ENVELOPE`` bytes.

Permissions. The folder has mode 1733 and belongs to the data folder's owner, the user the
server runs as: anyone may create a file in it (wx for all), nobody but its owner can list
it (no r for others), and the sticky bit lets nobody rename or remove another user's file.
A dropped file has mode 0644, under a name that carries 128 random bits: the server reads it
as "others", and other users can neither list the folder nor guess a name, so they cannot
open a file they cannot find. The alternative, 0640 with the server's group, would need the
folder to be setgid (mode 3733, so that files take its group) or a setgid helper as Postfix's
postdrop is; and 0604 would lock out a server whose group happens to be the file's, since
the kernel checks the owner, then the group, then the others bits, stopping at the first
class that matches. A file is written as 0600 under a hidden temporary name and becomes 0644
only when complete, just before the rename to its final name.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import io
import json
import os
import secrets
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO

from smtpkit.errors import SmtpkitError
from smtpkit.fsutil import unique_name, write_all

if TYPE_CHECKING:
    from smtpkit.protocol.dsn import MailDsn, RcptDsn, Ret

# smtpkit.protocol.dsn is imported where a DSN request is handled: the package brings the
# whole SMTP engine with it, which sendmail (run by cron for every message) need not load
# for the common drop without one.

__all__ = [
    "FLAG_EXTRACT_RECIPIENTS",
    "FLAG_IGNORE_DOTS",
    "MAGIC",
    "MAILDROP",
    "MAX_ENVELOPE",
    "VERSION",
    "VERSIONS",
    "DropEnvelope",
    "DropFailed",
    "Dropped",
    "MaildropError",
    "MaildropUnreachable",
    "MessageTooBig",
    "SendmailInput",
    "drop",
    "encode_envelope",
    "ensure_maildrop",
    "leftovers",
    "maildrop_path",
    "pending",
    "read",
]

#: The folder's name in the data folder.
MAILDROP = "maildrop"
MAGIC = b"smtpkit-maildrop"
#: The newest format; ``VERSIONS`` are those ``read`` takes.
VERSION = 2
VERSIONS = (1, 2)
#: The most the envelope (from the first line to the blank line) may take: room for
#: thousands of recipients, while a hostile file cannot make the server hold much.
MAX_ENVELOPE = 1024 * 1024

FLAG_EXTRACT_RECIPIENTS = "extract-recipients"
FLAG_IGNORE_DOTS = "ignore-dots"
_FLAGS = (FLAG_EXTRACT_RECIPIENTS, FLAG_IGNORE_DOTS)

_FOLDER_MODE = 0o1733
_FILE_MODE = 0o644
_TEMPORARY = ".tmp."
_CHUNK = 64 * 1024
_PRINTABLE = bytes(range(0x20, 0x7F))


class MaildropError(SmtpkitError):
    """A maildrop file that is malformed, or a maildrop that cannot be used; one line."""


class MessageTooBig(MaildropError):
    """The message is over the size limit (nothing was left in the maildrop)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"message too big: over the limit of {limit} bytes")
        self.limit = limit


class MaildropUnreachable(MaildropError):
    """The maildrop folder is missing, not a folder, or not writable by this user."""


class DropFailed(MaildropError):
    """Writing the file failed for a reason that may pass: the disk is full (``disk_full``,
    ENOSPC and EDQUOT) or an I/O error. Nothing was left in the maildrop."""

    def __init__(self, message: str, *, disk_full: bool = False) -> None:
        super().__init__(message)
        self.disk_full = disk_full


@dataclass(frozen=True, slots=True)
class DropEnvelope:
    """What sendmail was asked, as its command line and (with -t) the headers said.

    ``sender`` is the -f address as given (``""`` for the null sender ``<>``), None without
    -f; the server honours it only for some owners. ``full_name`` is -F, None without it.
    The two flags say how the message was read; the message is already processed by them.
    ``notify`` (-N, for every recipient), ``ret`` (-R) and ``envid`` (-V) are the DSN
    requests, with the values and rules of SMTP's NOTIFY, RET and ENVID
    (``smtpkit.protocol.dsn``); None when not given.
    """

    recipients: tuple[str, ...]
    sender: str | None = None
    full_name: str | None = None
    extract_recipients: bool = False
    ignore_dots: bool = False
    notify: frozenset[str] | None = None
    ret: Ret | None = None
    envid: str | None = None

    @property
    def has_dsn(self) -> bool:
        return self.notify is not None or self.ret is not None or self.envid is not None

    def mail_dsn(self) -> MailDsn:
        """RET and ENVID, as SMTP's MAIL would have given them; ``ValueError`` for values
        SMTP would refuse."""
        from smtpkit.protocol.dsn import MailDsn

        return MailDsn(ret=self.ret, envid=self.envid)

    def rcpt_dsn(self) -> RcptDsn:
        """NOTIFY, as SMTP's RCPT would have given it for each recipient; ``ValueError``
        for values SMTP would refuse."""
        from smtpkit.protocol.dsn import RcptDsn

        return RcptDsn(notify=self.notify)


def maildrop_path(directory: Path) -> Path:
    """The maildrop of the data folder ``directory``."""
    return directory / MAILDROP


# --- reading sendmail's input -------------------------------------------------------------


class SendmailInput:
    """sendmail's rules for a message on standard input, as lines with CRLF ends.

    A line ending in LF or CRLF comes out ending in CRLF; a CR anywhere else is kept as data
    (for the server to judge). A last line without an end gets one. Without ``ignore_dots``
    (sendmail's -i, -oi), a line holding a single dot ends the input, as in sendmail. Lines
    come in pieces of at most ``chunk`` bytes (a piece not ending in CRLF is continued by the
    next), so no line, however long, is held whole. Applying it to its own output changes
    nothing.
    """

    def __init__(self, stream: BinaryIO, *, ignore_dots: bool, chunk: int = _CHUNK) -> None:
        if chunk < 3:  # a dot line, ".\r\n", must come in one read
            raise ValueError("chunk must be at least 3 bytes")
        self._stream = stream
        self._ignore_dots = ignore_dots
        self._chunk = chunk
        self._cr = b""  # a CR held back at the end of a piece: is it the start of a CRLF?
        self._line_start = True
        self._done = False

    def readline(self) -> bytes:
        """The next piece of a line, or b"" at the end of the message."""
        if self._done:
            return b""
        raw = self._stream.readline(self._chunk)
        piece = self._cr + raw
        self._cr = b""
        if piece.endswith(b"\n"):
            line = piece[:-1]
            if line.endswith(b"\r"):
                line = line[:-1]
            if self._ends_input(line):
                return b""
            self._line_start = True
            return line + b"\r\n"
        if len(raw) == self._chunk:
            # The line goes on. A CR at the end of this piece may be half of a CRLF whose
            # LF comes in the next read: hold it back until then (the piece stays non-empty,
            # being at least three bytes long).
            if piece.endswith(b"\r"):
                self._cr = b"\r"
                piece = piece[:-1]
            self._line_start = False
            return piece
        # The end of the input, after a last line without an end (or none).
        self._done = True
        if not piece:
            return b"" if self._line_start else b"\r\n"  # a long last line ends here
        if self._ends_input(piece):
            return b""
        return piece + b"\r\n"

    def _ends_input(self, line: bytes) -> bool:
        if self._line_start and line == b"." and not self._ignore_dots:
            self._done = True
            return True
        return False


# --- the envelope ---------------------------------------------------------------------------


def _check_text(what: str, value: str) -> None:
    if "\0" in value:
        raise MaildropError(f"{what} holds a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise MaildropError(f"{what} is not valid Unicode") from None


def _check_envelope(envelope: DropEnvelope) -> None:
    if not envelope.recipients:
        raise MaildropError("no recipients")
    for recipient in envelope.recipients:
        if not recipient:
            raise MaildropError("an empty recipient")
        _check_text("a recipient", recipient)
    if envelope.sender is not None:
        _check_text("the sender", envelope.sender)
    if envelope.full_name is not None:
        _check_text("the full name", envelope.full_name)
    if envelope.has_dsn:
        try:
            envelope.mail_dsn()
            envelope.rcpt_dsn()
        except ValueError as exc:
            raise MaildropError(str(exc)) from None


def _dsn_json(envelope: DropEnvelope) -> dict[str, Any]:
    # The queue envelope's JSON forms (MailDsn.to_dict, RcptDsn.to_dict), not another one.
    return {"notify": envelope.rcpt_dsn().to_dict()["notify"], **envelope.mail_dsn().to_dict()}


def _json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=True).encode("ascii")


def encode_envelope(envelope: DropEnvelope) -> bytes:
    """The file's first part, up to and including the blank line. Raises ``MaildropError``
    for an envelope ``read`` would refuse."""
    _check_envelope(envelope)
    flags = [
        name
        for name, on in (
            (FLAG_EXTRACT_RECIPIENTS, envelope.extract_recipients),
            (FLAG_IGNORE_DOTS, envelope.ignore_dots),
        )
        if on
    ]
    lines = [
        MAGIC + b" %d\n" % (VERSION if envelope.has_dsn else 1),
        b"sender " + _json(envelope.sender) + b"\n",
        b"full-name " + _json(envelope.full_name) + b"\n",
        b"recipients " + _json(list(envelope.recipients)) + b"\n",
        b"flags " + _json(flags) + b"\n",
    ]
    if envelope.has_dsn:
        lines.append(b"dsn " + _json(_dsn_json(envelope)) + b"\n")
    data = b"".join([*lines, b"\n"])
    if len(data) > MAX_ENVELOPE:
        raise MaildropError(f"envelope too big: over {MAX_ENVELOPE} bytes")
    return data


# --- dropping -----------------------------------------------------------------------------


def _load_syncfs() -> Callable[[int], None] | None:
    """syncfs(2) through libc, or None where there is none (not Linux)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        func = libc.syncfs
    except (OSError, AttributeError):
        return None

    def syncfs(fd: int) -> None:
        if func(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    return syncfs


def _make_name_durable(maildrop: Path, fd: int) -> None:
    """Make the new name in ``maildrop`` survive a crash. fsync of the folder needs a
    descriptor opened for reading, which only its owner (and root) may have in a 1733
    folder; for everyone else, a syncfs of the filesystem through the file's own
    descriptor does the same, at a higher price."""
    try:
        folder = os.open(maildrop, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except PermissionError:
        syncfs = _load_syncfs()
        if syncfs is not None:
            syncfs(fd)
        return
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def _failure(maildrop: Path, exc: OSError) -> MaildropError:
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DropFailed(f"cannot write the maildrop {maildrop}: {reason}", disk_full=True)
    return DropFailed(f"cannot write the maildrop {maildrop}: {reason}")


def _unreachable(maildrop: Path, exc: OSError) -> MaildropError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return _failure(maildrop, exc)
    reason = exc.strerror or str(exc)
    # A link opened with O_DIRECTORY|O_NOFOLLOW fails with ENOTDIR, not ELOOP.
    if exc.errno == errno.ELOOP or (exc.errno == errno.ENOTDIR and maildrop.is_symlink()):
        reason = "a symbolic link"
    return MaildropUnreachable(f"cannot write the maildrop {maildrop}: {reason}")


def drop(maildrop: Path, envelope: DropEnvelope, message: BinaryIO, *, max_size: int) -> Path:
    """Leave a message in ``maildrop`` for the server; returns the file's final path.

    ``message`` is read as sendmail reads standard input (``SendmailInput``, with
    ``envelope.ignore_dots``) and written with CRLF line ends. The file is created under a
    hidden temporary name (O_EXCL, O_NOFOLLOW, mode 0600), made durable, given mode 0644
    and renamed to its final name, which is then made durable too: the server sees the
    whole file or nothing. A message of more than ``max_size`` bytes (as written) stops the
    reading and raises ``MessageTooBig``; a folder that is missing or not writable raises
    ``MaildropUnreachable``; a full disk or an I/O error ``DropFailed``. In every failure
    nothing is left behind.
    """
    head = encode_envelope(envelope)
    try:
        folder = os.open(maildrop, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise _unreachable(maildrop, exc) from None
    try:
        final = f"{unique_name()}.{secrets.token_hex(16)}"
        temporary = _TEMPORARY + final
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(temporary, flags, 0o600, dir_fd=folder)
        except OSError as exc:
            raise _unreachable(maildrop, exc) from None
        try:
            placed = False
            try:
                _write(fd, head, SendmailInput(message, ignore_dots=envelope.ignore_dots), max_size)
                os.fchmod(fd, _FILE_MODE)
                os.fsync(fd)
                os.rename(temporary, final, src_dir_fd=folder, dst_dir_fd=folder)
                placed = True
                _make_name_durable(maildrop, fd)
            except BaseException:
                try:
                    os.unlink(final if placed else temporary, dir_fd=folder)
                except OSError:
                    pass
                raise
        except OSError as exc:
            raise _failure(maildrop, exc) from None
        finally:
            os.close(fd)
    finally:
        os.close(folder)
    return maildrop / final


def _write(fd: int, head: bytes, source: SendmailInput, max_size: int) -> None:
    buffer = bytearray(head)
    size = 0
    while True:
        try:
            piece = source.readline()
        except OSError as exc:
            raise DropFailed(f"cannot read the message: {exc.strerror or exc}") from None
        if not piece:
            break
        size += len(piece)
        if size > max_size:
            raise MessageTooBig(max_size)
        buffer += piece
        if len(buffer) >= _CHUNK:
            write_all(fd, bytes(buffer))
            buffer.clear()
    write_all(fd, bytes(buffer))


# --- the server's side ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Dropped:
    """A maildrop file, opened and checked. ``uid`` and ``gid`` are its owner's (from the
    open file, so they describe what is read); ``message`` is positioned at the message's
    first byte, ``offset`` bytes into the file, and ``size`` is the message's length when it
    was opened. Close it (or use it in a ``with`` block)."""

    path: Path
    envelope: DropEnvelope
    uid: int
    gid: int
    offset: int
    size: int
    message: BinaryIO

    def chunks(self, chunk: int = _CHUNK) -> Iterator[bytes]:
        """The message's ``size`` bytes, in pieces of at most ``chunk``: no more, even if the
        file grew since it was opened. Raises ``MaildropError`` if it shrank."""
        self.message.seek(self.offset)
        left = self.size
        while left > 0:
            data = self.message.read(min(chunk, left))
            if not data:
                raise MaildropError(f"{self.path.name}: shorter than when it was opened")
            left -= len(data)
            yield data

    def close(self) -> None:
        self.message.close()

    def __enter__(self) -> Dropped:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def read(path: Path, *, max_size: int) -> Dropped:
    """Open and check the maildrop file ``path``: untrusted input, written by any local
    user. Raises ``MaildropError`` with a one-line reason for anything but a regular file
    with one link, a version 1 or 2 envelope in the exact format, and a message of at most
    ``max_size`` bytes (``MessageTooBig``)."""
    name = path.name
    try:
        # O_NONBLOCK: a FIFO put there must not hang the server in open().
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        reason = "a symbolic link" if exc.errno == errno.ELOOP else exc.strerror or str(exc)
        raise MaildropError(f"{name}: cannot open: {reason}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise MaildropError(f"{name}: not a regular file")
        if info.st_nlink != 1:
            # A hard link to someone else's file would pass for a drop of theirs.
            raise MaildropError(f"{name}: has {info.st_nlink} links")
        os.set_blocking(fd, True)
        stream = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    try:
        envelope = _parse_envelope(stream, name)
        offset = stream.tell()
        size = info.st_size - offset
        if size > max_size:
            raise MessageTooBig(max_size)
    except BaseException:
        stream.close()
        raise
    return Dropped(path, envelope, info.st_uid, info.st_gid, offset, size, stream)


class _Envelope:
    """Reads the envelope lines, within MAX_ENVELOPE in all."""

    def __init__(self, stream: io.BufferedReader, name: str) -> None:
        self.stream = stream
        self.name = name
        self.left = MAX_ENVELOPE

    def error(self, reason: str) -> MaildropError:
        return MaildropError(f"{self.name}: {reason}")

    def line(self) -> bytes:
        data = self.stream.readline(self.left + 1)
        self.left -= len(data)
        if self.left < 0:
            raise self.error(f"envelope too big: over {MAX_ENVELOPE} bytes")
        if not data.endswith(b"\n"):
            raise self.error("envelope ends too early")
        line = data[:-1]
        if line.translate(None, _PRINTABLE):
            raise self.error("envelope line holds a byte that is not printable ASCII")
        return line

    def field(self, key: bytes) -> Any:
        line = self.line()
        name, space, value = line.partition(b" ")
        if name != key or not space:
            shown = name.decode("ascii")[:40]
            raise self.error(f"expected {key.decode()!r}, found {shown!r}")
        try:
            return json.loads(value)
        except (ValueError, RecursionError):
            raise self.error(f"{key.decode()}: not valid JSON") from None

    def text(self, key: bytes, value: Any) -> str:
        if not isinstance(value, str):
            raise self.error(f"{key.decode()}: not a string")
        try:
            _check_text(key.decode(), value)
        except MaildropError as exc:
            raise self.error(str(exc)) from None
        return value

    def optional_text(self, key: bytes) -> str | None:
        value = self.field(key)
        return None if value is None else self.text(key, value)

    def dsn(self) -> tuple[MailDsn, RcptDsn]:
        """The ``dsn`` line, read back by the queue envelope's own checks."""
        from smtpkit.protocol.dsn import MailDsn, RcptDsn

        value = self.field(b"dsn")
        if not isinstance(value, dict) or set(value) != {"notify", "ret", "envid"}:
            raise self.error("dsn: not an object of notify, ret and envid")
        try:
            rcpt = RcptDsn.from_dict({"notify": value["notify"]})
            mail = MailDsn.from_dict({"ret": value["ret"], "envid": value["envid"]})
        except ValueError as exc:
            raise self.error(f"dsn: {exc}") from None
        return mail, rcpt

    def texts(self, key: bytes) -> list[str]:
        value = self.field(key)
        if not isinstance(value, list):
            raise self.error(f"{key.decode()}: not a list")
        return [self.text(key, item) for item in value]


def _parse_envelope(stream: io.BufferedReader, name: str) -> DropEnvelope:
    reader = _Envelope(stream, name)
    first = stream.readline(len(MAGIC) + 16)
    reader.left -= len(first)
    magic, _, version = first.rstrip(b"\n").partition(b" ")
    if magic != MAGIC or not first.endswith(b"\n"):
        raise reader.error("not a maildrop file")
    if version not in [b"%d" % v for v in VERSIONS]:
        shown = version.decode("ascii", "replace")[:20]
        raise reader.error(f"unsupported maildrop version {shown!r}")
    sender = reader.optional_text(b"sender")
    full_name = reader.optional_text(b"full-name")
    recipients = reader.texts(b"recipients")
    if not recipients:
        raise reader.error("no recipients")
    if not all(recipients):
        raise reader.error("an empty recipient")
    flags = reader.texts(b"flags")
    unknown = [flag for flag in flags if flag not in _FLAGS]
    if unknown:
        raise reader.error(f"unknown flag {unknown[0][:40]!r}")
    if len(set(flags)) != len(flags):
        raise reader.error("a flag given twice")
    notify: frozenset[str] | None = None
    ret: Ret | None = None
    envid: str | None = None
    if version != b"1":
        mail_dsn, rcpt_dsn = reader.dsn()
        notify, ret, envid = rcpt_dsn.notify, mail_dsn.ret, mail_dsn.envid
    if reader.line() != b"":
        raise reader.error("no blank line after the envelope")
    return DropEnvelope(
        recipients=tuple(recipients),
        sender=sender,
        full_name=full_name,
        extract_recipients=FLAG_EXTRACT_RECIPIENTS in flags,
        ignore_dots=FLAG_IGNORE_DOTS in flags,
        notify=notify,
        ret=ret,
        envid=envid,
    )


def pending(maildrop: Path) -> list[Path]:
    """The files waiting in ``maildrop``, oldest first (by modification time, then name):
    final names only, never a hidden one (a ``.tmp.`` file still being written)."""
    found: list[tuple[int, str]] = []
    with os.scandir(maildrop) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                found.append((entry.stat(follow_symlinks=False).st_mtime_ns, entry.name))
            except FileNotFoundError:
                continue  # taken meanwhile
    return [maildrop / name for _, name in sorted(found)]


def leftovers(maildrop: Path, *, older_than: float, now: float | None = None) -> list[Path]:
    """Hidden files in ``maildrop`` not changed for ``older_than`` seconds: temporary files
    of a sendmail that died, which nobody else will remove (for the server to delete)."""
    limit = (time.time() if now is None else now) - older_than
    found: list[Path] = []
    with os.scandir(maildrop) as entries:
        for entry in entries:
            if not entry.name.startswith("."):
                continue
            try:
                if entry.stat(follow_symlinks=False).st_mtime < limit:
                    found.append(maildrop / entry.name)
            except FileNotFoundError:
                continue
    return sorted(found)


def ensure_maildrop(directory: Path) -> Path:
    """Create ``DIR/maildrop`` with mode 1733 if it is missing (and set that mode on one
    that has another), and let every user pass through ``directory`` to reach it (the
    execute bit for others, never the read bit: the data folder stays unlistable). Call it
    as the data folder's owner (``owner.as_owner``) or as root; the maildrop must be the
    owner's. Returns its path; raises ``MaildropError`` when something else is in the way."""
    path = maildrop_path(directory)
    try:
        top = os.stat(directory)
        os.mkdir(path, 0o700)  # its mode is set below, whatever the umask did
        created = True
    except FileExistsError:
        created = False
    except OSError as exc:
        raise MaildropError(f"cannot create {path}: {exc.strerror or exc}") from None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise MaildropError(f"{path}: not a folder") from None
        raise MaildropError(f"cannot open {path}: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if info.st_uid != top.st_uid:
            if not (created and os.geteuid() == 0):
                raise MaildropError(
                    f"{path}: owned by uid {info.st_uid}, not by the data folder's owner "
                    f"(uid {top.st_uid})"
                )
            # Root made it for an owner who is not root: the server, running as the
            # owner, must be able to remove what is dropped, which the sticky bit allows
            # only the folder's owner.
            os.fchown(fd, top.st_uid, top.st_gid)
        if stat.S_IMODE(info.st_mode) != _FOLDER_MODE:
            os.fchmod(fd, _FOLDER_MODE)
        if not top.st_mode & stat.S_IXOTH:
            os.chmod(directory, stat.S_IMODE(top.st_mode) | stat.S_IXOTH)
    except OSError as exc:
        raise MaildropError(f"cannot set up {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    return path
