"""mailauth/rspamd.py against a stand-in speaking rspamd's documented ``/checkv2`` answers."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from smtpkit.mailauth.rspamd import ScanAction, ScanFailed, ScanVerdict, parse_url, scan

Answer = Callable[[dict[str, Any]], tuple[int, bytes]]


class StandIn:
    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.requests: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers["Content-Length"])
                request = {
                    "path": self.path,
                    "body": self.rfile.read(length),
                    "headers": self.headers,
                    "rcpt": self.headers.get_all("Rcpt"),
                }
                outer.requests.append(request)
                status, body = outer.answer(request)
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def message(tmp_path: Path) -> Path:
    path = tmp_path / "message"
    path.write_bytes(b"Subject: hello\r\n\r\nbody\r\n")
    return path


def answering(payload: dict[str, Any], status: int = 200) -> Iterator[StandIn]:
    server = StandIn(lambda request: (status, json.dumps(payload).encode()))
    try:
        yield server
    finally:
        server.close()


def run_scan(url: str, message: Path, timeout: float = 5) -> ScanVerdict:
    return scan(
        url,
        str(message),
        ip="192.0.2.7",
        helo="client.example",
        sender="a@example.net",
        recipients=["b@example.org", "c@example.org"],
        user=None,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        ("no action", ScanAction.ACCEPT),
        ("add header", ScanAction.SPAM),
        ("rewrite subject", ScanAction.SPAM),
        ("greylist", ScanAction.DEFER),
        ("soft reject", ScanAction.DEFER),
        ("reject", ScanAction.REJECT),
    ],
)
def test_actions(message: Path, action: str, expected: ScanAction) -> None:
    payload = {"action": action, "score": 7.5, "required_score": 15, "symbols": {}}
    for server in answering(payload):
        verdict = run_scan(server.url, message)
        assert verdict == ScanVerdict(expected, action, 7.5, 15.0, None)
        (request,) = server.requests
        assert request["path"] == "/checkv2"
        assert request["body"] == b"Subject: hello\r\n\r\nbody\r\n"
        assert request["headers"]["IP"] == "192.0.2.7"
        assert request["headers"]["Helo"] == "client.example"
        assert request["headers"]["From"] == "a@example.net"
        assert request["rcpt"] == ["b@example.org", "c@example.org"]


def test_smtp_message_and_header(message: Path) -> None:
    payload = {
        "action": "reject",
        "score": 20.25,
        "required_score": 15,
        "messages": {"smtp_message": "Spam message rejected\r\nInjected: yes"},
    }
    for server in answering(payload):
        verdict = run_scan(server.url, message)
        assert verdict.smtp_message == "Spam message rejected  Injected: yes"
        assert verdict.header() == (
            b'X-Spam-Status: Yes, score=20.25 required=15.00 action="reject" (rspamd)\r\n'
        )


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (500, b"{}", "HTTP 500 Internal Server Error"),
        (200, b"not json", "the answer is not JSON"),
        (200, b"[1]", "the answer is not a JSON object"),
        (200, b'{"action": "explode"}', "unknown action 'explode'"),
    ],
)
def test_bad_answers_fail(message: Path, status: int, body: bytes, error: str) -> None:
    server = StandIn(lambda request: (status, body))
    try:
        with pytest.raises(ScanFailed) as caught:
            run_scan(server.url, message)
        assert str(caught.value).endswith(error)
    finally:
        server.close()


def test_no_server_fails(message: Path) -> None:
    server = StandIn(lambda request: (200, b"{}"))
    url = server.url
    server.close()
    with pytest.raises(ScanFailed) as caught:
        run_scan(url, message)
    assert str(caught.value).startswith(f"rspamd at {url.removeprefix('http://')}:")


def test_a_slow_server_times_out(message: Path) -> None:
    release = threading.Event()

    def stall(request: dict[str, Any]) -> tuple[int, bytes]:
        release.wait(10)
        return 200, b'{"action": "no action"}'

    server = StandIn(stall)
    try:
        with pytest.raises(ScanFailed) as caught:
            run_scan(server.url, message, timeout=0.2)
        assert "timed out" in str(caught.value)
    finally:
        release.set()
        server.close()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:11333", ("127.0.0.1", 11333, "/checkv2")),
        ("http://rspamd.internal", ("rspamd.internal", 11333, "/checkv2")),
        ("http://[::1]:8080/rspamd/", ("::1", 8080, "/rspamd/checkv2")),
    ],
)
def test_parse_url(url: str, expected: tuple[str, int, str]) -> None:
    assert parse_url(url) == expected


@pytest.mark.parametrize("url", ["https://x:1", "127.0.0.1:11333", "http://", "http://h:99999"])
def test_parse_url_refuses(url: str) -> None:
    with pytest.raises(ValueError):
        parse_url(url)
