"""``smtpkit mx --check`` against a running ``smtpkit serve`` that the test zone points to.

The zone (tests/dnsserver.py, served by a real NSD) says ``ours.mx.test. MX 10 mail.mx.test.``
with ``mail.mx.test. A 127.0.0.1``, and ``theirs.mx.test`` has MX hosts elsewhere.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import MailServer, free_port, smtpkit
from tests.dnsserver import DnsServer, dns_server  # noqa: F401

HOST = "127.0.0.1"


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[list[MailServer]]:
    """Started servers, stopped at teardown; add with ``serve(...)`` below."""
    started: list[MailServer] = []
    yield started
    for server in started:
        if server.process is not None:
            server.stop()


def serve(started: list[MailServer], root: Path, *domains: str) -> MailServer:
    """``smtpkit init`` + ``smtpkit serve`` on a free loopback port, as a user would."""
    port = free_port(HOST)
    directory = root / "mail"
    args = ["init", str(directory), "--hostname", "mail.mx.test", "--listen", f"{HOST}:{port}"]
    for domain in domains:
        args += ["--domain", domain]
    smtpkit(*args)
    server = MailServer(directory, directory / "smtpkit.toml", HOST, port, domains[0])
    started.append(server)
    server.start()
    return server


def check(server: MailServer, dns: DnsServer) -> tuple[int, list[str]]:
    result = smtpkit(
        "mx",
        "--check",
        "--nameserver",
        dns.nameserver,
        "--timeout",
        "2",
        config=server.config,
        check=False,
    )
    assert result.stderr == ""
    return result.returncode, result.stdout.splitlines()


def banner(host: str, port: int) -> bytes:
    with socket.create_connection((host, port), timeout=5) as conn:
        first = conn.recv(512)
        conn.sendall(b"QUIT\r\n")
    return first


def test_check_finds_the_running_server(
    dns_server: DnsServer,  # noqa: F811
    start_server: list[MailServer],
    tmp_path: Path,
) -> None:
    server = serve(start_server, tmp_path, "ours.mx.test", "selfhosted.mx.test")
    code, out = check(server, dns_server)
    assert out == [
        f"this server: mail.mx.test at 127.0.0.1 (listening on 127.0.0.1:{server.port})",
        "  note: no listen address uses port 25, where other servers deliver "
        "(fine behind a port forward)",
        "ours.mx.test: ok: mail.mx.test (127.0.0.1) at preference 10 is this server",
        "selfhosted.mx.test: ok: no MX record, but its implicit MX selfhosted.mx.test "
        "(127.0.0.1) is this server",
        "  tip: an explicit MX is clearer: selfhosted.mx.test. IN MX 10 mail.mx.test.",
    ]
    assert code == 0
    # The address the check matched is really where the running server greets.
    found = re.fullmatch(r"ours\.mx\.test: ok: mail\.mx\.test \((.+)\) at .*", out[2])
    assert found is not None
    assert banner(found.group(1), server.port).startswith(b"220 ")


def test_check_reports_a_zone_pointing_elsewhere(
    dns_server: DnsServer,  # noqa: F811
    start_server: list[MailServer],
    tmp_path: Path,
) -> None:
    server = serve(start_server, tmp_path, "ours.mx.test", "theirs.mx.test")
    code, out = check(server, dns_server)
    assert out == [
        f"this server: mail.mx.test at 127.0.0.1 (listening on 127.0.0.1:{server.port})",
        "  note: no listen address uses port 25, where other servers deliver "
        "(fine behind a port forward)",
        "ours.mx.test: ok: mail.mx.test (127.0.0.1) at preference 10 is this server",
        "theirs.mx.test: NOT this server: its mail goes to mx-b.mx.test (192.0.2.2), "
        "mx-c.mx.test (2001:db8::3)",
        "  fix: add: theirs.mx.test. IN MX 10 mail.mx.test.",
    ]
    assert code == 5
    assert banner(HOST, server.port).startswith(b"220 ")


def test_check_uses_the_configured_nameservers(
    dns_server: DnsServer,  # noqa: F811
    start_server: list[MailServer],
    tmp_path: Path,
) -> None:
    # No --nameserver: [dns] nameservers from the config are asked (the system's would not
    # know mx.test).
    server = serve(start_server, tmp_path, "ours.mx.test")
    with server.config.open("a") as fh:
        fh.write(f'\n[dns]\nnameservers = ["{dns_server.nameserver}"]\n')
    result = smtpkit("mx", "--check", "--timeout", "2", config=server.config, check=False)
    assert result.stderr == ""
    assert "ours.mx.test: ok: mail.mx.test (127.0.0.1) at preference 10 is this server" in (
        result.stdout.splitlines()
    )
    assert result.returncode == 0
