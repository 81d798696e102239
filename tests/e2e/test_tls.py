"""STARTTLS end to end (RFC 3207): a real ``smtpkit serve`` with a certificate made by
``smtpkit tls self-signed``, and real TLS peers: smtplib, swaks, openssl s_client, testssl.sh."""

from __future__ import annotations

import json
import re
import signal
import smtplib
import socket
import ssl
import subprocess
import time
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from smtpkit.config import load_config
from tests.conftest import MailServer, make_server, need_program, smtpkit, unavailable
from tests.smtpreader import read_reply

HOSTNAME = "mx.test.example"  # server.hostname of make_server(), so the certificate's name


# --- helpers -----------------------------------------------------------------------------------


def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def tls_server(root: Path, *, workers: int | None = None, extra_config: str = "") -> MailServer:
    """A server whose certificate and ``[tls]`` come from the real ``smtpkit tls self-signed``."""
    server = make_server(root, extra_config=extra_config)
    smtpkit("tls", "self-signed", config=server.config)
    if workers is not None:
        data = tomllib.loads(server.config.read_text())
        data["server"]["workers"] = workers
        server.config.write_text(tomli_w.dumps(data))
    return server


def certificate_path(server: MailServer) -> Path:
    return server.directory / "tls" / "cert.pem"


def client_context(server: MailServer, pem: str | None = None) -> ssl.SSLContext:
    """A careful sender: trusts only this certificate (the server's file unless ``pem`` is
    given), checks the host name, strictly."""
    context = ssl.create_default_context(cadata=pem or certificate_path(server).read_text())
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    return context


class SMTPTo(smtplib.SMTP):
    """smtplib connected to an address while verifying the certificate for a name, as a
    sending MTA connects to its MX's address and checks the MX's name."""

    def __init__(self, server: MailServer) -> None:
        self._address = server.host
        super().__init__(timeout=10)
        self._host = HOSTNAME  # the name starttls() verifies (set by __init__ only)
        self.connect(HOSTNAME, server.port)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return socket.create_connection((self._address, port), timeout)


class Peer:
    """A raw client that reads whole replies, for what smtplib will not do; on port 25, or
    on another of the server's listeners (``port``)."""

    def __init__(self, server: MailServer, port: int | None = None) -> None:
        where = (server.host, server.port if port is None else port)
        self.sock: socket.socket = socket.create_connection(where, 10)
        self.buffer = bytearray()  # bytes received past the last reply read

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> bytes:
        """The next complete reply, all its lines."""
        return read_reply(self.sock, self.buffer).raw

    def command(self, line: bytes) -> bytes:
        self.send(line + b"\r\n")
        return self.reply()

    def quiet_for(self, seconds: float) -> bool:
        """Nothing more arrives within ``seconds`` (and nothing is buffered)."""
        self.sock.settimeout(seconds)
        try:
            extra = self.sock.recv(4096, socket.MSG_PEEK)
        except TimeoutError:
            extra = b""
        finally:
            self.sock.settimeout(10)
        return not extra and not self.buffer

    def starttls(self, context: ssl.SSLContext) -> None:
        assert not self.buffer
        self.sock = context.wrap_socket(self.sock, server_hostname=HOSTNAME)

    def closed_within(self, seconds: float) -> float:
        """Seconds until the server closes this connection (reading whatever arrives)."""
        start = time.monotonic()
        self.sock.settimeout(seconds)
        try:
            while self.sock.recv(4096):
                pass
        except ConnectionResetError:
            pass
        return time.monotonic() - start

    def close(self) -> None:
        self.sock.close()


def stalled_in_handshake(server: MailServer, then: bytes = b"") -> Peer:
    """A client that sends STARTTLS, gets 220 and never completes a handshake."""
    peer = Peer(server)
    assert peer.reply().startswith(b"220 ")
    assert peer.command(b"EHLO stall.test").startswith(b"250-")
    assert peer.command(b"STARTTLS") == b"220 2.0.0 Ready to start TLS\r\n"
    if then:
        peer.send(then)
    return peer


def delivered(server: MailServer, address: str, marker: str) -> bytes:
    found = [f.read_bytes() for f in server.new_files(address) if marker.encode() in f.read_bytes()]
    assert len(found) == 1
    return found[0]


@pytest.fixture(scope="module")
def tls_mailserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailServer]:
    server = tls_server(tmp_path_factory.mktemp("tls"))
    server.start()
    try:
        yield server
    finally:
        if server.process is not None:
            server.stop()


# --- smtplib -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "name"),
    [(ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")],
)
def test_smtplib_starttls_delivers_and_says_esmtps(
    tls_mailserver: MailServer, version: ssl.TLSVersion, name: str
) -> None:
    server = tls_mailserver
    context = client_context(server)
    context.minimum_version = context.maximum_version = version
    marker = f"tls-{uuid.uuid4()}"
    with SMTPTo(server) as smtp:
        smtp.ehlo("client.test")
        assert smtp.has_extn("starttls")
        assert smtp.starttls(context=context) == (220, b"2.0.0 Ready to start TLS")
        assert isinstance(smtp.sock, ssl.SSLSocket)
        assert smtp.sock.version() == name
        cipher = smtp.sock.cipher()
        assert cipher is not None
        # RFC 3207 4.2: the session starts over and STARTTLS is not offered again.
        code, text = smtp.ehlo("client.test")
        assert code == 250 and b"STARTTLS" not in text and not smtp.has_extn("starttls")
        message = f"Subject: {marker}\r\n\r\nhi\r\n"
        assert smtp.sendmail("s@remote.test", ["alice@example.org"], message) == {}
        assert smtp.docmd("STARTTLS") == (503, b"5.5.1 TLS already active")
    data = delivered(server, "alice@example.org", marker)
    match = re.search(
        rb"\tby mx\.test\.example \(smtpkit\) with ESMTPS id (\w+)\.1-[0-9a-f]{4} "
        rb"\(using (\S+) with cipher (\S+)\)\r\n",
        data,
    )
    assert match is not None, data[:400]
    session, used, used_cipher = (g.decode() for g in match.groups())
    assert (used, used_cipher) == (name, cipher[0])
    # The journal is appended every few milliseconds: wait for the session's close.
    wait_for(
        lambda: any(r["session"] == session and r["event"] == "close" for r in server.journal())
    )
    events = [r for r in server.journal() if r["session"] == session]
    tls = [r for r in events if r["event"] == "tls"]
    assert [(r["version"], r["cipher"]) for r in tls] == [(name, cipher[0])]
    assert [r["event"] for r in events].index("tls") < [r["event"] for r in events].index("stored")


def test_no_starttls_without_a_certificate(mailserver: MailServer) -> None:
    with smtplib.SMTP(mailserver.host, mailserver.port, timeout=10) as smtp:
        smtp.ehlo("client.test")
        assert not smtp.has_extn("starttls")
        assert smtp.docmd("STARTTLS") == (454, b"4.7.0 TLS not available")


# --- swaks, openssl, testssl.sh ----------------------------------------------------------------


def swaks_with_tls() -> str:
    swaks = need_program("swaks", "swaks")
    support = subprocess.run([swaks, "--support"], capture_output=True, text=True, timeout=30)
    if "=== TLS supported" not in support.stdout + support.stderr:
        # Debian's swaks only recommends the Perl TLS module (.ci/run installs it).
        message = "swaks has no TLS: install the Debian package libnet-ssleay-perl"
        unavailable(message)
    return swaks


def test_swaks_tls_delivers(tls_mailserver: MailServer) -> None:
    swaks = swaks_with_tls()
    marker = f"swaks-{uuid.uuid4()}"
    base = [swaks, "--server", f"{tls_mailserver.host}:{tls_mailserver.port}", "--tls"]
    base += ["--from", "s@remote.test", "--to", "bob@example.org", "--helo", "client.test"]
    result = subprocess.run(
        [*base, "--tls-verify", "--tls-ca-path", str(certificate_path(tls_mailserver))]
        + ["--header", f"Subject: {marker}"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"=== TLS started with cipher TLSv1\.[23]:", result.stdout), result.stdout
    assert "<~  250 2.0.0 OK: message stored as " in result.stdout
    assert b" with ESMTPS id " in delivered(tls_mailserver, "bob@example.org", marker)
    # swaks offering TLS 1.1 only is refused by the server (alert 70, protocol version).
    old = subprocess.run(
        [*base, "--tls-protocol", "tlsv1_1"], capture_output=True, text=True, timeout=30
    )
    assert old.returncode != 0
    assert "alert protocol version" in old.stdout + old.stderr


def s_client(server: MailServer, *args: str, stdin: str) -> subprocess.CompletedProcess[str]:
    openssl = need_program("openssl", "openssl")
    return subprocess.run(
        [openssl, "s_client", "-starttls", "smtp", "-connect", f"{server.host}:{server.port}"]
        + ["-brief", "-crlf", "-ign_eof", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize("version", ["-tls1_2", "-tls1_3"])
def test_openssl_s_client_verifies_and_talks(tls_mailserver: MailServer, version: str) -> None:
    result = s_client(
        tls_mailserver,
        version,
        "-CAfile",
        str(certificate_path(tls_mailserver)),
        "-verify_hostname",
        HOSTNAME,
        "-verify_return_error",
        stdin="EHLO client.test\nQUIT\n",
    )
    # Exit 0 also means our close_notify arrived before the connection closed (RFC 8446 6.1).
    assert result.returncode == 0, result.stderr
    assert "CONNECTION ESTABLISHED" in result.stderr
    assert f"Protocol version: TLSv1.{version[-1]}" in result.stderr
    assert "Verification: OK" in result.stderr
    assert f"Verified peername: {HOSTNAME}" in result.stderr
    assert result.stdout.endswith(
        "250 HELP\n221 2.0.0 mx.test.example Service closing transmission channel\n"
    )
    assert "STARTTLS" not in result.stdout


@pytest.mark.parametrize("version", ["-tls1", "-tls1_1"])
def test_openssl_s_client_older_than_tls_1_2_fails(
    tls_mailserver: MailServer, version: str
) -> None:
    # SECLEVEL=0 lets this client offer the old protocol; the alert it gets back is the
    # server's refusal (test_tls.py shows the same client succeeding against a lax server).
    result = s_client(tls_mailserver, version, "-cipher", "DEFAULT@SECLEVEL=0", stdin="QUIT\n")
    assert result.returncode != 0
    assert "alert protocol version" in result.stderr
    assert "CONNECTION ESTABLISHED" not in result.stderr


def test_tls_1_2_renegotiation_is_refused(tls_mailserver: MailServer) -> None:
    openssl = need_program("openssl", "openssl")
    where = f"{tls_mailserver.host}:{tls_mailserver.port}"
    # s_client renegotiates when it reads a line "R" (not with -ign_eof/-quiet).
    script = (
        "(printf 'EHLO client.test\\n'; sleep 0.5; printf 'R\\n'; sleep 1) | "
        f"{openssl} s_client -starttls smtp -connect {where} -tls1_2 -crlf 2>&1"
    )
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30)
    assert "RENEGOTIATING" in result.stdout
    assert "no renegotiation" in result.stdout


OLD_PROTOCOLS = ("SSLv2", "SSLv3", "TLS1", "TLS1_1")  # testssl's ids


def protocols_by_testssl(host: str, port: int, report: Path, *, starttls: bool) -> dict[str, str]:
    """testssl.sh's findings for each protocol version (its id: "not offered", "offered"
    ...) at ``host:port``, through SMTP STARTTLS or TLS from the first byte. Only the
    protocol checks run (``--protocols``, about 10 s; the full scan takes minutes)."""
    testssl = need_program("testssl", "testssl.sh")
    result = subprocess.run(
        [testssl, "--protocols", *(["--starttls", "smtp"] if starttls else [])]
        + ["--quiet", "--warnings", "off", "--nodns", "none", "--color", "0"]
        + ["--jsonfile-pretty", str(report), f"{host}:{port}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert report.exists(), result.stdout + result.stderr
    return {
        item["id"]: item["finding"]
        for item in json.loads(report.read_text())["scanResult"][0]["protocols"]
    }


def test_testssl_finds_nothing_older_than_tls_1_2(
    tls_mailserver: MailServer, tmp_path: Path
) -> None:
    found = protocols_by_testssl(
        tls_mailserver.host, tls_mailserver.port, tmp_path / "testssl.json", starttls=True
    )
    assert {k: found[k] for k in OLD_PROTOCOLS} == dict.fromkeys(OLD_PROTOCOLS, "not offered")
    assert found["TLS1_2"] == "offered"
    assert found["TLS1_3"].startswith("offered")


# --- STARTTLS command injection (CVE-2011-0411 class) -----------------------------------------


@pytest.mark.parametrize(
    "injected",
    [
        b"RSET\r\n",
        b"MAIL FROM:<x@injected.test>\r\n",
        b"EHLO evil.test\r\nMAIL FROM:<x@injected.test>\r\nRCPT TO:<alice@example.org>\r\n",
        b"NOOP\r\nNOOP\r\nNOOP\r\n",
    ],
)
def test_commands_pipelined_after_starttls_are_never_executed(
    tls_mailserver: MailServer, injected: bytes
) -> None:
    peer = Peer(tls_mailserver)
    assert peer.reply().startswith(b"220 ")
    assert peer.command(b"EHLO client.test").startswith(b"250-")
    peer.send(b"STARTTLS\r\n" + injected)  # one write: they arrive in one read
    assert peer.reply() == b"220 2.0.0 Ready to start TLS\r\n"
    assert peer.quiet_for(0.2), "a reply to an injected command came in plaintext"
    peer.starttls(client_context(tls_mailserver))
    # The first reply inside TLS answers our first encrypted command, nothing else.
    ehlo = peer.command(b"EHLO client.test")
    assert ehlo.startswith(b"250-mx.test.example Hello client.test\r\n")
    assert ehlo.endswith(b"250 HELP\r\n")
    # No MAIL FROM is in effect: the injected one was dropped with the rest.
    assert peer.command(b"RCPT TO:<alice@example.org>").startswith(b"503 5.5.1 ")
    assert peer.command(b"NOOP") == b"250 2.0.0 OK\r\n"
    assert peer.command(b"QUIT").startswith(b"221 ")
    assert peer.closed_within(5) < 5 and not peer.buffer
    peer.close()
    assert not [r for r in tls_mailserver.journal() if r.get("sender") == "x@injected.test"]


def test_plaintext_sent_after_the_220_does_not_reach_the_session(
    tls_mailserver: MailServer,
) -> None:
    peer = Peer(tls_mailserver)
    assert peer.reply().startswith(b"220 ")
    assert peer.command(b"EHLO client.test").startswith(b"250-")
    assert peer.command(b"STARTTLS") == b"220 2.0.0 Ready to start TLS\r\n"
    # Plaintext where the ClientHello belongs is a failed handshake, not a command.
    peer.send(b"MAIL FROM:<x@injected.test>\r\n")
    assert peer.closed_within(5) < 5
    assert not peer.buffer.startswith(b"250")
    peer.close()
    assert not [r for r in tls_mailserver.journal() if r.get("sender") == "x@injected.test"]


# --- stalled and broken handshakes ---------------------------------------------------------------


def test_stalled_handshakes_cost_one_session_not_the_loop(tmp_path: Path) -> None:
    # One worker process: every connection shares one loop, so a blocked loop would show.
    server = tls_server(tmp_path, workers=1, extra_config="[limits]\ncommand_timeout = 2\n")
    server.start()
    try:
        silent = stalled_in_handshake(server)  # never sends a ClientHello
        half = stalled_in_handshake(server, b"\x16\x03\x01\x02\x00\x01\x00")  # part of one
        garbage = stalled_in_handshake(server, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        stalled_at = time.monotonic()
        assert garbage.closed_within(2) < 1  # not TLS: that session ends at once
        start = time.monotonic()
        with SMTPTo(server) as smtp:
            smtp.starttls(context=client_context(server))
            smtp.ehlo("client.test")
            smtp.sendmail("s@remote.test", ["alice@example.org"], "Subject: meanwhile\r\n\r\nx\r\n")
        took = time.monotonic() - start
        assert took < 1.5, f"a delivery took {took:.2f}s while two handshakes stalled"
        assert len(server.new_files("alice@example.org")) == 1
        # The stalled ones end at the command timeout (2 s, checked every second).
        for peer in (silent, half):
            peer.closed_within(5)
            waited = time.monotonic() - stalled_at
            assert 1.5 < waited < 4.5, waited
            peer.close()
        garbage.close()
        wait_for(
            lambda: (
                sum(
                    1
                    for r in server.journal()
                    if r["event"] == "close" and r["reason"] == "tls handshake timeout"
                )
                == 2
            )
        )
        failed = [
            r
            for r in server.journal()
            if r["event"] == "close" and r["reason"].startswith("tls handshake failed")
        ]
        assert len(failed) == 1
    finally:
        assert server.stop() == 0


def test_sigterm_does_not_wait_for_a_stalled_handshake(tmp_path: Path) -> None:
    server = tls_server(tmp_path, workers=1)  # command timeout: the default 300 s
    server.start()
    peer = stalled_in_handshake(server)
    try:
        start = time.monotonic()
        assert server.stop(timeout=10) == 0
        assert time.monotonic() - start < 5
        assert peer.closed_within(5) < 5
    finally:
        peer.close()
        if server.process is not None:
            server.process.kill()
            server.process.wait()
    reasons = [r["reason"] for r in server.journal() if r["event"] == "close"]
    assert "shutdown during tls handshake" in reasons


# --- certificate reload on SIGHUP ----------------------------------------------------------------


def served_certificate(server: MailServer, pem: str) -> bytes:
    peer = Peer(server)
    try:
        assert peer.reply().startswith(b"220 ")
        assert peer.command(b"EHLO client.test").startswith(b"250-")
        assert peer.command(b"STARTTLS").startswith(b"220 ")
        peer.starttls(client_context(server, pem))
        assert isinstance(peer.sock, ssl.SSLSocket)
        der = peer.sock.getpeercert(binary_form=True)
        assert der is not None
        assert peer.command(b"QUIT").startswith(b"221 ")
        return der
    finally:
        peer.close()


def test_sighup_reloads_the_certificate_and_survives_a_broken_one(tmp_path: Path) -> None:
    server = tls_server(tmp_path)  # several workers: the supervisor passes SIGHUP on
    workers = load_config(server.config).server.workers
    server.start()
    try:
        wait_for(lambda: sum(r["event"] == "start" for r in server.journal()) == workers)
        first = certificate_path(server).read_text()
        assert served_certificate(server, first) == ssl.PEM_cert_to_DER_cert(first)

        def reloads(ok: bool) -> int:
            return sum(r["event"] == "tls_reload" and r["ok"] is ok for r in server.journal())

        # A renewal: new key (RSA now), new serial, same name, same paths.
        smtpkit("tls", "self-signed", "--force", "--key-type", "rsa", config=server.config)
        second = certificate_path(server).read_text()
        assert second != first
        assert server.process is not None
        server.process.send_signal(signal.SIGHUP)
        wait_for(lambda: reloads(True) == workers)
        for _ in range(2 * workers):  # whichever worker accepts
            assert served_certificate(server, second) == ssl.PEM_cert_to_DER_cert(second)

        certificate_path(server).write_text("-----BEGIN CERTIFICATE-----\nbroken\n")
        server.process.send_signal(signal.SIGHUP)
        wait_for(lambda: reloads(False) == workers)
        assert server.process.poll() is None
        for _ in range(2 * workers):  # the last good certificate stays in use
            assert served_certificate(server, second) == ssl.PEM_cert_to_DER_cert(second)
        failed = [r for r in server.journal() if r["event"] == "tls_reload" and not r["ok"]]
        assert str(certificate_path(server)) in failed[0]["error"]
        assert "keeping the old certificate" in server.stderr()  # echoed journal line
        with SMTPTo(server) as smtp:
            smtp.starttls(context=client_context(server, second))
            smtp.ehlo("client.test")
            assert smtp.sendmail("s@remote.test", ["bob@example.org"], "Subject: x\r\n\r\nx") == {}
    finally:
        assert server.stop() == 0


# --- a bad [tls] ---------------------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["certificate", "key"])
def test_serve_with_a_missing_tls_file_says_which(tmp_path: Path, missing: str) -> None:
    server = tls_server(tmp_path)
    path = server.directory / "tls" / ("cert.pem" if missing == "certificate" else "key.pem")
    path.unlink()
    result = smtpkit("serve", config=server.config, check=False)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f"Error: tls -> {missing}: cannot read {path}: No such file or directory"
    ]
