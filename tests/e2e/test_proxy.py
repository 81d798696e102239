"""The PROXY protocol against a real ``smtpkit serve``: a balancer on 127.0.0.1 (listed in
``server.proxy_protocol_from``) names its clients in v1 and v2 headers; the journal, the
``Received:`` line, the policy and the per-address limit know the client, never the
balancer. A peer not listed (127.0.0.2) that sends a header is refused; a bad, cut or slow
header costs only its own connection, which is closed without a greeting."""

from __future__ import annotations

import ipaddress
import smtplib
import socket
import ssl
import struct
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from smtpkit.config import Config, load_config
from smtpkit.errors import ConfigError
from smtpkit.protocol.proxy import V2_SIGNATURE
from tests.conftest import MailServer, free_port, make_server, need_program, smtpkit
from tests.smtpreader import read_reply

BALANCER = "127.0.0.1"
OUTSIDER = "127.0.0.2"  # not in proxy_protocol_from
TIMEOUT = 1.0  # [limits] proxy_header_timeout of these servers


def v1(client: str, port: int = 40000, server: str = "192.0.2.1") -> bytes:
    family = "TCP6" if ":" in client else "TCP4"
    return f"PROXY {family} {client} {server} {port} 25\r\n".encode()


def v2(client: str, port: int = 40001) -> bytes:
    a = ipaddress.ip_address(client)
    b = ipaddress.ip_address("192.0.2.1" if a.version == 4 else "2001:db8::1")
    family = 0x11 if a.version == 4 else 0x21
    block = a.packed + b.packed + struct.pack("!HH", port, 25)
    block += struct.pack("!BH", 0x05, 16) + bytes(16)  # a unique-id TLV, to be skipped
    return V2_SIGNATURE + struct.pack("!BBH", 0x21, family, len(block)) + block


class ProxiedSMTP(smtplib.SMTP):
    """smtplib behind a balancer: ``header`` goes out before anything else."""

    def __init__(self, header: bytes, host: str, port: int, source: str = BALANCER) -> None:
        self.header = header
        super().__init__(host, port, timeout=10, source_address=(source, 0))

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock = super()._get_socket(host, port, timeout)
        sock.sendall(self.header)
        return sock


def wait_for_proxied_banner(server: MailServer, timeout: float = 15) -> None:
    assert server.process is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.process.poll() is None, server.stderr()
        try:
            with socket.create_connection((server.host, server.port), timeout=3) as s:
                s.sendall(b"PROXY UNKNOWN\r\n")
                if s.recv(512).startswith(b"220 "):
                    s.sendall(b"QUIT\r\n")
                    while s.recv(512):
                        pass
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("smtpkit serve did not answer behind its balancer")


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., MailServer]]:
    """Start a server behind the balancer 127.0.0.1, with ``[limits]`` lines given."""
    servers: list[MailServer] = []

    def start(*limits: str, implicit_tls: int = 0) -> MailServer:
        lines = "\n".join((f"proxy_header_timeout = {TIMEOUT}", *limits))
        server = make_server(
            tmp_path / str(len(servers)),
            extra_config=(
                f'proxy_protocol_from = ["{BALANCER}/32"]\n\n[limits]\n{lines}\n\n'
                # The balancer is also a trusted network: only its clients' own addresses
                # may decide whether they relay.
                '[submission]\ntrusted_networks = ["127.0.0.1/32"]\n'
            ),
        )
        servers.append(server)
        if implicit_tls:
            smtpkit("tls", "self-signed", config=server.config)
            data = tomllib.loads(server.config.read_text())
            data["submission"]["implicit_tls"] = [f"{BALANCER}:{implicit_tls}"]
            server.config.write_text(tomli_w.dumps(data))
        server.stderr_path = server.directory / "serve.stderr"
        with server.stderr_path.open("ab") as stderr:
            server.process = subprocess.Popen(
                [sys.executable, "-m", "smtpkit", "-c", str(server.config), "serve"],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        wait_for_proxied_banner(server)
        return server

    yield start
    for server in servers:
        if server.process is not None:
            server.stop()


def journal(
    server: MailServer, until: Callable[[list[dict[str, Any]]], bool]
) -> list[dict[str, Any]]:
    """The journal's events once ``until(events)`` holds (workers append every 20 ms)."""
    deadline = time.monotonic() + 10
    while True:
        records = server.journal()
        if until(records):
            return records
        assert time.monotonic() < deadline, f"journal never got there: {records[-5:]}"
        time.sleep(0.05)


def events(records: list[dict[str, Any]], name: str, **fields: Any) -> list[dict[str, Any]]:
    return [r for r in records if r["event"] == name and fields.items() <= r.items()]


def closed_without_a_byte(sock: socket.socket) -> float:
    """Seconds until the server closes ``sock``, which must get nothing before."""
    started = time.monotonic()
    sock.settimeout(TIMEOUT + 10)
    assert sock.recv(1024) == b""
    return time.monotonic() - started


def connect(server: MailServer, source: str = BALANCER) -> socket.socket:
    return socket.create_connection((server.host, server.port), 10, source_address=(source, 0))


# --- the client the header names is the session's client -------------------------------------


def test_v1_and_v2_headers_name_the_client_everywhere(serve: Callable[..., MailServer]) -> None:
    server = serve()
    seen: set[Path] = set()
    for header, client, literal in (
        (v1("203.0.113.7"), "203.0.113.7:40000", b"[203.0.113.7]"),
        (v2("2001:db8::7"), "[2001:db8::7]:40001", b"[IPv6:2001:db8::7]"),
    ):
        with ProxiedSMTP(header, server.host, server.port) as smtp:
            smtp.ehlo("client.example")
            # Policy sees the client, not the balancer (a trusted network): no relaying.
            assert smtp.docmd("MAIL FROM:<s@remote.example>")[0] == 250
            assert smtp.docmd("RCPT TO:<someone@elsewhere.example>") == (
                550,
                b"5.7.1 Relaying denied",
            )
            assert smtp.docmd("RSET")[0] == 250
            smtp.sendmail("s@remote.example", ["alice@example.org"], "Subject: hi\r\n\r\nx\r\n")
        records = journal(server, lambda r, c=client: bool(events(r, "stored", peer=c)))
        connect_line = events(records, "connect", peer=client)
        assert len(connect_line) == 1
        proxy_line = events(records, "proxy", session=connect_line[0]["session"])
        assert proxy_line[0]["peer"] == client
        assert proxy_line[0]["via"].startswith(f"{BALANCER}:")
        assert not events(records, "connect", peer=proxy_line[0]["via"])
        # This message's file: names sort by second, then microseconds as text, so the
        # last name need not be the newest file.
        fresh = [p for p in server.new_files("alice@example.org") if p not in seen]
        assert len(fresh) == 1
        seen.update(fresh)
        stored = fresh[0].read_bytes()
        assert b"Received: from client.example (" + literal + b")\r\n" in stored


def test_bytes_after_the_header_in_the_same_write_are_the_client_s(
    serve: Callable[..., MailServer],
) -> None:
    server = serve()
    with connect(server) as s:
        s.sendall(v2("203.0.113.9") + b"EHLO pipelined.example\r\nQUIT\r\n")
        pending = bytearray()
        assert read_reply(s, pending).code == 220
        assert read_reply(s, pending).code == 250
        assert read_reply(s, pending).code == 221


def test_implicit_tls_right_after_the_header_is_left_to_the_handshake(
    serve: Callable[..., MailServer],
) -> None:
    port = free_port()
    server = serve(implicit_tls=port)
    context = ssl.create_default_context(cafile=str(server.directory / "tls" / "cert.pem"))
    context.check_hostname = False
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing)
    with socket.create_connection((server.host, port), 10, source_address=(BALANCER, 0)) as s:
        with pytest.raises(ssl.SSLWantReadError):
            tls.do_handshake()
        s.sendall(v1("203.0.113.9") + outgoing.read())  # header and ClientHello in one write
        greeting = b""
        while not greeting.endswith(b"\r\n"):
            data = s.recv(65536)
            assert data, "closed during the handshake"
            incoming.write(data)
            try:
                if tls.version() is None:
                    tls.do_handshake()
                greeting += tls.read(4096)
            except ssl.SSLWantReadError:
                pass
            s.sendall(outgoing.read())
        assert greeting.startswith(b"220 ")
    records = journal(server, lambda r: bool(events(r, "connect", peer="203.0.113.9:40000")))
    assert events(records, "connect", peer="203.0.113.9:40000")[0]["tls"].startswith("TLS")


def test_health_checks_are_the_balancer_s_own_sessions(serve: Callable[..., MailServer]) -> None:
    server = serve()
    local = V2_SIGNATURE + struct.pack("!BBH", 0x20, 0x00, 0)
    for header in (b"PROXY UNKNOWN\r\n", local):
        with connect(server) as s:
            s.sendall(header)
            assert s.recv(512).startswith(b"220 ")
    records = journal(server, lambda r: len(events(r, "proxy", version=2)) >= 1)
    assert events(records, "proxy", version=2)[-1]["peer"].startswith(f"{BALANCER}:")


# --- limits ----------------------------------------------------------------------------------


def test_the_per_address_limit_counts_the_proxied_client(serve: Callable[..., MailServer]) -> None:
    server = serve("max_connections_per_ip = 1")
    first = connect(server)
    first.sendall(v1("203.0.113.7"))
    assert first.recv(512).startswith(b"220 ")
    try:
        # The same client again, through the same balancer: refused, and the refusal is
        # journaled under the client's address.
        with connect(server) as again:
            again.sendall(v1("203.0.113.7", port=40002))
            assert again.recv(512) == b"421 4.7.0 Too many connections from your address\r\n"
            assert again.recv(512) == b""
        # Another client through the same balancer: served, and so is an IPv6 one.
        for header in (v1("203.0.113.8"), v2("2001:db8::8")):
            with ProxiedSMTP(header, server.host, server.port) as smtp:
                smtp.sendmail("s@remote.example", ["bob@example.org"], "Subject: x\r\n\r\nx\r\n")
    finally:
        first.close()
    records = journal(server, lambda r: bool(events(r, "refused")))
    refused = events(records, "refused")
    assert [(r["peer"], r["reason"]) for r in refused] == [
        ("203.0.113.7", "max_connections_per_ip")
    ]
    # Once the first client's connection is closed, its place is free again.
    deadline = time.monotonic() + 10
    while True:
        with connect(server) as s:
            s.sendall(v1("203.0.113.7", port=40003))
            if s.recv(512).startswith(b"220 "):
                break
        assert time.monotonic() < deadline
        time.sleep(0.05)


# --- who may send a header -------------------------------------------------------------------


def test_a_header_from_a_peer_not_listed_is_refused(serve: Callable[..., MailServer]) -> None:
    server = serve()
    for header in (v1("203.0.113.7"), v2("2001:db8::7")):
        with connect(server, OUTSIDER) as s:
            pending = bytearray()
            assert read_reply(s, pending).code == 220  # an ordinary session: greeted first
            s.sendall(header)
            reply = read_reply(s, pending)
            assert (reply.code, reply.text) == (
                421,
                b"4.7.0 PROXY header not accepted from your address",
            )
            s.settimeout(10)
            assert s.recv(512) == b""

    def refusals(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        outsiders = [r for r in records if r["peer"].startswith(f"{OUTSIDER}:")]
        return [r for r in outsiders if r["event"] == "reply" and r["code"] == 421]

    assert len(refusals(journal(server, lambda r: len(refusals(r)) == 2))) == 2
    assert all("PROXY header not accepted" in r["text"] for r in refusals(journal(server, bool)))
    # The outsider's own mail, without a header, is served as always.
    with smtplib.SMTP(server.host, server.port, source_address=(OUTSIDER, 0)) as smtp:
        smtp.sendmail("s@remote.example", ["bob@example.org"], "Subject: x\r\n\r\nx\r\n")
    assert len(server.new_files("bob@example.org")) == 1


# --- bad headers cost only their own connection ------------------------------------------------


def test_bad_cut_and_slow_headers_are_closed_without_a_greeting(
    serve: Callable[..., MailServer],
) -> None:
    server = serve()
    cases = {
        "garbage": b"EHLO client.example\r\n",
        "bad v1": b"PROXY TCP4 203.0.113.007 192.0.2.1 1 25\r\n",
        "oversized v2": V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x11, 0xFFFF),
        "bare LF": b"PROXY TCP4 203.0.113.7 192.0.2.1 1 25\n",
    }
    for data in cases.values():
        with connect(server) as s:
            s.sendall(data)
            assert closed_without_a_byte(s) < TIMEOUT  # at once, not at the timeout
    # Cut short: the balancer closes its side in the middle of the header.
    with connect(server) as s:
        s.sendall(v1("203.0.113.7")[:20])
        s.shutdown(socket.SHUT_WR)
        assert closed_without_a_byte(s) < TIMEOUT
    # Slow: half a header, then nothing; and nothing at all. Closed at the timeout, while
    # another client is served meanwhile.
    slow, silent = connect(server), connect(server)
    try:
        slow.sendall(v2("203.0.113.7")[:20])
        with ProxiedSMTP(v1("203.0.113.8"), server.host, server.port) as smtp:
            smtp.sendmail("s@remote.example", ["bob@example.org"], "Subject: x\r\n\r\nx\r\n")
        for sock in (slow, silent):
            took = closed_without_a_byte(sock)
            assert took < TIMEOUT + 3  # the timeout, plus a turn of the loop
    finally:
        slow.close()
        silent.close()

    def errors(records: list[dict[str, Any]]) -> list[str]:
        return sorted(e["error"] for e in records if e["event"] == "proxy" and "error" in e)

    records = journal(server, lambda r: len(errors(r)) >= 7)
    assert errors(records) == sorted(
        [
            "not a PROXY header",
            "PROXY v1: an address that is not TCP4",
            "PROXY v2: a header of 65551 octets (at most 4096)",
            "PROXY v1: a bare LF ends the line",
            "closed in the middle of its PROXY header",
            f"an incomplete PROXY header after {TIMEOUT:g} s",
            f"no PROXY header after {TIMEOUT:g} s",
        ]
    )
    # No session began for any of them: the only ones are the start-up check's (UNKNOWN:
    # the balancer itself) and the client served meanwhile, in either order, since each
    # worker writes its own lines to the journal.
    peers = sorted(e["peer"] for e in events(records, "connect"))
    assert len(peers) == 2 and peers[0].startswith(f"{BALANCER}:")
    assert peers[1] == "203.0.113.8:40000"
    assert len(server.new_files("bob@example.org")) == 1


def test_proxy_protocol_from_in_the_config(tmp_path: Path) -> None:
    def load(server: str, limits: str = "") -> Config:
        path = tmp_path / "smtpkit.toml"
        path.write_text(f'[server]\ndomains = ["example.org"]\n{server}\n[limits]\n{limits}\n')
        return load_config(path)

    assert load("").server.proxy_protocol_from == ()
    assert load("proxy_protocol_from = []").server.proxy_protocol_from == ()
    config = load('proxy_protocol_from = ["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"]')
    assert [str(n) for n in config.server.proxy_protocol_from] == [
        "10.0.0.0/8",
        "192.0.2.7/32",
        "2001:db8::/32",
    ]
    assert config.limits.proxy_header_timeout == 10.0
    assert load("", "proxy_header_timeout = 2.5").limits.proxy_header_timeout == 2.5
    for server, limits, says in [
        ('proxy_protocol_from = ["balancer.example"]', "", "server -> proxy_protocol_from"),
        ("proxy_protocol_from = 5", "", "server -> proxy_protocol_from"),
        ("", "proxy_header_timeout = 0", "limits -> proxy_header_timeout"),
    ]:
        with pytest.raises(ConfigError, match=says):
            load(server, limits)


# --- behind a real HAProxy -------------------------------------------------------------------


class HAProxy:
    """HAProxy in TCP mode in front of ``server``: one frontend that sends a v1 header
    (``send-proxy``), one a v2 header (``send-proxy-v2``), both on loopback."""

    def __init__(self, folder: Path, server: MailServer) -> None:
        program = need_program("haproxy", "haproxy")
        self.v1_port, self.v2_port = free_port(), free_port()
        config = folder / "haproxy.cfg"
        config.write_text(
            f"""\
global
    maxconn 200

defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s

listen smtp_v1
    bind 127.0.0.1:{self.v1_port}
    server smtpkit {server.host}:{server.port} send-proxy

listen smtp_v2
    bind 127.0.0.1:{self.v2_port}
    server smtpkit {server.host}:{server.port} send-proxy-v2
"""
        )
        self.log = folder / "haproxy.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [program, "-db", "-f", str(config)], stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 15
        for port in (self.v1_port, self.v2_port):
            while True:
                assert self.process.poll() is None, self.log.read_text()
                try:
                    # From an address of its own: HAProxy passes even this probe on, and
                    # smtpkit counts it under the address it came from.
                    socket.create_connection((BALANCER, port), 2, ("127.0.0.10", 0)).close()
                    break
                except OSError:
                    assert time.monotonic() < deadline, "haproxy did not listen"
                    time.sleep(0.05)

    def smtp(self, port: int, source: str) -> smtplib.SMTP:
        return smtplib.SMTP(BALANCER, port, timeout=10, source_address=(source, 0))

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(10)


@pytest.fixture
def haproxy(
    tmp_path: Path, serve: Callable[..., MailServer]
) -> Iterator[tuple[HAProxy, MailServer]]:
    server = serve("max_connections_per_ip = 2")
    balancer = HAProxy(tmp_path, server)
    try:
        yield balancer, server
    finally:
        balancer.close()


def test_mail_through_haproxy_carries_the_client_s_address(
    haproxy: tuple[HAProxy, MailServer],
) -> None:
    balancer, server = haproxy
    for port, client, version in (
        (balancer.v1_port, "127.0.0.7", 1),
        (balancer.v2_port, "127.0.0.8", 2),
    ):
        with balancer.smtp(port, client) as smtp:
            smtp.ehlo("client.example")
            # The policy sees the client, not HAProxy (127.0.0.1, a trusted network).
            assert smtp.docmd("MAIL FROM:<s@remote.example>")[0] == 250
            assert smtp.docmd("RCPT TO:<x@elsewhere.example>") == (550, b"5.7.1 Relaying denied")
            assert smtp.docmd("RSET")[0] == 250
            smtp.sendmail("s@remote.example", ["alice@example.org"], "Subject: hi\r\n\r\nx\r\n")
        records = journal(
            server,
            lambda r, c=client: any(e["peer"].startswith(f"{c}:") for e in events(r, "stored")),
        )
        (proxy,) = [e for e in events(records, "proxy") if e["peer"].startswith(f"{client}:")]
        assert proxy["version"] == version
        assert proxy["via"].startswith(f"{BALANCER}:")
    received = sorted(
        path.read_bytes().split(b"\r\n")[1] for path in server.new_files("alice@example.org")
    )
    assert received == [
        b"Received: from client.example ([127.0.0.7])",
        b"Received: from client.example ([127.0.0.8])",
    ]


def test_the_per_address_limit_holds_behind_haproxy(haproxy: tuple[HAProxy, MailServer]) -> None:
    balancer, server = haproxy
    held = [balancer.smtp(balancer.v2_port, "127.0.0.7") for _ in range(2)]
    try:
        for smtp in held:
            assert smtp.noop()[0] == 250
        # A third from the same client is refused; HAProxy passes the 421 on and closes.
        with socket.create_connection(
            (BALANCER, balancer.v1_port), 10, source_address=("127.0.0.7", 0)
        ) as third:
            assert third.recv(512) == b"421 4.7.0 Too many connections from your address\r\n"
            assert third.recv(512) == b""
        # Another client through the same HAProxy is served meanwhile.
        with balancer.smtp(balancer.v1_port, "127.0.0.9") as other:
            other.sendmail("s@remote.example", ["bob@example.org"], "Subject: x\r\n\r\nx\r\n")
    finally:
        for smtp in held:
            smtp.close()
    records = journal(server, lambda r: bool(events(r, "refused")))
    assert [(r["peer"], r["reason"]) for r in events(records, "refused")] == [
        ("127.0.0.7", "max_connections_per_ip")
    ]
    assert len(server.new_files("bob@example.org")) == 1
