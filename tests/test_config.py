"""The config loader: every limit has one home, [limits]; the old [server] keys still load."""

from __future__ import annotations

from pathlib import Path

import pytest

from smtpkit.config import (
    ChecksConfig,
    Config,
    DeliveryConfig,
    NextHop,
    QueueConfig,
    RelayConfig,
    RelayTls,
    parse_config,
)
from smtpkit.errors import ConfigError
from smtpkit.limits import BareNewline, Limits


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


def test_delivery_sections(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        server={"dsn_on_receive": True, "pin_workers": False},
        delivery={
            "max_connections": 7,
            "max_per_domain": 2,
            "connect_timeout": 5,
            "reply_timeout": 9,
        },  # fmt: skip
        dns={"nameservers": ["127.0.0.1:5353", "[::1]"]},
        routes={"Example.NET": "mail.internal.example:2525", "b.example": "[192.0.2.7]"},
        relay={"host": "smtp.provider.example", "username": "me", "password_file": "pw"},
        queue={"min_retry": 1, "max_retry": 2, "max_age": 3, "delay_warning": 0, "hold": True},
    )
    assert config.server.dsn_on_receive is True
    assert config.server.pin_workers is False
    assert config.delivery == DeliveryConfig(
        max_connections=7,
        max_per_domain=2,
        connect_timeout=5.0,
        reply_timeout=9.0,
        nameservers=("127.0.0.1:5353", "[::1]"),
        routes={
            "example.net": NextHop("mail.internal.example", 2525),
            "b.example": NextHop("192.0.2.7", 25),
        },
    )
    assert config.relay == RelayConfig(
        NextHop("smtp.provider.example", 587), RelayTls.STARTTLS, "me", tmp_path / "pw", None
    )
    assert config.queue == QueueConfig(1.0, 2.0, 3.0, 0.0, True)


def test_delivery_defaults(tmp_path: Path) -> None:
    config = load(tmp_path)
    assert config.delivery == DeliveryConfig()
    assert config.relay is None
    assert config.queue == QueueConfig(300.0, 3600.0, 432000.0, 14400.0, False)
    assert config.server.dsn_on_receive is False
    assert config.server.pin_workers is True


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"delivery": {"max_per_domain": 0}},
         "delivery -> max_per_domain: must be a positive integer, got 0"),
        ({"delivery": {"retries": 1}}, "delivery -> retries: unknown key"),
        ({"dns": {"nameservers": ["1.2.3.4:99999"]}},
         "dns -> nameservers: bad nameserver '1.2.3.4:99999': port must be 1-65535"),
        ({"routes": {"example.org": "[192.0.2.7]"}},
         "routes -> example.org: is a local domain (server.domains): its mail is delivered here"),
        ({"routes": {"b.example": "[mail.example]:25"}},
         "routes -> b.example: '[mail.example]:25': 'mail.example' in brackets is not an IP "
         "address"),
        ({"routes": {"b.example": "mx.b.example:0"}},
         "routes -> b.example: 'mx.b.example:0': the port must be 1-65535"),
        ({"routes": {"b.example": 25}},
         'routes -> b.example: must be "HOST[:PORT]" or "[ADDRESS][:PORT]"'),
        ({"relay": {"tls": "starttls"}},
         'relay -> host: is required: the smarthost, "HOST[:PORT]"'),
        ({"relay": {"host": "smtp.example", "tls": "ssl"}},
         'relay -> tls: must be "starttls", "implicit" or "none", got \'ssl\''),
        ({"relay": {"host": "smtp.example", "username": "me"}},
         "relay -> password_file: username and password_file go together"),
        ({"relay": {"host": "smtp.example", "username": "me", "password_file": "p",
                    "tls": "none"}},
         'relay -> tls: cannot be "none" with a username: passwords only go under TLS'),
        ({"queue": {"min_retry": 60, "max_retry": 10}},
         "queue -> max_retry: must not be less than min_retry (60)"),
        ({"queue": {"delay_warning": -1}},
         "queue -> delay_warning: must be a number of seconds (0: never), got -1"),
        ({"server": {"dsn_on_receive": "yes"}},
         "server -> dsn_on_receive: must be true or false, got 'yes'"),
        ({"server": {"pin_workers": 1}},
         "server -> pin_workers: must be true or false, got 1"),
    ],
)  # fmt: skip
def test_delivery_errors_name_the_key(
    tmp_path: Path, sections: dict[str, dict[str, object]], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, **sections)
    assert str(caught.value) == f"{message} ({tmp_path / 'smtpkit.toml'})"


def test_checks_section(tmp_path: Path) -> None:
    assert load(tmp_path).checks == ChecksConfig()
    config = load(
        tmp_path,
        checks={
            "authserv_id": "MX.Example.org",
            "spf": "reject",
            "dkim": "off",
            "dmarc": "enforce",
            "time_limit": 3,
            "dnsbl": ["zen.spamhaus.org.", "bl.example"],
            "rspamd": "http://127.0.0.1:11333",
            "rspamd_timeout": 2.5,
            "rspamd_fail": "closed",
        },
    )
    assert config.checks == ChecksConfig(
        "mx.example.org", "reject", "off", "enforce", 3.0, ("zen.spamhaus.org", "bl.example"),
        "http://127.0.0.1:11333", 2.5, "closed",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("checks", "message"),
    [
        ({"spf": "strict"}, """checks -> spf: must be "tag", "reject" or "off", got 'strict'"""),
        ({"dmarc": "reject"},
         """checks -> dmarc: must be "tag", "enforce" or "off", got 'reject'"""),
        ({"rspamd": "127.0.0.1:11333"},
         "checks -> rspamd: '127.0.0.1:11333' is not an http://HOST:PORT URL"),
        ({"dnsbl": ["bad..zone"]}, "checks -> dnsbl: "),
        ({"greylist": True}, "checks -> greylist: unknown key"),
    ],
)  # fmt: skip
def test_checks_errors(tmp_path: Path, checks: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, checks=checks)
    assert str(caught.value).startswith(message)


def test_metrics_section(tmp_path: Path) -> None:
    assert load(tmp_path).metrics.listen is None  # off unless asked for
    config = load(tmp_path, metrics={"listen": "127.0.0.1:9325"})
    assert str(config.metrics.listen) == "127.0.0.1:9325"
    assert str(load(tmp_path, metrics={"listen": "[::1]:9325"}).metrics.listen) == "[::1]:9325"
    for table, message in (
        ({"listen": "localhost"}, "metrics -> listen: 'localhost' is not HOST:PORT"),
        ({"listen": 9325}, 'metrics -> listen: must be "HOST:PORT", got 9325'),
        ({"port": 9325}, "metrics -> port: unknown key"),
    ):
        with pytest.raises(ConfigError) as caught:
            load(tmp_path, metrics=table)
        assert str(caught.value).startswith(message)
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, server={"listen": ["127.0.0.1:25"]}, metrics={"listen": "127.0.0.1:25"})
    assert str(caught.value).startswith(
        "metrics -> listen: 127.0.0.1:25 is an SMTP listener (server.listen)"
    )


def test_bare_newline_goes_to_the_engine_through_limits(tmp_path: Path) -> None:
    default = load(tmp_path)
    assert default.server.bare_newline is BareNewline.REJECT
    assert default.limits.bare_newline is BareNewline.REJECT
    config = load(tmp_path, server={"bare_newline": "normalize"}, limits={"max_errors": 4})
    assert config.server.bare_newline is BareNewline.NORMALIZE
    assert config.limits == Limits(max_errors=4, bare_newline=BareNewline.NORMALIZE)


@pytest.mark.parametrize("value", ["Normalize", "lf", "", True, ["normalize"]])
def test_bare_newline_errors_name_the_key(tmp_path: Path, value: object) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, server={"bare_newline": value})
    assert str(caught.value).startswith(
        f'server -> bare_newline: must be "reject" or "normalize", got {value!r}'
    )


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        (
            {"server": {"listen": ["127.0.0.1:25", "127.0.0.1:25"]}},
            "server -> listen: 127.0.0.1:25 is listed twice",
        ),
        (
            {"server": {"listen": ["[::1]:25", "[0:0::1]:25"]}},
            "server -> listen: [0:0::1]:25 is the same address as [::1]:25",
        ),
        (
            {"server": {"listen": ["localhost:25", "LOCALHOST:25"]}},
            "server -> listen: LOCALHOST:25 is listed twice",
        ),
        (
            {"server": {"listen": ["0.0.0.0:25", "192.0.2.1:25"]}},
            "server -> listen: 192.0.2.1:25 cannot be bound next to 0.0.0.0:25: 0.0.0.0 takes "
            "port 25 on every IPv4 address (keep one)",
        ),
        (
            {"server": {"listen": ["[2001:db8::1]:25", "[::]:25"]}},
            "server -> listen: [::]:25 cannot be bound next to [2001:db8::1]:25: :: takes port "
            "25 on every IPv6 address (keep one)",
        ),
        (
            {
                "server": {"listen": ["127.0.0.1:25"]},
                "submission": {"listen": ["127.0.0.1:587", "127.0.0.1:587"]},
            },
            "submission -> listen: 127.0.0.1:587 is listed twice",
        ),
        (
            {
                "server": {"listen": ["127.0.0.1:25"]},
                "submission": {"implicit_tls": ["127.0.0.1:465", "127.0.0.1:465"]},
            },
            "submission -> implicit_tls: 127.0.0.1:465 is listed twice",
        ),
        (
            {
                "server": {"listen": ["127.0.0.1:587"]},
                "submission": {"listen": ["127.0.0.1:587"]},
            },
            "submission -> listen: 127.0.0.1:587 is listed twice in server -> listen (a "
            "listener has one role)",
        ),
        (
            {
                "server": {"listen": ["127.0.0.1:25"]},
                "submission": {"listen": ["0.0.0.0:465"], "implicit_tls": ["127.0.0.1:465"]},
            },
            "submission -> implicit_tls: 127.0.0.1:465 cannot be bound next to 0.0.0.0:465 in "
            "submission -> listen: 0.0.0.0 takes port 465 on every IPv4 address (keep one)",
        ),
    ],
)
def test_a_listen_address_that_cannot_be_bound_twice_is_refused(
    tmp_path: Path, sections: dict[str, dict[str, object]], message: str
) -> None:
    """Caught when the config loads, so every command says it, before serve binds and
    reads "address already in use (is another mail server running?)"."""
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, **sections)
    assert str(caught.value) == f"{message} ({tmp_path / 'smtpkit.toml'})"


def test_both_wildcards_and_distinct_addresses_load(tmp_path: Path) -> None:
    listen = ["0.0.0.0:25", "[::]:25", "127.0.0.1:2525", "192.0.2.1:2525", "localhost:26"]
    config = load(tmp_path, server={"listen": listen})
    assert [str(a) for a in config.server.listen] == listen
