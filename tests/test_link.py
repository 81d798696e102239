"""outbound/link.py against a scripted receiver, on a real event loop: the cases that the
end-to-end delivery tests can only hit by chance."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from smtpkit.outbound.link import Candidate, Job, Link, Security
from smtpkit.protocol.replies import Reply
from smtpkit.server.loop import EventLoop
from tests.lmtp_server import LmtpServerThread, running
from tests.scripted_smtp import ScriptedServer


@pytest.fixture
def lmtp_server(tmp_path: Path) -> Iterator[LmtpServerThread]:
    with running(tmp_path / "lmtp.sock") as server:
        yield server


class IdleOwner:
    """An owner whose jobs were all taken by other links before this one was ready."""

    def __init__(self, loop: EventLoop) -> None:
        self.loop = loop
        self.calls: list[str] = []

    def ready(self, link: Link) -> None:
        self.calls.append("ready")

    def finished(self, link: Link, job: object, results: object) -> None:
        self.calls.append("finished")

    def failed(self, link: Link, reason: str, reply: Reply | None, permanent: bool) -> None:
        self.calls.append(f"failed: {reason}")
        self.loop.stop()

    def closed(self, link: Link) -> None:
        self.calls.append("closed")
        self.loop.stop()


def test_a_link_with_nothing_to_send_closes_without_failing() -> None:
    """Quitting because no job is left is the end of the link, not a failed address: taken
    for one, the jobs queued for the host meanwhile would be deferred ("no address to try")."""
    with ScriptedServer("127.0.0.1", 0) as server:
        loop = EventLoop()
        owner = IdleOwner(loop)
        link = Link(
            loop,
            owner,
            [Candidate("sink.test", "127.0.0.1", server.port)],
            helo_name="client.test",
            security=Security(None, starttls=False),
            connect_timeout=30,
            reply_timeout=30,
        )
        link.start()
        loop.call_later(60, loop.stop)  # a bound, should the link never finish
        loop.run()
        loop.close()
        assert owner.calls == ["ready", "closed"]
        assert link.closed
        server.wait_connections(1)


# --- a link to an LMTP server over a Unix socket ----------------------------------------------


class Jobs:
    """Hands out the jobs it is given, one at a time; records the replies."""

    def __init__(self, loop: EventLoop) -> None:
        self.loop = loop
        self.waiting: list[Job] = []
        self.results: list[list[tuple[str, Reply | None, str]]] = []
        self.ended = False

    def ready(self, link: Link) -> Job | None:
        return self.waiting.pop(0) if self.waiting else None

    def finished(self, link: Link, job: Job, results: list[tuple[str, Reply | None, str]]) -> None:
        self.results.append(results)

    def failed(self, link: Link, reason: str, reply: Reply | None, permanent: bool) -> None:
        raise AssertionError(f"failed: {reason}")

    def closed(self, link: Link) -> None:
        self.ended = True


def run_until(loop: EventLoop, done: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout

    def check() -> None:
        if done() or time.monotonic() > deadline:
            loop.stop()
        else:
            loop.call_later(0.01, check)

    loop.call_soon(check)
    loop.run()
    assert done(), "timed out"


def test_one_lmtp_connection_carries_message_after_message(
    tmp_path: Path, lmtp_server: LmtpServerThread
) -> None:
    lmtp_server.script.dot = lambda a: "452 4.2.2 over quota" if a.startswith("b") else "250 ok"
    message = tmp_path / "message"
    message.write_bytes(b"Return-Path: <s@example.net>\r\nSubject: hi\r\n\r\nHello.\r\n")
    size = message.stat().st_size
    loop = EventLoop()
    owner = Jobs(loop)
    first = Job("e1", "s@example.net", ("alice@example.org", "bob@example.org"), str(message),
                size, final=True)  # fmt: skip
    owner.waiting.append(first)
    link = Link(
        loop,
        owner,
        [Candidate("localhost", str(lmtp_server.path), 0, unix=True)],
        helo_name="mx.example.org",
        security=Security(None, starttls=False),
        connect_timeout=5,
        reply_timeout=5,
        lmtp=True,
        idle_timeout=30,
    )
    link.start()
    run_until(loop, lambda: link.idle)
    # One reply per recipient after the final dot (RFC 2033 4.2).
    [results] = owner.results
    assert [(a, r.code if r else None) for a, r, _ in results] == [
        ("alice@example.org", 250),
        ("bob@example.org", 452),
    ]
    owner.waiting.append(Job("e2", "", ("alice@example.org",), str(message), size, final=True))
    assert link.wake()
    run_until(loop, lambda: len(owner.results) == 2 and link.idle)
    assert lmtp_server.connections == 1
    delivered = lmtp_server.wait_for(2)
    assert delivered[1].sender == ""
    assert b"Return-Path" not in delivered[0].data  # the LMTP server writes its own
    link.close_idle()
    run_until(loop, lambda: owner.ended)
    assert lmtp_server.commands.count("LHLO") == 1
    assert lmtp_server.commands[-1] == "QUIT"
    loop.close()
