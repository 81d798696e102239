"""The README's Quick start, run as written on the distribution's own Python.

Debian 12 and 13 and Ubuntu 24.04 mark their Python externally managed (PEP 668): a plain
`pip install` is refused there. The Quick start must work on such a machine with nothing but
`python3` and its venv module, from a copy of this repository, and deliver mail.
"""

from __future__ import annotations

import configparser
import os
import re
import shutil
import signal
import smtplib
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import REPOSITORY, unavailable, wait_for_banner

SYSTEM_PYTHON = Path("/usr/bin/python3")


def readme_command(section: str) -> str:
    """The one shell command in the first ``sh`` block of a README section."""
    text = (REPOSITORY / "README.md").read_text()
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```sh\n(.+?)\n```", body, re.DOTALL)
    assert match is not None, f"no sh block in the README's {section} section"
    command = match.group(1)
    assert "\n" not in command, "the section's command is one line a newcomer can paste"
    return command


def externally_managed(python: Path) -> Path | None:
    """The PEP 668 marker of ``python``: ``EXTERNALLY-MANAGED`` in its standard library
    folder, with its ``[externally-managed]`` section, or None when it has none."""
    asked = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('stdlib'))"],
        capture_output=True,
        text=True,
        check=True,
    )
    marker = Path(asked.stdout.strip()) / "EXTERNALLY-MANAGED"
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(marker.read_text())
    except (OSError, configparser.Error):
        return None
    return marker if parser.has_section("externally-managed") else None


def serve_processes(group: int) -> list[int]:
    """The ``smtpkit ... serve`` processes of a process group (not the shell around them)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.getpgid(int(entry)) != group:
                continue
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except (OSError, ProcessLookupError):
            continue
        if b"serve" in argv and not argv[0].endswith(b"sh"):
            found.append(int(entry))
    return found


def test_the_readme_commands_are_what_ci_runs() -> None:
    ci = (REPOSITORY / ".ci" / "run").read_text().splitlines()
    assert readme_command("Tests") in ci


def test_the_premise_is_read_from_the_pythons_own_marker(tmp_path: Path) -> None:
    """What makes a Python externally managed is PEP 668's marker in its standard library
    folder, as that Python reports it; a stray file without the section is no marker."""
    stdlib = tmp_path / "lib"
    stdlib.mkdir()
    python = tmp_path / "python3"
    python.write_text(f"#!/bin/sh\necho {stdlib}\n")
    python.chmod(0o755)
    assert externally_managed(python) is None
    (stdlib / "EXTERNALLY-MANAGED").write_text("not a marker\n")
    assert externally_managed(python) is None
    (stdlib / "EXTERNALLY-MANAGED").write_text("[externally-managed]\nError=use apt\n")
    assert externally_managed(python) == stdlib / "EXTERNALLY-MANAGED"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_quick_start_as_written_on_the_distributions_python(open_tmp_path: Path) -> None:
    if not SYSTEM_PYTHON.exists():
        unavailable("/usr/bin/python3 not found: install Debian's python3 and python3-venv")
    # The premise: a plain `pip install` is refused on this Python, as on stock Debian and
    # Ubuntu. Without it, passing would prove nothing about those machines.
    marker = externally_managed(SYSTEM_PYTHON)
    if marker is None:
        unavailable(
            f"{SYSTEM_PYTHON} is not externally managed (no PEP 668 EXTERNALLY-MANAGED in its "
            "standard library): run this test on stock Debian 12/13 or Ubuntu 24.04"
        )
    print(f"\nexternally managed: {marker}")
    checkout = open_tmp_path / "smtpkit"
    shutil.copytree(
        REPOSITORY,
        checkout,
        ignore=shutil.ignore_patterns(".git", ".venv", "*.egg-info", "demo", "build"),
    )
    command = readme_command("Quick start")
    # `python3` on PATH is the distribution's: the machine the README is written for.
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8"}
    process = subprocess.Popen(
        ["/bin/sh", "-c", command],
        cwd=checkout,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        started = time.monotonic()
        wait_for_banner("127.0.0.1", 2525, process, timeout=600)
        print(f"Quick start answered on 127.0.0.1:2525 after {time.monotonic() - started:.0f}s")
        assert (checkout / ".venv" / "bin" / "python").resolve().is_relative_to(Path("/usr"))
        with smtplib.SMTP("127.0.0.1", 2525, timeout=10) as smtp:
            smtp.sendmail(
                "you@example.net", ["alice@example.org"], "Subject: hi\r\n\r\nHello Alice\r\n"
            )
        (stored,) = (checkout / "demo" / "users" / "alice@example.org" / "new").iterdir()
        assert stored.read_bytes().endswith(b"Subject: hi\r\n\r\nHello Alice\r\n")
    finally:
        # Ctrl-C's equivalent for the server itself; the shell then ends with its status.
        for pid in serve_processes(process.pid):
            os.kill(pid, signal.SIGTERM)
        try:
            output, _ = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 0, output.decode(errors="replace")[-3000:]
