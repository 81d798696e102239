"""A throwaway Postfix for end-to-end tests: the installed Postfix, set up from nothing in a
folder of the test, that relays everything it receives to one next hop (a ``smtpkit serve``).

It runs as its own master in the foreground (``master -s -e SECONDS -c DIR``), a child of the
test, with a main.cf and master.cf written here; nothing under /etc/postfix is read for
paths or written, and a Postfix the machine runs itself is not touched. Why this way and not
``postfix start``: that command detaches, and writes its errors to syslog only when its
output is not a terminal, so a failed start says nothing. The log goes to the master's
stdout (``maillog_file = /dev/stdout``, kept by ``-s``, written by the ``postlog`` service),
which is a file of the test.

The master must start as root (it binds, then its daemons drop to Postfix's user and chdir
into the queue): the folder must be reachable by that user (``open_tmp_path``).
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import signal
import smtplib
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.relay import MASTER_CF
from tests.conftest import free_port, need_program, unavailable

__all__ = ["Postfix", "start_postfix"]

# Everything to the one next hop; accepted from loopback only. No header is added or
# rewritten beyond Postfix's own Received: line (the test sends whole headers).
MAIN_CF = """\
compatibility_level = {compatibility}
queue_directory = {queue}
data_directory = {data}
myhostname = postfix.relay.test
mydestination =
relay_domains =
alias_maps =
alias_database =
mynetworks = 127.0.0.0/8
relayhost = [{host}]:{next_port}
inet_interfaces = {host}
inet_protocols = ipv4
smtpd_tls_security_level = none
smtp_tls_security_level = none
local_header_rewrite_clients =
maillog_file = /dev/stdout
"""

#: The queue's folders owned by Postfix's user, mode 700 (Postfix's ``postfix-files``).
QUEUE_FOLDERS = (
    "active", "bounce", "corrupt", "defer", "deferred", "flush", "hold", "incoming",
    "private", "saved", "trace",
)  # fmt: skip


@dataclass
class Postfix:
    """A running instance: its smtpd's port on 127.0.0.1 and its log."""

    folder: Path
    port: int
    log: Path
    process: subprocess.Popen[bytes]
    version: str

    def send(self, sender: str, recipients: list[str], message: bytes) -> None:
        """Submit a message over SMTP, as any client would."""
        with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as client:
            refused = client.sendmail(sender, recipients, message)
        assert refused == {}, refused

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_for_log(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            found = re.search(pattern, self.log_text())
            if found is not None:
                return found
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} in Postfix's log:\n{self.log_text()}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            # The master passes SIGTERM on to its daemons, then dies of it itself.
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _defaults(*names: str) -> dict[str, str]:
    """Postfix's built-in values (``postconf -d``): no main.cf is needed for them."""
    postconf = need_program("postconf", "postfix")
    done = subprocess.run(
        [postconf, "-d", *names], capture_output=True, text=True, timeout=30, check=False
    )
    values = {}
    for line in done.stdout.splitlines():
        name, _, value = line.partition(" = ")
        values[name.strip()] = value.strip()
    if done.returncode != 0 or set(names) - set(values):
        unavailable(f"postconf -d {' '.join(names)} failed: {done.stderr.strip()}")
    return values


def _folder(path: Path, mode: int, uid: int = 0, gid: int = 0) -> None:
    path.mkdir(mode=mode)
    os.chown(path, uid, gid)
    path.chmod(mode)  # mkdir's mode is narrowed by the umask


def start_postfix(folder: Path, next_hop_port: int, lifetime: float = 300) -> Postfix:
    """Set up and start an instance under ``folder`` (which must not exist; its parent must
    be reachable by Postfix's user) relaying all mail to 127.0.0.1:``next_hop_port``. Its
    master exits by itself after ``lifetime`` seconds should the test be killed first: a
    root daemon must not outlive a test run."""
    if os.geteuid() != 0:
        unavailable("Postfix's master must start as root: run the tests as root (CI does)")
    settings = _defaults("daemon_directory", "mail_owner", "setgid_group", "mail_version")
    master = Path(settings["daemon_directory"]) / "master"
    if not os.access(master, os.X_OK):
        unavailable(f"{master} not found: install the Debian package postfix (.ci/run does)")
    owner = pwd.getpwnam(settings["mail_owner"])
    setgid_gid = grp.getgrnam(settings["setgid_group"]).gr_gid
    version = settings["mail_version"]
    major_minor = tuple(int(n) for n in re.findall(r"\d+", version)[:2])
    conf, queue, data = folder / "conf", folder / "queue", folder / "data"
    _folder(folder, 0o755)
    _folder(conf, 0o755)
    port = free_port()
    (conf / "master.cf").write_text(MASTER_CF.format(host="127.0.0.1", port=port))
    (conf / "main.cf").write_text(
        MAIN_CF.format(
            # 3.6 where known: below it Postfix 3.6+ warns at every start.
            compatibility="3.6" if major_minor >= (3, 6) else "2",
            queue=queue,
            data=data,
            host="127.0.0.1",
            next_port=next_hop_port,
        )
    )
    _folder(queue, 0o755)
    for name in QUEUE_FOLDERS:
        _folder(queue / name, 0o700, owner.pw_uid)
    _folder(queue / "maildrop", 0o730, owner.pw_uid, setgid_gid)
    _folder(queue / "public", 0o710, owner.pw_uid, setgid_gid)
    _folder(queue / "pid", 0o755)
    _folder(data, 0o700, owner.pw_uid)
    log = folder / "postfix.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(master), "-s", "-e", str(round(lifetime)), "-c", str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=folder,
        )
    postfix = Postfix(folder, port, log, process, version)
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise AssertionError(f"Postfix's master exited with {process.returncode}:\n"
                                 f"{postfix.log_text()}")  # fmt: skip
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                if s.recv(512).startswith(b"220 "):
                    s.sendall(b"QUIT\r\n")
                    return postfix
        except OSError:
            pass
        if time.monotonic() > deadline:
            postfix.stop()
            raise AssertionError(
                f"Postfix did not answer on 127.0.0.1:{port}:\n{postfix.log_text()}"
            )
        time.sleep(0.1)
