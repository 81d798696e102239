"""One message, one id, wherever an admin looks for it: the 250 reply, the Received: field,
the journal (the session's ``stored`` line and the queue runner's lines) and ``smtpkit queue
list``. A queued message's id is its queue entry's name, node tag and all; a message for
local mailboxes only has an id of the same form."""

from __future__ import annotations

import json
import re
import smtplib
from pathlib import Path

import pytest

from tests.conftest import MailServer, free_port, make_server, smtpkit
from tests.e2e.test_outbound import wait_until

ID = re.compile(r"[0-9a-f]{12}\.1-[0-9a-f]{4}")
MESSAGE = b"From: s@example.net\r\nSubject: ids\r\n\r\nhello\r\n"


def send(server: MailServer, recipient: str) -> str:
    """The message's id, as the 250 reply after the final dot gives it."""
    with smtplib.SMTP(server.host, server.port, timeout=30) as client:
        client.ehlo("client.example")
        assert client.mail("s@example.net")[0] == 250
        assert client.rcpt(recipient)[0] == 250
        code, text = client.data(MESSAGE)
    assert code == 250, text
    prefix = b"2.0.0 OK: message stored as "
    assert text.startswith(prefix), text
    message_id = text[len(prefix) :].decode()
    assert ID.fullmatch(message_id), message_id
    return message_id


def received_id(message: bytes) -> str:
    found = re.search(rb"\(smtpkit\) with \w+ id (\S+)\r\n", message)
    assert found is not None, message[:300]
    return found.group(1).decode()


@pytest.mark.timeout(120)
def test_a_queued_message_has_one_id_everywhere(tmp_path: Path) -> None:
    # Mail for remote.example goes to a next hop that refuses connections: it stays queued,
    # and the runner journals its attempt and the deferral.
    hop = free_port()
    server = make_server(
        tmp_path,
        extra_config=(
            '\n[submission]\ntrusted_networks = ["127.0.0.0/8"]\n'
            f'\n[routes]\n"remote.example" = "127.0.0.1:{hop}"\n'
        ),
    )
    server.start()
    try:
        message_id = send(server, "bob@remote.example")
        listed = wait_until(
            "the queue listing",
            lambda: smtpkit("queue", "list", "--json", config=server.config).stdout.strip(),
        )
        assert [json.loads(line)["id"] for line in str(listed).splitlines()] == [message_id]
        shown = smtpkit("queue", "show", message_id, "--json", config=server.config).stdout
        assert json.loads(shown)["id"] == message_id
        queued = (server.directory / "queue" / message_id).read_bytes()
        assert received_id(queued) == message_id
        wait_until(
            "the runner's deferral",
            lambda: any(r["event"] == "deferred" for r in server.journal()),
        )
    finally:
        assert server.stop() == 0
    lines = server.journal()
    named = [r for r in lines if "id" in r]
    assert {r["event"] for r in named} >= {"stored", "queued", "deferred"}
    assert {r["id"] for r in named} == {message_id}
    # What grep finds: every line about the message, the session's and the runner's.
    journal_text = "".join(p.read_text() for p in sorted((server.directory / "journal").iterdir()))
    assert journal_text.count(message_id) >= len(named)


@pytest.mark.timeout(60)
def test_a_local_message_has_an_id_of_the_same_form(tmp_path: Path) -> None:
    server = make_server(tmp_path)
    server.start()
    try:
        message_id = send(server, "alice@example.org")
        (stored,) = server.new_files("alice@example.org")
        assert received_id(stored.read_bytes()) == message_id
        stored_lines = wait_until(
            "the stored line",
            lambda: [r for r in server.journal() if r["event"] == "stored"],
        )
    finally:
        assert server.stop() == 0
    assert [r["id"] for r in stored_lines] == [message_id]  # type: ignore[union-attr]
    assert not (server.directory / "queue").exists() or not any(
        p for p in (server.directory / "queue").iterdir() if not p.name.startswith(".")
    )
