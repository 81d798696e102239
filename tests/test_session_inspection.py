"""The session acts on what the checks decide by its type (``Deliver``, ``Reject``,
``Defer``), as it does on the policy's decisions: never by reading a reply code."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from smtpkit.config import ListenerRole
from smtpkit.limits import Limits
from smtpkit.policy import Defer, Reject
from smtpkit.protocol import replies
from smtpkit.session import Deliver, Inspected, Inspection, Verdict
from tests.test_session import Harness, codes, journal_events

MESSAGE = (
    b"EHLO c\r\nMAIL FROM:<s@remote.test>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n"
    b"Subject: t\r\n\r\nhello\r\n.\r\n"
)


class FakeInspector:
    """Answers every message with ``verdict``, later (as the checks' thread pool does)."""

    def __init__(self, verdict: Verdict) -> None:
        self.verdict = verdict
        self.pending: list[Callable[[Inspected], None]] = []

    def wanted(self, role: ListenerRole, peer: str, user: str | None) -> bool:
        return True

    def inspect(self, inspection: Inspection, done: Callable[[Inspected], None]) -> None:
        self.pending.append(done)

    def answer(self) -> None:
        for done in self.pending:
            done(Inspected(self.verdict, fields={"auth": "checked"}))
        self.pending.clear()


def inspected(tmp_path: Path, verdict: Verdict) -> tuple[Harness, list[str]]:
    h = Harness(tmp_path, Limits(max_errors=5))
    inspector = FakeInspector(verdict)
    h.ctx.inspector = inspector
    h.transport.take()
    lines = h.say(MESSAGE)
    assert codes(lines) == ["250", "250", "250", "354"]  # the dot waits for the checks
    inspector.answer()
    return h, h.transport.take()


@pytest.mark.timeout(10)
def test_a_rejected_message_is_refused_and_counts_as_an_error(tmp_path: Path) -> None:
    h, lines = inspected(tmp_path, Reject(replies.dmarc_rejected("example.net")))
    assert lines == ["550 5.7.1 DMARC policy of example.net rejects this message"]
    assert h.session.errors == 1
    assert list((h.alice / "new").iterdir()) == []
    rejected = [e for e in journal_events(h) if e["event"] == "rejected"]
    assert [(e["code"], e["auth"]) for e in rejected] == [(550, "checked")]
    assert h.say(b"NOOP\r\n") == ["250 2.0.0 OK"]  # the session goes on


@pytest.mark.timeout(10)
def test_a_deferred_message_is_refused_for_now_and_costs_nothing(tmp_path: Path) -> None:
    h, lines = inspected(tmp_path, Defer(replies.scan_deferred("greylisted")))
    assert lines == ["451 4.7.1 greylisted"]
    assert h.session.errors == 0
    assert list((h.alice / "new").iterdir()) == []


@pytest.mark.timeout(10)
@pytest.mark.parametrize(("junk", "folder"), [(False, "new"), (True, ".Junk/new")])
def test_a_delivered_message_goes_to_the_inbox_or_junk(
    tmp_path: Path, junk: bool, folder: str
) -> None:
    h, lines = inspected(tmp_path, Deliver(junk=junk))
    assert codes(lines) == ["250"] and lines[0].startswith("250 2.0.0 OK: message stored as ")
    (stored,) = (h.alice / folder).iterdir()
    assert stored.read_bytes().endswith(b"\r\nSubject: t\r\n\r\nhello\r\n")
    assert [e["auth"] for e in journal_events(h) if e["event"] == "stored"] == ["checked"]
