"""What a next hop must offer for a queued message to go as it came: SMTPUTF8 (RFC 6531) for
UTF-8 addresses and header fields, plain text for a message sent as binary (RFC 3030).

Real peers: a second ``smtpkit serve`` (which offers SMTPUTF8) behind the MX records of the
world's NSD, and Postfix's ``smtp-sink`` (which does not). A recipient that cannot go gets a
permanent failure with the status code of RFC 6531 (5.6.7 for an address, 5.6.9 for header
fields) or RFC 3463 (5.6.3, conversion required) in a report to the sender, while the other
recipients of the message go on.
"""

from __future__ import annotations

import email
import email.policy
import shutil
import smtplib
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import MailServer, free_port, need_program
from tests.dnsserver import DnsServer, run_nsd
from tests.e2e.rawclient import RawClient
from tests.e2e.test_outbound import (
    SENDER,
    WORLD_ZONE,
    queue_entries,
    receiving_smtpkit,
    reports,
    sending_server,
    status_blocks,
    wait_journal,
    wait_until,
)

MULLER = "müller@two.world.test"


@pytest.fixture(scope="module")
def world_dns() -> Iterator[DnsServer]:
    with run_nsd({"world.test": WORLD_ZONE}) as server:
        yield server


def utf8_message(to: str, subject: str) -> bytes:
    return (
        f"From: {SENDER}\r\nTo: {to}\r\nSubject: {subject}\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nGrüße.\r\n"
    ).encode()


def send_utf8(server: MailServer, recipients: list[str], subject: str, to: str = "") -> None:
    message = utf8_message(to or ", ".join(recipients), subject)
    with smtplib.SMTP(server.host, server.port, timeout=30) as client:
        client.ehlo("client.example")
        refused = client.sendmail(SENDER, recipients, message, mail_options=["SMTPUTF8"])
        assert refused == {}


class Sink:
    """Postfix's smtp-sink on a free loopback port, each transaction dumped to a file."""

    def __init__(self) -> None:
        program = need_program("smtp-sink", "postfix")
        # smtp-sink writes as nobody: a folder of its own, outside pytest's root-only one.
        self.folder = Path(tempfile.mkdtemp(prefix="smtpkit-sink-"))
        self.folder.chmod(0o777)
        self.port = free_port()
        self.proc = subprocess.Popen(
            [program, "-u", "nobody", "-d", f"{self.folder}/%M.", f"127.0.0.1:{self.port}", "10"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )

    def dumps(self) -> list[bytes]:
        return [p.read_bytes() for p in sorted(self.folder.iterdir())]

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.folder)


@pytest.fixture
def sink() -> Iterator[Sink]:
    peer = Sink()
    try:
        yield peer
    finally:
        peer.close()


def sending_via_sink(root: Path, dns: DnsServer, sink: Sink) -> MailServer:
    """A started sending server whose mail for sink.example goes to ``sink``."""
    server = sending_server(root, dns)
    with server.config.open("a") as fh:
        fh.write(f'\n[routes]\n"sink.example" = "127.0.0.1:{sink.port}"\n')
    server.start()
    return server


def failed_block(server: MailServer) -> dict[str, str]:
    """The one recipient block of the one report, its values unfolded."""
    (report,) = wait_until("a report", lambda: reports(server))  # type: ignore[misc]
    _, rcpt = status_blocks(report)
    return {k: " ".join(v.split()) for k, v in rcpt.items()}


def test_utf8_mail_goes_on_with_smtputf8_to_a_hop_that_offers_it(
    tmp_path: Path, world_dns: DnsServer
) -> None:
    receiver = receiving_smtpkit(
        tmp_path, "127.0.0.2", "mx1.two.world.test", "two.world.test", MULLER
    )
    receiver.start()
    server = sending_server(tmp_path, world_dns)
    server.start()
    try:
        send_utf8(server, [MULLER], "Grüße aus Köln")
        (stored,) = wait_until("the copy at the receiver", lambda: receiver.new_files(MULLER))  # type: ignore[misc]
        message = email.message_from_bytes(stored.read_bytes(), policy=email.policy.default)
        assert message["Subject"] == "Grüße aus Köln"
        assert message["To"] == MULLER
        # The receiver's trace: the transaction came with SMTPUTF8 (RFC 6531 4.3).
        assert " with UTF8SMTP id " in message.get_all("Received")[0]
        (delivered,) = wait_journal(server, "delivered")
        assert delivered["to"] == MULLER
        wait_until("an empty queue", lambda: not queue_entries(server))
    finally:
        receiver.stop()


def test_a_utf8_recipient_fails_at_a_hop_without_smtputf8_and_the_others_go_on(
    tmp_path: Path, world_dns: DnsServer, sink: Sink
) -> None:
    server = sending_via_sink(tmp_path, world_dns, sink)
    # Header fields in ASCII: only the address needs SMTPUTF8.
    to = "undisclosed-recipients:;"
    send_utf8(server, ["jörg@sink.example", "bob@sink.example"], "ascii subject", to)
    rcpt = failed_block(server)
    assert rcpt["Status"] == "5.6.7"
    assert rcpt["Action"] == "failed"
    # RFC 6533 3: a UTF-8 address in a report is of the utf-8 type.
    assert rcpt["Final-Recipient"] == "utf-8; j\\x{F6}rg@sink.example"
    assert rcpt["Diagnostic-Code"] == (
        f"X-smtpkit; 127.0.0.1[127.0.0.1]:{sink.port} does not offer SMTPUTF8, "
        "needed for this UTF-8 address"
    )
    # bob's copy went, without SMTPUTF8 (nothing in the message needed it). The queue is
    # empty once the sink answered the dot, which it does after writing its dump file.
    wait_until("an empty queue", lambda: not queue_entries(server))
    (dump,) = sink.dumps()
    assert b"\nX-Mail-Args: <alice@example.org> BODY=8BITMIME\n" in dump  # no SMTPUTF8
    assert b"\nX-Rcpt-Args: <bob@sink.example>\nReceived: " in dump  # and no jörg
    assert dump.endswith("\n\nGrüße.\n\n".encode())


def test_utf8_header_fields_fail_at_a_hop_without_smtputf8(
    tmp_path: Path, world_dns: DnsServer, sink: Sink
) -> None:
    server = sending_via_sink(tmp_path, world_dns, sink)
    send_utf8(server, ["bob@sink.example"], "Grüße")  # a UTF-8 Subject
    rcpt = failed_block(server)
    assert rcpt["Status"] == "5.6.9"
    assert rcpt["Final-Recipient"] == "rfc822; bob@sink.example"
    assert rcpt["Diagnostic-Code"] == (
        f"X-smtpkit; 127.0.0.1[127.0.0.1]:{sink.port} does not offer SMTPUTF8, "
        "needed for the message's UTF-8 header fields"
    )
    assert sink.dumps() == []  # never sent, also not in part
    wait_until("an empty queue", lambda: not queue_entries(server))


def send_binary(server: MailServer, recipient: bytes, content: bytes) -> None:
    client = RawClient(server)
    try:
        client.sock.sendall(
            b"EHLO client.example\r\nMAIL FROM:<" + SENDER.encode() + b"> BODY=BINARYMIME\r\n"
            b"RCPT TO:<" + recipient + b">\r\n"
            b"BDAT %d LAST\r\n" % len(content) + content
        )
        got = [client.reply() for _ in range(4)]
        assert [code for code, _ in got] == [250, 250, 250, 250]
        assert client.cmd(b"QUIT")[0] == 221
    finally:
        client.close()


def test_a_binary_message_that_is_not_text_fails_with_5_6_3(
    tmp_path: Path, world_dns: DnsServer, sink: Sink
) -> None:
    server = sending_via_sink(tmp_path, world_dns, sink)
    send_binary(server, b"bob@sink.example", b"Subject: bin\r\n\r\nbare\nline\r\n")
    rcpt = failed_block(server)
    assert rcpt["Status"] == "5.6.3"
    assert rcpt["Diagnostic-Code"] == (
        "X-smtpkit; the message was sent as binary (BODY=BINARYMIME) and holds a CR or LF "
        f"outside a CRLF line end, which 127.0.0.1[127.0.0.1]:{sink.port} cannot be sent "
        "without conversion"
    )
    assert sink.dumps() == []


def test_a_binary_message_that_is_text_after_all_goes_as_8bitmime(
    tmp_path: Path, world_dns: DnsServer, sink: Sink
) -> None:
    server = sending_via_sink(tmp_path, world_dns, sink)
    body = b"Subject: bin\r\n\r\n\xc3\xa4 8-bit text in CRLF lines\r\n.leading dot\r\n"
    send_binary(server, b"bob@sink.example", body)
    wait_until("an empty queue", lambda: not queue_entries(server))  # the sink said 250
    (dump,) = sink.dumps()
    assert b"\nX-Mail-Args: <alice@example.org> BODY=8BITMIME\n" in dump
    # The sink's dump has LF line ends (and one more at the end); the dot-stuffed line
    # arrived unstuffed.
    assert dump.endswith(b"\nSubject: bin\n\n\xc3\xa4 8-bit text in CRLF lines\n.leading dot\n\n")
