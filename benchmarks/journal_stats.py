"""How fast ``smtpkit journal stats`` counts a busy day: a generated journal of a million lines.

The journal is written in the exact format ``smtpkit.journal.Journal`` writes (its encoder,
its hour files), spread over the last 24 hours, with the mix of a server on the open
internet: most sessions deliver a message (many over STARTTLS), others probe for relays and
users, sit on blocklists, are refused at the final dot by SPF, DMARC or the scanner, hit the
connection limits, or submit mail that the queue runner then delivers; sessions overlap, so
their lines interleave as a server's do. Then it times ``journalstats.compute`` over it
(best of 3) and the command itself end to end (a new process, table and ``--json``), and
checks that the counts are those written.

    python -m benchmarks.journal_stats [--lines 1000000] [--dir DIR] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

if not __package__:  # run as `python benchmarks/journal_stats.py`: make smtpkit importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from smtpkit.journal import hour_name  # noqa: E402
from smtpkit.journalstats import compute  # noqa: E402
from smtpkit.protocol import replies  # noqa: E402

__all__ = ["Expected", "generate", "main"]

CONCURRENT = 16  # sessions open at once: their lines interleave
SEED = 25

Record = dict[str, Any]


@dataclass
class Expected:
    """What the generated journal holds, to check the counts against."""

    lines: int = 0
    connections: int = 0
    accepted: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    recipients_refused: Counter[str] = field(default_factory=Counter)


class _Kinds:
    """The sessions of the mix: each yields its records (event and fields) in order."""

    def __init__(self, rng: random.Random, expected: Expected) -> None:
        self.rng = rng
        self.expected = expected
        self.peers = [f"198.51.{i // 250}.{i % 250 + 1}" for i in range(6000)]
        self.domains = [f"sender{i}.example" for i in range(2000)]
        self.count = 0

    def peer(self) -> str:
        # A few busy clients and a long tail, as on a real server.
        return self.peers[min(int(self.rng.paretovariate(1.2)) - 1, len(self.peers) - 1)]

    def sender(self) -> str:
        return f"user{self.rng.randrange(50)}@{self.rng.choice(self.domains)}"

    def session(self) -> tuple[str, str, Iterator[Record]]:
        self.count += 1
        sid = f"{self.count:08x}{self.rng.getrandbits(32):08x}"
        peer = f"{self.peer()}:{self.rng.randrange(1024, 65536)}"
        roll = self.rng.random()
        if roll < 0.05:
            self.expected.connections += 1
            self.expected.refused["limits"] += 1
            ip = peer.rpartition(":")[0]
            return "-", ip, iter([{"event": "refused", "code": 421, "reason": "max_connections"}])
        self.expected.connections += 1
        if roll < 0.50:
            records = self.delivers(sid)
        elif roll < 0.65:
            records = self.probes()
        elif roll < 0.75:
            records = self.blocklisted()
        elif roll < 0.83:
            records = self.refused_at_the_dot()
        elif roll < 0.93:
            records = self.submits(sid)
        else:
            records = self.junk()
        return sid, peer, records

    def _hello(self, tls: bool) -> Iterator[Record]:
        yield {"event": "connect"}
        yield {"event": "helo", "name": "mail.example.net", "extended": True}
        if tls:
            yield {"event": "tls", "version": "TLSv1.3", "cipher": "TLS_AES_256_GCM_SHA384"}
            yield {"event": "helo", "name": "mail.example.net", "extended": True}

    def delivers(self, sid: str) -> Iterator[Record]:
        yield from self._hello(self.rng.random() < 0.7)
        for n in range(1, 1 + (2 if self.rng.random() < 0.2 else 1)):
            sender = self.sender()
            yield {"event": "mail", "sender": sender, "size": None, "code": 250}
            to = [f"user{i}@bench.test" for i in range(self.rng.choice((1, 1, 1, 2, 3)))]
            for address in to:
                yield {"event": "rcpt", "to": address, "sender": sender, "code": 250}
            self.expected.accepted += 1
            yield {
                "event": "stored",
                "id": f"{sid}.{n}",
                "size": self.rng.randrange(2000, 200000),
                "sender": sender,
                "to": to,
                "files": [f"{a}/new/1764{self.rng.getrandbits(40):x}.{sid}.{n}" for a in to],
                "auth": {
                    "spf": "pass",
                    "dkim": [f"pass {sender.partition('@')[2]}"],
                    "dmarc": "pass",
                },
            }
        yield {"event": "close", "reason": "quit", "messages": 1}

    def probes(self) -> Iterator[Record]:
        yield from self._hello(False)
        sender = self.sender()
        yield {"event": "mail", "sender": sender, "size": None, "code": 250}
        for _ in range(self.rng.choice((1, 2, 3))):
            if self.rng.random() < 0.5:
                reply, reason, to = replies.RELAY_DENIED, "relay", "someone@elsewhere.example"
            else:
                reply, reason, to = replies.UNKNOWN_USER, "unknown_user", "nobody@bench.test"
            self.expected.recipients_refused[reason] += 1
            yield {
                "event": "rcpt",
                "to": to,
                "sender": sender,
                "code": reply.code,
                "text": str(reply),
            }
        yield {"event": "close", "reason": "peer closed", "messages": 0}

    def blocklisted(self) -> Iterator[Record]:
        self.expected.refused["blocklisted"] += 1
        yield {"event": "connect", "blocklisted": "zen.example", "code": 554}
        yield {"event": "close", "reason": "554 5.7.1 Service unavailable", "messages": 0}

    def refused_at_the_dot(self) -> Iterator[Record]:
        yield from self._hello(self.rng.random() < 0.5)
        sender = self.sender()
        yield {"event": "mail", "sender": sender, "size": None, "code": 250}
        yield {"event": "rcpt", "to": "user1@bench.test", "sender": sender, "code": 250}
        roll = self.rng.random()
        domain = sender.partition("@")[2]
        if roll < 0.3:
            self.expected.refused["spf"] += 1
            yield {"event": "rejected", "size": 3000, "code": 550, "auth": {"spf": "fail"}}
            reply = replies.spf_failed(domain, "198.51.0.1")
        elif roll < 0.5:
            self.expected.refused["dmarc"] += 1
            auth = {"spf": "pass", "dkim": [], "dmarc": "fail"}
            yield {"event": "rejected", "size": 3000, "code": 550, "auth": auth}
            reply = replies.dmarc_rejected(domain)
        elif roll < 0.8:
            self.expected.refused["spam"] += 1
            yield {"event": "rejected", "size": 3000, "code": 550, "scan": "reject", "score": 17.2}
            reply = replies.spam_rejected(None)
        else:
            self.expected.refused["bare_lf"] += 1
            yield {"event": "rejected", "size": 3000, "code": 550}
            reply = replies.BARE_NEWLINE_IN_DATA
        yield {"event": "reply", "code": reply.code, "text": str(reply)}
        yield {"event": "close", "reason": "quit", "messages": 1}

    def submits(self, sid: str) -> Iterator[Record]:
        implicit = self.rng.random() < 0.5
        if implicit:
            yield {"event": "connect", "tls": "TLSv1.3", "cipher": "TLS_AES_256_GCM_SHA384"}
            yield {"event": "helo", "name": "laptop", "extended": True}
        else:
            yield from self._hello(True)
        user = f"user{self.rng.randrange(20)}@bench.test"
        yield {"event": "auth", "mechanism": "PLAIN", "user": user, "result": "ok"}
        yield {"event": "mail", "sender": user, "size": 4000, "code": 250}
        to = ["friend@far.example", "other@far.example"]
        for address in to:
            yield {"event": "rcpt", "to": address, "sender": user, "code": 250}
        self.expected.accepted += 1
        files = [f"queue/{sid}.1"]
        yield {
            "event": "stored",
            "id": f"{sid}.1",
            "size": 4000,
            "sender": user,
            "to": to,
            "files": files,
        }
        yield {"event": "close", "reason": "quit", "messages": 1}
        # The queue runner's lines, under the entry's id.
        yield {"event": "queued", "id": f"{sid}.1", "sender": user, "recipients": 2}
        yield {"event": "attempt", "id": f"{sid}.1", "recipients": 2, "tls": "TLSv1.3"}
        for address in to:
            reply = "250 2.0.0 Ok: queued as 4Xyz"
            yield {"event": "delivered", "id": f"{sid}.1", "to": address, "reply": reply}

    def junk(self) -> Iterator[Record]:
        yield {"event": "connect"}
        bad = replies.BAD_SEQUENCE
        yield {"event": "reply", "code": bad.code, "text": str(bad)}
        yield {"event": "repeated", "reply": str(bad), "count": 3}
        yield {"event": "timeout", "state": "COMMAND"}
        yield {"event": "close", "reason": "421 4.4.2 Timeout exceeded", "messages": 0}


def generate(directory: Path, lines: int, end: datetime) -> Expected:
    """About ``lines`` journal lines over the 24 hours before ``end``, in hour files."""
    rng = random.Random(SEED)
    expected = Expected()
    kinds = _Kinds(rng, expected)
    encode = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode  # as Journal's
    start = end - timedelta(hours=24)
    step = 86400 / lines
    open_sessions: list[tuple[str, str, Iterator[Record]]] = []
    hour = ""
    out: list[str] = []
    fh = None
    directory.mkdir(parents=True, exist_ok=True)
    for n in range(lines):
        while len(open_sessions) < CONCURRENT:
            open_sessions.append(kinds.session())
        index = rng.randrange(len(open_sessions))
        sid, peer, records = open_sessions[index]
        record = next(records, None)
        if record is None:
            open_sessions[index] = kinds.session()
            sid, peer, records = open_sessions[index]
            record = next(records)
        when = start + timedelta(seconds=n * step)
        name = hour_name(when)
        if name != hour:
            if fh is not None:
                fh.write("\n".join(out) + "\n")
                fh.close()
                out.clear()
            fh = (directory / name).open("a", encoding="ascii")
            hour = name
        stamp = when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"
        line = {"time": stamp, "session": sid, "peer": peer, **record}
        out.append(encode(line))
        expected.lines += 1
    if fh is not None:
        fh.write("\n".join(out) + "\n")
        fh.close()
    # Sessions cut off at the end: their first lines are written, the rest never comes.
    return expected


def _check(directory: Path, start: datetime, end: datetime, expected: Expected) -> list[str]:
    """What differs between the counts and what was written (nothing, one hopes). Sessions
    still open at the end were written only in part: their counts may fall short."""
    stats = compute(directory, start, end)
    total = stats.total()
    problems = []
    slack = CONCURRENT * 3
    if stats.lines != expected.lines:
        problems.append(f"lines {stats.lines} != {expected.lines}")
    for name, got, want in (
        ("connections", total.connections, expected.connections),
        ("accepted", total.accepted, expected.accepted),
    ):
        if not want - slack <= got <= want:
            problems.append(f"{name} {got}, written {want}")
    for reason, want in expected.refused.items():
        if not want - slack <= total.refused[reason] <= want:
            problems.append(f"refused {reason} {total.refused[reason]}, written {want}")
    for reason, want in expected.recipients_refused.items():
        got = total.recipients_refused[reason]
        if not want - slack <= got <= want:
            problems.append(f"recipients refused {reason} {got}, written {want}")
    return problems


def _size(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.iterdir())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", type=Path, help="work here and keep it (default: a temp folder)")
    args = parser.parse_args(argv)
    top = args.dir if args.dir is not None else Path(tempfile.mkdtemp(prefix="journal-stats-"))
    try:
        data = top / "d"
        subprocess.run(
            [sys.executable, "-m", "smtpkit", "init", str(data), "--domain", "bench.test"],
            check=True,
            capture_output=True,
        )
        journal = data / "journal"
        end = datetime.now(UTC).replace(microsecond=0)
        began = time.perf_counter()
        expected = generate(journal, args.lines, end)
        written = time.perf_counter() - began
        files = sum(1 for _ in journal.iterdir())
        mib = _size(journal) / 1024 / 1024
        print(
            f"journal: {expected.lines:,} lines in {files} hour files ({mib:.1f} MiB), "
            f"written in {written:.1f} s"
        )
        start = end - timedelta(hours=25)
        times = []
        for _ in range(args.rounds):
            began = time.perf_counter()
            compute(journal, start, end)
            times.append(time.perf_counter() - began)
        best = min(times)
        print(
            f"journalstats.compute: best {best:.2f} s of {args.rounds} "
            f"({', '.join(f'{t:.2f}' for t in times)}): {expected.lines / best:,.0f} lines/s"
        )
        config = data / "smtpkit.toml"
        for extra in ([], ["--json"]):
            command = [sys.executable, "-m", "smtpkit", "-c", str(config), "journal", "stats"]
            command += ["--since", "25h", *extra]
            began = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            took = time.perf_counter() - began
            shown = " ".join(["smtpkit journal stats --since 25h", *extra])
            print(f"{shown} (a new process, end to end): {took:.2f} s")
        problems = _check(journal, start, end, expected)
        if problems:
            print("counts differ from what was written: " + "; ".join(problems))
            return 1
        print("counts: as written (connections, accepted, every reason)")
        return 0
    finally:
        if args.dir is None:
            shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
