"""``smtpkit queue list|show|flush|delete|bounce`` on a real data folder: with no server
running (the command changes the files itself) and with one running (the queue runner does
it on request, at once)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import MailServer, smtpkit
from tests.dnsserver import DnsServer, run_nsd
from tests.e2e.test_outbound import (
    SENDER,
    WORLD_ZONE,
    journal,
    queue_entries,
    reports,
    send,
    sending_server,
    status_blocks,
    wait_journal,
    wait_until,
)
from tests.scripted_smtp import ScriptedServer


@pytest.fixture(scope="module")
def world_dns() -> Iterator[DnsServer]:
    with run_nsd({"world.test": WORLD_ZONE}) as server:
        yield server


@pytest.fixture
def held(tmp_path: Path, world_dns: DnsServer) -> Iterator[tuple[MailServer, str]]:
    """A server that keeps its queue (``[queue] hold``), one message in it, then stopped:
    no queue runner holds the queue."""
    server = sending_server(tmp_path, world_dns, "[queue]\nhold = true\n")
    server.start()
    send(server, ["bob@two.world.test", "carol@two.world.test"])
    (entry,) = queue_entries(server)
    assert server.stop() == 0
    yield server, str(entry["id"])


def test_show(held: tuple[MailServer, str]) -> None:
    server, entry_id = held
    out = smtpkit("queue", "show", entry_id, config=server.config).stdout
    lines = out.splitlines()
    assert lines[0] == f"id:        {entry_id}"
    assert lines[1] == f"sender:    <{SENDER}>"
    assert "recipient: <bob@two.world.test>" in lines
    assert "  state:        queued" in lines
    assert "  attempts:     0" in lines
    data = json.loads(smtpkit("queue", "show", entry_id, "--json", config=server.config).stdout)
    assert data["id"] == entry_id
    assert [r["address"] for r in data["recipients"]] == [
        "bob@two.world.test",
        "carol@two.world.test",
    ]
    assert data["next_attempt"] == data["recipients"][0]["next_attempt"]


def test_show_unknown_id_fails(held: tuple[MailServer, str]) -> None:
    server, _ = held
    for bad in ("nope", "../users", ".lock"):
        result = smtpkit("queue", "show", bad, config=server.config, check=False)
        assert result.returncode == 1
        assert result.stderr.strip().startswith(f"Error: no message {bad!r} in the queue")


def test_delete_without_a_server(held: tuple[MailServer, str]) -> None:
    server, entry_id = held
    result = smtpkit("queue", "delete", entry_id, config=server.config)
    assert result.stdout == f"Deleted {entry_id} from the queue.\n"
    assert queue_entries(server) == []
    assert sorted(p.name for p in (server.directory / "queue").iterdir()) == [".lock"]
    assert not reports(server)
    (line,) = journal(server, "deleted")
    assert line["to"] == ["bob@two.world.test", "carol@two.world.test"]


def test_bounce_without_a_server(held: tuple[MailServer, str]) -> None:
    server, entry_id = held
    result = smtpkit("queue", "bounce", entry_id, config=server.config)
    assert result.stdout == f"Returned {entry_id} to its sender.\n"
    assert queue_entries(server) == []
    (report,) = reports(server)
    assert report["Subject"] == "Undelivered Mail Returned to Sender"
    _, bob, carol = status_blocks(report)
    assert bob["Final-Recipient"] == "rfc822; bob@two.world.test"
    assert bob["Action"] == carol["Action"] == "failed"
    assert bob["Status"] == "5.0.0"


def test_flush_without_a_server_marks_due(held: tuple[MailServer, str]) -> None:
    server, entry_id = held
    result = smtpkit("queue", "flush", entry_id, config=server.config)
    assert result.stdout == (
        f"Marked message {entry_id} to be tried now; no server is running to try it.\n"
    )


def test_flush_with_a_running_server_retries_now(tmp_path: Path, world_dns: DnsServer) -> None:
    # Retries an hour apart: only the flush can make the second attempt happen now.
    server = sending_server(tmp_path, world_dns, "[queue]\nmin_retry = 3600\nmax_retry = 3600\n")
    server.start()
    send(server, ["gina@implicit.world.test"])  # nothing listens on 127.0.0.4 yet

    def deferred() -> bool:
        entries = queue_entries(server)
        return bool(entries) and entries[0]["recipients"][0]["state"] == "deferred"  # type: ignore[index]

    wait_until("a deferral", deferred)
    with ScriptedServer("127.0.0.4", 25) as host:
        result = smtpkit("queue", "flush", config=server.config)
        assert result.stdout == "The server is trying every waiting message now.\n"
        (tx,) = host.wait_for(1)
        assert tx.recipients == ["gina@implicit.world.test"]
        wait_until("an empty queue", lambda: not queue_entries(server))


def test_delete_with_a_running_server(tmp_path: Path, world_dns: DnsServer) -> None:
    server = sending_server(tmp_path, world_dns, "[queue]\nmin_retry = 3600\nmax_retry = 3600\n")
    server.start()
    send(server, ["gina@implicit.world.test"])
    wait_until("a deferral", lambda: journal(server, "deferred"))
    (entry,) = queue_entries(server)
    smtpkit("queue", "delete", str(entry["id"]), config=server.config)
    # The runner removed it before the command returned.
    assert queue_entries(server) == []
    assert wait_journal(server, "deleted")[0]["id"] == entry["id"]
