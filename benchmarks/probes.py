"""The measurements beside the load: the disk's ceiling, idle connections, one big message.

- The disk probe (``diskprobe.py``) runs before and after the servers: the better of the two
  is the storage ceiling the 1 KB rows are compared with.
- ``--idle N`` holds N greeted, silent connections to smtpkit and reads its RSS.
- ``--big`` streams one message past the default 10 MB limit: ``552``, nothing stored, and
  RSS flat.
"""

from __future__ import annotations

import os
import smtplib
import socket
import time
from pathlib import Path
from typing import Any

from benchmarks.common import HOST, RECIPIENT, SENDER, BenchError, mb
from benchmarks.diskprobe import probe
from benchmarks.servers import make_smtpkit, settle_rss, tree_rss_kb
from benchmarks.shapes import count_new

__all__ = ["IDLE_TARGET_MB", "big_check", "idle_check", "run_probe"]

IDLE_TARGET_MB = 150.0


def run_probe(base: Path, seconds: float, report: dict[str, Any], when: str) -> None:
    """Disk probe before and after the servers: this disk's speed drifts (a shared VM's does).

    The ratio uses the better of the two runs, the harder ceiling to be measured against.
    """
    os.sync()
    # Kept until the whole run ends (see probe): deleting them now would tax the servers.
    one, four = probe(base, 1, seconds, keep=True), probe(base, 4, seconds, keep=True)
    entry = report.setdefault("disk_probe", {"seconds": seconds})
    entry[when] = {"1_thread": round(one.per_second, 1), "4_threads": round(four.per_second, 1)}
    for key in ("1_thread", "4_threads"):
        entry[key] = max(v[key] for k, v in entry.items() if k in ("before", "after"))
    print(
        f"disk probe {when} (fsync'd 1 KB file creations/s): 1 thread "
        f"{one.per_second:,.0f}, 4 threads {four.per_second:,.0f}",
        flush=True,
    )


def idle_check(
    base: Path, connections: int, workers: int | None, open_files: int
) -> dict[str, Any]:
    """Hold ``connections`` idle sessions (greeted, then silent) and read smtpkit's RSS."""
    needed = connections + 256
    if open_files < needed:
        raise BenchError(
            f"--idle {connections} needs about {needed} open files per process, but "
            f"RLIMIT_NOFILE allows {open_files}: raise the hard limit (as root: `ulimit -Hn "
            f"{needed + 1000}`, or LimitNOFILE= in a systemd unit) or use a smaller N"
        )
    server = make_smtpkit(base / "idle", workers, max_connections=connections + 100)
    os.sync()
    server.start()
    socks: list[socket.socket] = []
    greeted = 0
    refused = 0
    try:
        before_kb = settle_rss(server, 1.0)
        began = time.monotonic()
        batch = 100
        for first in range(0, connections, batch):
            group = []
            try:
                for _ in range(min(batch, connections - first)):
                    s = socket.create_connection((HOST, server.port), timeout=30)
                    socks.append(s)
                    group.append(s)
                for s in group:
                    greeting = s.recv(512)
                    if greeting.startswith(b"220"):
                        greeted += 1
                    else:
                        refused += 1
            except OSError as exc:
                raise BenchError(
                    f"idle: connection {len(socks) + 1} of {connections} failed: {exc}"
                ) from None
            server.check_alive()
        opened_in = time.monotonic() - began
        held_kb = settle_rss(server, 3.0)
        _, processes = tree_rss_kb(server.process.pid if server.process else 0)
        server.check_alive()
    finally:
        for s in socks:
            s.close()
        code = server.stop()
    if refused or greeted != connections:
        raise BenchError(
            f"idle: {greeted} of {connections} connections greeted with 220 ({refused} refused)"
        )
    result = {
        "connections": connections,
        "greeted": greeted,
        "seconds_to_open": round(opened_in, 2),
        "rss_before_mb": mb(before_kb),
        "rss_idle_mb": mb(held_kb),
        "kb_per_connection": round((held_kb - before_kb) / connections, 2),
        "processes": processes,
        "target_mb": IDLE_TARGET_MB,
        "target_met": mb(held_kb) < IDLE_TARGET_MB,
        "exit_status": code,
    }
    if code != 0 or server.stragglers:
        raise BenchError(
            f"smtpkit exited with status {code} after the idle check, "
            f"{server.stragglers} process(es) left running"
        )
    return result


def _expect(step: str, reply: tuple[int, bytes], expected: int) -> None:
    code, text = reply
    if code != expected:
        raise BenchError(f"big: expected {expected} to {step}, got {code} {text!r}")


def big_check(base: Path, megabytes: int, workers: int | None) -> dict[str, Any]:
    """Stream one ``megabytes`` MB message against the default 10 MB limit; RSS must stay flat.

    The session is smtplib's (its reply reader too); only the content goes straight to the
    socket, in 1 MB writes, so that the client never holds the whole message.
    """
    server = make_smtpkit(base / "big", workers)
    os.sync()
    server.start()
    assert server.sampler is not None and server.maildir is not None
    line = b"X" * 78 + b"\r\n"
    chunk = line * (1024 * 1024 // len(line))
    try:
        before_kb = settle_rss(server, 1.0)
        try:
            smtp = smtplib.SMTP(HOST, server.port, local_hostname="bench.client", timeout=120)
        except (smtplib.SMTPException, OSError) as exc:
            raise BenchError(f"big: no session: {exc}") from None
        try:
            _expect("EHLO", smtp.ehlo(), 250)
            _expect("MAIL", smtp.mail(SENDER), 250)
            _expect("RCPT", smtp.rcpt(RECIPIENT), 250)
            _expect("DATA", smtp.docmd("DATA"), 354)
            assert smtp.sock is not None
            began = time.monotonic()
            try:
                for _ in range(megabytes):
                    smtp.sock.sendall(chunk)
                smtp.sock.sendall(b".\r\n")
            except OSError as exc:
                raise BenchError(f"big: the server stopped reading mid-message: {exc}") from None
            code, message = smtp.getreply()
            text = f"{code} {message.decode('ascii', 'replace')}"
            streamed_in = time.monotonic() - began
            during_kb = server.sampler.window()
            try:
                smtp.quit()
            except (smtplib.SMTPException, OSError):
                pass
        except (smtplib.SMTPException, OSError) as exc:
            raise BenchError(f"big: {exc}") from None
        finally:
            smtp.close()
        after_kb = settle_rss(server, 1.0)
        stored = count_new(server.maildir)
        left = sum(1 for _ in os.scandir(server.maildir / "tmp"))
    finally:
        code_exit = server.stop()
    sent = megabytes * len(chunk)
    result = {
        "mebibytes": round(sent / 2**20, 1),
        "reply": text,
        "reply_code": code,
        "seconds": round(streamed_in, 2),
        "rss_before_mb": mb(before_kb),
        "rss_peak_mb": mb(during_kb),
        "rss_after_mb": mb(after_kb),
        "growth_mb": mb(during_kb - before_kb),
        "stored_files": stored,
        "tmp_files_left": left,
        "exit_status": code_exit,
        "processes_left": server.stragglers,
    }
    if code != 552 or stored or left or code_exit != 0 or server.stragglers:
        raise BenchError(f"big: expected 552 and nothing stored, got {result}")
    return result
