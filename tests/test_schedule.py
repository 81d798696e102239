"""outbound/schedule.py: back-off, expiry and the notices owed, as pure functions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smtpkit.config import QueueConfig
from smtpkit.delivery.queue import QueuedRecipient, QueueEntry, read_envelope
from smtpkit.outbound.schedule import (
    Notice,
    Outcome,
    Result,
    apply_outcome,
    delay_notice,
    retry_delay,
)
from smtpkit.protocol.dsn import RcptDsn

CONFIG = QueueConfig(min_retry=300, max_retry=3600, max_age=432000, delay_warning=14400)
ARRIVED = 1_000_000.0


def entry(*recipients: QueuedRecipient) -> QueueEntry:
    return QueueEntry("id-1", "alice@example.org", ARRIVED, 10, list(recipients), Path("/q/id-1"))


@pytest.mark.parametrize(
    ("attempts", "delay"),
    [(1, 300), (2, 600), (3, 1200), (4, 2400), (5, 3600), (9, 3600), (200, 3600)],
)
def test_retry_delay_doubles_up_to_max_retry(attempts: int, delay: float) -> None:
    assert retry_delay(attempts, CONFIG) == delay


def test_deferred_waits_and_counts() -> None:
    r = QueuedRecipient("bob@example.net")
    e = entry(r)
    outcome = Outcome(Result.DEFERRED, "4.2.2", "452 4.2.2 full", "mx.example.net", smtp=True)
    assert apply_outcome(e, r, outcome, ARRIVED + 10, CONFIG) is None
    assert (r.state, r.attempts, r.next_attempt) == ("deferred", 1, ARRIVED + 310)
    assert (r.last_error, r.status, r.remote) == ("452 4.2.2 full", "4.2.2", "mx.example.net")
    assert r.last_attempt == ARRIVED + 10


def test_deferred_past_max_age_fails_with_the_actual_problem() -> None:
    r = QueuedRecipient("bob@example.net", attempts=7)
    e = entry(r)
    outcome = Outcome(Result.DEFERRED, "4.4.1", "no answer")
    assert apply_outcome(e, r, outcome, ARRIVED + 432000, CONFIG) is Notice.FAILED
    assert r.state == "failed"
    assert r.status == "4.4.1"
    assert r.last_error == "no answer (gave up: in the queue for 5.0 days)"


@pytest.mark.parametrize(
    ("notify", "result", "notice"),
    [
        (None, Result.FAILED, Notice.FAILED),
        (None, Result.RELAYED, None),
        (frozenset({"NEVER"}), Result.FAILED, None),
        (frozenset({"SUCCESS"}), Result.RELAYED, Notice.RELAYED),
        (frozenset({"SUCCESS"}), Result.DELIVERED, Notice.DELIVERED),
        (frozenset({"SUCCESS"}), Result.FAILED, None),
        (frozenset({"DELAY"}), Result.DEFERRED, None),
    ],
)
def test_notices_follow_notify(
    notify: frozenset[str] | None, result: Result, notice: Notice | None
) -> None:
    r = QueuedRecipient("bob@example.net", dsn=RcptDsn(notify=notify))
    status = {"failed": "5.1.1", "deferred": "4.0.0"}.get(result.value, "2.0.0")
    assert apply_outcome(entry(r), r, Outcome(result, status, "text"), ARRIVED, CONFIG) == notice


def test_one_delay_notice_after_delay_warning() -> None:
    tried = QueuedRecipient("bob@example.net", state="deferred", attempts=3)
    quiet = QueuedRecipient("carol@example.net", state="deferred", attempts=3,
                            dsn=RcptDsn(notify=frozenset({"FAILURE"})))  # fmt: skip
    untried = QueuedRecipient("dave@example.net")
    e = entry(tried, quiet, untried)
    assert delay_notice(e, ARRIVED + 14399, CONFIG) == []
    assert e.warned is False
    assert delay_notice(e, ARRIVED + 14400, CONFIG) == [tried]
    assert e.warned is True
    assert delay_notice(e, ARRIVED + 20000, CONFIG) == []


def test_no_delay_notice_when_turned_off() -> None:
    r = QueuedRecipient("bob@example.net", state="deferred", attempts=3)
    off = QueueConfig(delay_warning=0)
    assert delay_notice(entry(r), ARRIVED + 10**6, off) == []


def test_an_envelope_keeps_smtputf8_and_body_and_old_ones_read_as_before(tmp_path: Path) -> None:
    entry = QueueEntry(
        "id-2", "jörg@example.org", ARRIVED, 10, [QueuedRecipient("bob@remote.example")],
        tmp_path / "id-2", smtputf8=True, body="BINARYMIME",
    )  # fmt: skip
    entry.save()
    data = json.loads(entry.envelope_path.read_text())
    assert (data["smtputf8"], data["body"]) == (True, "BINARYMIME")
    again = read_envelope(entry.envelope_path)
    assert (again.sender, again.smtputf8, again.body) == ("jörg@example.org", True, "BINARYMIME")
    # An envelope written without them (as before they existed) reads as plain mail.
    del data["smtputf8"], data["body"]
    entry.envelope_path.write_text(json.dumps(data))
    old = read_envelope(entry.envelope_path)
    assert (old.smtputf8, old.body) == (False, None)
