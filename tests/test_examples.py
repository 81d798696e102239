"""The shipped examples stay valid: the commented config loads with the values it shows."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from smtpkit.config import ListenAddress, load_config
from tests.conftest import need_program

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_example_config_loads_with_its_documented_values() -> None:
    config = load_config(EXAMPLES / "smtpkit.toml")
    assert config.server.hostname == "mail.example.org"
    assert config.server.listen == (ListenAddress("0.0.0.0", 25), ListenAddress("::", 25))
    assert config.server.domains == ("example.org", "example.net")
    assert (config.limits.max_message_size, config.limits.max_recipients) == (10485760, 100)
    assert config.notes == ()  # nothing deprecated in the example
    assert (config.limits.max_connections, config.limits.max_connections_per_ip) == (1000, 20)
    assert (config.limits.command_timeout, config.limits.data_timeout) == (300, 600)
    assert config.aliases["sales@example.org"] == ("alice@example.org", "bob@example.org")


def test_systemd_unit_runs_the_venv_as_its_own_user_with_one_config() -> None:
    unit = (EXAMPLES / "smtpkit.service").read_text().splitlines()
    for line in (
        "ExecStart=/opt/smtpkit/bin/smtpkit serve",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Environment=SMTPKIT_CONFIG=/etc/smtpkit/smtpkit.toml",
        "User=smtpkit",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "ReadWritePaths=/var/lib/smtpkit",
    ):
        assert line in unit
    text = "\n".join(unit)
    # Never the unrelated PyPI project of the same name.
    assert "pip install smtpkit" not in text
    assert "init /var/lib/smtpkit" in text and "--owner smtpkit" in text


def test_systemd_unit_is_rated_ok_by_systemd_analyze_security() -> None:
    analyze = need_program("systemd-analyze", "systemd")
    result = subprocess.run(
        [analyze, "security", "--offline=true", "--root=/", "smtpkit.service"],
        cwd=EXAMPLES,
        capture_output=True,
        text=True,
        check=False,
    )
    last = result.stdout.strip().splitlines()[-1]
    match = re.search(r"Overall exposure level for smtpkit.service: (\d+\.\d+) (\w+)", last)
    assert match is not None, result.stdout + result.stderr
    print(f"\nsystemd-analyze security: {match.group(1)} {match.group(2)}")
    assert float(match.group(1)) <= 3.0
