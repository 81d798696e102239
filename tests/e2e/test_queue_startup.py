"""A real ``smtpkit serve`` started on a queue that a crash left behind: what was never
acknowledged is removed before the first worker starts, every complete entry stays queued."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from smtpkit.delivery.queue import ENVELOPE_SUFFIX
from tests.conftest import MailServer, make_server, smtpkit
from tests.e2e.test_outbound import wait_until
from tests.test_queue_clean import BODY, KEPT, REWRITTEN, complete_names, stage_leftovers


def starts(server: MailServer) -> list[dict[str, Any]]:
    """The journal's start lines, one per worker."""
    return [r for r in server.journal() if r["event"] == "start"]


@pytest.mark.timeout(60)
def test_serve_removes_half_written_entries_and_keeps_complete_ones(tmp_path: Path) -> None:
    # [queue] hold: the kept entries stay where they are, nothing tries to send them.
    server = make_server(tmp_path, extra_config="\n[queue]\nhold = true\n")
    folder = server.directory / "queue"
    folder.mkdir(mode=0o700, exist_ok=True)
    doomed = stage_leftovers(folder)
    envelopes = {n: (folder / (n + ENVELOPE_SUFFIX)).read_bytes() for n in (KEPT, REWRITTEN)}
    server.start("--workers", "2")
    try:
        wait_until("both workers' start lines", lambda: len(starts(server)) == 2)
        # Worker 0 reports what start-up removed (a new data folder has no spool leftovers).
        assert sorted(r["tmp_cleaned"] for r in starts(server)) == [0, len(doomed)]
        assert sorted(os.listdir(folder)) == complete_names()
        for name, envelope in envelopes.items():
            assert (folder / name).read_bytes() == BODY
            assert (folder / (name + ENVELOPE_SUFFIX)).read_bytes() == envelope
        listed = smtpkit("queue", "list", "--json", config=server.config).stdout.splitlines()
        assert sorted(json.loads(line)["id"] for line in listed) == sorted([KEPT, REWRITTEN])
    finally:
        assert server.stop() == 0
