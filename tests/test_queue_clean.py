"""delivery/queue.clean_queue: at start-up, what a crash left half-written in the queue is
removed (never acknowledged: the envelope, renamed into place last, is the entry's commit
mark), and every complete entry stays exactly as it was."""

from __future__ import annotations

import os
from pathlib import Path

from smtpkit.delivery.queue import ENVELOPE_SUFFIX, TMP_PREFIX, clean_queue, read_queue
from tests.test_transfer import make_entry

KEPT = "kept.1-ab12"  # a complete entry: its data and its envelope
REWRITTEN = "rewritten.1-ab12"  # complete, cut off while its envelope was written anew
BODY = b"Subject: acknowledged\r\n\r\nkeep me\r\n"


def stage_leftovers(folder: Path) -> list[str]:
    """Two complete entries and what crashes leave behind, as the names of what must go:
    a message whose envelope was never begun, one cut off while its envelope was written
    (a temporary envelope beside it), and a temporary envelope alone."""
    make_entry(folder, KEPT, BODY)
    make_entry(folder, REWRITTEN, BODY)
    (folder / (TMP_PREFIX + REWRITTEN + ENVELOPE_SUFFIX)).write_text('{"version": 1, "id"')
    (folder / "noenvelope.1-ab12").write_bytes(b"Subject: half\r\n\r\n")
    (folder / "halfenvelope.1-ab12").write_bytes(b"Subject: half\r\n\r\n")
    (folder / (TMP_PREFIX + "halfenvelope.1-ab12" + ENVELOPE_SUFFIX)).write_text("{")
    (folder / (TMP_PREFIX + "alone.1-ab12" + ENVELOPE_SUFFIX)).write_text("")
    (folder / ".lock").write_bytes(b"")  # the queue runner's lock file
    return [
        TMP_PREFIX + REWRITTEN + ENVELOPE_SUFFIX,
        "noenvelope.1-ab12",
        "halfenvelope.1-ab12",
        TMP_PREFIX + "halfenvelope.1-ab12" + ENVELOPE_SUFFIX,
        TMP_PREFIX + "alone.1-ab12" + ENVELOPE_SUFFIX,
    ]


def complete_names() -> list[str]:
    return sorted([".lock", KEPT, KEPT + ENVELOPE_SUFFIX, REWRITTEN, REWRITTEN + ENVELOPE_SUFFIX])


def test_half_written_entries_go_and_complete_ones_stay(tmp_path: Path) -> None:
    folder = tmp_path / "queue"
    doomed = stage_leftovers(folder)
    envelopes = {
        name: (folder / (name + ENVELOPE_SUFFIX)).read_bytes() for name in (KEPT, REWRITTEN)
    }
    assert clean_queue(folder) == len(doomed) == 5
    assert sorted(os.listdir(folder)) == complete_names()
    for name, envelope in envelopes.items():
        assert (folder / name).read_bytes() == BODY
        assert (folder / (name + ENVELOPE_SUFFIX)).read_bytes() == envelope
    assert [e.id for e in read_queue(folder)] == sorted([KEPT, REWRITTEN])
    # Once clean, a second start-up finds nothing to remove.
    assert clean_queue(folder) == 0
    assert sorted(os.listdir(folder)) == complete_names()


def test_a_queue_of_complete_entries_is_left_alone(tmp_path: Path) -> None:
    folder = tmp_path / "queue"
    make_entry(folder, KEPT, BODY)
    assert clean_queue(folder) == 0
    assert sorted(os.listdir(folder)) == [KEPT, KEPT + ENVELOPE_SUFFIX]


def test_no_queue_folder_is_nothing_to_clean(tmp_path: Path) -> None:
    assert clean_queue(tmp_path / "queue") == 0
    assert not (tmp_path / "queue").exists()
