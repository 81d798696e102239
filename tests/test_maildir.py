"""Durable delivery: the spool, the Maildir store and the group commit. Files appear in new/
only complete; errors leave nothing behind."""

from __future__ import annotations

import mailbox
import os
import threading
from pathlib import Path

import pytest

from smtpkit.delivery.commit import DeliveryWorker, commit, commit_batch
from smtpkit.delivery.spool import Spool, SpoolPool, clean_spools
from smtpkit.delivery.targets import Delivery, Mailbox
from smtpkit.users import UserStore
from tests.conftest import unavailable


@pytest.fixture
def boxes(tmp_path: Path) -> list[Mailbox]:
    (tmp_path / "users").mkdir()
    store = UserStore(tmp_path / "users", ("example.org",))
    return [Mailbox(store.add("a@example.org")), Mailbox(store.add("b@example.org"))]


@pytest.fixture
def pool(tmp_path: Path) -> SpoolPool:
    made = SpoolPool(tmp_path / "users" / ".spool" / "0", size=3)
    made.folder.mkdir(parents=True)
    return made


def new_files(box: Mailbox) -> list[Path]:
    return sorted((box.path / "new").iterdir())


def test_commit_moves_the_file_into_new(boxes: list[Mailbox], pool: SpoolPool) -> None:
    spool = Spool(b"Return-Path: <>\r\n", pool)
    spool.write(b"Subject: s\r\n\r\nbody\r\n")
    delivery = commit(spool, [boxes[0]])
    assert delivery.error is None
    (stored,) = new_files(boxes[0])
    assert stored.read_bytes() == b"Return-Path: <>\r\nSubject: s\r\n\r\nbody\r\n"
    assert delivery.stored == [f"a@example.org/new/{stored.name}"]
    assert list(pool.folder.iterdir()) == []  # the spool file itself was moved
    assert [m["Subject"] for m in mailbox.Maildir(boxes[0].path, create=False)] == ["s"]


def test_several_mailboxes_share_one_inode(boxes: list[Mailbox], pool: SpoolPool) -> None:
    spool = Spool(b"", pool)
    spool.write(b"Subject: both\r\n\r\n")
    assert commit(spool, boxes).error is None
    (first,), (second,) = new_files(boxes[0]), new_files(boxes[1])
    assert first.stat().st_ino == second.stat().st_ino
    assert first.stat().st_nlink == 2
    assert list(pool.folder.iterdir()) == []


def test_a_spool_that_cannot_be_created_fails_at_once(tmp_path: Path) -> None:
    spool = Spool(b"x", SpoolPool(tmp_path / "gone"))
    assert spool.error is not None and not spool.error.disk_full
    assert str(spool.error).startswith(f"cannot create {tmp_path / 'gone'}/")
    assert commit(spool, []).error is spool.error


def test_mailbox_removed_before_commit_leaves_nothing(
    boxes: list[Mailbox], pool: SpoolPool
) -> None:
    spool = Spool(b"Subject: x\r\n\r\n", pool)
    (boxes[1].path / "new").rmdir()
    delivery = commit(spool, boxes)
    assert delivery.error is not None and delivery.stored == []
    assert list(delivery.errors) == [boxes[1]]  # which target failed
    assert "users/b@example.org/new" in str(delivery.error)  # the path, in full
    assert new_files(boxes[0]) == []
    assert list(pool.folder.iterdir()) == []


def test_write_error_is_recorded_not_raised(boxes: list[Mailbox], pool: SpoolPool) -> None:
    spool = Spool(b"x", pool)
    os.dup2(os.open(os.devnull, os.O_RDONLY), spool.fd)  # writes now fail with EBADF
    spool.write(b"more")
    assert spool.error is not None and "cannot write" in str(spool.error)
    assert list(pool.folder.iterdir()) == []


def test_disk_full_is_reported_as_such(boxes: list[Mailbox], pool: SpoolPool) -> None:
    if not Path("/dev/full").exists():
        unavailable("/dev/full is not available")
    spool = Spool(b"x", pool)
    os.dup2(os.open("/dev/full", os.O_WRONLY), spool.fd)
    spool.write(b"y" * 10)
    assert spool.error is not None and spool.error.disk_full


def test_batch_keeps_order_and_isolates_failures(
    boxes: list[Mailbox], pool: SpoolPool, tmp_path: Path
) -> None:
    nowhere = Mailbox(tmp_path / "users" / "nobody@example.org")
    deliveries = [
        Delivery(Spool(b"1", pool), (boxes[0],)),
        Delivery(Spool(b"2", pool), (nowhere,)),
        Delivery(Spool(b"3", pool), (boxes[1],)),
    ]
    commit_batch(deliveries)
    assert [d.error is None for d in deliveries] == [True, False, True]
    assert [p.read_bytes() for p in new_files(boxes[0]) + new_files(boxes[1])] == [b"1", b"3"]
    assert list(pool.folder.iterdir()) == []


def test_clean_spools_removes_leftovers(boxes: list[Mailbox], pool: SpoolPool) -> None:
    (boxes[0].path / "tmp" / "half").write_bytes(b"partial")
    (pool.folder / "half2").write_bytes(b"partial")
    users = boxes[0].path.parent
    assert clean_spools(users, [(boxes[0].path.name, "tmp"), (".spool", "0")]) == 2
    assert list((boxes[0].path / "tmp").iterdir()) == []
    assert list(pool.folder.iterdir()) == []


def test_worker_completes_through_call_soon(boxes: list[Mailbox], pool: SpoolPool) -> None:
    done = threading.Event()
    results: list[Delivery] = []
    calls = []

    def call_soon(fn):  # type: ignore[no-untyped-def]
        calls.append(fn)
        fn()

    worker = DeliveryWorker(call_soon, pool=pool)
    for i in range(20):
        delivery = Delivery(Spool(str(i).encode(), pool), (boxes[i % 2],))
        worker.submit(delivery, lambda d: (results.append(d), len(results) == 20 and done.set()))
    assert done.wait(10)
    worker.close()
    assert all(d.error is None for d in results)
    stored = [p.read_bytes() for box in boxes for p in new_files(box)]
    assert sorted(stored) == sorted(str(i).encode() for i in range(20))
    assert 1 <= len(calls) <= 20  # batches: one wake-up covers many messages
    assert list(pool.folder.iterdir()) == []  # closing drains the pool


def test_pool_files_are_made_ahead_and_renamed_into_new(
    boxes: list[Mailbox], pool: SpoolPool
) -> None:
    pool.fill()
    assert len(list(pool.folder.iterdir())) == 3
    spool = Spool(b"Subject: pooled\r\n\r\n", pool)
    assert spool.path.parent == pool.folder
    assert commit(spool, [boxes[1]]).error is None
    assert [p.read_bytes() for p in new_files(boxes[1])] == [b"Subject: pooled\r\n\r\n"]
    assert len(list(pool.folder.iterdir())) == 2
    pool.drain()
    assert list(pool.folder.iterdir()) == []
    # An empty pool: the file is made in the pool folder on the spot.
    made = Spool(b"x", pool)
    assert made.error is None and made.path.parent == pool.folder
    made.abort()
