"""Crash tests: ``smtpkit serve`` killed with SIGKILL under load, and restarted.

The promise under test (SECURITY.md, promise 1): a message that got ``250`` is in ``new/``
exactly once and byte for byte; no partial file ever appears in ``new/``; leftovers in the spool
folders (each mailbox's ``tmp/`` and the pool of ready spool files, ``users/.spool``) are
removed at start-up, and the journal's ``start`` event counts them (``tmp_cleaned``).

Load: Postfix's ``smtp-source`` (20 sessions) to one mailbox as background pressure, and
Python clients (``faultclient``) whose messages carry a unique id and a SHA-256 of their
body, to one or two mailboxes, recording every id that got ``250``.

A crash kills the whole server at once: the supervisor and its worker processes. SIGKILL
ends the processes, not the machine, so this proves the order of the steps (data durable,
rename into ``new/``, then the reply) against a process crash; a power cut (lost page cache)
is beyond what a test on a live kernel can show. The other tests kill one worker under load
(the supervisor replaces it), or the supervisor alone (its workers must not live on).

Set ``SMTPKIT_CRASH_SEED`` to replay a run's kill intervals and messages.
"""

from __future__ import annotations

import collections
import hashlib
import os
import random
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import MailServer, make_server, need_program
from tests.e2e.faultclient import (
    SmtpClient,
    alive,
    descendants,
    journal_records,
    kill_tree,
    listeners,
    make_body,
    make_message,
    parse_stored,
    port_closed,
    spool_files,
)

SEED = int(os.environ.get("SMTPKIT_CRASH_SEED", "5321"))
KILLS = 5
CLIENTS = 6
WORKERS = 2  # the supervisor and its workers all die in a crash
ALICE, BOB, LOAD = "alice@example.org", "bob@example.org", "load@example.org"
USERS = (ALICE, BOB, LOAD)
RECIPIENT_SETS = ([ALICE], [BOB], [ALICE, BOB])  # two: one file, a hard link in the other
# 20 smtp-source sessions, the Python clients and banner probes all come from 127.0.0.1.
EXTRA_CONFIG = "\n[limits]\nmax_connections_per_ip = 200\n"


@dataclass
class Ledger:
    """What the clients sent and what the server answered, shared by the client threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    sent: dict[str, tuple[tuple[str, ...], str]] = field(default_factory=dict)  # recipients, sha
    acked: set[str] = field(default_factory=set)
    refused: dict[str, str] = field(default_factory=dict)  # id -> a final reply other than 250
    broken_sessions: int = 0


def message_size(rng: random.Random) -> int:
    r = rng.random()
    if r < 0.70:
        return rng.randint(100, 4_000)
    if r < 0.95:
        return rng.randint(4_000, 64_000)
    return rng.randint(64_000, 400_000)  # long enough for a kill to land in the middle


def client(number: int, server: MailServer, ledger: Ledger, stop: threading.Event) -> None:
    rng = random.Random(f"{SEED}:client:{number}")
    seq = 0
    while not stop.is_set():
        try:
            with SmtpClient(server.host, server.port, timeout=10) as smtp:
                if smtp.greeting.code != 220 or smtp.command("EHLO fault.test").code != 250:
                    raise ConnectionError("no greeting")
                for _ in range(rng.randint(1, 10)):
                    if stop.is_set():
                        break
                    seq += 1
                    msg_id = f"c{number}-{seq}"
                    recipients = rng.choice(RECIPIENT_SETS)
                    message = make_message(msg_id, recipients, make_body(rng, message_size(rng)))
                    with ledger.lock:
                        ledger.sent[msg_id] = (
                            tuple(recipients),
                            hashlib.sha256(message).hexdigest(),
                        )
                    reply = smtp.send_mail("fault@remote.test", recipients, message)
                    with ledger.lock:
                        if reply.code == 250:
                            ledger.acked.add(msg_id)
                        else:
                            ledger.refused[msg_id] = str(reply)
                    if reply.code == 421:
                        raise ConnectionError("closed by the server")
                smtp.command("QUIT")
        except OSError:  # ConnectionError included: the server died under us, or is down
            with ledger.lock:
                ledger.broken_sessions += 1
            stop.wait(0.02)


def start_server(server: MailServer) -> int:
    """Start (or restart on the same port) ``smtpkit serve``; retries a failed bind briefly.
    Returns the number of attempts."""
    deadline = time.monotonic() + 15
    attempt = 0
    while True:
        attempt += 1
        try:
            server.start("--quiet", "--workers", str(WORKERS))
            return attempt
        except RuntimeError:
            if server.process is not None and server.process.poll() is None:
                server.process.kill()
                server.process.wait()
            server.process = None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def start_events(server: MailServer, total: int) -> list[dict[str, object]]:
    """The journal's ``start`` events once there are ``total`` (each worker writes one, after
    its loop's first turn: up to a second after the banner), waiting at most 5 s."""
    deadline = time.monotonic() + 5
    while True:
        records, _ = journal_records(server.directory)
        events = [r for r in records if r.get("event") == "start"]
        if len(events) >= total or time.monotonic() > deadline:
            assert len(events) == total, f"expected {total} journal start events: {events}"
            return events
        time.sleep(0.05)


def cleaned(events: list[dict[str, object]]) -> int:
    return sum(int(str(r["tmp_cleaned"])) for r in events)


def messages_in_spool(server: MailServer) -> list[Path]:
    """Spool files holding message data (the pool's ready files are empty), and any file in
    a mailbox's tmp/."""
    return [
        p for p in spool_files(server.directory) if p.parent.name == "tmp" or p.stat().st_size > 0
    ]


def smtp_source_body(path: Path) -> bytes:
    head, sep, body = path.read_bytes().partition(b"\r\n\r\n")
    assert sep and b"\r\nMessage-Id: <" in head, f"{path.name}: no smtp-source header block"
    return body


class Checker:
    """Verifies every file in ``new/`` once; remembers where each test id was found."""

    def __init__(self, server: MailServer, ledger: Ledger, reference: bytes | None) -> None:
        self.server = server
        self.ledger = ledger
        self.reference = reference  # the body of a complete smtp-source message
        self.seen: set[Path] = set()
        self.found: dict[str, list[str]] = collections.defaultdict(list)  # id -> mailboxes
        self.load_files = 0

    def check_new(self) -> None:
        trace = re.compile(rb"\AReturn-Path: <load@remote\.test>\r\nReceived: ")
        for user in USERS:
            for path in self.server.new_files(user):
                if path in self.seen:
                    continue
                self.seen.add(path)
                data = path.read_bytes()
                if user == LOAD:
                    assert self.reference is not None, f"{path}: unexpected"
                    assert trace.match(data), f"{path}: not an smtp-source message"
                    assert smtp_source_body(path) == self.reference, (
                        f"{path}: partial or damaged smtp-source message ({len(data)} bytes)"
                    )
                    self.load_files += 1
                    continue
                stored = parse_stored(data)
                assert stored is not None, f"{path}: partial or foreign file in new/"
                assert stored.body_ok, f"{path}: body of {stored.msg_id} fails its checksum"
                with self.ledger.lock:
                    sent = self.ledger.sent.get(stored.msg_id)
                assert sent is not None, f"{path}: {stored.msg_id} was never sent"
                recipients, digest = sent
                assert hashlib.sha256(stored.message).hexdigest() == digest, (
                    f"{path}: {stored.msg_id} differs from what was sent"
                )
                assert user in recipients, f"{path}: {stored.msg_id} in the wrong mailbox"
                self.found[stored.msg_id].append(user)


class Clients:
    """``CLIENTS`` threads of ``client()`` against one server, sharing one ledger."""

    def __init__(self, server: MailServer) -> None:
        self.ledger = Ledger()
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=client, args=(n, server, self.ledger, self.stop), daemon=True)
            for n in range(CLIENTS)
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=20)
            assert not thread.is_alive(), "a client thread hangs"


def outcome(checker: Checker, ledger: Ledger) -> tuple[list[str], str]:
    """The failures (acknowledged but lost, stored twice, refused yet stored) and a summary.

    Every file found was verified by the checker; no id is ever sent twice, so no message
    may be in one mailbox twice, acknowledged or not."""
    missing = [
        f"acknowledged but lost: {msg_id} in {user}"
        for msg_id in sorted(ledger.acked)
        for user in ledger.sent[msg_id][0]
        if user not in checker.found.get(msg_id, [])
    ]
    duplicated = [
        f"stored {n} times: {msg_id} in {user}"
        for msg_id, boxes in sorted(checker.found.items())
        for user, n in collections.Counter(boxes).items()
        if n > 1
    ]
    refused = [f"refused yet stored: {i}" for i in sorted(set(ledger.refused) & set(checker.found))]
    unacked_stored = set(checker.found) - ledger.acked
    # A message for two mailboxes cut by the crash between the link into one and the rename
    # into the other: unacknowledged, so the sender retries (at worst a duplicate there).
    partial = [i for i in unacked_stored if len(checker.found[i]) < len(ledger.sent[i][0])]
    intact = len(ledger.acked) - len({m.split()[-3] for m in missing})
    summary = (
        f"{len(ledger.sent)} test messages sent, {len(ledger.acked)} acknowledged with 250, "
        f"{intact} of those found intact in every mailbox; {len(unacked_stored)} "
        f"unacknowledged ones stored as well ({len(partial)} in only some of their "
        f"mailboxes); {len(ledger.refused)} refused "
        f"{dict(collections.Counter(ledger.refused.values()))}; "
        f"{ledger.broken_sessions} sessions cut or refused"
    )
    return missing + duplicated + refused, summary


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_sigkill_under_load_loses_nothing_acknowledged(tmp_path: Path) -> None:
    source = need_program("smtp-source", "postfix")
    began = time.monotonic()
    print(f"crash test seed {SEED} (set SMTPKIT_CRASH_SEED to replay)")
    rng = random.Random(SEED)
    server = make_server(tmp_path, users=USERS, extra_config=EXTRA_CONFIG)
    source_log = (tmp_path / "smtp-source.log").open("ab")

    def smtp_source(count: int, sessions: int) -> subprocess.Popen[bytes]:
        args = ["-s", str(sessions), "-m", str(count), "-l", "1024", "-f", "load@remote.test"]
        target = f"{server.host}:{server.port}"
        return subprocess.Popen(
            [source, *args, "-t", LOAD, target], stdout=source_log, stderr=source_log
        )

    clients = Clients(server)
    ledger = clients.ledger
    load: subprocess.Popen[bytes] | None = None
    kills = 0
    total_leftovers = 0
    try:
        start_server(server)
        start_events(server, WORKERS)
        # A reference smtp-source message, delivered without faults: every file it writes
        # later must end exactly like this one.
        assert smtp_source(1, 1).wait(timeout=30) == 0
        [first] = server.new_files(LOAD)
        reference = smtp_source_body(first)
        assert reference.endswith(b"XXXX\r\n") and len(reference) > 1024
        checker = Checker(server, ledger, reference)

        clients.start()
        for kill in range(1, KILLS + 1):
            load = smtp_source(100_000, 20)
            time.sleep(rng.uniform(0.3, 1.5))
            assert server.process is not None and server.process.poll() is None, (
                f"smtpkit serve died on its own before kill {kill}:\n{server.stderr()[-2000:]}"
            )
            workers = kill_tree(server.process)
            server.process = None
            assert port_closed(server.host, server.port, wait=2), (
                f"kill {kill}: something still accepts on port {server.port}:\n"
                f"{listeners(server.port)}"
            )
            kills += 1
            load.kill()
            load.wait(timeout=10)
            load = None
            if kill == KILLS:
                # The last restart is checked with no client connected.
                clients.finish()
            # Right after the crash, before any clean-up: nothing partial in new/.
            checker.check_new()
            leftovers = spool_files(server.directory)
            in_flight = messages_in_spool(server)
            total_leftovers += len(in_flight)
            attempts = start_server(server)
            new = start_events(server, WORKERS * (kill + 1))[-WORKERS:]
            assert cleaned(new) == len(leftovers), (
                f"restart {kill}: {len(leftovers)} files were left in the spool folders, "
                f"the journal's start events say tmp_cleaned={cleaned(new)}"
            )
            print(
                f"kill {kill}: server and {len(workers)} worker process(es) killed; "
                f"{len(leftovers)} spool files ({len(in_flight)} holding a message in flight) "
                "cleaned at restart "
                f"(started on attempt {attempts})"
            )

        # After the final restart: tmp/ is clean, and the server takes mail as before.
        assert [p for p in leftovers if p.exists()] == [], "leftovers not cleaned at start-up"
        assert messages_in_spool(server) == [], "tmp/ not clean after the start-up"
        with SmtpClient(server.host, server.port) as smtp:
            assert smtp.command("EHLO fault.test").code == 250
            message = make_message("final", [ALICE], b"after the last crash\r\n")
            with ledger.lock:
                ledger.sent["final"] = ((ALICE,), hashlib.sha256(message).hexdigest())
            assert smtp.send_mail("fault@remote.test", [ALICE], message).code == 250
            ledger.acked.add("final")
            smtp.command("QUIT")
        assert server.stop() == 0
        checker.check_new()
        assert spool_files(server.directory) == [], "a clean stop leaves spool files behind"
    finally:
        clients.stop.set()
        if load is not None:
            load.kill()
            load.wait()
        if server.process is not None:
            kill_tree(server.process)
            server.process = None
        source_log.close()

    failures, counts = outcome(checker, ledger)
    summary = (
        f"seed {SEED}: {kills} SIGKILLs survived in {time.monotonic() - began:.1f}s, "
        f"{total_leftovers} messages in flight cleaned from the spool folders at restarts; "
        f"{counts}; "
        f"{checker.load_files} complete smtp-source messages in new/"
    )
    print(summary)
    assert not failures, f"{failures[:20]} ({summary})"
    assert kills == KILLS and len(ledger.acked) >= 50, summary
    assert total_leftovers > 0, f"no kill caught a message in flight ({summary})"
    assert checker.load_files > 1, f"smtp-source delivered nothing: no pressure ({summary})"


def wait_for_workers(supervisor: int, count: int, gone: int = 0, timeout: float = 10) -> list[int]:
    """The supervisor's ``count`` living workers, once ``gone`` (a killed one) is not among
    them."""
    deadline = time.monotonic() + timeout
    while True:
        pids = sorted(descendants(supervisor))
        if len(pids) == count and gone not in pids:
            return pids
        assert time.monotonic() < deadline, f"expected {count} workers, found {pids}"
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_sigkill_of_each_worker_under_load_loses_nothing_acknowledged(tmp_path: Path) -> None:
    """The likelier crash with several workers: one of them dies (the OOM killer, a bug).
    The supervisor replaces it; what it acknowledged is intact; the others never stop; its
    leftovers in tmp/ are removed at the next start-up."""
    began = time.monotonic()
    rng = random.Random(f"{SEED}:workers")
    server = make_server(tmp_path, users=USERS, extra_config=EXTRA_CONFIG)
    clients = Clients(server)
    killed: list[int] = []
    try:
        server.start("--quiet", "--workers", str(WORKERS))
        assert server.process is not None
        supervisor = server.process.pid
        workers = wait_for_workers(supervisor, WORKERS)
        start_events(server, WORKERS)
        checker = Checker(server, clients.ledger, None)
        clients.start()
        for victim in list(workers):
            time.sleep(rng.uniform(0.5, 1.5))
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)
            workers = wait_for_workers(supervisor, WORKERS, gone=victim)
            checker.check_new()
        time.sleep(0.5)
        acked_before = len(clients.ledger.acked)
        clients.finish()
        assert server.process.poll() is None, "the supervisor died with its worker"
        assert server.stop() == 0
        checker.check_new()
        # What is left in tmp/ after a clean stop can only be the killed workers' messages
        # in flight: their file names carry the writer's pid (Maildir unique names).
        leftovers = spool_files(server.directory)
        in_flight = messages_in_spool(server)
        assert all(any(f"P{pid}Q" in p.name for pid in killed) for p in leftovers), leftovers
        server.start("--quiet", "--workers", str(WORKERS))
        new = start_events(server, 2 * WORKERS + len(killed))[-WORKERS:]
        assert [p for p in leftovers if p.exists()] == []
        assert messages_in_spool(server) == []
        assert cleaned(new) == len(leftovers), new
        assert server.stop() == 0
    finally:
        clients.stop.set()
        if server.process is not None:
            kill_tree(server.process)
            server.process = None
    failures, counts = outcome(checker, clients.ledger)
    summary = (
        f"seed {SEED}: workers {killed} SIGKILLed and replaced under load in "
        f"{time.monotonic() - began:.1f}s; {counts}; {len(leftovers)} of their spool files "
        f"({len(in_flight)} holding messages in flight) left until the next start-up"
    )
    print(summary)
    assert not failures, f"{failures[:20]} ({summary})"
    assert acked_before >= 20, f"too little load ({summary})"


@pytest.mark.timeout(60)
def test_workers_exit_when_their_supervisor_is_killed(tmp_path: Path) -> None:
    """A crash of the supervisor alone must not leave orphan workers: unsupervised, they
    would keep serving with nobody to replace or stop them, and hold the port so that
    ``smtpkit serve`` cannot be started again."""
    server = make_server(tmp_path, users=(ALICE,))
    server.start("--quiet", "--workers", "2")
    assert server.process is not None
    workers = wait_for_workers(server.process.pid, 2)
    try:
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(timeout=10)
        server.process = None
        deadline = time.monotonic() + 5
        while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        orphans = [pid for pid in workers if alive(pid)]
        assert not orphans, (
            f"workers {orphans} outlive their SIGKILLed supervisor by 5 s and still serve "
            f"port {server.port}: port closed = {port_closed(server.host, server.port)}"
        )
        assert port_closed(server.host, server.port)
        server.start("--quiet", "--workers", "2")
        with SmtpClient(server.host, server.port) as smtp:
            assert smtp.command("EHLO fault.test").code == 250
            message = make_message("again", [ALICE], b"after the supervisor crashed\r\n")
            assert smtp.send_mail("fault@remote.test", [ALICE], message).code == 250
        assert server.stop() == 0
    finally:
        for pid in workers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        if server.process is not None:
            kill_tree(server.process)
            server.process = None


@pytest.mark.timeout(60)
def test_a_replacement_worker_does_not_report_tmp_cleaned_again(tmp_path: Path) -> None:
    """``tmp_cleaned`` in the journal counts what the start-up removed; a worker started
    later to replace a dead one removed nothing and must not repeat the count."""
    server = make_server(tmp_path, users=(ALICE,))
    leftover = server.maildir(ALICE) / "tmp" / "1.M1P1Q1.crashed"
    leftover.write_bytes(b"Subject: never acknowledged\r\n")
    server.start("--quiet", "--workers", "2")
    assert server.process is not None
    try:
        assert not leftover.exists()
        start_events(server, 2)  # before a kill can lose one (journal lines wait for a turn)
        first = wait_for_workers(server.process.pid, 2)
        # Both slots die in turn, so the replacement of slot 0 is among them.
        for victim in first:
            os.kill(victim, signal.SIGKILL)
            wait_for_workers(server.process.pid, 2, gone=victim)
        starts = start_events(server, 4)
        assert [r["tmp_cleaned"] for r in starts[2:]] == [0, 0], (
            f"a replacement worker reports the start-up's tmp_cleaned again: {starts}"
        )
        assert cleaned(starts) == 1
        assert server.stop() == 0
    finally:
        if server.process is not None:
            kill_tree(server.process)
            server.process = None
