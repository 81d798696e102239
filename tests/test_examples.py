"""The shipped examples stay valid: the commented config loads with the values it shows."""

from __future__ import annotations

from pathlib import Path

from smtpkit.config import ListenAddress, load_config

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_example_config_loads_with_its_documented_values() -> None:
    config = load_config(EXAMPLES / "smtpkit.toml")
    assert config.server.hostname == "mail.example.org"
    assert config.server.listen == (ListenAddress("0.0.0.0", 25), ListenAddress("::", 25))
    assert config.server.domains == ("example.org", "example.net")
    assert (config.server.max_message_size, config.server.max_recipients) == (10485760, 100)
    assert (config.limits.max_connections, config.limits.max_connections_per_ip) == (1000, 20)
    assert (config.limits.command_timeout, config.limits.data_timeout) == (300, 600)
    assert config.aliases["sales@example.org"] == ("alice@example.org", "bob@example.org")


def test_systemd_unit_runs_serve_with_the_config_variable() -> None:
    unit = (EXAMPLES / "smtpkit.service").read_text()
    assert "ExecStart=/usr/local/bin/smtpkit serve" in unit.splitlines()
    assert "Environment=SMTPKIT_CONFIG=/var/lib/smtpkit/smtpkit.toml" in unit.splitlines()
