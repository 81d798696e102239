"""The queue runner: sends what waits in ``DIR/queue/`` to the servers of other domains.

It runs on a worker's event loop, in the one worker that holds the queue's lock
(``control.py``; another takes over within seconds if that worker dies). The queue on disk
is the only state: at start it reads every envelope, then learns of new entries and of
``smtpkit queue`` requests through inotify (and a look every minute, for anything missed).

For each due entry, its waiting recipients are grouped by destination (a domain's MX
hosts, a ``[routes]`` next hop, the ``[relay]`` smarthost, or, for local recipients, the
``[delivery] lmtp`` server), in jobs of at most ``MAX_RCPT`` recipients of one message. A
destination resolves its hosts through ``dns.py`` on a thread (never on the loop), keeps
the answer for a minute, and opens up to ``max_per_domain`` links (``link.py``; for LMTP,
``lmtp_max_connections``), ``max_connections`` in all; each link takes jobs one after the
other while the destination has some (one connection, many messages). LMTP links also stay
open for ``LMTP_IDLE`` seconds once idle, and are woken for the next message.

Each recipient's outcome goes through ``schedule.apply_outcome``: delivered, deferred
(next try with back-off), or failed (at once, or once ``max_age`` is over). The envelope is
written anew, or the entry removed once no recipient waits; reports (bounces, the delay
notice, success notices) are posted first. Files are written on a thread of their own, in
order, so that fsync never stalls the loop.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import heapq
import ipaddress
import itertools
import os
import random
import re
import selectors
import ssl
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from smtpkit.bounce import STATUS_NO_SUCH_DOMAIN, STATUS_NULL_MX, status_from_reply
from smtpkit.config import Config, LmtpServer, NextHop, RelayTls
from smtpkit.delivery.queue import (
    QUEUE_FOLDER,
    QueuedRecipient,
    QueueEntry,
    QueueError,
    read_entry,
)
from smtpkit.delivery.router import Router
from smtpkit.delivery.spool import SpoolPool
from smtpkit.delivery.syncer import SharedSyncer
from smtpkit.dns import HostProblem, MailHost, MailResolver, MailRoute, RouteKind, RouteOutcome
from smtpkit.outbound import control
from smtpkit.outbound.admin import ADMIN_BOUNCE, fail_waiting, flush_entry, journal_report
from smtpkit.outbound.inject import Sign, make_router
from smtpkit.outbound.link import Candidate, Content, Job, Link, Security, scan_message
from smtpkit.outbound.reports import Reported, send_report
from smtpkit.outbound.schedule import (
    Notice,
    Outcome,
    Result,
    apply_outcome,
    delay_notice,
    notify_allows,
)
from smtpkit.protocol.dsn import mail_params, rcpt_params
from smtpkit.protocol.replies import Reply
from smtpkit.server.inotify import names as inotify_names
from smtpkit.server.inotify import watch as inotify_watch
from smtpkit.server.loop import EventLoop, Timer

__all__ = ["MAX_RCPT", "QueueRunner"]

#: Recipients in one transaction: RFC 5321 4.5.3.1.8 has servers take at least 100.
MAX_RCPT = 100
#: Addresses tried for one destination in one attempt (Postfix tries 5 by default).
MAX_CANDIDATES = 10
LOCK_RETRY = 5.0  # seconds between tries for the lock, in the workers without it
RESCAN = 60.0  # seconds between looks at the whole queue folder
ROUTE_TTL = 60.0  # seconds a destination's resolved hosts are used again
SWEEP = 1.0
#: Seconds an LMTP connection without a job stays open for the next message.
LMTP_IDLE = 30.0
_STATUS = re.compile(r"([245])\.\d{1,3}\.\d{1,3} ")

JournalWrite = Callable[..., None]


class Tally(Protocol):
    """Where the runner counts for the server's metrics (``smtpkit.metrics.Recorder``, set
    as ``QueueRunner.tally`` by the server: outbound/ imports nothing of it)."""

    def queue_size(self, messages: int) -> None: ...

    def outbound(self, outcome: str, count: int = 1) -> None: ...


class _Untallied:
    """Counts nothing: no metrics."""

    def queue_size(self, messages: int) -> None:
        pass

    def outbound(self, outcome: str, count: int = 1) -> None:
        pass


def _domain(address: str) -> str:
    return address.rpartition("@")[2].lower()


class _Destination:
    """Where a group of recipients goes, its pending jobs and its links."""

    def __init__(
        self, key: str, kind: str, name: str, hop: NextHop | None, socket: Path | None = None
    ) -> None:
        self.key = key
        self.kind = kind  # "mx", "route", "relay", "literal" or "lmtp"
        self.name = name  # the domain, the hop's host, the address literal or the LMTP server
        self.hop = hop
        self.socket = socket  # the LMTP server's Unix socket
        self.jobs: deque[Job] = deque()
        self.links: set[Link] = set()
        self.resolving = False
        self.candidates: list[Candidate] | None = None
        self.resolved_at = 0.0


class QueueRunner:
    def __init__(
        self,
        config: Config,
        loop: EventLoop,
        write: JournalWrite,
        pool: SpoolPool,
        syncer: SharedSyncer | None = None,
        sign: Sign | None = None,
    ) -> None:
        self.config = config
        self.sign = sign  # DKIM signatures for the reports it posts
        self.tally: Tally = _Untallied()  # the server's metrics, when they are on
        self.loop = loop
        self.write = write
        self.pool = pool
        self.syncer = syncer
        self.queue_dir = config.server.directory / QUEUE_FOLDER
        self.entries: dict[str, QueueEntry] = {}
        #: Recipients of each entry in a job right now (by address).
        self.in_flight: dict[str, set[str]] = {}
        # What each entry's message holds, read at its first job (outbound/link.py).
        self._contents: dict[str, Content] = {}
        self.destinations: dict[str, _Destination] = {}
        self.links: set[Link] = set()
        self.active = False
        self.stopping = False
        self._heap: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._timer: Timer | None = None
        self._timer_when = float("inf")
        self._lock = -1
        self._watch = -1
        self._router: Router | None = None
        self._dns = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="smtpkit-dns")
        self._io = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="smtpkit-queue")
        self._pending_io = 0
        self._removing: set[str] = set()  # entries being removed (see _forget)
        self._resolver: MailResolver | None = None
        self._plain = _opportunistic_context()
        self._relay_context: ssl.SSLContext | None = None

    # --- life -------------------------------------------------------------------------------
    def reconfigure(self, config: Config, sign: Sign | None) -> None:
        """A reloaded config: routes, the smarthost, delivery limits and queue timings count
        from now on. Destinations being served keep their next hop until they are idle."""
        self.config = config
        self.sign = sign
        self._router = make_router(config) if self.active else None
        self._resolver = None
        self._relay_context = None
        for key, dest in list(self.destinations.items()):
            for link in list(dest.links):
                link.close_idle()  # the LMTP server may be another now
            if not dest.jobs and not dest.links and not dest.resolving:
                del self.destinations[key]

    def start(self) -> None:
        """Take the queue's lock when free (else try again every few seconds), then run."""
        if self.stopping:
            return
        if self._lock < 0:
            try:
                self.queue_dir.mkdir(mode=0o700, exist_ok=True)
                self._lock = control.open_lock(self.queue_dir)
            except OSError:
                self.loop.call_later(LOCK_RETRY, self.start)
                return
        if not control.try_lock(self._lock):
            self.loop.call_later(LOCK_RETRY, self.start)
            return
        self.active = True
        self._router = make_router(self.config)
        self._watch = inotify_watch(self.queue_dir)
        if self._watch >= 0:
            self.loop.register(self._watch, selectors.EVENT_READ, self._on_notify)
        self.write("queue_runner", "-", "-", queue=str(self.queue_dir), pid=os.getpid())
        self._rescan(first=True)
        self.loop.call_later(SWEEP, self._sweep)

    def stop(self) -> None:
        """Stop sending: links still open are dropped (their recipients stay queued), and
        the files of what finished are written before this returns."""
        if self.stopping:
            return
        self.stopping = True
        self.tally.queue_size(0)  # a runner taking over counts the queue from now on
        if self._timer is not None:
            self._timer.cancel()
        if self._watch >= 0:
            self.loop.unregister(self._watch)
            os.close(self._watch)
            self._watch = -1
        for link in list(self.links):
            link.abort("the server is stopping")
        self._dns.shutdown(wait=False, cancel_futures=True)
        self._io.shutdown(wait=True)
        if self._lock >= 0:
            os.close(self._lock)
            self._lock = -1

    # --- what is queued ---------------------------------------------------------------------
    def _on_notify(self, mask: int) -> None:
        names = inotify_names(self._watch)
        if names is None:
            self._rescan()
            return
        for name in names:
            if name.startswith(control.REQUEST_PREFIX):
                self._request(self.queue_dir / name)
            elif name.endswith(".env") and not name.startswith("."):
                self._discover(name[: -len(".env")])

    def _rescan(self, *, first: bool = False) -> None:
        if self.stopping:
            return
        try:
            names = os.listdir(self.queue_dir)
        except OSError:
            names = []
        for name in names:
            if name.endswith(".env") and not name.startswith("."):
                self._discover(name[: -len(".env")], quiet=first)
        for path in control.pending_requests(self.queue_dir):
            self._request(path)
        self.loop.call_later(RESCAN, self._rescan)

    def _discover(self, entry_id: str, *, quiet: bool = False) -> None:
        if entry_id in self.entries or entry_id in self._removing or self.stopping:
            return
        try:
            entry = read_entry(self.queue_dir, entry_id)
        except QueueError as exc:
            self.write("queue_error", entry_id, "-", error=str(exc))
            return
        if entry is None:
            return
        self.entries[entry_id] = entry
        self.in_flight[entry_id] = set()
        if not quiet or all(r.attempts == 0 for r in entry.recipients):
            self.write("queued", entry_id, "-", id=entry_id, sender=entry.sender,
                       to=[r.address for r in entry.waiting], size=entry.size)  # fmt: skip
        if not entry.waiting:
            self._forget(entry)
            self._io_call(entry.remove)
            self._released(entry)
            return
        self._schedule(entry)

    def _schedule(self, entry: QueueEntry) -> None:
        due = min(
            (r.next_attempt for r in entry.waiting if r.address not in self.in_flight[entry.id]),
            default=None,
        )
        if due is None:
            return
        heapq.heappush(self._heap, (due, next(self._seq), entry.id))
        self._arm()

    def _arm(self) -> None:
        if not self._heap or self.stopping:
            return
        when = self._heap[0][0]
        if self._timer is not None and self._timer_when <= when:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_when = when
        self._timer = self.loop.call_later(max(0.0, when - time.time()), self._run_due)

    def _run_due(self) -> None:
        self._timer = None
        self._timer_when = float("inf")
        now = time.time()
        while self._heap and self._heap[0][0] <= now and not self.stopping:
            _, _, entry_id = heapq.heappop(self._heap)
            entry = self.entries.get(entry_id)
            if entry is not None:
                self._dispatch(entry, now)
        self._arm()

    def _dispatch(self, entry: QueueEntry, now: float) -> None:
        """Jobs for the recipients of ``entry`` that are due and not under way."""
        busy = self.in_flight[entry.id]
        due = [r for r in entry.waiting if r.next_attempt <= now and r.address not in busy]
        groups: dict[str, list[QueuedRecipient]] = {}
        for recipient in due:
            dest = self._destination(recipient.address)
            groups.setdefault(dest.key, []).append(recipient)
        for key, recipients in groups.items():
            dest = self.destinations[key]
            for start in range(0, len(recipients), MAX_RCPT):
                part = recipients[start : start + MAX_RCPT]
                busy.update(r.address for r in part)
                dest.jobs.append(self._job(entry, part, final=dest.kind == "lmtp"))
            self._open_links(dest)
        later = [r for r in entry.waiting if r.address not in busy]
        if later:
            self._schedule(entry)

    def _job(self, entry: QueueEntry, recipients: list[QueuedRecipient], *, final: bool) -> Job:
        binary = entry.body == "BINARYMIME"
        content = self._contents.get(entry.id)
        if content is None:
            content = self._contents[entry.id] = scan_message(str(entry.path), binary=binary)
        return Job(
            entry_id=entry.id,
            sender=entry.sender,
            recipients=tuple(r.address for r in recipients),
            path=str(entry.path),
            size=entry.size,
            mail_params=_params(mail_params(entry.dsn)),
            rcpt_params={r.address: _params(rcpt_params(r.dsn)) for r in recipients},
            final=final,
            smtputf8=entry.smtputf8,
            binary=binary,
            content=content,
        )

    # --- destinations -----------------------------------------------------------------------
    def _destination(self, address: str) -> _Destination:
        domain = _domain(address)
        delivery = self.config.delivery
        hop: NextHop | None
        socket: Path | None = None
        if domain.startswith("[") and domain.endswith("]"):
            literal = domain[1:-1].removeprefix("ipv6:")
            key, kind, name, hop = f"literal:{literal}", "literal", literal, NextHop(literal, 25)
        elif domain in self.config.server.domains:
            # A local recipient queued for the LMTP server (the router does that when
            # [delivery] lmtp is set). The key names the server, so that a reload pointing
            # elsewhere makes a destination of its own.
            lmtp = delivery.lmtp or LmtpServer()
            key, kind, name = f"lmtp:{lmtp}", "lmtp", str(lmtp)
            hop, socket = lmtp.hop, lmtp.socket
        elif domain in delivery.routes:
            hop = delivery.routes[domain]
            key, kind, name = f"route:{domain}", "route", hop.host
        elif self.config.relay is not None:
            hop = self.config.relay.hop
            key, kind, name = "relay", "relay", hop.host
        else:
            key, kind, name, hop = f"mx:{domain}", "mx", domain, None
        dest = self.destinations.get(key)
        if dest is None:
            dest = self.destinations[key] = _Destination(key, kind, name, hop, socket)
        return dest

    def _open_links(self, dest: _Destination) -> None:
        if self.stopping or not dest.jobs:
            return
        for link in list(dest.links):
            link.wake()  # an idle LMTP connection takes the next message
            if not dest.jobs:
                return
        if dest.candidates is not None and time.monotonic() - dest.resolved_at > ROUTE_TTL:
            dest.candidates = None
        if dest.candidates is None:
            if not dest.resolving:
                dest.resolving = True
                future = self._dns.submit(self._resolve, dest)
                future.add_done_callback(
                    lambda f: self.loop.call_soon_threadsafe(lambda: self._resolved(dest, f))
                )
            return
        delivery = self.config.delivery
        most = delivery.lmtp_max_connections if dest.kind == "lmtp" else delivery.max_per_domain
        wanted = min(len(dest.jobs), most) - len(dest.links)
        while wanted > 0:
            if len(self.links) >= delivery.max_connections:
                self._free_idle_link(dest)
                return
            self._open_link(dest)
            wanted -= 1

    def _free_idle_link(self, dest: _Destination) -> None:
        """All connections are taken: an idle one elsewhere (LMTP, kept for its next
        message) gives its place up; once closed, waiting destinations get links."""
        for link in self.links:
            if link.idle and link not in dest.links:
                link.close_idle()
                return

    def _resolve(self, dest: _Destination) -> tuple[list[Candidate], Outcome | None]:
        """On a DNS thread: the addresses to try, or the outcome for every job when there
        are none."""
        resolver = self._mail_resolver()
        if dest.kind == "literal":
            return [Candidate(dest.name, dest.name, 25)], None
        if dest.kind == "lmtp" and dest.socket is not None:
            return [Candidate("localhost", str(dest.socket), 0, unix=True)], None
        if dest.kind == "lmtp" and dest.hop is None:
            # Queued for LMTP, and then [delivery] lmtp was taken out: the mail waits for
            # it to come back (or for `smtpkit queue bounce`), never for a guess.
            text = "a local recipient queued for LMTP, but [delivery] lmtp is not set"
            return [], Outcome(Result.DEFERRED, "4.3.5", text)
        if dest.hop is not None:
            hop = dest.hop
            if _is_address(hop.host):
                return [Candidate(hop.host, hop.host, hop.port)], None
            host = resolver.lookup_host(hop.host)
            if not host.addresses:
                problem = host.problem.value if host.problem else "no address"
                text = f"next hop {hop.host} has no address ({problem})"
                return [], Outcome(Result.DEFERRED, "4.4.3", text)
            return [Candidate(host.host, a, hop.port) for a in host.addresses], None
        route = resolver.resolve(dest.name)
        outcome = _route_problem(route)
        if outcome is not None:
            return [], outcome
        return _candidates(route.usable_hosts), None

    def _mail_resolver(self) -> MailResolver:
        if self._resolver is None:
            servers = self.config.delivery.nameservers
            self._resolver = MailResolver(nameserver=list(servers) if servers else None)
        return self._resolver

    def _resolved(self, dest: _Destination, future: concurrent.futures.Future[Any]) -> None:
        dest.resolving = False
        if self.stopping:
            return
        try:
            candidates, outcome = future.result()
        except Exception as exc:  # noqa: BLE001 - a DNS failure of any kind defers
            candidates, outcome = [], Outcome(Result.DEFERRED, "4.4.3", f"DNS lookup failed: {exc}")
        if outcome is not None:
            self._settle_all(dest, outcome)
            return
        dest.candidates = candidates
        dest.resolved_at = time.monotonic()
        self._open_links(dest)

    def _open_link(self, dest: _Destination) -> None:
        assert dest.candidates is not None
        security = self._security(dest)
        if isinstance(security, Outcome):
            self._settle_all(dest, security)
            return
        delivery = self.config.delivery
        lmtp = dest.kind == "lmtp"
        link = Link(
            self.loop,
            _Owner(self, dest),
            list(dest.candidates),
            helo_name=self.config.server.hostname,
            security=security,
            connect_timeout=delivery.connect_timeout,
            reply_timeout=delivery.reply_timeout,
            # The LMTP server may well greet with this host's own name: that is no loop.
            loops_back=_never if lmtp else self._is_me,
            lmtp=lmtp,
            idle_timeout=LMTP_IDLE if lmtp else 0.0,
        )
        dest.links.add(link)
        self.links.add(link)
        link.start()

    def _is_me(self, name: str) -> bool:
        return name.lower().rstrip(".") == self.config.server.hostname.lower().rstrip(".")

    def _security(self, dest: _Destination) -> Security | Outcome:
        relay = self.config.relay
        if dest.kind == "lmtp" and dest.socket is not None:
            return Security(None, starttls=False)  # a socket on this machine
        if dest.kind != "relay" or relay is None:
            return Security(self._plain, starttls=True)
        if self._relay_context is None:
            self._relay_context = _verifying_context(relay.ca_file)
        credentials = None
        if relay.username and relay.password_file is not None:
            try:
                password = relay.password_file.read_text(encoding="utf-8").strip("\r\n")
            except OSError as exc:
                text = f"cannot read relay password_file {relay.password_file}: {exc.strerror}"
                return Outcome(Result.DEFERRED, "4.3.5", text)
            credentials = (relay.username, password)
        return Security(
            self._relay_context,
            starttls=relay.tls is RelayTls.STARTTLS,
            required=relay.tls is not RelayTls.NONE,
            implicit=relay.tls is RelayTls.IMPLICIT,
            credentials=credentials,
        )

    # --- what links report ------------------------------------------------------------------
    def _next_job(self, dest: _Destination, link: Link) -> Job | None:
        while dest.jobs and not self.stopping:
            job = dest.jobs.popleft()
            if job.entry_id in self.entries:
                self.write("attempt", job.entry_id, link.remote, id=job.entry_id,
                           to=list(job.recipients))  # fmt: skip
                return job
        return None

    def _job_finished(self, job: Job, results: list[tuple[str, Reply | None, str]]) -> None:
        outcomes = {address: _outcome(job, reply, why) for address, reply, why in results}
        self._settle(job, outcomes)

    def _link_failed(self, dest: _Destination, link: Link, reason: str, reply: Reply | None,
                     permanent: bool) -> None:  # fmt: skip
        self._drop_link(dest, link)
        others = any(not other.closed for other in dest.links)
        if others:
            return  # the links that work take the jobs
        if "loops back to myself" in reason:
            outcome = Outcome(Result.FAILED, "5.4.6", reason)
        elif dest.kind == "lmtp":
            # The LMTP server is ours: a session it refuses (greeting, LHLO) says nothing
            # about any recipient, and is the administrator's to fix. Mail waits meanwhile.
            outcome = Outcome(Result.DEFERRED, "4.3.5" if reply else "4.4.1", reason)
        elif permanent and reply is not None:
            outcome = Outcome(Result.FAILED, status_from_reply(str(reply)), reason, smtp=True)
        else:
            outcome = Outcome(Result.DEFERRED, "4.4.1", reason)
        dest.candidates = None  # look the hosts up again next time
        self._settle_all(dest, outcome)

    def _drop_link(self, dest: _Destination, link: Link) -> None:
        dest.links.discard(link)
        self.links.discard(link)

    def _link_closed(self, dest: _Destination, link: Link) -> None:
        self._drop_link(dest, link)
        self._open_links(dest)
        # A connection slot is free: another destination may be waiting for one.
        for other in self.destinations.values():
            if other.jobs and not other.links and other is not dest:
                self._open_links(other)

    def _settle_all(self, dest: _Destination, outcome: Outcome) -> None:
        while dest.jobs:
            job = dest.jobs.popleft()
            self._settle(job, dict.fromkeys(job.recipients, outcome))

    # --- outcomes ---------------------------------------------------------------------------
    def _settle(self, job: Job, outcomes: dict[str, Outcome]) -> None:
        entry = self.entries.get(job.entry_id)
        if entry is None:
            return  # deleted or bounced meanwhile
        busy = self.in_flight[entry.id]
        now = time.time()
        queue = self.config.queue
        notices: dict[Notice, list[QueuedRecipient]] = {}
        diagnostics: dict[str, str] = {}
        by_address = {r.address: r for r in entry.recipients}
        for address, outcome in outcomes.items():
            busy.discard(address)
            recipient = by_address.get(address)
            if recipient is None or not recipient.waiting:
                continue
            notice = apply_outcome(entry, recipient, outcome, now, queue)
            self._journal_outcome(job, entry, recipient, outcome)
            if notice is Notice.DELIVERED and not job.final:
                notice = None  # the next hop offered DSN: reporting is its business now
            if notice is not None:
                notices.setdefault(notice, []).append(dataclasses.replace(recipient))
                diagnostics[address] = outcome.text
        delayed = delay_notice(entry, now, queue) if not busy else []
        if delayed:
            notices[Notice.DELAYED] = [dataclasses.replace(r) for r in delayed]
        reports = [(n.value, rs) for n, rs in notices.items()]
        retry_until = entry.arrived + queue.max_age
        done = not entry.waiting and not busy
        snapshot = entry.copy()
        if done:
            self._forget(entry)
        else:
            self._schedule(entry)

        def files() -> list[Reported]:
            out = [
                send_report(
                    self.config,
                    self._router_(),
                    self.pool,
                    snapshot,
                    rs,
                    action,
                    diagnostics=diagnostics,
                    retry_until=retry_until,
                    syncer=self.syncer,
                    sign=self.sign,
                )  # fmt: skip
                for action, rs in reports
                if snapshot.sender
            ]
            if done:
                snapshot.remove()
            else:
                snapshot.save()
            return out

        def after(result: list[Reported]) -> None:
            for reported in result:
                journal_report(self.write, snapshot, reported)
            if reports and not snapshot.sender:
                for action, rs in reports:
                    self.write("report_dropped", snapshot.id, "-", id=snapshot.id,
                               action=action, to=[r.address for r in rs],
                               reason="the sender is <>: a report itself")  # fmt: skip

        self._io_call(files, after)
        if done:
            self._released(entry)

    def _journal_outcome(
        self, job: Job, entry: QueueEntry, recipient: QueuedRecipient, outcome: Outcome
    ) -> None:
        fields: dict[str, Any] = {"id": entry.id, "to": recipient.address, "status": outcome.status}
        remote = job.peer or "-"
        if outcome.result in (Result.DELIVERED, Result.RELAYED):
            self.write("delivered", entry.id, remote, **fields, tls=job.tls or False,
                       reply=outcome.text, relayed=outcome.result is Result.RELAYED)  # fmt: skip
            self.tally.outbound("delivered")
        elif recipient.state == "failed":
            self.write("bounced", entry.id, remote, **fields, reason=recipient.last_error)
            self.tally.outbound("bounced")
        else:
            self.write("deferred", entry.id, remote, **fields, reason=outcome.text,
                       next_attempt=_iso(recipient.next_attempt),
                       attempts=recipient.attempts)  # fmt: skip
            self.tally.outbound("deferred")

    def _router_(self) -> Router:
        assert self._router is not None
        return self._router

    def _forget(self, entry: QueueEntry) -> None:
        """Drop a finished entry; its files go on the file thread. Until they are gone, an
        inotify event still in flight for one of its saves must not bring it back."""
        self.entries.pop(entry.id, None)
        self.in_flight.pop(entry.id, None)
        self._contents.pop(entry.id, None)
        self._removing.add(entry.id)

    def _released(self, entry: QueueEntry) -> None:
        """Queued after the removal of ``entry``'s files: runs once they are gone."""
        self._io_call(lambda: None, lambda _: self._removing.discard(entry.id))

    # --- requests from `smtpkit queue` ------------------------------------------------------
    def _request(self, path: Path) -> None:
        request = control.read_request(path)
        if request is None:
            self._io_call(lambda: _unlink(path))
            return
        if request.entry_id is None:
            targets = list(self.entries.values())
        else:
            self._discover(request.entry_id, quiet=True)
            found = self.entries.get(request.entry_id)
            targets = [found] if found is not None else []
        now = time.time()
        for entry in targets:
            if request.operation == "flush":
                if flush_entry(entry, now):
                    self._io_call(entry.copy().save)
                    self._schedule(entry)
                self.write("flushed", entry.id, "-", id=entry.id)
            elif request.operation == "delete":
                self._forget(entry)
                self._io_call(entry.remove)
                self._released(entry)
                self.write("deleted", entry.id, "-", id=entry.id, sender=entry.sender,
                           to=[r.address for r in entry.waiting])  # fmt: skip
            elif request.operation == "bounce":
                self._admin_bounce(entry)
        # The request file goes last: the command waits for it, so when it is gone the
        # files say what was done.
        self._io_call(lambda: _unlink(path))

    def _admin_bounce(self, entry: QueueEntry) -> None:
        failed = fail_waiting(entry, *ADMIN_BOUNCE)
        self._forget(entry)
        self.write("bounced", entry.id, "-", id=entry.id, sender=entry.sender,
                   to=[r.address for r in failed], reason=ADMIN_BOUNCE[1])  # fmt: skip
        self.tally.outbound("bounced", len(failed))
        wanted = [r for r in failed if notify_allows(r, Notice.FAILED)]

        def files() -> list[Reported]:
            out = []
            if wanted and entry.sender:
                out.append(send_report(self.config, self._router_(), self.pool, entry, wanted,
                                       "failed", syncer=self.syncer, sign=self.sign))  # fmt: skip
            entry.remove()
            return out

        def after(result: list[Reported]) -> None:
            for reported in result:
                journal_report(self.write, entry, reported)

        self._io_call(files, after)
        self._released(entry)

    # --- files, on their thread -------------------------------------------------------------
    def _io_call(self, work: Callable[[], Any], after: Callable[[Any], None] | None = None) -> None:
        self._pending_io += 1

        def run() -> None:
            try:
                result = work()
                error = None
            except Exception as exc:  # noqa: BLE001 - reported in the journal
                result, error = None, exc

            def back() -> None:
                self._pending_io -= 1
                if error is not None:
                    self.write("queue_error", "-", "-", error=f"{type(error).__name__}: {error}")
                elif after is not None:
                    after(result)

            self.loop.call_soon_threadsafe(back)

        try:
            self._io.submit(run)
        except RuntimeError:  # shut down: do it here
            run()

    def _sweep(self) -> None:
        if self.stopping:
            return
        self.tally.queue_size(len(self.entries))
        now = time.monotonic()
        for link in list(self.links):
            link.check_deadline(now)
        self.loop.call_later(SWEEP, self._sweep)


class _Owner:
    """What a link reports, to the runner, for one destination."""

    def __init__(self, runner: QueueRunner, dest: _Destination) -> None:
        self.runner = runner
        self.dest = dest

    def ready(self, link: Link) -> Job | None:
        return self.runner._next_job(self.dest, link)

    def finished(self, link: Link, job: Job, results: list[tuple[str, Reply | None, str]]) -> None:
        self.runner._job_finished(job, results)

    def failed(self, link: Link, reason: str, reply: Reply | None, permanent: bool) -> None:
        self.runner._link_failed(self.dest, link, reason, reply, permanent)

    def closed(self, link: Link) -> None:
        self.runner._link_closed(self.dest, link)


# --- helpers ------------------------------------------------------------------------------
def _params(items: list[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for item in items:
        key, sep, value = item.partition("=")
        out[key] = value if sep else None
    return out


def _outcome(job: Job, reply: Reply | None, why: str) -> Outcome:
    remote = job.remote or None
    if reply is None:
        match = _STATUS.match(why)
        if match is not None and match.group(1) == "5":
            return Outcome(Result.FAILED, why.split(" ", 1)[0], why.split(" ", 1)[1], remote)
        return Outcome(Result.DEFERRED, "4.4.2", why or "the connection was lost", remote)
    text = str(reply)
    status = status_from_reply(text)
    if 200 <= reply.code < 300:
        # LMTP's 250 is final delivery; elsewhere it is "delivered" only when the next hop
        # offered DSN and so reports on from there (RFC 3461 4.1).
        result = Result.DELIVERED if job.dsn_offered or job.final else Result.RELAYED
        return Outcome(result, status, text, remote, smtp=True)
    if 400 <= reply.code < 500:
        return Outcome(Result.DEFERRED, status, text, remote, smtp=True)
    return Outcome(Result.FAILED, status, text, remote, smtp=True)


def _route_problem(route: MailRoute) -> Outcome | None:
    """The outcome for every recipient of a domain whose route gives no host to try."""
    outcome = route.outcome
    if outcome is RouteOutcome.OK:
        return None
    domain = route.domain
    if outcome is RouteOutcome.DNS_FAILURE:
        if route.kind in (RouteKind.SERVFAIL, RouteKind.TIMEOUT):
            what = "timed out" if route.kind is RouteKind.TIMEOUT else "failed (SERVFAIL)"
            return Outcome(Result.DEFERRED, "4.4.3", f"DNS lookup for {domain} {what}")
        # The MX records came, the address lookups of their hosts failed.
        late = any(h.problem is HostProblem.TIMEOUT for h in route.hosts)
        what = "timed out" if late else "failed (SERVFAIL)"
        text = f"DNS lookup for the mail hosts of {domain} {what}"
        return Outcome(Result.DEFERRED, "4.4.3", text)
    if route.kind is RouteKind.NULL:
        return Outcome(
            Result.FAILED, STATUS_NULL_MX, f"{domain} has a null MX: it accepts no mail (RFC 7505)"
        )
    if route.kind is RouteKind.NXDOMAIN:
        return Outcome(Result.FAILED, STATUS_NO_SUCH_DOMAIN, f"the domain {domain} does not exist")
    return Outcome(Result.FAILED, "5.4.4", f"{domain} has no mail host with an address")


def _candidates(hosts: tuple[MailHost, ...]) -> list[Candidate]:
    """RFC 5321 5.1: hosts by preference, at random among equals; each host's addresses."""
    ordered: list[MailHost] = []
    for _, group in itertools.groupby(hosts, key=lambda h: h.preference):
        same = list(group)
        random.shuffle(same)
        ordered += same
    out = [Candidate(h.host, a, 25) for h in ordered for a in h.addresses]
    return out[:MAX_CANDIDATES]


def _never(name: str) -> bool:
    return False


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _opportunistic_context() -> ssl.SSLContext:
    """STARTTLS to an MX host (RFC 7435 opportunistic security): encrypt whatever the
    certificate, since the alternative is the clear; TLS 1.2 or newer."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _verifying_context(ca_file: Path | None) -> ssl.SSLContext:
    """TLS to the smarthost: its certificate must verify for its name (system CAs, or
    ``ca_file``), since a password goes through it."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _iso(when: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


def _unlink(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
