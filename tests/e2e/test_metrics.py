"""``[metrics] listen``: a real ``smtpkit serve --workers 2`` scraped over HTTP; the counts
are exact across both workers, a dead worker's open connections stop counting, and with
no ``[metrics]`` nothing more listens."""

from __future__ import annotations

import os
import signal
import smtplib
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import MailServer, free_port, make_server

SIZE_LIMIT = 20_000
MESSAGE = "Subject: counted\r\n\r\nbody\r\n"


def worker_pids(master: int) -> list[int]:
    out = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(master)], capture_output=True, text=True, check=False
    ).stdout
    return sorted(int(p) for p in out.split())


def wait_for(what: str, check: Callable[[], bool], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def scrape(port: int) -> dict[str, float]:
    """Every sample of the endpoint, as ``name{label="value"}`` -> value."""
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as answer:
        assert answer.headers["Content-Type"].startswith("text/plain")
        text = answer.read().decode()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    return samples


def metrics_server(tmp_path: Path) -> tuple[MailServer, int]:
    port = free_port()
    extra = f"\n[limits]\nmax_message_size = {SIZE_LIMIT}\n"
    extra += f'\n[metrics]\nlisten = "127.0.0.1:{port}"\n'
    return make_server(tmp_path, extra_config=extra), port


@contextmanager
def only(server: MailServer, sessions: int, serving: int, others: list[int]) -> Iterator[None]:
    """Every worker but ``serving`` stopped (SIGSTOP): new connections go to that one. Only
    once the ``sessions`` so far are journaled to their end: a worker stopped while it
    holds the journal's lock would hold up the others."""

    def settled() -> bool:
        return len(events(server, "connect")) == len(events(server, "close")) == sessions

    wait_for("the journal", settled)
    for pid in others:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in others:
            os.kill(pid, signal.SIGCONT)


def send(server: MailServer, to: str, body: str = MESSAGE) -> None:
    with smtplib.SMTP(server.host, server.port, timeout=10) as smtp:
        smtp.sendmail("sender@remote.test", [to], body)


def events(server: MailServer, name: str) -> list[dict[str, object]]:
    return [r for r in server.journal() if r["event"] == name]


def stored_sizes(server: MailServer) -> list[int]:
    return [int(str(record["size"])) for record in events(server, "stored")]


def accepted_by(folder: Path, pid: int) -> float:
    """Messages one worker counted, from its own file."""
    files = [str(folder / f"counter_{pid}.db")]
    for metric in MultiProcessCollector.merge(files):  # type: ignore[no-untyped-call]
        if metric.name == "smtpkit_messages_accepted":
            return sum(s.value for s in metric.samples if s.name.endswith("_total"))
    return 0.0


@pytest.mark.timeout(90)
def test_counts_are_exact_across_two_workers(tmp_path: Path) -> None:
    server, port = metrics_server(tmp_path)
    server.start("--workers", "2", "--quiet")
    assert server.process is not None
    master = server.process.pid
    wait_for("two workers", lambda: len(events(server, "start")) == 2)
    first, second = worker_pids(master)
    try:
        per_worker = 3
        sessions = 1  # the start-up check's greeting
        for serving, others in ((first, [second]), (second, [first])):
            with only(server, sessions, serving, others):
                for _ in range(per_worker):
                    send(server, "alice@example.org")
            sessions += per_worker
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            send(server, "nobody@example.org")
        with pytest.raises(smtplib.SMTPSenderRefused) as too_big:
            send(server, "bob@example.org", MESSAGE + "x" * SIZE_LIMIT)
        assert too_big.value.smtp_code == 552
        sent = 2 * per_worker
        wait_for("the journal", lambda: len(stored_sizes(server)) == sent)
        folder = server.directory / ".metrics"
        assert accepted_by(folder, first) == per_worker
        assert accepted_by(folder, second) == per_worker

        wait_for("every connection closed", lambda: scrape(port)["smtpkit_connections_open"] == 0)
        got = scrape(port)
        assert got["smtpkit_messages_accepted_total"] == sent
        assert got["smtpkit_recipients_accepted_total"] == sent
        assert got["smtpkit_accepted_bytes_total"] == sum(stored_sizes(server))
        assert got["smtpkit_delivery_seconds_count"] == sent
        assert got['smtpkit_delivery_seconds_bucket{le="+Inf"}'] == sent
        assert 0 < got["smtpkit_delivery_seconds_sum"] < 10 * sent
        refused = {
            reason: got[f'smtpkit_messages_refused_total{{reason="{reason}"}}']
            for reason in ("size", "unknown_user", "relay", "policy", "checks", "error")
        }
        assert refused == {
            "size": 1, "unknown_user": 1, "relay": 0, "policy": 0, "checks": 0, "error": 0
        }  # fmt: skip
        # The messages' sessions, the two refused, and the start-up check's greeting.
        assert got['smtpkit_connections_total{outcome="accepted"}'] == sent + 3
        assert got['smtpkit_connections_total{outcome="refused_limit"}'] == 0
        assert got['smtpkit_tls_sessions_total{version="TLSv1.3"}'] == 0
        assert got["smtpkit_auth_failures_total"] == 0
        assert got["smtpkit_queue_messages"] == 0
        assert got['smtpkit_outbound_deliveries_total{outcome="delivered"}'] == 0
        assert got["smtpkit_journal_write_errors_total"] == 0
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10)
        assert missing.value.code == 404
        # The endpoint is the supervisor's: a forked worker closed its copy of the socket.
        assert port in listening_ports([master])
        assert port not in listening_ports(worker_pids(master))

        # A worker dies holding a connection: the connection stops counting, the messages
        # it had counted stay counted.
        with only(server, sessions + 2, first, [second]):
            held = socket.create_connection((server.host, server.port), timeout=10)
            assert held.recv(512).startswith(b"220 ")
        wait_for("the held connection", lambda: scrape(port)["smtpkit_connections_open"] == 1)
        os.kill(first, signal.SIGKILL)
        wait_for("a new worker", lambda: len(set(worker_pids(master)) - {first, second}) == 1)
        wait_for("the dead worker's gauge", lambda: scrape(port)["smtpkit_connections_open"] == 0)
        held.close()
        assert scrape(port)["smtpkit_messages_accepted_total"] == sent
    finally:
        assert server.stop() == 0


def listening_ports(pids: list[int]) -> set[int]:
    """The TCP ports these processes listen on (from /proc: no ss or netstat needed)."""
    inodes = set()
    for pid in pids:
        fds = Path(f"/proc/{pid}/fd")
        for fd in fds.iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


@pytest.mark.timeout(60)
def test_metrics_are_off_by_default(tmp_path: Path) -> None:
    server = make_server(tmp_path)
    server.start("--workers", "2", "--quiet")
    assert server.process is not None
    master = server.process.pid
    try:
        wait_for("two workers", lambda: len(worker_pids(master)) == 2)
        send(server, "alice@example.org")
        assert listening_ports([master, *worker_pids(master)]) == {server.port}
        assert not (server.directory / ".metrics").exists()
    finally:
        assert server.stop() == 0


def test_each_hook_counts_its_series(tmp_path: Path) -> None:
    """The recorder's hooks against the series they feed, in a process of their own:
    prometheus_client must see PROMETHEUS_MULTIPROC_DIR before its first import."""
    script = textwrap.dedent(
        """
        import time
        from prometheus_client.core import CollectorRegistry
        from prometheus_client.exposition import generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector
        from smtpkit import metrics
        from smtpkit.protocol import replies

        metrics.record.auth_failed()  # off: counts nothing
        metrics.enable()
        record = metrics.record
        record.connection_opened(); record.connection_opened(); record.connection_closed()
        record.connection("blocklisted")
        record.refused(replies.RELAY_DENIED); record.refused(replies.TOO_MANY_RECIPIENTS)
        record.refused(replies.MESSAGE_TOO_BIG); record.refused_for("checks")
        record.refused(replies.STORAGE_FULL)
        record.stored(1000, 3, time.monotonic() - 0.2)
        record.tls("TLSv1.3"); record.tls("TLSv1.2"); record.tls("TLSv1.3")
        record.auth_failed()
        record.queue_size(7)
        record.outbound("deferred"); record.outbound("bounced", 4)
        record.journal_error()
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        print(generate_latest(registry).decode())
        """
    )
    environment = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=environment, timeout=60
    )
    assert result.returncode == 0, result.stderr
    got = {}
    for family in text_string_to_metric_families(result.stdout):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            got[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    expected = {
        "smtpkit_connections_open": 1,
        'smtpkit_connections_total{outcome="blocklisted"}': 1,
        'smtpkit_connections_total{outcome="accepted"}': 0,
        'smtpkit_messages_refused_total{reason="relay"}': 1,
        'smtpkit_messages_refused_total{reason="policy"}': 1,
        'smtpkit_messages_refused_total{reason="size"}': 1,
        'smtpkit_messages_refused_total{reason="checks"}': 1,
        'smtpkit_messages_refused_total{reason="error"}': 1,
        'smtpkit_messages_refused_total{reason="unknown_user"}': 0,
        "smtpkit_messages_accepted_total": 1,
        "smtpkit_accepted_bytes_total": 1000,
        "smtpkit_recipients_accepted_total": 3,
        "smtpkit_delivery_seconds_count": 1,
        'smtpkit_delivery_seconds_bucket{le="0.1"}': 0,
        'smtpkit_delivery_seconds_bucket{le="0.25"}': 1,
        'smtpkit_tls_sessions_total{version="TLSv1.3"}': 2,
        'smtpkit_tls_sessions_total{version="TLSv1.2"}': 1,
        "smtpkit_auth_failures_total": 1,
        "smtpkit_queue_messages": 7,
        'smtpkit_outbound_deliveries_total{outcome="deferred"}': 1,
        'smtpkit_outbound_deliveries_total{outcome="bounced"}': 4,
        'smtpkit_outbound_deliveries_total{outcome="delivered"}': 0,
        "smtpkit_journal_write_errors_total": 1,
    }
    assert {key: got.get(key) for key in expected} == expected
