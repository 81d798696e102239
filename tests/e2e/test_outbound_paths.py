"""Delivery paths of the queue runner that the main outbound tests leave out: reports to
remote senders and reports of reports, DNS that fails or says "no address", a peer that
stalls, the address cap per attempt, the connection limits (to MX hosts and to an LMTP
server), the journal's ``queued`` and ``attempt`` lines, and ``smtpkit queue flush ID`` /
``bounce ID`` while the server runs.

The world (zone ``paths.test`` served by NSD, behind a filtering nameserver that never
answers queries for ``slow.paths.test``; ``broken.test`` is configured in NSD but its zone
file does not parse, so NSD answers SERVFAIL for it):

=========================  ===========================================================
domain                     mail hosts
=========================  ===========================================================
two.paths.test             MX 10 mx.two (127.0.0.2): where remote senders' reports go
nullmx.paths.test          MX 0 . (RFC 7505: no mail)
noaddr.paths.test          MX 10 host.noaddr (a TXT record only), MX 20 gone.noaddr
                           (does not exist): no mail host with an address
stall.paths.test           A 127.0.0.7 (implicit MX; the peer there never greets)
down.paths.test            A 127.0.0.9 (implicit MX; a peer appears there mid-test)
busy1/2/3.paths.test       MX 10 mx.busy (127.0.0.8): one peer counting connections
many.paths.test            MX 10 h1 ... MX 40 h4, three addresses each (127.0.1.1-12)
slow.paths.test            (its queries are dropped: a DNS timeout)
slowhosts.paths.test       MX 10 mx.slow (whose address queries are dropped)
broken.test                SERVFAIL
=========================  ===========================================================

Every wait is for a condition; the peers that count connections hold each transaction at
MAIL until the test lets them go, so that the sender's connections pile up as far as its
limits allow.
"""

from __future__ import annotations

import calendar
import contextlib
import email
import email.policy
import smtplib
import socket
import threading
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.conftest import MailServer, free_port, make_server, smtpkit
from tests.dnsserver import BROKEN_TEST_ZONE, FilteringNameserver, filtering_nameserver, run_nsd
from tests.e2e.test_outbound import (
    SENDER,
    journal,
    queue_entries,
    reports,
    sending_server,
    status_blocks,
    wait_journal,
    wait_until,
)
from tests.scripted_smtp import Script, ScriptedServer

PATHS_ZONE = """\
$ORIGIN paths.test.
$TTL 60
@               IN SOA   ns hostmaster 1 3600 600 86400 60
@               IN NS    ns
ns              IN A     127.0.0.1

two             IN MX    10 mx.two
mx.two          IN A     127.0.0.2
nullmx          IN MX    0 .
noaddr          IN MX    10 host.noaddr
noaddr          IN MX    20 gone.noaddr
host.noaddr     IN TXT   "no address here"
slowhosts       IN MX    10 mx.slow
stall           IN A     127.0.0.7
down            IN A     127.0.0.9
busy1           IN MX    10 mx.busy
busy2           IN MX    10 mx.busy
busy3           IN MX    10 mx.busy
mx.busy         IN A     127.0.0.8
many            IN MX    10 h1.many
many            IN MX    20 h2.many
many            IN MX    30 h3.many
many            IN MX    40 h4.many
h1.many         IN A     127.0.1.1
h1.many         IN A     127.0.1.2
h1.many         IN A     127.0.1.3
h2.many         IN A     127.0.1.4
h2.many         IN A     127.0.1.5
h2.many         IN A     127.0.1.6
h3.many         IN A     127.0.1.7
h3.many         IN A     127.0.1.8
h3.many         IN A     127.0.1.9
h4.many         IN A     127.0.1.10
h4.many         IN A     127.0.1.11
h4.many         IN A     127.0.1.12
"""

#: Seconds a held transaction waits at most for the test to let it go.
HOLD = 20.0


@pytest.fixture(scope="module")
def paths_dns() -> Iterator[FilteringNameserver]:
    def drop(name: str, rdtype: str) -> bool:
        return name == "slow.paths.test" or name.endswith(".slow.paths.test")

    zones = {"paths.test": PATHS_ZONE, "broken.test": BROKEN_TEST_ZONE}
    with run_nsd(zones) as nsd, filtering_nameserver(nsd, drop) as nameserver:
        yield nameserver


def paths_server(
    root: Path,
    dns: FilteringNameserver,
    delivery: str = "",
    queue: str = "min_retry = 1\nmax_retry = 2",
    reply_timeout: float = 5,
) -> MailServer:
    """A sending smtpkit on 127.0.0.1, with ``delivery`` and ``queue`` settings."""
    return sending_server(
        root, dns, f"{delivery}\n\n[queue]\n{queue}\n", reply_timeout=reply_timeout
    )


def message(sender: str, recipients: list[str], subject: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    msg["Subject"] = subject
    msg.set_content("Hello.\n")
    return msg


def submit(server: MailServer, *messages: tuple[str, list[str], str]) -> None:
    """Send each (sender, recipients, subject) in one SMTP session."""
    with smtplib.SMTP(server.host, server.port, timeout=30) as client:
        for sender, recipients, subject in messages:
            client.send_message(message(sender, recipients, subject), sender, recipients)


def one(records: list[dict[str, object]], **match: object) -> dict[str, object]:
    """The only record whose fields have these values."""
    found = [r for r in records if all(r.get(k) == v for k, v in match.items())]
    assert len(found) == 1, (match, records)
    return found[0]


def epoch(text: object) -> int:
    """Seconds since the epoch of a journal or envelope time (UTC, ``...T..:..:..``)."""
    return calendar.timegm(time.strptime(str(text)[:19], "%Y-%m-%dT%H:%M:%S"))


# --- reports --------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_reports_to_remote_senders_go_through_the_queue_and_reports_of_reports_are_dropped(
    tmp_path: Path, paths_dns: FilteringNameserver
) -> None:
    # The reports' MX refuses gone@: that report, from <>, fails in its turn, and a report
    # of a report is never sent (it would go to <>, or loop between two servers).
    script = Script(rcpt=lambda a: "550 5.1.1 no such user" if a.startswith("gone@") else "250 ok")
    with ScriptedServer("127.0.0.2", 25, script) as mx:
        server = paths_server(tmp_path, paths_dns)
        server.start()
        submit(
            server,
            ("zed@two.paths.test", ["erin@nullmx.paths.test"], "from zed"),
            ("gone@two.paths.test", ["finn@nullmx.paths.test"], "from gone"),
        )
        # zed's report reached the MX of zed's domain, from the null sender.
        (tx,) = mx.wait_for(1)
        assert (tx.sender, tx.recipients) == ("", ["zed@two.paths.test"])
        report = email.message_from_bytes(tx.data, policy=email.policy.default)
        assert report["To"] == "zed@two.paths.test"
        assert report.get_content_type() == "multipart/report"
        _, rcpt = status_blocks(report)
        assert rcpt["Final-Recipient"] == "rfc822; erin@nullmx.paths.test"
        assert (rcpt["Action"], rcpt["Status"]) == ("failed", "5.1.10")
        # gone's report failed at the MX: dropped, and said so.
        (dropped,) = wait_journal(server, "report_dropped")
        wait_until("an empty queue", lambda: not queue_entries(server))

        queued = wait_journal(server, "queued", 4)
        assert len(queued) == 4  # two messages, two reports, no report of a report
        for sender, to in (("zed@two.paths.test", "erin"), ("gone@two.paths.test", "finn")):
            line = one(queued, sender=sender)
            assert line["to"] == [f"{to}@nullmx.paths.test"]
            assert line["session"] == line["id"] and line["peer"] == "-"
            assert isinstance(line["size"], int) and line["size"] > 200
        to_zed = one(queued, sender="", to=["zed@two.paths.test"])
        to_gone = one(queued, sender="", to=["gone@two.paths.test"])
        assert to_zed["id"] != to_gone["id"]

        assert dropped["id"] == dropped["session"] == to_gone["id"]
        assert dropped["action"] == "failed"
        assert dropped["to"] == ["gone@two.paths.test"]
        assert dropped["reason"] == "the sender is <>: a report itself"
        bounced = one(journal(server, "bounced"), id=to_gone["id"])
        assert (bounced["to"], bounced["status"]) == ("gone@two.paths.test", "5.1.1")
        assert bounced["reason"] == "550 5.1.1 no such user"

        # Each report was attempted once, at the MX of its recipient's domain.
        attempts = journal(server, "attempt")
        peer = "mx.two.paths.test[127.0.0.2]:25"
        for entry, to in ((to_zed, "zed"), (to_gone, "gone")):
            line = one(attempts, id=entry["id"])
            assert line["session"] == entry["id"]
            assert (line["peer"], line["to"]) == (peer, [f"{to}@two.paths.test"])
        assert len(mx.transactions) == 1  # nothing was retried or sent again
    assert reports(server) == []  # nothing for the local postmaster or sender either


# --- DNS and peers that fail ----------------------------------------------------------------


@pytest.mark.timeout(60)
def test_dns_failures_defer_hosts_without_address_fail_stalls_time_out_and_addresses_are_capped(
    tmp_path: Path, paths_dns: FilteringNameserver
) -> None:
    # Retries an hour apart: each recipient is tried once here. A greeting that never
    # comes times out after reply_timeout.
    server = paths_server(tmp_path, paths_dns, queue="min_retry = 3600\nmax_retry = 3600",
                          reply_timeout=1)  # fmt: skip
    with (
        ScriptedServer("127.0.0.7", 25, Script(stall_at="connect")) as stalled,
        ScriptedServer("127.0.1.11", 25) as eleventh,
    ):
        server.start()
        started = time.time()
        submit(
            server,
            (SENDER, ["x@broken.test", "y@slow.paths.test", "v@slowhosts.paths.test"], "dns"),
            (SENDER, ["z@noaddr.paths.test"], "no address"),
            (SENDER, ["w@stall.paths.test"], "stalled"),
            (SENDER, ["m@many.paths.test"], "many addresses"),
        )
        wait_until("five outcomes", lambda: len(journal(server, "deferred"))
                   + len(journal(server, "delivered")) >= 5)  # fmt: skip
        assert journal(server, "delivered") == []
        deferred = journal(server, "deferred")

        def waiting() -> dict[str, dict[str, object]]:
            found = {str(r["address"]): r for e in queue_entries(server)
                     for r in e["recipients"]}  # type: ignore[attr-defined]  # fmt: skip
            done = len(found) == 5 and all(r["attempts"] == 1 for r in found.values())
            return found if done else {}

        entries = wait_until("five recipients tried once", waiting)
        assert isinstance(entries, dict)
        for line in deferred:
            assert line["attempts"] == 1
            # The next try is min_retry away, and the envelope says the same.
            assert line["next_attempt"] == entries[str(line["to"])]["next_attempt"]
            assert 3600 - 2 <= epoch(line["next_attempt"]) - epoch(line["time"]) <= 3600
            assert epoch(line["time"]) >= int(started)

        # SERVFAIL and a DNS timeout for the recipient's domain: retried later, 4.4.3.
        servfail = one(deferred, to="x@broken.test")
        assert (servfail["status"], servfail["peer"]) == ("4.4.3", "-")
        assert servfail["reason"] == "DNS lookup for broken.test failed (SERVFAIL)"
        timeout = one(deferred, to="y@slow.paths.test")
        assert timeout["status"] == "4.4.3"
        assert timeout["reason"] == "DNS lookup for slow.paths.test timed out"
        # The MX record came, its host's address queries time out: the same.
        hosts = one(deferred, to="v@slowhosts.paths.test")
        assert hosts["status"] == "4.4.3"
        assert hosts["reason"] == "DNS lookup for the mail hosts of slowhosts.paths.test timed out"

        # A peer that accepts the connection and never says a word: timed out, deferred.
        stall = one(deferred, to="w@stall.paths.test")
        assert stall["status"] == "4.4.1"
        assert stall["reason"] == (
            "stall.paths.test[127.0.0.7]:25: timed out waiting for the greeting reply"
        )
        assert stalled.connections == 1

        # Twelve addresses: ten are tried (the last h4's first), the eleventh never.
        many = one(deferred, to="m@many.paths.test")
        assert many["status"] == "4.4.1"
        assert many["reason"] == "h4.many.paths.test[127.0.1.10]:25: connect: Connection refused"
        assert eleventh.connections == 0

        # MX hosts none of which has an address: failed at once, 5.4.4, with a report.
        (bounced,) = wait_journal(server, "bounced")
        assert (bounced["to"], bounced["status"]) == ("z@noaddr.paths.test", "5.4.4")
        assert bounced["reason"] == "noaddr.paths.test has no mail host with an address"
        (report,) = wait_until("the report", lambda: reports(server))  # type: ignore[misc]
        _, rcpt = status_blocks(report)
        assert rcpt["Final-Recipient"] == "rfc822; z@noaddr.paths.test"
        assert (rcpt["Action"], rcpt["Status"]) == ("failed", "5.4.4")
        assert sorted(entries) == [
            "m@many.paths.test",
            "v@slowhosts.paths.test",
            "w@stall.paths.test",
            "x@broken.test",
            "y@slow.paths.test",
        ]


# --- connection limits ----------------------------------------------------------------------


class CountingPeer:
    """An SMTP (or, with ``lmtp``, LMTP) server on ``host:port`` that counts the sessions
    open at once and keeps the highest count. Each transaction waits at MAIL until
    ``release`` is set (at most ``HOLD`` seconds). A session counts from its accept to its
    QUIT (or end): the sender may connect anew as soon as it has the 221."""

    def __init__(self, host: str, port: int, *, lmtp: bool = False) -> None:
        self.lmtp = lmtp
        self.sock = socket.create_server((host, port), backlog=64)
        self.port = self.sock.getsockname()[1]
        self.release = threading.Event()
        self.cond = threading.Condition()
        self.open = 0
        self.peak = 0
        self.sessions = 0  # accepted in all
        self.delivered: list[tuple[str, list[str]]] = []
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.sock.close()
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> CountingPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait(self, what: str, check: object, timeout: float = 30.0) -> None:
        with self.cond:
            assert self.cond.wait_for(check, timeout), f"peer: timed out waiting for {what}"  # type: ignore[arg-type]

    def new_round(self) -> None:
        """Hold transactions again; the peak and the messages count from now."""
        with self.cond:
            self.peak = self.open
            self.delivered.clear()
            self.release.clear()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self._conns.append(conn)
            with self.cond:
                self.sessions += 1
                self.open += 1
                self.peak = max(self.peak, self.open)
                self.cond.notify_all()
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        counted = True

        def leave() -> None:
            nonlocal counted
            if counted:
                counted = False
                with self.cond:
                    self.open -= 1
                    self.cond.notify_all()

        reader = conn.makefile("rb")
        sender, recipients = "", list[str]()
        try:
            conn.sendall(b"220 peer.test ESMTP\r\n")
            for raw in reader:
                line = raw.decode().rstrip("\r\n")
                verb = line.split(" ", 1)[0].upper()
                if verb in ("EHLO", "LHLO"):
                    conn.sendall(b"250-peer.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
                elif verb == "MAIL":
                    self.release.wait(HOLD)
                    sender, recipients = line[10:].partition(">")[0].lstrip("<"), []
                    conn.sendall(b"250 2.1.0 ok\r\n")
                elif verb == "RCPT":
                    recipients.append(line[8:].partition(">")[0].lstrip("<"))
                    conn.sendall(b"250 2.1.5 ok\r\n")
                elif verb == "DATA":
                    conn.sendall(b"354 go ahead\r\n")
                    for body in reader:
                        if body == b".\r\n":
                            break
                    with self.cond:
                        self.delivered.append((sender, recipients))
                        self.cond.notify_all()
                    replies = len(recipients) if self.lmtp else 1
                    conn.sendall(b"250 2.0.0 stored\r\n" * replies)
                elif verb in ("RSET", "NOOP"):
                    conn.sendall(b"250 2.0.0 ok\r\n")
                elif verb == "QUIT":
                    leave()
                    conn.sendall(b"221 2.0.0 bye\r\n")
                    return
                else:
                    conn.sendall(b"502 5.5.2 not here\r\n")
        except OSError:
            pass
        finally:
            leave()
            conn.close()


def burst(server: MailServer, peer: CountingPeer, recipients: list[str], limit: int) -> None:
    """One message to each of ``recipients``; once all are queued and ``limit`` sessions
    are open at the peer, let the transactions go; all arrive, never more than ``limit``
    sessions having been open at once."""
    before = len(journal(server, "queued"))
    submit(server, *((SENDER, [r], f"burst {i}") for i, r in enumerate(recipients)))
    wait_journal(server, "queued", before + len(recipients))
    peer.wait(f"{limit} sessions", lambda: peer.open >= limit)
    peer.release.set()
    peer.wait("every message", lambda: len(peer.delivered) >= len(recipients))
    assert sorted(r for _, rs in peer.delivered for r in rs) == sorted(recipients)
    assert peer.peak == limit


@pytest.mark.timeout(60)
def test_max_per_domain_and_max_connections_bound_the_sessions_at_a_peer(
    tmp_path: Path, paths_dns: FilteringNameserver
) -> None:
    # The sender waits for held replies as long as the peer may hold them.
    server = paths_server(tmp_path, paths_dns, "max_connections = 3\nmax_per_domain = 2",
                          reply_timeout=HOLD)  # fmt: skip
    domains = ("busy1", "busy2", "busy3")
    with CountingPeer("127.0.0.8", 25) as peer:
        server.start()
        # First one message to each domain, not held: the runner knows their hosts from
        # now on, so that in the bursts it opens connections as soon as mail comes.
        peer.release.set()
        submit(server, *((SENDER, [f"w@{d}.paths.test"], "warm") for d in domains))
        peer.wait("three messages", lambda: len(peer.delivered) == 3)
        wait_until("an empty queue", lambda: not queue_entries(server))
        peer.wait("the sessions over", lambda: peer.open == 0)
        peer.new_round()
        # Six messages to one domain: two sessions (max_per_domain), each taking message
        # after message.
        burst(server, peer, [f"u{i}@busy1.paths.test" for i in range(6)], 2)
        wait_until("an empty queue", lambda: not queue_entries(server))
        peer.wait("the sessions over", lambda: peer.open == 0)
        peer.new_round()
        # Four each to three domains (one host): each domain would have two sessions, but
        # there are three in all (max_connections).
        burst(server, peer, [f"v{i}@{d}.paths.test" for d in domains for i in range(4)], 3)
        wait_until("an empty queue", lambda: not queue_entries(server))
        attempts = journal(server, "attempt")
        assert len(attempts) == 3 + 6 + 12
        assert {a["peer"] for a in attempts} == {"mx.busy.paths.test[127.0.0.8]:25"}


@pytest.mark.timeout(60)
def test_lmtp_max_connections_bounds_the_sessions_at_the_lmtp_server(tmp_path: Path) -> None:
    with CountingPeer("127.0.0.1", free_port(), lmtp=True) as peer:
        config = f"""
[delivery]
lmtp = "127.0.0.1:{peer.port}"
lmtp_max_connections = 2
connect_timeout = 2
reply_timeout = {HOLD:g}
"""
        server = make_server(tmp_path, users=(SENDER, "bob@example.org"), extra_config=config)
        server.start()
        recipients = [SENDER, "bob@example.org"] * 4
        burst(server, peer, recipients, 2)
        wait_until("an empty queue", lambda: not queue_entries(server))
        # The connections stay open for the next messages: a new burst goes through them.
        peer.new_round()
        burst(server, peer, [SENDER] * 4, 2)
        wait_until("an empty queue", lambda: not queue_entries(server))
        assert peer.sessions == 2
        assert server.new_files(SENDER) == []  # all of it went to the LMTP server


# --- smtpkit queue while the server runs ----------------------------------------------------


@pytest.mark.timeout(60)
def test_queue_flush_id_and_bounce_id_with_a_running_server(
    tmp_path: Path, paths_dns: FilteringNameserver
) -> None:
    # Retries an hour apart: only the commands move these messages now.
    server = paths_server(tmp_path, paths_dns, queue="min_retry = 3600\nmax_retry = 3600")
    server.start()
    submit(server, (SENDER, ["a@down.paths.test"], "first"),
           (SENDER, ["b@down.paths.test"], "second"))  # fmt: skip
    wait_journal(server, "deferred", 2)

    def both_deferred() -> dict[str, str]:
        entries = queue_entries(server)
        states = {e["recipients"][0]["address"]: e["recipients"][0]["state"] for e in entries}  # type: ignore[index]
        if states != {"a@down.paths.test": "deferred", "b@down.paths.test": "deferred"}:
            return {}
        return {str(e["recipients"][0]["address"]): str(e["id"]) for e in entries}  # type: ignore[index]

    ids = wait_until("both deferred", both_deferred)
    assert isinstance(ids, dict)
    first, second = ids["a@down.paths.test"], ids["b@down.paths.test"]
    with ScriptedServer("127.0.0.9", 25) as host:
        result = smtpkit("queue", "flush", first, config=server.config)
        assert result.returncode == 0
        assert result.stdout == f"The server is trying message {first} now.\n"
        (tx,) = host.wait_for(1)
        assert tx.recipients == ["a@down.paths.test"]
        wait_until("the first gone", lambda: [str(e["id"]) for e in queue_entries(server)]
                   == [second])  # fmt: skip
        assert one(wait_journal(server, "flushed"), id=first)["session"] == first

        result = smtpkit("queue", "bounce", second, config=server.config)
        assert result.returncode == 0
        assert result.stdout == f"Returned {second} to its sender.\n"
        assert queue_entries(server) == []  # done before the command returned
        (report,) = wait_until("the report", lambda: reports(server))  # type: ignore[misc]
        _, rcpt = status_blocks(report)
        assert rcpt["Final-Recipient"] == "rfc822; b@down.paths.test"
        assert (rcpt["Action"], rcpt["Status"]) == ("failed", "5.0.0")
        bounced = one(wait_journal(server, "bounced"), id=second)
        assert bounced["to"] == ["b@down.paths.test"]
        assert host.connections == 1  # the bounced message was never sent

        # An id the queue does not hold: exit 1, and nothing is asked of the server.
        for command in ("flush", "bounce"):
            gone = smtpkit("queue", command, second, config=server.config, check=False)
            assert gone.returncode == 1
            assert gone.stderr.startswith(f"Error: no message {second!r} in the queue")
