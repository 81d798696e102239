"""Real mail servers relaying into smtpkit, which offers CHUNKING and BINARYMIME (RFC 3030).

- Dovecot's LMTP proxy forwards what it receives over SMTP with its lib-smtp client, which
  sends BDAT whenever the server offers CHUNKING: a real third-party BDAT client, pipelining
  chunks of its own choosing. smtpkit's journal must show the chunks, and the stored message
  must be what was sent, byte for byte.
- Postfix, as a relay with smtpkit as its relayhost. Postfix's SMTP client does not send
  BDAT at all (only its server takes it: Postfix 3.7's ``smtp`` holds no BDAT code), so it
  must go on relaying with DATA as before while both keywords are offered, byte for byte.

Both need root (each master starts as root and drops privileges) and their programs; in CI
a missing one fails the test (``need_program``).
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    MailServer,
    free_port,
    make_server,
    need_program,
    unavailable,
)
from tests.postfix import start_postfix
from tests.smtpreader import read_reply

LMTP = Path("/usr/lib/dovecot/lmtp")  # Debian's dovecot-lmtpd

# Whole headers (nothing for a relay to add but its Received: line), lines with leading
# periods (stuffed on the way with DATA, never with BDAT), an empty-looking end, 8-bit text
# and enough octets that a BDAT client sends several chunks.
MESSAGE = (
    b"From: Carol <carol@example.net>\r\n"
    b"To: Alice <alice@example.org>\r\n"
    b"Subject: chunks from a real relay\r\n"
    b"Date: Mon, 30 Nov 2026 08:00:00 +0000\r\n"
    b"Message-ID: <chunks.1@example.net>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b".leading period\r\n"
    b"..two of them\r\n"
    b".\r\n"
    b"caf\xc3\xa9 \xe2\x82\xac trailing space \r\n"
    + b"".join(b"%06d " % n + b"z" * 120 + b"\r\n" for n in range(2500))
    + b"\r\n"
    + b"last line\r\n"
)


def stored_line(server: MailServer, timeout: float = 60) -> dict[str, Any]:
    """The journal's one ``stored`` line, once it is there."""
    deadline = time.monotonic() + timeout
    while True:
        records = server.journal()
        stored = [r for r in records if r.get("event") == "stored"]
        if stored:
            assert len(stored) == 1, stored
            return stored[0]
        assert time.monotonic() < deadline, f"nothing stored: {records[-8:]}"
        time.sleep(0.1)


def trace_and_message(server: MailServer) -> tuple[bytes, bytes]:
    """The one stored message, cut into the trace fields the servers added and the rest."""
    (path,) = server.new_files("alice@example.org")
    data = path.read_bytes()
    at = data.find(MESSAGE)
    assert at > 0, data[:2000]
    return data[:at], data[at:]


@pytest.fixture
def smtpkit_server(open_tmp_path: Path) -> Iterator[MailServer]:
    server = make_server(open_tmp_path / "smtpkit")
    server.start()
    try:
        yield server
    finally:
        if server.process is not None:
            server.stop()


# --- Dovecot's LMTP proxy: BDAT ---------------------------------------------------------------


def start_dovecot_proxy(root: Path, next_hop_port: int) -> tuple[subprocess.Popen[bytes], int]:
    """Dovecot's LMTP service proxying every recipient to smtpkit over SMTP (passdb
    ``proxy=y ... protocol=smtp``)."""
    dovecot = need_program("dovecot", "dovecot-core")
    if not LMTP.exists():
        unavailable(f"{LMTP} not found: install the Debian package dovecot-lmtpd (.ci/run does)")
    port = free_port()
    config = root / "dovecot.conf"
    config.write_text(
        f"""\
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = lmtp
listen = 127.0.0.1
ssl = no
lmtp_proxy = yes
passdb {{
  driver = static
  args = proxy=y host=127.0.0.1 port={next_hop_port} protocol=smtp nopassword=y
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home=/nonexistent
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {port}
  }}
}}
"""
    )
    with (root / "dovecot.stderr").open("wb") as stderr:
        process = subprocess.Popen([dovecot, "-F", "-c", str(config)], stderr=stderr)
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise AssertionError(
                f"dovecot exited with {process.returncode}: "
                + (root / "dovecot.stderr").read_text()
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                if s.recv(512).startswith(b"220 "):
                    s.sendall(b"QUIT\r\n")
                    return process, port
        except OSError:
            pass
        assert time.monotonic() < deadline, "dovecot did not answer"
        time.sleep(0.05)


def lmtp_send(port: int, sender: bytes, recipient: bytes, message: bytes) -> bytes:
    """One LMTP transaction (RFC 2033); returns the recipient's reply line."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        pending = bytearray()

        def reply() -> bytes:
            """The last line of the next reply (LMTP's replies are SMTP's, RFC 2033)."""
            got = read_reply(s, pending)
            assert 200 <= got.code < 600, got.raw
            return got.lines[-1]

        assert reply().startswith(b"220 ")
        for command, code in (
            (b"LHLO lmtp-client.test", b"250"),
            (b"MAIL FROM:<" + sender + b">", b"250"),
            (b"RCPT TO:<" + recipient + b">", b"250"),
            (b"DATA", b"354"),
        ):
            s.sendall(command + b"\r\n")
            got = reply()
            assert got.startswith(code), (command, got)
        stuffed = message.replace(b"\r\n.", b"\r\n..")
        s.sendall((b"." if stuffed[:1] == b"." else b"") + stuffed + b".\r\n")
        result = reply()
        s.sendall(b"QUIT\r\n")
        return result


@pytest.mark.timeout(120)
def test_dovecot_lmtp_proxy_relays_with_bdat_byte_for_byte(
    smtpkit_server: MailServer, open_tmp_path: Path
) -> None:
    root = open_tmp_path / "dovecot"
    root.mkdir()
    process, port = start_dovecot_proxy(root, smtpkit_server.port)
    try:
        result = lmtp_send(port, b"carol@example.net", b"alice@example.org", MESSAGE)
        assert result.startswith(b"250 "), result
        line = stored_line(smtpkit_server)
    finally:
        process.terminate()
        process.wait(timeout=30)
    # It came in chunks (Dovecot pipelines several for a message this size), and whole.
    assert line.get("chunks", 0) >= 2, line
    assert line["sender"] == "carol@example.net" and line["to"] == ["alice@example.org"]
    log = (root / "dovecot.log").read_text()
    assert f"250 2.0.0 OK: message stored as {line['id']}" in log
    trace, message = trace_and_message(smtpkit_server)
    assert message == MESSAGE
    assert trace.startswith(b"Return-Path: <carol@example.net>\r\nReceived: from ")
    # Dovecot's own Received: line (with LMTP), then the message as the client sent it.
    assert trace.count(b"Received: ") == 2 and b" with LMTP\r\n" in trace, trace


# --- Postfix as a relay: DATA, while CHUNKING and BINARYMIME are offered ----------------------


@pytest.mark.timeout(180)
def test_postfix_relays_into_smtpkit_byte_for_byte(
    smtpkit_server: MailServer, open_tmp_path: Path
) -> None:
    postfix = start_postfix(open_tmp_path / "postfix", smtpkit_server.port)
    try:
        postfix.send("carol@example.net", ["alice@example.org"], MESSAGE)
        line = stored_line(smtpkit_server)
        sent = postfix.wait_for_log(
            r"to=<alice@example\.org>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:\d+, .*status=sent "
            r"\(250 2\.0\.0 OK: message stored as (\S+)\)"
        )
    finally:
        postfix.stop()
    assert sent.group(1) == line["id"]
    assert line["sender"] == "carol@example.net" and line["to"] == ["alice@example.org"]
    # Postfix's client speaks DATA only: smtpkit journals chunks for BDAT messages alone.
    assert "chunks" not in line
    trace, message = trace_and_message(smtpkit_server)
    assert message == MESSAGE
    assert trace.startswith(
        b"Return-Path: <carol@example.net>\r\nReceived: from postfix.relay.test"
    )
    assert b"by postfix.relay.test (Postfix) with ESMTP id " in trace
