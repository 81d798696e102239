"""outbound/link.py against a scripted receiver, on a real event loop: the cases that the
end-to-end delivery tests can only hit by chance."""

from __future__ import annotations

from smtpkit.outbound.link import Candidate, Link, Security
from smtpkit.protocol.replies import Reply
from smtpkit.server.loop import EventLoop
from tests.scripted_smtp import ScriptedServer


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
