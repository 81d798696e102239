"""Resource exhaustion against a real ``smtpkit serve``: idle floods, connection limits at
scale, slow drips, an oversized message, a recipient flood and a huge command line.

Memory is measured from /proc, on the server's processes (the supervisor and its workers):
the peak resident set (``VmHWM``, reset through ``clear_refs``) against the resident set just
before, so a short spike between two samples cannot hide.
"""

from __future__ import annotations

import os
import resource
import selectors
import smtplib
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import MailServer, make_server
from tests.e2e.rawclient import RawClient

MB = 1024 * 1024


# --- helpers ------------------------------------------------------------------------------------


def server_pids(server: MailServer) -> list[int]:
    """The ``smtpkit serve`` process and all its descendants (the worker processes)."""
    assert server.process is not None
    pids = [server.process.pid]
    for pid in pids:  # grows while walking: breadth first
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                pids.extend(int(p) for p in fh.read().split())
    return pids


def _status_kb(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {key} for {pid}")


class Memory:
    """Peak RSS growth of a set of processes since ``start()``, in kB."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.base = 0

    def start(self) -> None:
        for pid in self.pids:
            with open(f"/proc/{pid}/clear_refs", "w") as fh:
                fh.write("5")  # reset VmHWM to the current RSS (Linux 4.0+)
        self.base = sum(_status_kb(pid, "VmRSS") for pid in self.pids)

    def peak_growth_kb(self) -> int:
        return sum(_status_kb(pid, "VmHWM") for pid in self.pids) - self.base


@pytest.fixture(autouse=True)
def enough_descriptors() -> None:
    """1000+ sockets in this process and in the server (which inherits the limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 8192
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., MailServer]]:
    """Start a server with the given ``[limits]`` lines; stopped after the test."""
    servers: list[MailServer] = []

    def start(*limits: str) -> MailServer:
        lines = "\n".join(limits)
        server = make_server(tmp_path / str(len(servers)), extra_config=f"\n[limits]\n{lines}\n")
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        if server.process is not None:
            server.stop()


def open_idle(server: MailServer, count: int, source: str = "") -> list[socket.socket]:
    """``count`` connections that each got their 220 (so the server has counted them)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.create_connection(
                (server.host, server.port),
                timeout=20,
                source_address=(source, 0) if source else None,
            )
            socks.append(s)
        for s in socks:
            assert s.recv(1024).startswith(b"220 ")
    except BaseException:
        for s in socks:
            s.close()
        raise
    return socks


def refused_with(server: MailServer, source: str) -> bytes:
    with socket.create_connection(
        (server.host, server.port), timeout=10, source_address=(source, 0)
    ) as s:
        first = s.recv(1024)
        rest = s.recv(1024)
    assert rest == b"", rest  # closed right after the refusal
    return first


def send_one(server: MailServer) -> float:
    """A whole smtplib delivery; returns how long it took."""
    started = time.monotonic()
    with smtplib.SMTP(server.host, server.port, timeout=10) as smtp:
        assert (
            smtp.sendmail("a@remote.example", ["bob@example.org"], "Subject: t\r\n\r\nx\r\n") == {}
        )
    return time.monotonic() - started


# --- idle floods and connection limits ----------------------------------------------------------


@pytest.mark.timeout(90)
def test_1000_idle_connections_do_not_delay_a_new_client(serve: Callable[..., MailServer]) -> None:
    server = serve("max_connections = 2000", "max_connections_per_ip = 2000")
    t0 = time.monotonic()
    idle = open_idle(server, 1000)
    opened = time.monotonic() - t0
    try:
        took = send_one(server)
        print(
            f"\n1000 idle connections opened in {opened:.2f}s; a new smtplib delivery took "
            f"{took * 1000:.0f} ms"
        )
        assert took < 3.0
        assert len(server.new_files("bob@example.org")) == 1
        # The idle sessions are still alive and answering.
        for s in idle[::100]:
            s.sendall(b"NOOP\r\n")
            assert s.recv(1024) == b"250 2.0.0 OK\r\n"
    finally:
        for s in idle:
            s.close()


@pytest.mark.timeout(90)
def test_limits_at_1000_connections_answer_421(serve: Callable[..., MailServer]) -> None:
    server = serve("max_connections = 1000", "max_connections_per_ip = 600")
    held = open_idle(server, 600, "127.0.0.1")
    try:
        # The 601st from one address: refused; another address is still served.
        assert refused_with(server, "127.0.0.1") == (
            b"421 4.7.0 Too many connections from your address\r\n"
        )
        held += open_idle(server, 400, "127.0.0.2")
        # 1000 in all: refused from any address.
        assert refused_with(server, "127.0.0.3") == (
            b"421 4.7.0 Too many connections, try again later\r\n"
        )
        # A closed connection frees its place (at once for the server once it sees the EOF).
        held.pop().close()
        deadline = time.monotonic() + 5
        while True:
            with socket.create_connection(
                (server.host, server.port), timeout=10, source_address=("127.0.0.3", 0)
            ) as s:
                if s.recv(1024).startswith(b"220 "):
                    break
            assert time.monotonic() < deadline, "the freed place was never given back"
            time.sleep(0.05)
    finally:
        for s in held:
            s.close()


# --- slow drips ----------------------------------------------------------------------------------


def drip(sock: socket.socket, data: bytes, interval: float, limit: float) -> tuple[bytes, int]:
    """Send ``data`` one byte per ``interval`` until the server says something (or ``limit``
    seconds pass); returns what it said and how many bytes were sent."""
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ)
    sent = 0
    deadline = time.monotonic() + limit
    try:
        while time.monotonic() < deadline:
            if sent < len(data):
                try:
                    sock.sendall(data[sent : sent + 1])
                except OSError:
                    break
                sent += 1
            if sel.select(timeout=interval):
                return sock.recv(1024), sent
        return b"", sent
    finally:
        sel.close()


@pytest.mark.timeout(30)
def test_one_byte_per_second_command_is_cut_off_at_the_timeout(
    serve: Callable[..., MailServer],
) -> None:
    server = serve("command_timeout = 2", "data_timeout = 3")
    c = RawClient(server)
    try:
        t0 = time.monotonic()
        said, sent = drip(c.sock, b"EHLO slowloris.example.org\r\n", 1.0, 10)
        took = time.monotonic() - t0
        print(f"\ncommand drip: 421 after {took:.1f}s and {sent} bytes (command_timeout = 2)")
        # Bytes do not extend the deadline, only replies do: 2 s plus the 1 s sweep.
        assert said == b"421 4.4.2 Timeout exceeded, closing connection\r\n"
        assert 1.5 <= took <= 4.5
        assert sent <= 5
        assert c.at_eof()
    finally:
        c.close()


@pytest.mark.timeout(30)
def test_slow_valid_data_is_cut_off_at_the_data_timeout(serve: Callable[..., MailServer]) -> None:
    server = serve("command_timeout = 2", "data_timeout = 3")
    c = RawClient(server)
    try:
        c.start_message(b"a@remote.example", b"alice@example.org", helo=b"drip.example")
        t0 = time.monotonic()
        body = b"Subject: drip\r\n\r\n" + b"a perfectly valid line\r\n" * 20 + b".\r\n"
        said, sent = drip(c.sock, body, 0.25, 15)
        took = time.monotonic() - t0
        print(f"\ndata drip: 421 after {took:.1f}s and {sent} bytes (data_timeout = 3)")
        assert said == b"421 4.4.2 Timeout exceeded, closing connection\r\n"
        assert 2.5 <= took <= 5.5
        assert sent < len(body)
        assert c.at_eof()
    finally:
        c.close()
    assert server.new_files("alice@example.org") == []
    assert list((server.maildir("alice@example.org") / "tmp").iterdir()) == []


@pytest.mark.timeout(30)
def test_client_that_never_reads_its_replies_is_not_buffered(
    serve: Callable[..., MailServer],
) -> None:
    """Pipelined NOOPs for 3 s, never reading a reply: the server stops reading once its
    replies pile up, so the flood waits in the kernel's socket buffers, not in our memory."""
    server = serve()
    memory = Memory(server_pids(server))
    c = RawClient(server)
    try:
        memory.start()
        c.sock.setblocking(False)
        flood = b"NOOP\r\n" * 100_000
        sent = 0
        stop = time.monotonic() + 3
        while time.monotonic() < stop:
            try:
                sent += c.sock.send(flood)
            except BlockingIOError:
                time.sleep(0.01)
        growth = memory.peak_growth_kb()
        print(f"\nnever-reading client: {sent / MB:.1f} MB accepted in 3s; peak growth {growth} kB")
        assert sent < 64 * MB  # it stalled: the server stopped reading
        assert growth < 20 * 1024
    finally:
        c.close()


# --- big inputs ----------------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_100_mb_message_gets_552_with_flat_memory(serve: Callable[..., MailServer]) -> None:
    server = serve()
    memory = Memory(server_pids(server))
    c = RawClient(server)
    try:
        c.start_message(b"a@remote.example", b"alice@example.org", helo=b"big.example")
        memory.start()
        chunk = (b"x" * 998 + b"\r\n") * 1024  # valid 1000-octet lines, 1 MB
        t0 = time.monotonic()
        for _ in range(100):
            c.sock.sendall(chunk)
        reply = c.cmd(b".")
        took = time.monotonic() - t0
        growth = memory.peak_growth_kb()
        print(f"\n100 MB DATA: {reply[0]} after {took:.1f}s; server peak RSS growth {growth} kB")
        assert reply == (552, b"5.3.4 Message size exceeds fixed maximum message size")
        assert growth < 20 * 1024
        # The session goes on.
        c.start_message(b"a@remote.example", b"alice@example.org")
        assert c.cmd(b"Subject: small\r\n\r\nok\r\n.")[0] == 250
    finally:
        c.close()
    files = server.new_files("alice@example.org")
    assert len(files) == 1 and files[0].stat().st_size < 1000
    assert list((server.maildir("alice@example.org") / "tmp").iterdir()) == []


@pytest.mark.timeout(90)
def test_10000_recipients_hit_the_recipient_limit(serve: Callable[..., MailServer]) -> None:
    server = serve()
    c = RawClient(server)
    codes: dict[tuple[int, bytes], int] = {}
    try:
        assert c.cmd(b"EHLO many.example")[0] == 250
        assert c.cmd(b"MAIL FROM:<a@remote.example>")[0] == 250
        t0 = time.monotonic()
        replies = []
        for start in range(0, 10_000, 500):  # pipelined, 500 commands per write
            users = [b"alice" if i % 2 else b"bob" for i in range(start, start + 500)]
            c.sock.sendall(b"".join(b"RCPT TO:<%s@example.org>\r\n" % u for u in users))
            replies += [c.reply() for _ in users]
        took = time.monotonic() - t0
        for reply in replies:
            codes[reply] = codes.get(reply, 0) + 1
        print(f"\n10,000 RCPT in {took:.1f}s: {codes}")
        assert replies[:100] == [(250, b"2.1.5 Recipient OK")] * 100
        assert replies[100:] == [(452, b"4.5.3 Too many recipients")] * 9_900
        # 452 is not an error that ends the session: the message still goes to the 100.
        assert c.cmd(b"DATA")[0] == 354
        assert c.cmd(b"Subject: many\r\n\r\nhi\r\n.")[0] == 250
        assert c.cmd(b"QUIT")[0] == 221
    finally:
        c.close()
    assert len(server.new_files("alice@example.org")) == 1
    assert len(server.new_files("bob@example.org")) == 1


@pytest.mark.timeout(60)
def test_1_mb_command_lines_are_refused_without_buffering(serve: Callable[..., MailServer]) -> None:
    server = serve()
    memory = Memory(server_pids(server))
    c = RawClient(server)
    try:
        assert c.cmd(b"EHLO long.example")[0] == 250
        memory.start()
        for filler in (b"MAIL FROM:<" + b"a" * MB + b"@x.example>", b"NOOP " + b"y" * MB):
            assert c.cmd(filler) == (500, b"5.5.6 Command line too long")
        # Six more, pipelined in one 6 MB write (8 errors: under max_errors = 10).
        c.sock.sendall((b"RCPT TO:<" + b"b" * MB + b">\r\n") * 6)
        assert [c.reply() for _ in range(6)] == [(500, b"5.5.6 Command line too long")] * 6
        growth = memory.peak_growth_kb()
        print(f"\n8 command lines of 1 MB: server peak RSS growth {growth} kB")
        # Reads are 256 KB: a read and the buffer it lands in are the only transient copies
        # (measured 450-870 kB). Holding one whole line until its LF would take over 2 MB:
        # the line and the copy cut from the buffer.
        assert growth < 1536
        # The session goes on: a message is still accepted and stored.
        assert c.cmd(b"NOOP") == (250, b"2.0.0 OK")
        c.start_message(b"a@remote.example", b"alice@example.org")
        assert c.cmd(b"Subject: after\r\n\r\nstill here\r\n.")[0] == 250
    except EOFError as exc:
        raise AssertionError(f"server closed the session: {exc}") from None
    finally:
        c.close()
    assert len(server.new_files("alice@example.org")) == 1
