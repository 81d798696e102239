"""Durable Maildir delivery: files appear in new/ only complete, errors leave nothing behind."""

from __future__ import annotations

import mailbox
import os
import threading
from pathlib import Path

import pytest

from smtpkit.delivery.maildir import (
    DeliveryWorker,
    Spool,
    SpoolPool,
    clean_tmp,
    commit,
    commit_batch,
)
from smtpkit.users import UserStore
from tests.conftest import unavailable


@pytest.fixture
def boxes(tmp_path: Path) -> list[Path]:
    (tmp_path / "users").mkdir()
    store = UserStore(tmp_path / "users", ("example.org",))
    return [store.add("a@example.org"), store.add("b@example.org")]


def test_commit_moves_the_file_into_new(boxes: list[Path]) -> None:
    spool = Spool([boxes[0]], b"Return-Path: <>\r\n")
    spool.write(b"Subject: s\r\n\r\nbody\r\n")
    result = commit(spool)
    assert result.error is None
    assert [p.parent for p in result.files] == [boxes[0] / "new"]
    assert result.files[0].read_bytes() == b"Return-Path: <>\r\nSubject: s\r\n\r\nbody\r\n"
    assert list((boxes[0] / "tmp").iterdir()) == []
    assert [m["Subject"] for m in mailbox.Maildir(boxes[0], create=False)] == ["s"]


def test_several_mailboxes_share_one_inode(boxes: list[Path]) -> None:
    spool = Spool(boxes, b"")
    spool.write(b"Subject: both\r\n\r\n")
    result = commit(spool)
    assert sorted(p.parent for p in result.files) == sorted(b / "new" for b in boxes)
    assert result.files[0].stat().st_ino == result.files[1].stat().st_ino
    assert result.files[0].stat().st_nlink == 2


def test_missing_mailbox_fails_at_creation(tmp_path: Path) -> None:
    spool = Spool([tmp_path / "gone"], b"x")
    assert spool.error is not None and spool.error.temporary and not spool.error.disk_full
    assert "cannot create" in str(spool.error)
    assert commit(spool).error is spool.error


def test_mailbox_removed_before_commit_leaves_nothing(boxes: list[Path]) -> None:
    spool = Spool(boxes, b"Subject: x\r\n\r\n")
    (boxes[1] / "new").rmdir()
    result = commit(spool)
    assert result.error is not None and result.files == []
    assert list((boxes[0] / "new").iterdir()) == []
    assert list((boxes[0] / "tmp").iterdir()) == []


def test_write_error_is_recorded_not_raised(boxes: list[Path]) -> None:
    spool = Spool([boxes[0]], b"x")
    os.dup2(os.open(os.devnull, os.O_RDONLY), spool.fd)  # writes now fail with EBADF
    spool.write(b"more")
    assert spool.error is not None and "cannot write" in str(spool.error)
    assert list((boxes[0] / "tmp").iterdir()) == []


def test_disk_full_is_reported_as_such(boxes: list[Path]) -> None:
    if not Path("/dev/full").exists():
        unavailable("/dev/full is not available")
    spool = Spool([boxes[0]], b"x")
    os.dup2(os.open("/dev/full", os.O_WRONLY), spool.fd)
    spool.write(b"y" * 10)
    assert spool.error is not None and spool.error.disk_full


def test_batch_keeps_order_and_isolates_failures(boxes: list[Path], tmp_path: Path) -> None:
    good = Spool([boxes[0]], b"1")
    bad = Spool([tmp_path / "nowhere"], b"2")
    good2 = Spool([boxes[1]], b"3")
    results = commit_batch([good, bad, good2])
    assert [r.error is None for r in results] == [True, False, True]
    assert results[0].files[0].read_bytes() == b"1"
    assert results[2].files[0].read_bytes() == b"3"


def test_clean_tmp_removes_leftovers(boxes: list[Path]) -> None:
    (boxes[0] / "tmp" / "half").write_bytes(b"partial")
    (boxes[1] / "tmp" / "half2").write_bytes(b"partial")
    assert clean_tmp(boxes[0].parent, [(b.name, "tmp") for b in boxes]) == 2
    assert list((boxes[0] / "tmp").iterdir()) == []


def test_worker_completes_through_call_soon(boxes: list[Path]) -> None:
    done = threading.Event()
    results = []
    calls = []

    def call_soon(fn):  # type: ignore[no-untyped-def]
        calls.append(fn)
        fn()

    worker = DeliveryWorker(call_soon)
    for i in range(20):
        spool = Spool([boxes[i % 2]], str(i).encode())
        worker.submit(spool, lambda r: (results.append(r), len(results) == 20 and done.set()))
    assert done.wait(10)
    worker.close()
    assert all(r.error is None for r in results)
    assert sorted(r.files[0].read_bytes() for r in results) == sorted(
        str(i).encode() for i in range(20)
    )
    assert 1 <= len(calls) <= 20  # batches: one wake-up covers many messages


def test_pool_files_are_made_ahead_and_renamed_into_new(boxes: list[Path], tmp_path: Path) -> None:
    pool = SpoolPool(tmp_path / "users" / ".spool", size=3)
    pool.folder.mkdir()
    pool.fill()
    assert len(list(pool.folder.iterdir())) == 3
    spool = Spool([boxes[1]], b"Subject: pooled\r\n\r\n", pool)
    assert spool.tmp_path.parent == pool.folder
    result = commit(spool)
    assert result.error is None and result.files[0].parent == boxes[1] / "new"
    assert result.files[0].read_bytes() == b"Subject: pooled\r\n\r\n"
    assert len(list(pool.folder.iterdir())) == 2
    pool.drain()
    assert list(pool.folder.iterdir()) == []
    # An empty pool: the file is made in the first mailbox's tmp/ instead.
    assert Spool([boxes[0]], b"x", pool).tmp_path.parent == boxes[0] / "tmp"
