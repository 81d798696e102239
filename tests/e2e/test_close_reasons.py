"""Why a session ended, as the journal's ``close`` line says it: ``quit`` for a client that
said QUIT, ``peer closed`` for one that just went away (in the middle of a transaction too),
so that "who hangs up on us" is one query on the journal."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from tests.conftest import MailServer
from tests.e2e.test_outbound import wait_until


def closed_session(server: MailServer, greeting: str) -> dict[str, Any] | None:
    """The ``close`` line of the session that said ``EHLO greeting``, once it is written."""
    lines = server.journal()
    ids = {r["session"] for r in lines if r["event"] == "helo" and r["name"] == greeting}
    closes = [r for r in lines if r["event"] == "close" and r["session"] in ids]
    return closes[0] if closes else None


def talk(server: MailServer, *lines: bytes) -> socket.socket:
    """A raw client that read the banner and the reply to each line (one line each, or the
    last of a multi-line reply)."""
    sock = socket.create_connection((server.host, server.port), timeout=10)
    reader = sock.makefile("rb")
    assert reader.readline().startswith(b"220 ")
    for line in lines:
        sock.sendall(line)
        reply = reader.readline()
        while reply[3:4] == b"-":
            reply = reader.readline()
        assert reply[:1] in (b"2", b"3"), reply
    reader.close()
    return sock


@pytest.mark.timeout(60)
def test_quit_and_a_client_that_goes_away_are_told_apart(mailserver: MailServer) -> None:
    talk(mailserver, b"EHLO quitter.test\r\n", b"QUIT\r\n").close()
    # Gone without QUIT: after EHLO, and in the middle of a message.
    talk(mailserver, b"EHLO leaver.test\r\n").close()
    midway = talk(
        mailserver,
        b"EHLO midway.test\r\n",
        b"MAIL FROM:<s@remote.test>\r\n",
        b"RCPT TO:<alice@example.org>\r\n",
        b"DATA\r\n",
    )
    midway.sendall(b"Subject: half\r\n")  # no final dot: nothing is stored
    midway.close()

    def reason(greeting: str) -> tuple[str, int]:
        line = wait_until(
            f"the close line of {greeting}", lambda: closed_session(mailserver, greeting)
        )
        assert isinstance(line, dict)
        return line["reason"], line["messages"]

    assert reason("quitter.test") == ("quit", 0)
    assert reason("leaver.test") == ("peer closed", 0)
    assert reason("midway.test") == ("peer closed", 1)
    assert mailserver.new_files("alice@example.org") == []
