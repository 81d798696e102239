"""``host:port`` is written one way (addresses.host_port): an IPv6 address in brackets, so its
port stays readable. The outbound link's ``name[address]:port`` already brackets the address
and must not add a second pair."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from smtpkit.mailauth.rspamd import ScanFailed, scan
from smtpkit.outbound.link import Candidate
from tests.conftest import unavailable


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("candidate", "text"),
    [
        (Candidate("mx.example", "192.0.2.1", 25), "mx.example[192.0.2.1]:25"),
        (Candidate("mx.example", "2001:db8::1", 25), "mx.example[2001:db8::1]:25"),
        (Candidate("::1", "::1", 2525), "::1[::1]:2525"),
        (Candidate("lmtp", "/run/dovecot/lmtp", 0, unix=True), "unix:/run/dovecot/lmtp"),
    ],
)
def test_a_candidate_names_its_address_once(candidate: Candidate, text: str) -> None:
    assert str(candidate) == text


class _V6Server(HTTPServer):
    address_family = socket.AF_INET6


class _Answer(BaseHTTPRequestHandler):
    body = b""
    status = 200

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(self.status)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def rspamd_v6() -> Iterator[tuple[type[_Answer], int]]:
    """A stand-in for rspamd on ::1, answering what the test sets on the handler class."""

    class Handler(_Answer):
        pass

    try:
        httpd = _V6Server(("::1", 0), Handler)
    except OSError as exc:  # pragma: no cover - a machine without IPv6 loopback
        unavailable(f"no IPv6 loopback: {exc}")
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02})
    thread.start()
    try:
        yield Handler, httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def _scan(port: int, message: Path) -> None:
    scan(
        f"http://[::1]:{port}",
        str(message),
        ip="2001:db8::7",
        helo="client.example",
        sender="a@example.net",
        recipients=["b@example.org"],
        user=None,
        timeout=5,
    )


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    ("status", "body", "why"),
    [(500, b"oops", "HTTP 500 "), (200, b"not json", "the answer is not JSON")],
)
def test_rspamd_over_ipv6_is_named_with_brackets(
    rspamd_v6: tuple[type[_Answer], int], tmp_path: Path, status: int, body: bytes, why: str
) -> None:
    handler, port = rspamd_v6
    handler.status, handler.body = status, body
    message = tmp_path / "message"
    message.write_bytes(b"Subject: hi\r\n\r\nbody\r\n")
    with pytest.raises(ScanFailed) as failed:
        _scan(port, message)
    assert str(failed.value).startswith(f"rspamd at [::1]:{port}: {why}"), str(failed.value)
