"""Shared fixtures: a real ``smtpkit serve`` on loopback, and real peers (swaks, smtp-source).

A peer missing from the machine skips its test on a developer's machine but fails it in CI
(``CI=true``), where ``.ci/run`` must have installed it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

if TYPE_CHECKING:
    from tests.e2e.test_submission import Submission

IN_CI = os.environ.get("CI", "").lower() == "true"


def unavailable(message: str) -> NoReturn:
    """Something a test needs is missing: skip on a developer's machine, fail in CI
    (``CI=true``), where the machine is known to have it."""
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def need_program(name: str, package: str) -> str:
    """Path of a peer program; fails in CI, skips elsewhere, when it is missing."""
    for folder in ("", "/usr/sbin/", "/usr/bin/"):
        path = shutil.which(folder + name) if folder else shutil.which(name)
        if path:
            return path
    unavailable(f"{name} not found: install the Debian package {package} (.ci/run does)")


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def smtpkit(
    *args: str, config: Path | None = None, check: bool = True, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real ``smtpkit`` command line (as a user would) and return its result; with
    ``check``, a non-zero exit fails the test with what the command printed."""
    cmd = [sys.executable, "-m", "smtpkit", *(["-c", str(config)] if config else []), *args]
    result = subprocess.run(cmd, capture_output=True, text=True, input=input, timeout=60)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {result.returncode}\n"
            f"stdout: {result.stdout}\nstderr: {result.stderr}"
        )
    return result


@dataclass
class MailServer:
    """A running ``smtpkit serve`` subprocess and its data folder."""

    directory: Path
    config: Path
    host: str
    port: int
    domain: str
    process: subprocess.Popen[bytes] | None = None
    stderr_path: Path = field(default_factory=Path)

    def maildir(self, address: str) -> Path:
        return self.directory / "users" / address

    def new_files(self, address: str) -> list[Path]:
        return sorted((self.maildir(address) / "new").iterdir())

    def journal(self) -> list[dict[str, Any]]:
        """Every event in the journal's hour files, oldest file first. A running server may
        be in the middle of an append, and a reader can see its first part: a last line
        without its newline is not whole yet and waits for the next look (as ``smtpkit
        journal`` does). Any other line that is not JSON fails the test."""
        folder = self.directory / "journal"
        records: list[dict[str, Any]] = []
        for path in sorted(folder.iterdir()) if folder.is_dir() else []:
            text = path.read_text()
            records += [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]
        return records

    def start(self, *extra: str) -> None:
        _RUNNING.append(self)
        self.stderr_path = self.directory / "serve.stderr"
        stderr = self.stderr_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "smtpkit", "-c", str(self.config), "serve", *extra],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        stderr.close()
        wait_for_banner(self.host, self.port, self.process)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(timeout=timeout)
        self.process = None
        return code

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""


def wait_for_banner(
    host: str, port: int, process: subprocess.Popen[bytes], timeout: float = 15
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"smtpkit serve exited with {process.returncode}")
        try:
            with socket.create_connection((host, port), timeout=1) as s:
                if s.recv(512).startswith(b"220 "):
                    s.sendall(b"QUIT\r\n")
                    # Read to EOF: the server has closed (and forgotten) this connection, so
                    # it does not count against connection limits a test sets.
                    while s.recv(512):
                        pass
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"smtpkit serve did not answer on {host}:{port}")


def make_server(
    root: Path,
    *,
    users: tuple[str, ...] = ("alice@example.org", "bob@example.org"),
    domains: tuple[str, ...] = ("example.org",),
    extra_config: str = "",
    host: str = "127.0.0.1",
) -> MailServer:
    port = free_port(host)
    directory = root / "mail"
    args = ["init", str(directory), "--hostname", "mx.test.example", "--listen", f"{host}:{port}"]
    for d in domains:
        args += ["--domain", d]
    smtpkit(*args)
    config = directory / "smtpkit.toml"
    if extra_config:
        with config.open("a") as fh:
            fh.write(extra_config)
    if users:
        smtpkit("user", "add", *users, config=config)
    return MailServer(directory, config, host, port, domains[0])


_RUNNING: list[MailServer] = []


@pytest.fixture(autouse=True)
def _no_server_outlives_its_test() -> Iterator[None]:
    """Whatever a test did, the servers it started are stopped when it ends. Servers that
    wider-scoped fixtures started (set up before this one) are theirs to stop."""
    before = len(_RUNNING)
    yield
    while len(_RUNNING) > before:
        server = _RUNNING.pop()
        if server.process is not None and server.process.poll() is None:
            try:
                server.stop(timeout=15)
            except subprocess.TimeoutExpired:
                server.process.kill()
                server.process.wait()


@pytest.fixture
def open_tmp_path() -> Iterator[Path]:
    """A scratch folder other users can reach (pytest's own sits under a 0700 folder of
    root's): for tests where a service user works in it."""
    path = Path(tempfile.mkdtemp(prefix="smtpkit-test-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


REPOSITORY = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def system_venv() -> Iterator[Path]:
    """smtpkit installed (not editable) into a venv of the distribution's own Python, in a
    folder every user can reach: for running smtpkit as a service user, who cannot reach
    the Python this suite runs on when it lives in root's home."""
    python = Path("/usr/bin/python3")
    if not python.exists():
        unavailable("/usr/bin/python3 not found: install Debian's python3 and python3-venv")
    folder = Path(tempfile.mkdtemp(prefix="smtpkit-venv-"))
    folder.chmod(0o755)
    try:
        made = subprocess.run(
            [str(python), "-m", "venv", str(folder / "venv")], capture_output=True, text=True
        )
        if made.returncode != 0:
            unavailable(f"python3 -m venv failed (install python3-venv): {made.stderr.strip()}")
        pip = [str(folder / "venv" / "bin" / "pip"), "install", "--quiet"]
        build = folder / "src"  # a copy: building in the checkout would leave build/ there
        skip = shutil.ignore_patterns(".git", ".venv", "*.egg-info", "build", "demo")
        shutil.copytree(REPOSITORY, build, ignore=skip)
        subprocess.run([*pip, str(build)], check=True, capture_output=True, timeout=600)
        yield folder / "venv"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def mailserver(tmp_path: Path) -> Iterator[MailServer]:
    server = make_server(tmp_path)
    server.start()
    try:
        yield server
    finally:
        if server.process is not None:
            server.stop()


@pytest.fixture
def sub(tmp_path: Path) -> Iterator[Submission]:
    """A running server with the submission listeners (587 with STARTTLS, 465 with TLS) and
    alice's password set; stopped after the test."""
    from tests.e2e.test_submission import start_submission

    made = start_submission(tmp_path)
    yield made
    if made.server.process is not None:
        made.server.stop()
