"""SMTP smuggling over a real socket: no end-of-data look-alike ends a message or injects one.

For each published variant (a bare CR or LF around the dot, with and without NUL bytes) the
client sends one message holding the variant and then a whole smuggled transaction (``MAIL``,
``RCPT``, ``DATA``, a forged message) before the real ``<CRLF>.<CRLF>``. A vulnerable server
stores two messages, the second with a sender the client chose; smtpkit answers the final dot
once, ``550 5.6.0``, stores nothing, and the session goes on.

The whole battery runs against both settings of ``[server] bare_newline``. Under "normalize"
a variant made of bare LFs only is not refused: it is content, and the one message is stored
with every bare LF as CRLF, the smuggled transaction as text lines inside it (exact bytes
checked); a variant with a bare CR is refused as under "reject". Never a second message.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from smtpkit.config import update_config
from smtpkit.limits import BareNewline
from tests.conftest import MailServer, make_server
from tests.e2e.rawclient import RawClient

# The look-alikes of <CRLF>.<CRLF> (SEC Consult 2023, Postfix and Sendmail advisories).
BARE_VARIANTS = {
    "LF.LF": b"\n.\n",
    "LF.CRLF": b"\n.\r\n",
    "CR.CR": b"\r.\r",
    "CR.LF": b"\r.\n",
    "CRLF.LF": b"\r\n.\n",
    "CRLF.CR": b"\r\n.\r",
    "CRLF.CR-CRLF": b"\r\n.\r\r\n",
    "LF-NUL.LF": b"\n\x00.\n",
    "LF.NUL-LF": b"\n.\x00\n",
    "LF.NUL-CRLF": b"\n.\x00\r\n",
    "CR-NUL.CR": b"\r\x00.\r",
    "CR.NUL-LF": b"\r.\x00\n",
    "CRLF-NUL.LF": b"\r\n\x00.\n",
    "CRLF.NUL-CR": b"\r\n.\x00\r",
    "NUL-LF.LF": b"\x00\n.\n",
}

SMUGGLED = (
    b"MAIL FROM:<ceo@example.org>\r\n"
    b"RCPT TO:<bob@example.org>\r\n"
    b"DATA\r\n"
    b"From: ceo@example.org\r\n"
    b"Subject: smuggled\r\n"
    b"\r\n"
    b"wire the money\r\n"
)
REAL_END = b"\r\n.\r\n"
REFUSED = (550, b"5.6.0 Message refused: bare <CR> or <LF> in data")


class Client(RawClient):
    def __init__(self, server: MailServer) -> None:
        super().__init__(server, timeout=10)
        assert self.greeting[0] == 220


@pytest.fixture(scope="module", params=list(BareNewline), ids=str)
def mode(request: pytest.FixtureRequest) -> BareNewline:
    return BareNewline(request.param)


@pytest.fixture(scope="module")
def server(mode: BareNewline, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailServer]:
    srv = make_server(tmp_path_factory.mktemp(f"smuggling-{mode}"))
    assert update_config(srv.config, lambda data: data["server"].update(bare_newline=str(mode)))
    srv.start()
    try:
        yield srv
    finally:
        if srv.process is not None:
            srv.stop()


def new_messages(server: MailServer, before: dict[str, set[str]]) -> dict[str, list[bytes]]:
    out = {}
    for user in before:
        files = [f for f in server.new_files(user) if f.name not in before[user]]
        out[user] = [f.read_bytes() for f in files]
    return out


def normalized(content: bytes) -> bytes:
    """What "normalize" stores for ``content`` (which ends with a line end and holds no bare
    CR): every line, ended by CRLF or a bare LF, unstuffed (RFC 5321 4.5.2), then CRLF."""
    lines = re.split(rb"\r?\n", content)
    assert lines[-1] == b""
    return b"".join((line[1:] if line[:1] == b"." else line) + b"\r\n" for line in lines[:-1])


def snapshot(server: MailServer) -> dict[str, set[str]]:
    users = ("alice@example.org", "bob@example.org")
    return {u: {f.name for f in server.new_files(u)} for u in users}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("variant", list(BARE_VARIANTS.values()), ids=list(BARE_VARIANTS))
def test_smuggled_message_is_never_delivered(
    server: MailServer, mode: BareNewline, variant: bytes
) -> None:
    before = snapshot(server)
    content = b"From: sender@remote.example\r\nSubject: innocent\r\n\r\nhello" + variant + SMUGGLED
    content += b"bye\r\n"  # with the CRLF of the real end
    accepted = mode is BareNewline.NORMALIZE and b"\r" not in variant.replace(b"\r\n", b"")
    c = Client(server)
    try:
        c.start_message(b"sender@remote.example", b"alice@example.org", helo=b"smuggler.test")
        c.sock.sendall(content + REAL_END[2:])
        # Exactly one reply to the one real final dot. It refuses the whole message, unless
        # bare LFs are normalized and there was no bare CR: then the one message is stored.
        code, text = c.reply()
        if accepted:
            assert code == 250 and text.startswith(b"2.0.0 OK: message stored as "), text
        else:
            assert (code, text) == REFUSED
        assert c.nothing_pending()
        got = new_messages(server, before)
        assert got["bob@example.org"] == []  # never anything for the smuggled recipient
        if accepted:
            (stored,) = got["alice@example.org"]
            assert stored.endswith(b"\r\n" + normalized(content)), stored
            assert stored.count(b"Return-Path:") == 1
            before = snapshot(server)
        else:
            assert got["alice@example.org"] == []
        # The session is still usable: a clean message gets 250 and is stored once.
        c.start_message(b"sender@remote.example", b"alice@example.org")
        code, text = c.cmd(b"Subject: clean\r\n\r\nclean body\r\n.")
        assert code == 250 and text.startswith(b"2.0.0 OK: message stored as "), text
        assert c.cmd(b"QUIT")[0] == 221
        assert c.at_eof()  # and no stray reply before the close
    finally:
        c.close()
    got = new_messages(server, before)
    assert got["bob@example.org"] == []
    assert len(got["alice@example.org"]) == 1
    assert got["alice@example.org"][0].endswith(b"\r\nSubject: clean\r\n\r\nclean body\r\n")
    for user in ("alice@example.org", "bob@example.org"):
        assert list((server.maildir(user) / "tmp").iterdir()) == []


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "fake_end", [b"\r\n\x00.\r\n", b"\r\n.\x00\r\n", b"\r\n .\r\n", b"\r\n..\r\n"]
)
def test_look_alikes_without_bare_newlines_stay_content(
    server: MailServer, fake_end: bytes
) -> None:
    """A line holding a NUL next to the dot (or a space, or a stuffed dot) is an ordinary
    content line: the smuggled commands stay text inside the one message, which is stored
    once (for alice) and nothing reaches the smuggled recipient."""
    before = snapshot(server)
    c = Client(server)
    try:
        c.start_message(b"sender@remote.example", b"alice@example.org", helo=b"smuggler.test")
        c.sock.sendall(b"Subject: innocent\r\n\r\nhello" + fake_end + SMUGGLED + b"bye" + REAL_END)
        code, text = c.reply()
        assert code == 250 and text.startswith(b"2.0.0 OK: message stored as "), text
        assert c.cmd(b"QUIT")[0] == 221
        assert c.at_eof()
    finally:
        c.close()
    got = new_messages(server, before)
    assert got["bob@example.org"] == []
    assert len(got["alice@example.org"]) == 1
    unstuffed = fake_end.replace(b"\r\n.", b"\r\n")  # RFC 5321 4.5.2: one leading dot goes
    assert got["alice@example.org"][0].endswith(
        b"Subject: innocent\r\n\r\nhello" + unstuffed + SMUGGLED + b"bye\r\n"
    )


@pytest.mark.timeout(30)
def test_all_variants_pipelined_in_one_write(server: MailServer) -> None:
    """Every variant in one message, whole session in one write (a PIPELINING client): one
    550 to the dot, then the pipelined QUIT; the smuggled commands were never executed."""
    before = snapshot(server)
    c = Client(server)
    try:
        payload = b"".join(v + SMUGGLED for v in BARE_VARIANTS.values())
        c.sock.sendall(
            b"EHLO smuggler.test\r\nMAIL FROM:<sender@remote.example>\r\n"
            b"RCPT TO:<alice@example.org>\r\nDATA\r\nSubject: all\r\n\r\nhi"
            + payload
            + REAL_END
            + b"QUIT\r\n"
        )
        replies = [c.reply()[0] for _ in range(6)]
        assert replies == [250, 250, 250, 354, 550, 221]
        assert c.at_eof()  # closed after QUIT: no other reply was queued
    finally:
        c.close()
    assert new_messages(server, before) == {"alice@example.org": [], "bob@example.org": []}
