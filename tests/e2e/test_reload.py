"""Reloading the config without a restart (SIGHUP): a real ``smtpkit serve``, its config file
changed under it, mail in flight on another connection while it happens."""

from __future__ import annotations

import hashlib
import signal
import smtplib
import socket
import ssl
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from tests.conftest import MailServer, free_port, make_server, smtpkit, wait_for_banner
from tests.e2e.test_outbound import wait_until
from tests.smtpreader import read_reply


def count(server: MailServer, event: str) -> int:
    return sum(r["event"] == event for r in server.journal())


def reloads(server: MailServer, ok: bool) -> int:
    return sum(r["event"] == "reload" and r["ok"] is ok for r in server.journal())


def edit(server: MailServer, change: Any) -> None:
    data = tomllib.loads(server.config.read_text())
    change(data)
    server.config.write_text(tomli_w.dumps(data))


def hup(server: MailServer) -> None:
    assert server.process is not None
    server.process.send_signal(signal.SIGHUP)


def closed(host: str, port: int) -> bool:
    """Nobody greets there any more (a connection caught in a closing listener's backlog is
    reset)."""
    try:
        with socket.create_connection((host, port), timeout=5) as sock:
            return sock.recv(512) == b""
    except (ConnectionRefusedError, ConnectionResetError):
        return True


class Raw:
    """A client that sends what it is told, when it is told (a DATA left open)."""

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port), timeout=30)
        self.pending = bytearray()
        assert self.reply().startswith(b"220 ")

    def starttls(self) -> str:
        """STARTTLS, then the fingerprint of the certificate this session got."""
        assert self.say(b"STARTTLS").startswith(b"220 ")
        assert not self.pending  # nothing may come in clear after the 220
        self.sock = unverified().wrap_socket(self.sock)
        return fingerprint(self.sock)

    def reply(self) -> bytes:
        """The last line of the next reply."""
        return read_reply(self.sock, self.pending).lines[-1]

    def say(self, line: bytes) -> bytes:
        self.sock.sendall(line + b"\r\n")
        return self.reply()

    def close(self) -> None:
        self.sock.close()


def unverified() -> ssl.SSLContext:
    """A client that takes any certificate: these tests look at which one is served."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def fingerprint(sock: ssl.SSLSocket) -> str:
    """The SHA-256 fingerprint of the peer's certificate, as ``smtpkit tls`` prints it."""
    der = sock.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).digest().hex(":").upper()


def rotate_certificate(server: MailServer) -> str:
    """A new self-signed certificate and key in place of the old (same paths, as a renewal
    does); returns its fingerprint as the command printed it."""
    out = smtpkit("tls", "self-signed", "--force", config=server.config).stdout
    (line,) = [line for line in out.splitlines() if line.startswith("SHA-256 fingerprint: ")]
    return line.removeprefix("SHA-256 fingerprint: ")


def test_a_new_domain_user_limit_and_certificate_count_at_once_while_a_message_is_in_flight(
    tmp_path: Path,
) -> None:
    server = make_server(tmp_path)
    smtpkit("tls", "self-signed", config=server.config)
    server.start("--workers", "2")
    workers = 2
    wait_until("both workers", lambda: count(server, "start") == 2)
    inflight = Raw(server.host, server.port)
    try:
        assert inflight.say(b"EHLO slow.test").startswith(b"250 ")
        old = inflight.starttls()  # the in-flight message goes under the old certificate
        assert inflight.say(b"EHLO slow.test").startswith(b"250 ")
        assert inflight.say(b"MAIL FROM:<s@remote.test>").startswith(b"250 ")
        assert inflight.say(b"RCPT TO:<alice@example.org>").startswith(b"250 ")
        assert inflight.say(b"DATA").startswith(b"354 ")
        inflight.sock.sendall(b"Subject: slow\r\n\r\nbegun before the reload\r\n")

        def grow(data: dict[str, Any]) -> None:
            data["server"]["domains"] = ["example.org", "example.net"]
            data.setdefault("limits", {})["max_recipients"] = 2

        edit(server, grow)
        smtpkit("user", "add", "carol@example.net", config=server.config)
        new = rotate_certificate(server)
        assert new != old
        hup(server)
        wait_until("every worker reloaded", lambda: reloads(server, True) == workers)

        for _ in range(2 * workers):  # whichever worker accepts
            with smtplib.SMTP(server.host, server.port, timeout=30) as client:
                client.starttls(context=unverified())
                assert isinstance(client.sock, ssl.SSLSocket)
                assert fingerprint(client.sock) == new
                client.ehlo("new.test")
                assert client.mail("s@remote.test")[0] == 250
                assert client.rcpt("carol@example.net")[0] == 250
                assert client.rcpt("alice@example.org")[0] == 250
                assert client.rcpt("bob@example.org") == (452, b"4.5.3 Too many recipients")
                client.rset()
        inflight.sock.sendall(b"still the old session\r\n.\r\n")
        assert inflight.reply().startswith(b"250 2.0.0 ")
        assert isinstance(inflight.sock, ssl.SSLSocket) and fingerprint(inflight.sock) == old
    finally:
        inflight.close()
    (stored,) = server.new_files("alice@example.org")
    assert stored.read_bytes().endswith(b"begun before the reload\r\nstill the old session\r\n")
    assert server.stop() == 0


def test_a_broken_config_keeps_the_running_one(tmp_path: Path) -> None:
    server = make_server(tmp_path)
    server.start("--workers", "2")
    wait_until("both workers", lambda: count(server, "start") == 2)
    good = server.config.read_text()
    server.config.write_text(good + "\n[limits]\nmax_recipients = -5\n")
    hup(server)
    failed = wait_until(
        "the refusal", lambda: [r for r in server.journal() if r["event"] == "reload"]
    )
    assert [r["ok"] for r in failed] == [False]  # type: ignore[union-attr]
    assert "nothing changed" in failed[0]["error"]  # type: ignore[index]
    assert "nothing changed" in server.stderr()
    with smtplib.SMTP(server.host, server.port, timeout=30) as client:
        assert client.sendmail("s@remote.test", ["bob@example.org"], "Subject: x\r\n\r\nx") == {}
    assert server.process is not None and server.process.poll() is None
    assert server.stop() == 0


@pytest.mark.parametrize("workers", ["1", "2"])
def test_listeners_are_opened_and_closed(tmp_path: Path, workers: str) -> None:
    """With one process it opens and closes them itself; with workers, the supervisor
    opens them and starts a new generation, and the old one drains."""
    server = make_server(tmp_path)
    server.start("--workers", workers)
    extra = free_port()

    def listen(addresses: list[str]) -> Any:
        return lambda data: data["server"].__setitem__("listen", addresses)

    edit(server, listen([f"127.0.0.1:{server.port}", f"127.0.0.1:{extra}"]))
    hup(server)
    assert server.process is not None
    wait_for_banner(server.host, extra, server.process)
    if workers == "2":
        # The supervisor starts one new generation at a time: the old one must be gone.
        wait_until(
            "the first generation gone",
            lambda: count(server, "stop") == 2,
        )
    edit(server, listen([f"127.0.0.1:{extra}"]))
    hup(server)

    wait_until("the old port closed", lambda: closed(server.host, server.port))
    with smtplib.SMTP(server.host, extra, timeout=30) as client:
        assert client.sendmail("s@remote.test", ["bob@example.org"], "Subject: x\r\n\r\nx") == {}
    assert server.stop() == 0


def test_a_reload_while_the_last_generation_drains_waits_for_it(tmp_path: Path) -> None:
    """A SIGHUP that comes while the old workers still finish a message is not lost: it is
    carried out once they are gone."""
    server = make_server(tmp_path)
    server.start("--workers", "2")
    assert server.process is not None
    wait_until("both workers", lambda: count(server, "start") == 2)
    old, extra = f"127.0.0.1:{server.port}", f"127.0.0.1:{free_port()}"
    inflight = Raw(server.host, server.port)
    try:
        assert inflight.say(b"EHLO slow.test").startswith(b"250 ")
        assert inflight.say(b"MAIL FROM:<s@remote.test>").startswith(b"250 ")
        assert inflight.say(b"RCPT TO:<alice@example.org>").startswith(b"250 ")
        assert inflight.say(b"DATA").startswith(b"354 ")
        # A new listener: a new generation, while the old one finishes this message.
        edit(server, lambda data: data["server"].__setitem__("listen", [old, extra]))
        hup(server)
        host, port = extra.rsplit(":", 1)
        wait_for_banner(host, int(port), server.process)
        edit(server, lambda data: data["server"].__setitem__("listen", [extra]))
        hup(server)
        wait_until("the reload waiting", lambda: "reload waits" in server.stderr())
        assert not closed(server.host, server.port)
        inflight.sock.sendall(b"Subject: slow\r\n\r\nbegun before both reloads\r\n.\r\n")
        assert inflight.reply().startswith(b"250 2.0.0 ")
    finally:
        inflight.close()
    wait_until("the old port closed", lambda: closed(server.host, server.port))
    wait_for_banner(host, int(port), server.process)
    assert reloads(server, True) == 2
    (stored,) = server.new_files("alice@example.org")
    assert stored.read_bytes().endswith(b"begun before both reloads\r\n")
    assert server.stop() == 0
