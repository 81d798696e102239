"""The pid file ``DIR/smtpkit.pid``: which process serves this data folder, if any.

A number in a file cannot tell a running server from a crashed one whose pid the kernel has
since given to another process, nor from a number anyone able to write the file put there.
``smtpkit reload`` may run as root while the file belongs to the service user, so it must
never signal a process on the file's word alone. The proof is a lock instead:

- ``smtpkit serve``, once its listeners are bound, holds an exclusive ``fcntl`` record lock
  on the pid file for as long as it runs (``acquire_pid_file``). Such a lock belongs to one
  live process, goes away with it (even after SIGKILL), and is not inherited by the workers
  it forks, so its holder is the top process: the supervisor, or the single worker.
- A reader asks the kernel who holds that lock (``F_GETLK`` answers with the holder's pid)
  instead of trusting the number written in the file, and checks that the holder's command
  line is ``smtpkit ... serve`` (``probe``). Only a process that opened this very file, in
  this data folder, can hold its lock; a stale file (the server was killed) and a recycled
  pid have no holder.
- A second ``smtpkit serve`` on the same data folder cannot take the lock and stops with one
  line (``AlreadyRunning``), before it touches the spool or the queue of the first one. On
  the same port its listeners fail to bind first; the lock is what catches other ports.
- ``signal_server`` opens a pidfd of the holder and only then checks again that the lock's
  holder is still that pid: a pidfd names one process for good, so the signal reaches the
  verified server or nobody, even if the server exits and its pid is reused in between.

The file itself holds the pid and a newline, for people and for tools that read pid files.
It is written as the data folder's owner (mode 0644) and replaced atomically, so a reader
sees the old content or the new, never half. The lock on the old file (created empty when
there is none) serves as a gate while the new one takes its place: of two servers starting
together, the second finds the gate locked, or finds once it has locked it that the path
names another file by now, and looks again. At exit the server removes the file, but only
while the path still names the file it locked.

A POSIX record lock is dropped when its process closes *any* descriptor of the file, so the
server never opens its own pid file a second time, and a process never probes a pid file it
holds (its own lock never shows to ``F_GETLK`` anyway).
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import stat
import struct
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from smtpkit.errors import SmtpkitError
from smtpkit.fsutil import fsync_dir, unique_name, write_all
from smtpkit.owner import as_owner

__all__ = [
    "PID_FILE",
    "AlreadyRunning",
    "NotRunning",
    "PidFile",
    "PidFileError",
    "Probe",
    "ProcessFacts",
    "State",
    "acquire_pid_file",
    "is_serve",
    "pid_path",
    "probe",
    "process_facts",
    "signal_server",
]

PID_FILE = "smtpkit.pid"  # in the data folder
MODE = 0o644  # anyone may ask whether the server runs
MAX_SIZE = 64  # a pid and a newline; more is not a file smtpkit wrote

# struct flock on Linux (64-bit off_t): l_type, l_whence, l_start, l_len, l_pid, padding.
_FLOCK = "hhqqi4x"


class PidFileError(SmtpkitError):
    """The pid file cannot be read, written or trusted."""


class AlreadyRunning(PidFileError):
    """Another process holds the pid file's lock: a server runs for this data folder."""


class State(StrEnum):
    RUNNING = "running"
    #: No pid file: no server runs (or it never ran, or it exited cleanly).
    STOPPED = "stopped"
    #: A pid file no live ``smtpkit serve`` holds: its server was killed, or someone else
    #: wrote it.
    STALE = "stale"


@dataclass(frozen=True, slots=True)
class Probe:
    """What the pid file says, verified. ``pid`` is the server's when ``RUNNING``; for a
    stale file, the pid it names or the process that locks it (``None`` when there is no
    number); ``reason`` says why a file is stale."""

    state: State
    path: Path
    pid: int | None = None
    reason: str = ""


class NotRunning(PidFileError):
    """No verified server to act on; ``found`` says whether there is a pid file at all."""

    def __init__(self, found: Probe) -> None:
        self.found = found
        if found.state is State.STALE:
            text = f"stale pid file {found.path}: {found.reason}"
        else:
            text = f"no pid file {found.path}"
        super().__init__(f"smtpkit serve is not running ({text})")


def pid_path(directory: Path) -> Path:
    return directory / PID_FILE


# --- the server's side ------------------------------------------------------------------------


class PidFile:
    """The pid file as ``smtpkit serve`` holds it: an open, locked descriptor of the file the
    path names. ``release()`` at exit."""

    def __init__(self, directory: Path, fd: int, pid: int) -> None:
        self.directory = directory
        self.path = pid_path(directory)
        self.fd = fd
        self.pid = pid  # the process holding the lock

    def release(self) -> None:
        """Remove the file (while it is still ours) and drop the lock. A forked worker
        inherits this object but not the lock: in any process but the holder this does
        nothing, so a worker can never take the file away from its supervisor."""
        if self.fd < 0 or os.getpid() != self.pid:
            return
        try:
            with as_owner(self.directory):
                # Removed before the lock goes: nobody finds the file without its holder.
                if _same_file(self.fd, self.path):
                    self.path.unlink()
        except (OSError, SmtpkitError):
            pass  # the file stays stale, which readers recognise; the exit goes on
        finally:
            os.close(self.fd)
            self.fd = -1


def acquire_pid_file(directory: Path, pid: int | None = None) -> PidFile:
    """Write ``DIR/smtpkit.pid`` with ``pid`` (default: this process) and hold its lock, as
    the data folder's owner. Raises ``AlreadyRunning`` when a server holds it already."""
    pid = os.getpid() if pid is None else pid
    path = pid_path(directory)
    with as_owner(directory):
        gate = _lock_current(path)
        try:
            fd = _write_locked(path, pid)
        finally:
            os.close(gate)  # the replaced file's lock; the new one's is held by ``fd``
    return PidFile(directory, fd, pid)


def _lock_current(path: Path) -> int:
    """Lock the file ``path`` names now (an empty one is made when there is none) and
    return its descriptor, once the path still names it with the lock held."""
    while True:
        try:
            fd = os.open(
                path,
                os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                MODE,
            )
        except OSError as exc:
            raise PidFileError(_cannot("open", path, exc)) from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise PidFileError(f"{path} is not a regular file: remove it")
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EACCES, errno.EAGAIN):
                    raise PidFileError(_cannot("lock", path, exc)) from None
                holder = _lock_holder(fd)
                who = f"pid {holder}" if holder else "another process"
                raise AlreadyRunning(
                    f"smtpkit serve is already running for {path.parent} ({who} holds {path})"
                ) from None
            if _same_file(fd, path):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # replaced while we locked it: lock what is there now


def _write_locked(path: Path, pid: int) -> int:
    """Put a new file holding ``pid`` at ``path``, locked before it gets there."""
    tmp = path.with_name(f".{path.name}.{unique_name()}.tmp")
    try:
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, MODE)
    except OSError as exc:
        raise PidFileError(_cannot("write", tmp, exc)) from None
    try:
        os.fchmod(fd, MODE)  # whatever the umask (serve sets 027)
        write_all(fd, f"{pid}\n".encode("ascii"))
        os.fsync(fd)
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # new: nobody else can hold it
        os.rename(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        os.close(fd)
        try:
            tmp.unlink()
        except OSError:
            pass
        raise PidFileError(_cannot("write", path, exc)) from None
    return fd


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` names the file open as ``fd`` (no link followed)."""
    try:
        named = os.lstat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)


def _cannot(what: str, path: Path, exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return f"{path} is a symbolic link, not a pid file: remove it"
    return f"cannot {what} {path}: {exc.strerror}"


# --- a reader's side --------------------------------------------------------------------------


def _lock_holder(fd: int) -> int | None:
    """The pid of the process holding a lock that conflicts with an exclusive lock on the
    whole file, or None when there is none. ``0`` is a holder the kernel cannot name in this
    pid namespace. The caller's own locks never conflict."""
    query = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
    kind, _, _, _, pid = struct.unpack(_FLOCK, fcntl.fcntl(fd, fcntl.F_GETLK, query))
    return None if kind == fcntl.F_UNLCK else int(pid)


def is_serve(args: list[str]) -> bool:
    """Whether a command line is ``smtpkit serve``, as the console script runs it
    (``python /opt/smtpkit/bin/smtpkit serve``) or ``python -m smtpkit ... serve``."""
    for i, arg in enumerate(args):
        if os.path.basename(arg) == "smtpkit":
            return "serve" in args[i + 1 :]
    return False


def _command_line(pid: int) -> list[str] | None:
    """``/proc/PID/cmdline`` as arguments; None when the process is gone."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError as exc:
        raise PidFileError(
            f"cannot tell whether pid {pid} is smtpkit serve: /proc/{pid}/cmdline: {exc.strerror}"
        ) from None
    return [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]


def probe(directory: Path) -> Probe:
    """Whether a verified ``smtpkit serve`` holds ``DIR/smtpkit.pid``, and if not, why.
    Reads only: a stale file stays for the next ``serve`` to replace."""
    path = pid_path(directory)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return Probe(State.STOPPED, path)
    except OSError as exc:
        raise PidFileError(_cannot("read", path, exc)) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise PidFileError(f"{path} is not a regular file")
        text = os.read(fd, MAX_SIZE + 1)
        holder = _lock_holder(fd)
    except OSError as exc:
        raise PidFileError(_cannot("read", path, exc)) from None
    finally:
        os.close(fd)
    if holder is None:
        written = _parse(text)
        return Probe(State.STALE, path, written, _unheld(written))
    if holder <= 0:
        raise PidFileError(f"{path} is locked by a process outside this pid namespace")
    args = _command_line(holder)
    if args is None:
        return Probe(State.STALE, path, holder, f"pid {holder} has just exited")
    if not is_serve(args):
        return Probe(State.STALE, path, holder, f"pid {holder} locks it but is not smtpkit serve")
    return Probe(State.RUNNING, path, holder)


def _parse(text: bytes) -> int | None:
    word = text.strip()
    if len(text) > MAX_SIZE or not word.isdigit():
        return None
    return int(word) or None


def _unheld(written: int | None) -> str:
    if written is None:
        return "it names no process"
    if not os.path.exists(f"/proc/{written}"):
        return f"pid {written} is gone"
    return f"pid {written} holds no lock on it: not smtpkit serve of this data folder"


@dataclass(frozen=True, slots=True)
class ProcessFacts:
    uptime: float  # seconds since the process started
    workers: int  # its live child processes, or 1: the process serves itself


def process_facts(pid: int) -> ProcessFacts | None:
    """Uptime and worker count of ``pid`` from ``/proc``; None when it is gone. With one
    worker and no supervisor, the process serves itself: 1."""
    try:
        started = _stat_fields(pid)[19]  # field 22, starttime: clock ticks after boot
        boot = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return None
    uptime = max(0.0, boot - int(started) / os.sysconf("SC_CLK_TCK"))
    return ProcessFacts(uptime, max(1, len(_children(pid))))


def _stat_fields(pid: int | str) -> list[str]:
    """``/proc/PID/stat`` from field 3 (state) on: the name before it, in parentheses, may
    hold spaces and parentheses itself."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()


def _children(pid: int) -> list[int]:
    """Live (not yet dead) processes whose parent is ``pid``."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            state, parent = _stat_fields(name)[:2]
        except (OSError, ValueError):
            continue  # gone meanwhile
        if int(parent) == pid and state not in ("Z", "X"):
            found.append(int(name))
    return found


def signal_server(directory: Path, signum: int) -> int:
    """Send ``signum`` to the verified ``smtpkit serve`` of ``directory``; returns its pid.
    Raises ``NotRunning`` when there is none, ``PidFileError`` when it cannot be signalled.

    The pidfd is taken first and the lock's holder checked after: if the holder is still
    that pid then, the pidfd names the holder, which stays true until the signal is sent.
    Without pidfds (an old kernel, a seccomp filter) the window is the few microseconds
    between the check and ``kill``."""
    found = probe(directory)
    if found.state is not State.RUNNING or found.pid is None:
        raise NotRunning(found)
    pid = found.pid
    handle: int | None = None
    try:
        try:
            handle = os.pidfd_open(pid)
        except ProcessLookupError:
            raise _vanished(directory, pid) from None
        except OSError:
            handle = None
        again = probe(directory)
        if again.state is not State.RUNNING or again.pid != pid:
            raise _vanished(directory, pid)
        try:
            if handle is not None:
                signal.pidfd_send_signal(handle, signum)
            else:
                os.kill(pid, signum)
        except ProcessLookupError:
            raise _vanished(directory, pid) from None
        except OSError as exc:
            raise PidFileError(
                f"cannot signal smtpkit serve (pid {pid}): {exc.strerror} "
                "(run as root or as the user it runs as)"
            ) from None
    finally:
        if handle is not None:
            os.close(handle)
    return pid


def _vanished(directory: Path, pid: int) -> PidFileError:
    """The verified server ``pid`` went away while it was being signalled."""
    found = probe(directory)
    if found.state is State.RUNNING:
        return PidFileError(f"smtpkit serve changed from pid {pid} to {found.pid}; try again")
    return NotRunning(found)
