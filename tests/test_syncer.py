"""The shared syncfs: one call serves every process whose writes it covers, never one that
started before those writes."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path

from smtpkit.delivery.syncer import SharedSyncer


def test_a_sync_already_running_does_not_cover_later_writes(tmp_path: Path) -> None:
    """Another worker holds the lock, its sync started before our writes: when it ends we
    must still run one of our own."""
    syncer = SharedSyncer()
    syncer.open_lock(tmp_path)
    holder = os.open(tmp_path / ".commit-lock", os.O_RDWR)
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the other worker: starts sync number 1 and holds the lock
        try:
            fcntl.lockf(holder, fcntl.LOCK_EX)
            syncer._cells[0] = 1  # started
            os.write(ready_w, b"x")
            os.read(go_r, 1)
            syncer._cells[1] = 1  # done
            fcntl.lockf(holder, fcntl.LOCK_UN)
        finally:
            os._exit(0)
    assert os.read(ready_r, 1) == b"x"
    calls: list[int] = []
    fd = os.open(tmp_path, os.O_RDONLY)
    waiter = threading.Thread(target=syncer.sync, args=(fd, calls.append))
    waiter.start()  # notes "1 started", waits on the lock
    os.write(go_w, b"x")
    waiter.join(10)
    os.waitpid(pid, 0)
    os.close(fd)
    assert calls == [fd]
    assert (syncer.calls, syncer.shared) == (1, 0)
    assert (syncer._cells[0], syncer._cells[1]) == (2, 2)


def test_workers_share_syncs_and_each_waits_for_one_that_covers_it(tmp_path: Path) -> None:
    """Two processes, 200 requests each, a slow syncfs (2 ms): every request returns after a
    sync that started after it was made, and far fewer syncs run than were asked for."""
    syncer = SharedSyncer()
    syncer.open_lock(tmp_path)
    log_r, log_w = os.pipe()

    def worker(name: bytes) -> None:
        fd = os.open(tmp_path, os.O_RDONLY)
        for _ in range(200):
            noted = syncer._cells[0]
            syncer.sync(fd, lambda _: time.sleep(0.002))
            covered = syncer._cells[1] > noted
            os.write(log_w, name if covered else b"!")
        (tmp_path / f"{name.decode()}.calls").write_text(str(syncer.calls))

    pids = []
    for name in (b"a", b"b"):
        pid = os.fork()
        if pid == 0:
            try:
                worker(name)
            finally:
                os._exit(0)
        pids.append(pid)
    for pid in pids:
        os.waitpid(pid, 0)
    os.close(log_w)
    log = b""
    while chunk := os.read(log_r, 65536):
        log += chunk
    assert b"!" not in log  # no request returned before a sync that covers it
    assert sorted(log) == sorted(b"a" * 200 + b"b" * 200)
    calls = sum(int((tmp_path / f"{name}.calls").read_text()) for name in ("a", "b"))
    print(f"\n400 requests from 2 processes: {calls} syncs")
    assert calls < 400
