"""The config loader: every limit has one home, [limits]; the old [server] keys still load."""

from __future__ import annotations

from pathlib import Path

import pytest

from smtpkit.config import Config, parse_config
from smtpkit.errors import ConfigError
from smtpkit.limits import Limits


def load(tmp_path: Path, **sections: dict[str, object]) -> Config:
    data: dict[str, dict[str, object]] = {"server": {"domains": ["example.org"]}}
    for name, table in sections.items():
        data.setdefault(name, {}).update(table)
    return parse_config(data, tmp_path / "smtpkit.toml")


def test_every_limit_lives_under_limits(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        limits={
            "max_message_size": 1000,
            "max_recipients": 5,
            "max_connections": 50,
            "max_connections_per_ip": 3,
            "command_timeout": 30,
            "data_timeout": 60.5,
            "max_errors": 4,
            "max_junk_commands": 7,
            "max_session_time": 90,
        },
    )
    assert config.limits == Limits(
        max_message_size=1000,
        max_recipients=5,
        max_connections=50,
        max_connections_per_ip=3,
        command_timeout=30.0,
        data_timeout=60.5,
        max_errors=4,
        max_junk_commands=7,
        max_session_time=90.0,
    )
    assert config.notes == ()


def test_the_old_server_keys_still_work_with_a_note(tmp_path: Path) -> None:
    config = load(tmp_path, server={"max_message_size": 2000, "max_recipients": 9})
    assert (config.limits.max_message_size, config.limits.max_recipients) == (2000, 9)
    where = tmp_path / "smtpkit.toml"
    assert config.notes == (
        f"server -> max_message_size is deprecated: move it to [limits] ({where})",
        f"server -> max_recipients is deprecated: move it to [limits] ({where})",
    )


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        (
            {"server": {"max_recipients": 9}, "limits": {"max_recipients": 10}},
            "server -> max_recipients: set it in one place: [limits] max_recipients "
            "(this one is deprecated)",
        ),
        (
            {"server": {"max_recipients": 0}},
            "server -> max_recipients: must be a positive integer, got 0",
        ),
        (
            {"limits": {"max_session_time": -1}},
            "limits -> max_session_time: must be a positive number of seconds, got -1",
        ),
        ({"limits": {"max_junk": 1}}, "limits -> max_junk: unknown key"),
    ],
)
def test_limit_errors_name_the_key(
    tmp_path: Path, sections: dict[str, dict[str, object]], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, **sections)
    assert str(caught.value) == f"{message} ({tmp_path / 'smtpkit.toml'})"
