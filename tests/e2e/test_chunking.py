"""CHUNKING and BINARYMIME (RFC 3030) over a real socket, against a real ``smtpkit serve``.

smtplib cannot send BDAT, so the client here writes raw bytes: whole sessions pipelined in
one write, chunks holding look-alikes of commands and of the end of data, a 10 MB chunk, a
big pipelined message refused for its size. What is stored is compared byte for byte.
"""

from __future__ import annotations

import selectors
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import MailServer, make_server
from tests.e2e.rawclient import RawClient
from tests.e2e.test_exhaustion import Memory, server_pids

ALICE = b"alice@example.org"


def bdat(content: bytes, last: bool = False) -> bytes:
    return b"BDAT %d%s\r\n" % (len(content), b" LAST" if last else b"") + content


def chunks(*contents: bytes) -> bytes:
    return b"".join(bdat(c, i == len(contents) - 1) for i, c in enumerate(contents))


class Client(RawClient):
    def __init__(self, server: MailServer) -> None:
        super().__init__(server, timeout=30)
        assert self.greeting[0] == 220

    def replies(self, count: int) -> list[tuple[int, bytes]]:
        return [self.reply() for _ in range(count)]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[MailServer]:
    srv = make_server(tmp_path)
    srv.start()
    try:
        yield srv
    finally:
        if srv.process is not None:
            srv.stop()


def journal(server: MailServer, event: str, count: int = 1) -> list[dict[str, Any]]:
    """The journal's ``event`` lines once there are ``count`` (written every 20 ms)."""
    deadline = time.monotonic() + 10
    while True:
        records = server.journal()
        found = [r for r in records if r.get("event") == event]
        if len(found) >= count:
            return found
        assert time.monotonic() < deadline, f"no {event} line in {records[-5:]}"
        time.sleep(0.05)


def only_message(server: MailServer, address: bytes = ALICE) -> bytes:
    (path,) = server.new_files(address.decode())
    return path.read_bytes()


def test_ehlo_offers_chunking_and_binarymime(server: MailServer) -> None:
    c = Client(server)
    try:
        c.sock.sendall(b"EHLO client.test\r\n")
        lines = read_all_lines(c)
        assert b"250-CHUNKING\r\n" in lines and b"250-BINARYMIME\r\n" in lines
    finally:
        c.close()


def read_all_lines(c: Client) -> bytes:
    got = c.sock.recv(4096)
    while not got.endswith(b"\r\n") or b"\r\n250 " not in b"\r\n" + got:
        got += c.sock.recv(4096)
    return got


def test_a_pipelined_session_in_chunks_is_stored_byte_for_byte(server: MailServer) -> None:
    parts = [
        b"From: a@remote.example\r\nSubject: chunks\r\n",
        b"\r\nline one\r",  # the CRLF split across two chunks
        b"\n..no unstuffing\r\n.\r\nnot the end\r\n",
    ]
    c = Client(server)
    try:
        c.sock.sendall(
            b"EHLO client.test\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.org>\r\n"
            + chunks(*parts)
            + b"QUIT\r\n"
        )
        got = c.replies(7)
        assert [code for code, _ in got] == [250, 250, 250, 250, 250, 250, 221]
        assert got[3][1] == b"2.0.0 %d octets received" % len(parts[0])
        assert got[5][1].startswith(b"2.0.0 OK: message stored as ")
        assert c.at_eof()
    finally:
        c.close()
    assert only_message(server).endswith(b"\r\n" + b"".join(parts))
    (stored,) = journal(server, "stored")
    assert stored["chunks"] == 3


def test_commands_inside_a_chunk_are_never_run(server: MailServer) -> None:
    """Chunks are counted octets: an end-of-data look-alike followed by a whole transaction
    is content; nothing reaches bob, and the one message keeps every byte."""
    content = (
        b"Subject: innocent\r\n\r\nhello\r\n.\r\nMAIL FROM:<ceo@example.org>\r\n"
        b"RCPT TO:<bob@example.org>\r\nDATA\r\nSubject: smuggled\r\n\r\nwire the money\r\n"
        b".\r\n" + bdat(b"QUIT\r\n", True) + b"\n.\n\r\n"
    )
    c = Client(server)
    try:
        c.sock.sendall(
            b"EHLO s.test\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.org>\r\n"
        )
        assert [code for code, _ in c.replies(3)] == [250, 250, 250]
        c.sock.sendall(bdat(content[:40]) + bdat(content[40:], True))
        assert c.reply()[0] == 250
        code, text = c.reply()
        # The bare LFs at the end: refused whole, as DATA would be.
        assert (code, text) == (550, b"5.6.0 Message refused: bare <CR> or <LF> in data")
        c.sock.sendall(
            b"MAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.org>\r\n"
            + bdat(content[:-5] + b"\r\n", True)
        )
        assert [code for code, _ in c.replies(3)] == [250, 250, 250]
        assert c.nothing_pending()
    finally:
        c.close()
    assert server.new_files("bob@example.org") == []
    assert only_message(server).endswith(b"\r\n" + content[:-5] + b"\r\n")


def test_binarymime_is_stored_exactly(server: MailServer) -> None:
    content = b"Subject: bin\r\nContent-Type: application/octet-stream\r\n\r\n"
    content += bytes(range(256)) * 64 + b"\r.\r\n.\n" + b"\xff" * 5000
    c = Client(server)
    try:
        c.sock.sendall(
            b"EHLO b.test\r\nMAIL FROM:<a@remote.example> BODY=BINARYMIME\r\n"
            b"RCPT TO:<alice@example.org>\r\nDATA\r\n" + chunks(content[:7000], content[7000:])
        )
        got = c.replies(6)
        assert got[3] == (503, b"5.5.1 BODY=BINARYMIME requires BDAT, not DATA")
        assert [code for code, _ in got] == [250, 250, 250, 503, 250, 250]
    finally:
        c.close()
    assert only_message(server).endswith(b"\r\n" + content)


@pytest.mark.timeout(120)
def test_a_10_mb_chunk_streams_with_flat_memory(server: MailServer) -> None:
    """Nothing holds the chunk whole: it goes to the spool file as it arrives."""
    line = b"x" * 998 + b"\r\n"
    content = line * (10_000_000 // len(line))
    memory = Memory(server_pids(server))
    c = Client(server)
    try:
        c.sock.sendall(
            b"EHLO big.test\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.org>\r\n"
        )
        assert [code for code, _ in c.replies(3)] == [250, 250, 250]
        memory.start()
        c.sock.sendall(b"BDAT %d LAST\r\n" % len(content))
        view = memoryview(content)
        for start in range(0, len(content), 1 << 20):
            c.sock.sendall(view[start : start + (1 << 20)])
        code, text = c.reply()
        growth = memory.peak_growth_kb()
        print(f"\n10 MB chunk: {code} ; server peak RSS growth {growth} kB")
        assert code == 250, text
        assert growth < 4 * 1024
    finally:
        c.close()
    assert only_message(server).endswith(b"\r\n" + content)


@pytest.mark.timeout(120)
def test_a_big_pipelined_message_refused_for_size_is_one_error(tmp_path: Path) -> None:
    """30 chunks of 100 kB pipelined against a 1 MB limit: the chunk that crosses it gets
    552, each later one 503 (RFC 3030 2: read and refused), and together they are one error,
    not the 421 of max_errors; their bytes are never read as commands."""
    server = make_server(tmp_path, extra_config="\n[limits]\nmax_message_size = 1048576\n")
    server.start()
    part = (b"y" * 98 + b"\r\n") * 1000 + b"RSET\r\nQUIT\r\n"
    c = Client(server)
    try:
        c.sock.sendall(
            b"EHLO big.test\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.org>\r\n"
        )
        assert [code for code, _ in c.replies(3)] == [250, 250, 250]
        c.sock.sendall(b"".join(bdat(part, i == 29) for i in range(30)) + b"NOOP\r\n")
        codes = [code for code, _ in c.replies(31)]
        assert codes == [250] * 10 + [552] + [503] * 19 + [250]
        c.sock.sendall(
            b"MAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.org>\r\n"
            + bdat(b"Subject: small\r\n\r\nok\r\n", True)
        )
        assert [code for code, _ in c.replies(3)] == [250, 250, 250]
    finally:
        c.close()
    assert only_message(server).endswith(b"\r\nSubject: small\r\n\r\nok\r\n")
    (rejected,) = journal(server, "rejected")
    assert rejected["code"] == 552 and rejected["chunks"] == 11
    assert list((server.maildir("alice@example.org") / "tmp").iterdir()) == []


def test_a_malformed_bdat_ends_the_session(server: MailServer) -> None:
    c = Client(server)
    try:
        c.sock.sendall(
            b"EHLO m.test\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.org>\r\n"
            b"BDAT 12 MORE\r\nMAIL FROM:<x@example.org>\r\nRCPT TO:<bob@example.org>\r\n"
        )
        got = c.replies(4)
        assert got[3] == (421, b"4.5.0 Malformed BDAT command, closing connection")
        assert c.at_eof()
    finally:
        c.close()
    assert server.new_files("bob@example.org") == []


def test_a_chunk_in_flight_when_the_client_vanishes_leaves_nothing(server: MailServer) -> None:
    c = Client(server)
    try:
        c.sock.sendall(
            b"EHLO v.test\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.org>\r\n"
            + bdat(b"first\r\n")
            + b"BDAT 100 LAST\r\nonly part of it"
        )
        assert [code for code, _ in c.replies(4)] == [250, 250, 250, 250]
        c.sock.shutdown(socket.SHUT_WR)
        assert c.at_eof()
    finally:
        c.close()
    journal(server, "close")
    assert server.new_files("alice@example.org") == []
    assert list((server.maildir("alice@example.org") / "tmp").iterdir()) == []


def said_before(sock: socket.socket, until: float) -> bytes | None:
    """What the server sent (b"" for its close) before ``until``, or None: it was silent."""
    with selectors.DefaultSelector() as sel:
        sel.register(sock, selectors.EVENT_READ)
        while (left := until - time.monotonic()) > 0:
            if sel.select(timeout=left):
                return sock.recv(4096, socket.MSG_PEEK)
    return None


@pytest.mark.timeout(60)
@pytest.mark.parametrize("first_message", [False, True], ids=["after-rcpt", "after-a-message"])
def test_the_first_chunk_is_read_under_the_data_timeout(
    tmp_path: Path, first_message: bool
) -> None:
    """BDAT is answered only at its chunk's end (RFC 3030 2): no reply starts the content's
    clock, as 354 does for DATA. The first chunk of a transaction still gets data_timeout,
    not what is left of the command_timeout of the reply before it. After a message, the
    next transaction's chunk is taken up when that message's commit ends."""
    server = make_server(
        tmp_path, extra_config="\n[limits]\ncommand_timeout = 2\ndata_timeout = 5\n"
    )
    server.start()
    transaction = b"MAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.org>\r\n"
    session = b"EHLO slow.test\r\n"
    if first_message:
        session += transaction + bdat(b"Subject: first\r\n\r\nstored\r\n", True)
    session += transaction + b"BDAT 100 LAST\r\nonly part of it"
    c = Client(server)
    try:
        t0 = time.monotonic()
        c.sock.sendall(session)
        replies = 6 if first_message else 3
        assert [code for code, _ in c.replies(replies)] == [250] * replies
        assert not c.buf
        # Past the command timeout (and the 1 s sweep, with a margin) the chunk is still
        # being waited for: the connection is open and nothing was said.
        assert said_before(c.sock, t0 + 2 + 2) is None
        code, text = c.reply()
        took = time.monotonic() - t0
        assert (code, text) == (421, b"4.4.2 Timeout exceeded, closing connection")
        assert 5 <= took <= 15, took
        assert c.at_eof()
    finally:
        c.close()
    (timeout,) = journal(server, "timeout")
    assert timeout["state"] == "CHUNK"
    stored = server.new_files("alice@example.org")
    assert len(stored) == (1 if first_message else 0)
    assert list((server.maildir("alice@example.org") / "tmp").iterdir()) == []
