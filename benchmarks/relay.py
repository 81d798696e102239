"""The relay row: messages relayed end to end per second, smtpkit against Postfix.

``smtp-source`` sends the relay shape (2000 x 1 KB over 20 sessions) to the relay under test,
which accepts every message from a trusted network and delivers it to its own ``smtp-sink -c``
on another port. A round runs from the start of ``smtp-source`` until the sink has counted
every message of the round: accept, queue durably, deliver, dequeue. The sink stores nothing,
so the time is the relay's.

- smtpkit: ``smtpkit init``, then ``[submission] trusted_networks`` (relay without AUTH from
  127.0.0.0/8) and a ``[routes]`` next hop for the relay domain: the sink.
- Postfix: a throwaway instance of the installed Postfix, set up from nothing in a folder of
  the run (main.cf, master.cf, the queue and data folders) and run in the foreground as
  ``master -s -e SECONDS -c DIR``: a child of the benchmark, sampled and stopped (SIGTERM)
  like the other servers. Not ``postfix start``, which detaches, and whose ``postfix``
  command writes its errors to stderr only when that is a terminal, else to syslog alone: on
  a machine without syslog a failed start exits 1 saying nothing (the master never writes to
  a terminal at all). The log is ``maillog_file =
  /dev/stdout`` (a file elsewhere must match ``maillog_file_prefixes``, and either needs the
  ``postlog`` service in master.cf), which ``-s`` keeps: the server's log file. Nothing is
  written under /etc/postfix, which needs no main.cf; a Postfix the machine runs itself is
  not touched.

Each relay has a fresh folder, fresh ports and its own sink; it is started once and serves
every round. A Postfix that cannot be set up, started or measured leaves its column empty with
the reason; the rest of the benchmark runs, and the run then ends with exit status 1.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pty
import pwd
import re
import select
import shutil
import signal
import stat
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import DOMAIN, HOST, SENDER, BenchError, mb
from benchmarks.servers import (
    Server,
    find_program,
    free_port,
    journal_records,
    make_sink,
    make_smtpkit,
)
from benchmarks.shapes import Shape

__all__ = [
    "RELAY_DOMAIN",
    "RELAY_SHAPE",
    "PostfixInstall",
    "PostfixUnavailable",
    "find_postfix",
    "make_postfix",
    "measure_relays",
    "sink_count",
]

RELAY_SHAPE = Shape("relay", 20, 2000, 1024)
RELAY_DOMAIN = "relay.test"
RELAY_RECIPIENT = f"user@{RELAY_DOMAIN}"
TRUSTED = "127.0.0.0/8"

#: A round whose sink has counted nothing new for this long after smtp-source ended is given
#: up: a relay that defers (smtpkit retries after minutes) would otherwise hold it to the end
#: of the timeout.
STALL_SECONDS = 30.0
POLL_SECONDS = 0.005

#: The queue's folders owned by Postfix's user, mode 700 (``postfix-files``).
QUEUE_FOLDERS = (
    "active",
    "bounce",
    "corrupt",
    "defer",
    "deferred",
    "flush",
    "hold",
    "incoming",
    "private",
    "saved",
    "trace",
)

_COUNTER = re.compile(rb"mesg=(\d+)[\r\n]")


class PostfixUnavailable(BenchError):
    """Postfix cannot be set up or started here; the relay row says why."""


# --- the sink's count ------------------------------------------------------------------------


def sink_count(sink: Server) -> int:
    """Messages ``smtp-sink -c`` has received: the last whole ``mesg=N`` of the running
    counter (``sess=N quit=N mesg=N\\r``) it writes to its log."""
    try:
        with sink.log.open("rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - 4096))
            tail = fh.read()
    except OSError:
        return 0
    found = _COUNTER.findall(tail)
    return int(found[-1]) if found else 0


# --- smtpkit as a relay ----------------------------------------------------------------------


def make_smtpkit_relay(folder: Path, sink_port: int, workers: int | None) -> Server:
    tables: dict[str, dict[str, Any]] = {
        "submission": {"trusted_networks": [TRUSTED]},
        "routes": {RELAY_DOMAIN: f"{HOST}:{sink_port}"},
    }
    return make_smtpkit(folder, workers, max_connections=1000, tables=tables)


# --- Postfix as a relay ----------------------------------------------------------------------


#: Only what relaying needs: smtpd, the queue's daemons and smtp (also used by the tests'
#: Postfix, tests/postfix.py).
MASTER_CF = """\
# A throwaway Postfix. No chroot: a fresh queue folder has no copies of /etc and the
# libraries for a jail.
# service   type  private unpriv  chroot  wakeup  maxproc command
{host}:{port} inet n      -       n       -       -       smtpd
pickup      unix  n       -       n       60      1       pickup
cleanup     unix  n       -       n       -       0       cleanup
qmgr        unix  n       -       n       300     1       qmgr
rewrite     unix  -       -       n       -       -       trivial-rewrite
bounce      unix  -       -       n       -       0       bounce
defer       unix  -       -       n       -       0       bounce
trace       unix  -       -       n       -       0       bounce
verify      unix  -       -       n       -       1       verify
flush       unix  n       -       n       1000?   0       flush
proxymap    unix  -       -       n       -       -       proxymap
smtp        unix  -       -       n       -       -       smtp
relay       unix  -       -       n       -       -       smtp
error       unix  -       -       n       -       -       error
retry       unix  -       -       n       -       -       error
discard     unix  -       -       n       -       -       discard
anvil       unix  -       -       n       -       1       anvil
scache      unix  -       -       n       -       1       scache
postlog     unix-dgram n  -       n       -       1       postlogd
"""

MAIN_CF = """\
# A throwaway Postfix for smtpkit's relay benchmark: relays mail from {trusted} to smtp-sink.
# Everything else is Postfix's default (in_flow_delay, concurrency, fsync of queue files).
compatibility_level = {compatibility}
queue_directory = {queue}
data_directory = {data}
# Any name but the sink's: Postfix refuses a next hop that greets with its own name.
myhostname = postfix.{domain}
mydestination =
relay_domains =
alias_maps =
alias_database =
mynetworks = {trusted}
relayhost = [{host}]:{sink_port}
inet_interfaces = {host}
inet_protocols = ipv4
smtpd_tls_security_level = none
smtp_tls_security_level = none
# The master runs with -s, which keeps its stdout (the benchmark's log file) for the log.
maillog_file = /dev/stdout
"""


def _postconf_defaults(*names: str) -> dict[str, str]:
    """Postfix's built-in values of ``names`` (``postconf -d``): needs no main.cf anywhere."""
    command = [find_program("postconf"), "-d", *names]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        raise PostfixUnavailable(f"postconf failed: {exc}") from None
    values: dict[str, str] = {}
    for line in done.stdout.splitlines():
        name, _, value = line.partition(" = ")
        values[name.strip()] = value.strip()
    missing = [name for name in names if name not in values]
    if done.returncode != 0 or missing:
        raise PostfixUnavailable(
            f"{' '.join(command[1:])} failed (exit {done.returncode}): "
            f"{done.stderr.strip() or 'no value for ' + ', '.join(missing)}"
        )
    return values


def _closed_folder(path: Path, uid: int, gid: int) -> Path | None:
    """The first folder on the way to ``path`` that user ``uid`` (group ``gid``) may not
    pass through, or None. Postfix's daemons drop to that user and chdir into the queue."""
    for folder in [*reversed(path.parents), path]:
        mode = folder.stat()
        if mode.st_uid == uid:
            bit = stat.S_IXUSR
        elif mode.st_gid == gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not mode.st_mode & bit:
            return folder
    return None


def _folder(path: Path, mode: int, uid: int = 0, gid: int = 0) -> None:
    path.mkdir(mode=mode)
    os.chown(path, uid, gid)
    path.chmod(mode)  # mkdir's mode is narrowed by the umask


@dataclass(frozen=True, slots=True)
class PostfixInstall:
    """The installed Postfix: its master and the user and group its daemons run as."""

    master: Path
    user: str
    uid: int
    gid: int  # the user's own group: the daemons' only group
    setgid_gid: int  # setgid_group, which owns maildrop/ and public/
    version: str


def find_postfix() -> PostfixInstall:
    """Postfix's built-in settings, which the instance keeps (its main.cf sets no paths)."""
    if os.geteuid() != 0:
        raise PostfixUnavailable(
            "Postfix's master daemon must start as root: run the benchmark as root, or skip "
            "this row with --no-relay"
        )
    names = ("daemon_directory", "mail_owner", "setgid_group", "mail_version")
    settings = _postconf_defaults(*names)
    try:
        owner = pwd.getpwnam(settings["mail_owner"])
        setgid = grp.getgrnam(settings["setgid_group"])
    except KeyError:
        raise PostfixUnavailable(
            f"Postfix's user {settings['mail_owner']} or group {settings['setgid_group']} "
            f"does not exist: reinstall the postfix package"
        ) from None
    master = Path(settings["daemon_directory"]) / "master"
    if not os.access(master, os.X_OK):
        raise PostfixUnavailable(f"{master} not found: install Debian's postfix package")
    return PostfixInstall(
        master,
        owner.pw_name,
        owner.pw_uid,
        owner.pw_gid,
        setgid.gr_gid,
        settings["mail_version"],
    )


def make_postfix(base: Path, sink_port: int, install: PostfixInstall, lifetime: float) -> Server:
    """A Postfix instance under ``base/postfix`` relaying to ``HOST:sink_port``; not started.
    Its master exits by itself after ``lifetime`` seconds, should the benchmark be killed
    before it could stop it: a root daemon must not outlive a CI job.

    The queue's layout and modes are those of Postfix's own ``postfix-files``, which
    ``post-install`` would otherwise create.
    """
    folder = base / "postfix"
    conf, queue, data = folder / "conf", folder / "queue", folder / "data"
    base.chmod(0o755)  # the daemons run as Postfix's user and chdir into the queue
    closed = _closed_folder(base, install.uid, install.gid)
    if closed is not None:
        raise PostfixUnavailable(
            f"Postfix's daemons (user {install.user}) cannot reach {base}: {closed} is "
            f"closed to them; choose another --dir"
        )
    _folder(folder, 0o755)
    _folder(conf, 0o755)
    port = free_port()
    (conf / "master.cf").write_text(MASTER_CF.format(host=HOST, port=port))
    (conf / "main.cf").write_text(
        MAIN_CF.format(
            compatibility=compatibility_level(install.version),
            trusted=TRUSTED,
            queue=queue,
            data=data,
            domain=DOMAIN,
            host=HOST,
            sink_port=sink_port,
        )
    )
    _folder(queue, 0o755)
    for name in QUEUE_FOLDERS:
        _folder(queue / name, 0o700, install.uid)
    _folder(queue / "maildrop", 0o730, install.uid, install.setgid_gid)
    _folder(queue / "public", 0o710, install.uid, install.setgid_gid)
    _folder(queue / "pid", 0o755)
    _folder(data, 0o700, install.uid)

    return Server(
        "postfix",
        [str(install.master), "-s", "-e", str(round(lifetime)), "-c", str(conf)],
        port,
        folder,
        None,
        cwd=folder,
        # SIGTERM makes the master signal its daemons and die of the signal itself.
        expect_clean_exit=False,
        linger=10.0,
    )


def on_terminal(command: list[str], timeout: float) -> str:
    """What ``command`` prints when its output is a terminal.

    Postfix's programs write their errors to stderr only when it is a terminal, else to
    syslog: a master that dies at start-up with its output in a file says nothing at all.
    """
    leader, follower = pty.openpty()
    try:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=follower,
            stderr=follower,
            start_new_session=True,
        )
    finally:
        os.close(follower)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([leader], [], [], left)
            if not ready:
                break
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: every process holding the terminal has closed it
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(leader)
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    return b"".join(chunks).decode(errors="replace").strip()


def compatibility_level(version: str) -> str:
    """3.6 where this Postfix knows that level, else 2. Below 3.6, Postfix 3.6 and later log
    a warning about their backwards-compatible defaults at every start; what differs between
    the two levels (TLS fingerprint digests and the like) is nothing this row uses."""
    numbers = re.match(r"(\d+)\.(\d+)", version)
    if numbers and (int(numbers[1]), int(numbers[2])) >= (3, 6):
        return "3.6"
    return "2"


def start_postfix(server: Server) -> None:
    try:
        server.start()
    except BenchError as exc:
        reason = str(exc).rstrip()
        if not server.log_tail():
            # The master died before its log was open, and the master never writes to a
            # terminal: `postfix check` reads the same configuration and says what is wrong
            # (it creates missing queue folders, all of them inside this instance's).
            check = [find_program("postfix"), "-c", str(server.folder / "conf"), "check"]
            said = on_terminal(check, timeout=30)
            reason += f"\n  `{' '.join(check)}` says: {said or '(nothing)'}"
        raise PostfixUnavailable(f"Postfix did not start: {reason}") from None


# --- rounds ----------------------------------------------------------------------------------


def diagnose(server: Server) -> str:
    """Why messages may not have arrived: deferrals and errors in the relay's own records."""
    lines: list[str] = []
    if server.journal is not None:
        events = ("deferred", "bounced", "failed", "report")
        records = [r for r in journal_records(server.journal) if r.get("event") in events]
        lines += [json.dumps(r) for r in records[-3:]]
    pattern = re.compile(r"status=(deferred|bounced)|fatal:|panic:|error:|warning:|Traceback")
    with contextlib.suppress(OSError):
        text = server.log.read_text(errors="replace")
        lines += [line for line in text.splitlines() if pattern.search(line)][-3:]
    if not lines:
        return server.log_tail(10)
    return "\n".join(f"  | {line}" for line in lines)


def relay_round(
    server: Server, sink: Server, shape: Shape, source: str, target: int, timeout: float
) -> tuple[float, float]:
    """One ``smtp-source`` run through ``server``: (seconds until the sink has counted
    ``target`` messages in all, seconds ``smtp-source`` took)."""
    command = [source, *shape.source_args, "-f", SENDER, "-t", RELAY_RECIPIENT]
    command.append(f"{HOST}:{server.port}")
    output = server.folder / "smtp-source.out"
    with output.open("wb") as out:
        began = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    accepted: float | None = None
    arrived: float | None = None
    count = last_change_count = sink_count(sink)
    last_change = began
    try:
        while accepted is None or arrived is None:
            now = time.perf_counter()
            if accepted is None and process.poll() is not None:
                accepted = now
                said = output.read_text(errors="replace").strip()
                if process.returncode != 0 or "fatal" in said or "error" in said.lower():
                    raise BenchError(
                        f"smtp-source through {server.name} failed (exit "
                        f"{process.returncode}): {said or '(no output)'}"
                    )
            if arrived is None:
                count = sink_count(sink)
                if count >= target:
                    arrived = now
                elif count != last_change_count:
                    last_change_count, last_change = count, now
            if arrived is None:
                waited = now - began
                stalled = accepted is not None and now - max(last_change, accepted) > STALL_SECONDS
                if stalled or waited > timeout:
                    why = f"nothing new for {STALL_SECONDS:.0f} s" if stalled else "timeout"
                    raise BenchError(
                        f"{server.name} relay: {count} of {target} messages reached the sink "
                        f"after {waited:.0f} s ({why})\n{diagnose(server)}"
                    )
            server.check_alive()
            sink.check_alive()
            time.sleep(POLL_SECONDS)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert accepted is not None and arrived is not None
    return arrived - began, accepted - began


def measure_relay(
    make: Callable[[Path, int], Server],
    folder: Path,
    shape: Shape,
    rounds: int,
    source: str,
    timeout: float,
    start: Callable[[Server], None] = Server.start,
) -> dict[str, Any]:
    """Start a sink and the relay ``make(folder, sink_port)`` builds (with ``start``), run
    ``rounds`` rounds of ``shape`` through it, stop both; the rates and the sink's count."""
    sink = make_sink(folder, count=True)
    sink.start()
    try:
        server = make(folder, sink.port)
        os.sync()  # leave the previous server's writeback out of this one's rounds
        start(server)
        assert server.sampler is not None
        rates: list[float] = []
        seconds: list[float] = []
        accept_seconds: list[float] = []
        try:
            for number in range(1, rounds + 1):
                server.sampler.window()
                elapsed, accepted = relay_round(
                    server, sink, shape, source, shape.messages * number, timeout
                )
                window_kb = server.sampler.window()
                rates.append(shape.messages / elapsed)
                seconds.append(elapsed)
                accept_seconds.append(accepted)
                print(
                    f"  {server.name:<9} {'relay':<8} round {number}/{rounds}: "
                    f"{rates[-1]:>8,.0f} msgs/s end to end ({elapsed:.2f} s; smtp-source "
                    f"{accepted:.2f} s), RSS {mb(window_kb)} MB",
                    flush=True,
                )
                os.sync()
            peak_kb, processes = server.sampler.peak_kb, server.sampler.max_processes
        finally:
            code = server.stop()
        # Counted after the relay stopped: a message delivered twice shows here.
        delivered = sink_count(sink)
    finally:
        sink.stop()
    sent = shape.messages * rounds
    if delivered != sent:
        raise BenchError(f"{server.name} relay: {sent} messages sent, {delivered} delivered")
    if server.stragglers:
        raise BenchError(
            f"{server.name}: {server.stragglers} process(es) outlived it (exit status {code}) "
            f"and had to be killed"
        )
    if server.expect_clean_exit and code != 0:
        raise BenchError(f"{server.name} exited with status {code} on SIGTERM\n{server.log_tail()}")
    result: dict[str, Any] = {
        "rounds": [round(r, 1) for r in rates],
        "seconds": [round(s, 3) for s in seconds],
        "source_seconds": [round(s, 3) for s in accept_seconds],
        "median": round(statistics.median(rates), 1),
        "min": round(min(rates), 1),
        "max": round(max(rates), 1),
        "sent": sent,
        "delivered": delivered,
        "peak_rss_mb": mb(peak_kb),
        "max_processes": processes,
        "exit_status": code,
    }
    problems = server.log_problems()
    if problems:
        result["log_problems"] = problems
    return result


def measure_relays(
    base: Path,
    shape: Shape,
    rounds: int,
    source: str,
    timeout: float,
    workers: int | None,
    keep: bool = False,
) -> dict[str, Any]:
    """The relay row: smtpkit, then Postfix, each through its own sink.

    smtpkit failing fails the run, as in the other rows; Postfix failing leaves ``error`` in
    its entry and the caller decides.
    """
    result: dict[str, Any] = {
        "messages": shape.messages,
        "sessions": shape.sessions,
        "length": shape.length,
        "rounds": rounds,
    }
    result["smtpkit"] = measure_relay(
        lambda folder, port: make_smtpkit_relay(folder, port, workers),
        base / "relay-smtpkit",
        shape,
        rounds,
        source,
        timeout,
    )
    # Every round ends within its timeout: past this, nothing waits for the instance any more.
    lifetime = 600 + rounds * timeout
    spare: Path | None = None
    try:
        install = find_postfix()
        home = base / "relay-postfix"
        if _closed_folder(base.parent, install.uid, install.gid) is None:
            # The daemons run as Postfix's user and chdir into their queue: they must pass
            # through the work folder (not read it).
            base.chmod(stat.S_IMODE(base.stat().st_mode) | 0o111)
        else:
            # The work folder sits in one closed to them (pytest's, a home folder): the
            # instance gets a folder of its own in the system's temp folder.
            spare = Path(tempfile.mkdtemp(prefix="smtpkit-bench-postfix-"))
            spare.chmod(0o711)
            home = spare / "relay-postfix"
        result["postfix"] = measure_relay(
            lambda folder, port: make_postfix(folder, port, install, lifetime),
            home,
            shape,
            rounds,
            source,
            timeout,
            start_postfix,
        )
        result["postfix"]["version"] = install.version
        result["postfix"]["folder"] = str(home)
        if spare is not None:
            closed_to = f"the work folder is out of user {install.user}'s reach"
            result["postfix"]["note"] = f"its queue in {spare}: {closed_to}"
    except BenchError as exc:
        result["postfix"] = {"error": str(exc)}
        print(f"  {'postfix':<9} {'relay':<8} not measured: {exc}", flush=True)
    finally:
        if spare is not None:
            if keep:
                print(f"Postfix's instance kept in {spare}")
            else:
                shutil.rmtree(spare, ignore_errors=True)
    ours, theirs = result["smtpkit"]["median"], result["postfix"].get("median")
    result["ratio"] = round(ours / theirs, 2) if theirs else None
    return result
