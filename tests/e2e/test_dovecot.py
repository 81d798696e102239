"""A real Dovecot reads what smtpkit writes: users log in to IMAP with the password `smtpkit
user passwd` set, and read the message `smtpkit serve` delivered, in place.

Runs as root (as CI does): the test creates a service user of its own, starts its own Dovecot
(its own base_dir, a free loopback port) from a config it writes, which includes
examples/dovecot-smtpkit.conf with the data folder and the service user swapped in, so the
shipped example is what is tested.
"""

from __future__ import annotations

import imaplib
import itertools
import pwd
import re
import smtplib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPOSITORY, free_port, need_program, unavailable
from tests.e2e.test_service_user import owned_server, service_user  # noqa: F401

EXAMPLE = REPOSITORY / "examples" / "dovecot-smtpkit.conf"
IMAP = Path("/usr/lib/dovecot/imap")  # Debian's dovecot-imapd


def adapted_example(directory: Path, owner: str) -> str:
    """The example with the test's data folder for /var/lib/smtpkit and its service user for
    smtpkit (in settings, not comments)."""
    text = EXAMPLE.read_text().replace("/var/lib/smtpkit", "\0")
    lines = [
        line if line.lstrip().startswith("#") else re.sub(r"\bsmtpkit\b", owner, line)
        for line in text.splitlines()
    ]
    return "\n".join(lines).replace("\0", str(directory)) + "\n"


class IMAP4From(imaplib.IMAP4):
    """An IMAP client connecting from a loopback address of its choice."""

    def __init__(self, host: str, port: int, source: str) -> None:
        self.source = source
        super().__init__(host, port, timeout=10)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        return socket.create_connection(
            (self.host, self.port), timeout, source_address=(self.source, 0)
        )


# Dovecot delays the logins of an address after each failure from it (2 s, then 4 s, ...):
# every attempt meant to fail comes from a loopback address of its own (Linux routes all of
# 127.0.0.0/8 to lo).
_SOURCES = (f"127.0.0.{n}" for n in itertools.cycle(range(2, 255)))


@dataclass
class Dovecot:
    port: int
    log: Path
    process: subprocess.Popen[bytes]

    def imap(self, source: str = "127.0.0.1") -> imaplib.IMAP4:
        return IMAP4From("127.0.0.1", self.port, source)

    def login_fails(self, user: str, password: str) -> bool:
        with self.imap(next(_SOURCES)) as client:
            try:
                client.login(user, password)
            except imaplib.IMAP4.error:
                return True
        return False

    def wait_until(self, login_fails: bool, user: str, password: str) -> None:
        """Dovecot looks at the password file at most once a second: a change counts from
        the next second on (with no reload)."""
        deadline = time.monotonic() + 5
        while self.login_fails(user, password) != login_fails:
            assert time.monotonic() < deadline, f"Dovecot never took the change for {user}"
            time.sleep(0.1)


@pytest.fixture
def dovecot_program() -> str:
    """Dovecot's master, checked before anything is set up; with its IMAP server."""
    program = need_program("dovecot", "dovecot-imapd")
    if not IMAP.exists():
        unavailable(f"{IMAP} not found: install the Debian package dovecot-imapd (.ci/run does)")
    return program


def start_dovecot(dovecot: str, root: Path, directory: Path, owner: str) -> Dovecot:
    port = free_port()
    (root / "99-smtpkit.conf").write_text(adapted_example(directory, owner))
    log = root / "dovecot.log"
    config = root / "dovecot.conf"
    config.write_text(
        f"""\
base_dir = {root}/run
state_dir = {root}/state
log_path = {log}
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
# A wrong password is answered at once (Dovecot waits 2 s by default).
auth_failure_delay = 0
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
!include {root}/99-smtpkit.conf
"""
    )
    with (root / "dovecot.stderr").open("wb") as stderr:
        process = subprocess.Popen(
            [dovecot, "-F", "-c", str(config)], stdout=subprocess.DEVNULL, stderr=stderr
        )
    server = Dovecot(port, log, process)
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            output = (root / "dovecot.stderr").read_text() + (
                log.read_text() if log.exists() else ""
            )
            raise AssertionError(f"dovecot exited with {process.returncode}:\n{output}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                if s.recv(512).startswith(b"* OK"):
                    return server
        except OSError:
            pass
        if time.monotonic() > deadline:
            stop_dovecot(server)
            raise AssertionError(f"dovecot did not answer on 127.0.0.1:{port}")
        time.sleep(0.05)


def stop_dovecot(server: Dovecot) -> None:
    if server.process.poll() is None:
        server.process.terminate()  # the master stops its processes, then itself
        try:
            server.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


@pytest.fixture
def root(open_tmp_path: Path) -> Path:
    return open_tmp_path


def set_password(config: Path, address: str, password: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "smtpkit", "-c", str(config), "user", "passwd", address, "--stdin"],
        input=f"{password}\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        f"Password set for {address}\n",
        "",
    )


@pytest.fixture
def dovecot_setup(
    dovecot_program: str,
    root: Path,
    service_user: pwd.struct_passwd,  # noqa: F811
) -> Iterator[tuple[Dovecot, Path, bytes]]:
    """A data folder owned by the service user, with one message smtpkit delivered to
    alice@example.org, passwords for alice and bob, and Dovecot serving it."""
    server = owned_server(root, service_user)
    server.start()
    message = "Subject: hello from smtpkit\r\n\r\nRead me over IMAP.\r\n"
    with smtplib.SMTP(server.host, server.port, timeout=30) as client:
        client.sendmail("carol@example.net", ["alice@example.org"], message)
    assert server.stop() == 0
    [stored] = server.new_files("alice@example.org")
    set_password(server.config, "alice@example.org", "correct horse")
    set_password(server.config, "bob@example.org", "bob's own")
    dovecot = start_dovecot(dovecot_program, root, server.directory, service_user.pw_name)
    try:
        yield dovecot, server.config, stored.read_bytes()
    finally:
        stop_dovecot(dovecot)


def test_dovecot_logs_users_in_with_smtpkits_passwords_and_reads_their_mail(
    dovecot_setup: tuple[Dovecot, Path, bytes],
) -> None:
    dovecot, _, stored = dovecot_setup
    with dovecot.imap() as client:
        # Logins are looked up lower-cased, as smtpkit writes the addresses.
        assert client.login("Alice@Example.org", "correct horse")[0] == "OK"
        assert client.select("INBOX") == ("OK", [b"1"])
        status, data = client.fetch("1", "(BODY.PEEK[])")
        assert status == "OK"
        fetched = data[0][1] if isinstance(data[0], tuple) else b""
        assert b"Subject: hello from smtpkit\r\n" in fetched
        assert fetched.replace(b"\r\n", b"\n") == stored.replace(b"\r\n", b"\n")
        assert client.logout()[0] == "BYE"
    assert dovecot.login_fails("alice@example.org", "wrong horse")
    assert dovecot.login_fails("carol@example.org", "correct horse")  # no such user


def test_a_new_password_counts_in_a_running_dovecot_and_remove_ends_logins(
    dovecot_setup: tuple[Dovecot, Path, bytes],
) -> None:
    dovecot, config, _ = dovecot_setup
    assert not dovecot.login_fails("alice@example.org", "correct horse")
    assert not dovecot.login_fails("bob@example.org", "bob's own")
    set_password(config, "alice@example.org", "battery staple")
    dovecot.wait_until(False, "alice@example.org", "battery staple")
    assert dovecot.login_fails("alice@example.org", "correct horse")
    removed = subprocess.run(
        [sys.executable, "-m", "smtpkit", "-c", str(config), "user", "remove", "bob@example.org"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (removed.returncode, removed.stdout.splitlines()) == (
        0,
        ["Removed bob@example.org", "Removed the password of bob@example.org"],
    )
    dovecot.wait_until(True, "bob@example.org", "bob's own")
