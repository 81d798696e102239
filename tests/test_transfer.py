"""outbound/transfer.py: a dead node's queue entries moved into this queue, checked, never
overwriting an entry, durable here before they go there, and resumable."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

import pytest

from smtpkit.delivery.queue import QueuedRecipient, QueueEntry, read_entry, read_queue
from smtpkit.outbound.transfer import TransferError, import_queue


def make_entry(
    folder: Path, entry_id: str, body: bytes = b"Subject: hi\r\n\r\nHello.\r\n", **changes: object
) -> QueueEntry:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / entry_id
    with open(path, "xb") as fh:  # a new file: never through a link left in the folder
        fh.write(body)
    entry = QueueEntry(
        id=entry_id,
        sender="alice@example.net",
        arrived=1_700_000_000.0,
        size=len(body),
        recipients=[
            QueuedRecipient(
                "bob@example.org", state="deferred", attempts=3, next_attempt=1_900_000_000.0
            ),  # fmt: skip
            QueuedRecipient("carol@example.org", state="delivered", attempts=1),
        ],
        path=path,
    )
    for key, value in changes.items():
        setattr(entry, key, value)
    entry.save()
    return entry


def names(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if not n.startswith(".lock"))


def test_entries_move_with_their_ids_and_are_due_now(tmp_path: Path) -> None:
    dead, live = tmp_path / "dead", tmp_path / "live"
    live.mkdir()
    make_entry(dead, "aaaa.1-1234")
    make_entry(dead, "bbbb.1-1234", b"Subject: two\r\n\r\nx\r\n")
    report = import_queue(dead, live, now=1_800_000_000.0)
    assert [(i.old_id, i.new_id, i.waiting) for i in report.imported] == [
        ("aaaa.1-1234", "aaaa.1-1234", 1),
        ("bbbb.1-1234", "bbbb.1-1234", 1),
    ]
    assert report.skipped == [] and report.ignored == []
    assert names(dead) == []
    entry = read_entry(live, "aaaa.1-1234")
    assert entry is not None
    bob, carol = entry.recipients
    assert (bob.state, bob.attempts, bob.next_attempt) == ("deferred", 3, 1_800_000_000.0)
    assert carol.state == "delivered"  # settled there: stays settled
    assert entry.path.read_bytes() == b"Subject: hi\r\n\r\nHello.\r\n"
    assert [e.id for e in read_queue(live)] == ["aaaa.1-1234", "bbbb.1-1234"]


def test_a_taken_id_is_never_overwritten(tmp_path: Path) -> None:
    dead, live = tmp_path / "dead", tmp_path / "live"
    make_entry(live, "aaaa.1-1234", b"Subject: mine\r\n\r\nkeep me\r\n")
    make_entry(dead, "aaaa.1-1234", b"Subject: theirs\r\n\r\nmove me\r\n")
    report = import_queue(dead, live)
    [moved] = report.imported
    assert moved.old_id == "aaaa.1-1234"
    assert moved.new_id.startswith("aaaa.1-1234-") and len(moved.new_id) == len("aaaa.1-1234-") + 4
    assert (live / "aaaa.1-1234").read_bytes() == b"Subject: mine\r\n\r\nkeep me\r\n"
    renamed = read_entry(live, moved.new_id)
    assert renamed is not None and renamed.id == moved.new_id
    assert renamed.path.read_bytes() == b"Subject: theirs\r\n\r\nmove me\r\n"
    assert json.loads((live / f"{moved.new_id}.env").read_text())["id"] == moved.new_id
    assert names(dead) == []  # gone from the source under its old name


def test_an_interrupted_import_is_not_imported_twice(tmp_path: Path) -> None:
    dead, live = tmp_path / "dead", tmp_path / "live"
    make_entry(dead, "aaaa.1-1234")
    make_entry(live, "aaaa.1-1234")  # the copy made before the import was cut short
    report = import_queue(dead, live)
    [again] = report.imported
    assert (again.new_id, again.already) == ("aaaa.1-1234", True)
    assert names(live) == ["aaaa.1-1234", "aaaa.1-1234.env"]
    assert names(dead) == []


def test_broken_entries_stay_where_they_are(tmp_path: Path) -> None:
    dead, live = tmp_path / "dead", tmp_path / "live"
    live.mkdir()
    make_entry(dead, "short.1-1234", size=999)
    make_entry(dead, "other.1-1234", id="else.1-1234")
    make_entry(dead, "badrcpt.1-1234", recipients=[QueuedRecipient("no spaces@x>")])
    (dead / "junk.1-1234.env").write_text("{not json")
    (dead / "junk.1-1234").write_text("x")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(b"Subject: hi\r\n\r\nHello.\r\n")
    make_entry(dead, "linked.1-1234")
    (dead / "linked.1-1234").unlink()
    (dead / "linked.1-1234").symlink_to(elsewhere)  # planted: never followed
    (dead / "halfway.1-1234").write_bytes(b"never acknowledged")
    make_entry(dead, "good.1-1234")
    report = import_queue(dead, live)
    assert [i.new_id for i in report.imported] == ["good.1-1234"]
    assert report.ignored == ["halfway.1-1234"]
    reasons = {s.name: s.reason for s in report.skipped}
    assert reasons["short.1-1234"] == "the message is 23 bytes, its envelope says 999"
    assert reasons["other.1-1234"] == "its envelope names another id, 'else.1-1234'"
    assert reasons["badrcpt.1-1234"] == "not a recipient address: 'no spaces@x>'"
    assert reasons["junk.1-1234"].startswith("cannot read the envelope")
    assert reasons["linked.1-1234"].startswith("cannot open the message")
    assert names(live) == ["good.1-1234", "good.1-1234.env"]
    for name in reasons:
        assert (dead / f"{name}.env").exists()


def test_a_running_node_keeps_its_queue(tmp_path: Path) -> None:
    dead, live = tmp_path / "alive", tmp_path / "live"
    live.mkdir()
    make_entry(dead, "aaaa.1-1234")
    fd = os.open(dead / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX)  # as its queue runner does, from another process...
        pid = os.fork()
        if pid == 0:  # ...which the import runs in: lockf locks are per process
            try:
                import_queue(dead, live)
            except TransferError as exc:
                os._exit(0 if "that node is running" in str(exc) else 2)
            os._exit(1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        os.close(fd)
    assert names(dead) == ["aaaa.1-1234", "aaaa.1-1234.env"]
    with pytest.raises(TransferError, match="own queue"):
        import_queue(live, live)
    with pytest.raises(TransferError, match="not a folder"):
        import_queue(tmp_path / "nowhere", live)
