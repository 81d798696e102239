"""Subaddresses (RFC 5233) against a real ``smtpkit serve``, with smtplib: ``alice+tag@``
reaches alice and keeps its tag in the stored message; an exact user or alias wins; an
unknown base is refused as any unknown user; ``recipient_delimiter`` sets or turns it off."""

from __future__ import annotations

import smtplib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import MailServer, make_server

USERS = ("alice@example.org", "bob@example.org", "carol@example.org", "carol+team@example.org")


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[[str], MailServer]]:
    servers: list[MailServer] = []

    def start(server_lines: str = "") -> MailServer:
        server = make_server(tmp_path / str(len(servers)), users=USERS, extra_config=server_lines)
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        if server.process is not None:
            server.stop()


def send(server: MailServer, recipients: list[str]) -> dict[str, tuple[int, bytes]]:
    with smtplib.SMTP(server.host, server.port, local_hostname="client.example") as smtp:
        return smtp.sendmail("s@remote.example", recipients, "Subject: tagged\r\n\r\nx\r\n")


def only_message(server: MailServer, user: str) -> bytes:
    files = server.new_files(user)
    assert len(files) == 1, files
    return files[0].read_bytes()


def test_a_tagged_recipient_reaches_its_user_with_the_tag_kept(
    serve: Callable[[str], MailServer],
) -> None:
    server = serve("")
    assert send(server, ["alice+lists@example.org"]) == {}
    stored = only_message(server, "alice@example.org")
    head = stored.partition(b"\r\n\r\n")[0]
    # The full recipient, for Sieve (address :detail "delivered-to") and mail filters.
    assert b"\r\n\tfor <alice+lists@example.org>;" in head
    assert b"\r\nDelivered-To: alice+lists@example.org\r\n" in head
    assert not (server.directory / "users" / "alice+lists@example.org").exists()


def test_exact_users_and_aliases_win_and_aliases_take_tags(
    serve: Callable[[str], MailServer],
) -> None:
    server = serve("")
    assert send(server, ["carol+team@example.org"]) == {}
    assert b"Delivered-To: carol+team@example.org" in only_message(server, "carol+team@example.org")
    assert server.new_files("carol@example.org") == []
    assert send(server, ["carol+other@example.org"]) == {}
    assert b"Delivered-To: carol+other@example.org" in only_message(server, "carol@example.org")
    # `smtpkit user add` routed postmaster@ to alice; its subaddresses follow.
    assert send(server, ["postmaster+dmarc@example.org"]) == {}
    assert b"Delivered-To: postmaster+dmarc@example.org" in only_message(
        server, "alice@example.org"
    )


def test_unknown_bases_are_refused_and_several_recipients_name_none(
    serve: Callable[[str], MailServer],
) -> None:
    server = serve("")
    with smtplib.SMTP(server.host, server.port) as smtp:
        smtp.ehlo("client.example")
        assert smtp.mail("s@remote.example")[0] == 250
        assert smtp.rcpt("nobody+tag@example.org") == (550, b"5.1.1 No such user here")
        assert smtp.rcpt("+tag@example.org") == (550, b"5.1.1 No such user here")
        assert smtp.rcpt("alice+x@example.org")[0] == 250
        assert smtp.rcpt("bob+y@example.org")[0] == 250
        assert smtp.data(b"Subject: two\r\n\r\nx\r\n")[0] == 250
    # One file linked into both mailboxes: no recipient is named in it (RFC 5321 7.2).
    for user in ("alice@example.org", "bob@example.org"):
        stored = only_message(server, user)
        assert b"Delivered-To:" not in stored
        assert b"\tfor <" not in stored


def test_recipient_delimiter_sets_the_delimiters_or_turns_them_off(
    serve: Callable[[str], MailServer],
) -> None:
    several = serve('recipient_delimiter = "+-"\n')
    assert send(several, ["bob-news@example.org", "alice+lists@example.org"]) == {}
    assert len(several.new_files("bob@example.org")) == 1
    assert len(several.new_files("alice@example.org")) == 1
    off = serve('recipient_delimiter = ""\n')
    with smtplib.SMTP(off.host, off.port) as smtp:
        smtp.ehlo("client.example")
        assert smtp.mail("s@remote.example")[0] == 250
        assert smtp.rcpt("alice+lists@example.org") == (550, b"5.1.1 No such user here")
        assert smtp.rcpt("carol+team@example.org")[0] == 250
