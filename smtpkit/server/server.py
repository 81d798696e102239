"""The receiving server: one event loop, its listeners, its connections, durable delivery.

``Server.run()`` serves until SIGTERM or SIGINT, then drains: listeners close at once, idle
sessions get ``421 4.3.2``, sessions in the middle of a message get ``GRACE`` seconds to
finish it (and their answer), and whatever remains is closed with 421. Queued deliveries are
completed before ``run()`` returns.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import os
import resource
import signal
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from smtpkit import metrics
from smtpkit.addresses import host_port
from smtpkit.auth import PasswordFile, load_hasher
from smtpkit.config import Config, ListenAddress, ListenerRole, TlsConfig, load_config
from smtpkit.delivery.commit import DeliveryWorker
from smtpkit.delivery.queue import QUEUE_FOLDER, clean_queue, set_node
from smtpkit.delivery.router import Router
from smtpkit.delivery.spool import SPOOL_FOLDER, Spool, SpoolPool, clean_spools
from smtpkit.delivery.syncer import SharedSyncer
from smtpkit.errors import ConfigError, SmtpkitError
from smtpkit.fsutil import make_dirs
from smtpkit.journal import Journal
from smtpkit.mailauth.signing import Signer
from smtpkit.maildrop import ensure_maildrop
from smtpkit.outbound.inject import lmtp_queue
from smtpkit.outbound.reports import DeliveredHere
from smtpkit.outbound.runner import QueueRunner
from smtpkit.owner import Owner, as_owner, drop_to
from smtpkit.policy import LocalPolicy
from smtpkit.protocol import replies
from smtpkit.protocol.proxy import Header
from smtpkit.server.authn import PasswordChecker
from smtpkit.server.checks import Checks, load_mailauth, signature
from smtpkit.server.connection import Connection
from smtpkit.server.counts import ConnectionCounts, SharedCounts
from smtpkit.server.listener import (
    TOO_MANY,
    TOO_MANY_FROM_IP,
    BindError,
    Listener,
    bind_all,
    refuse,
)
from smtpkit.server.loop import EventLoop
from smtpkit.server.metrics_http import start_endpoint
from smtpkit.server.pickup import Pickup
from smtpkit.server.placement import Placement
from smtpkit.server.proxy import HeaderReader
from smtpkit.server.verify import LmtpVerifier
from smtpkit.server.workers import Supervisor
from smtpkit.session import ServerContext, new_session_id
from smtpkit.signals import defer_server_signals, release_server_signals
from smtpkit.users import UserStore

if TYPE_CHECKING:
    from smtpkit.mailauth.dnsbl import Listing

__all__ = ["GRACE", "Server", "TlsContexts", "make_tls_context", "make_tls_contexts", "serve"]

GRACE = 10.0  # seconds a message in flight may take to finish after SIGTERM
SWEEP = 1.0  # seconds between deadline checks
# Journal lines are appended in one locked write every this many seconds, not once per loop
# turn: a message makes six events, and workers flushing every turn wait on each other's
# lock. Lines of different workers may be up to this much out of time order in the file.
JOURNAL_FLUSH = 0.02


# Submission carries passwords: AEAD ciphers with forward secrecy only (TLS 1.3's suites are
# all AEAD). Port 25 keeps the ssl module's wider defaults, which opportunistic TLS needs to
# stay better than plain text for old senders.
STRICT_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20"


@dataclass(frozen=True, slots=True)
class TlsContexts:
    """The certificate loaded for each kind of listener."""

    receive: ssl.SSLContext
    submission: ssl.SSLContext

    def for_role(self, role: ListenerRole) -> ssl.SSLContext:
        return self.receive if role is ListenerRole.RECEIVE else self.submission


def make_tls_contexts(tls: TlsConfig) -> TlsContexts:
    return TlsContexts(make_tls_context(tls), make_tls_context(tls, strict=True))


def make_tls_context(tls: TlsConfig, *, strict: bool = False) -> ssl.SSLContext:
    """A server context with the ssl module's secure defaults, TLS 1.2 or newer only;
    ``strict``: AEAD ciphers only (the submission listeners)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if strict:
        context.set_ciphers(STRICT_CIPHERS)
    # Client-initiated TLS 1.2 renegotiation buys nothing for SMTP and costs a full handshake
    # each time a client asks: refuse it.
    context.options |= ssl.OP_NO_RENEGOTIATION
    for what, path in (("certificate", tls.certificate), ("key", tls.key)):
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            message = f"cannot read {path}: {exc.strerror}"
            raise ConfigError(message, key=f"tls -> {what}") from None
    try:
        context.load_cert_chain(tls.certificate, tls.key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"cannot use certificate {tls.certificate} with key {tls.key}: expected a PEM "
            f"certificate and its matching PEM private key ({exc})",
            key="tls",
        ) from None
    return context


class Server:
    def __init__(
        self,
        config: Config,
        sockets: list[socket.socket],
        *,
        echo: TextIO | None = None,
        counts: ConnectionCounts | None = None,
        worker: int = 0,
        tmp_cleaned: int = 0,
        tls_fallback: TlsContexts | None = None,
        tls_given: bool = False,
        syncer: SharedSyncer | None = None,
        signer: Signer | None = None,
        standalone: bool = False,
        placement: Placement | None = None,
    ) -> None:
        self.worker = worker
        #: Which CPU this worker's threads run on while the server is busy (several workers).
        self.placement = placement
        self.tmp_cleaned = tmp_cleaned
        self.sockets = sockets
        self.loop = EventLoop()
        self.journal = Journal(config.server.journal_dir, echo=echo)
        # tls_given: the certificate was loaded for us (by a supervisor that can read what
        # this worker cannot); otherwise the files as they are now, else the fallback.
        tls = tls_fallback if tls_given else _load_tls(config, tls_fallback)
        # One pool folder per worker: creating and renaming files locks their folder, and
        # workers sharing one would wait for each other.
        self.pool = pool = SpoolPool(config.server.users_dir / SPOOL_FOLDER / str(worker))
        # Should the folder not be made, every message gets 451 with the reason at DATA.
        with contextlib.suppress(OSError):
            make_dirs(pool.folder, 0o700)
        # The syncfs calls of every worker's commits are shared (ARCHITECTURE.md,
        # "Durability"): the lock lives beside the pool folders, which all workers write.
        self.syncer = syncer if syncer is not None else SharedSyncer()
        with contextlib.suppress(OSError):
            self.syncer.open_lock(pool.folder.parent)
        self.delivery = DeliveryWorker(
            self.loop.call_soon_threadsafe, pool=pool, syncer=self.syncer
        )
        self.auth: PasswordChecker | None = None
        self.pickup: Pickup | None = None
        self.runner: QueueRunner | None = None
        self.checks: Checks | None = None
        self.verifier: LmtpVerifier | None = None
        self.retired: list[Checks | PasswordChecker] = []  # closed at exit
        self.connections: set[Connection] = set()
        self.screening: set[Connection] = set()  # waiting for the blocklists' answer
        self.awaiting: set[HeaderReader] = set()  # waiting for a balancer's PROXY header
        # Connection counts shared by all worker processes: the limits are global.
        if counts is None:
            counts = SharedCounts(1, config.limits.max_connections).slot(0)
        self.counts = counts
        self.listeners: list[Listener] = []
        self.listening: dict[ListenAddress, Listener] = {}
        #: No supervisor: this process opens and closes listeners on reload itself.
        self.standalone = standalone
        self.stopping = False
        self._configure(config, tls, signer)

    def _configure(self, config: Config, tls: TlsContexts | None, signer: Signer | None) -> None:
        """Everything the config decides, for the sessions that start from now on: at start,
        and again on reload. Sessions in flight keep the context they began with."""
        self.config = config
        self.tls = tls
        set_node(config.server.hostname)  # queue entries are named after this node
        self.users = UserStore(config.server.users_dir, config.server.domains)
        router = Router(
            self.users,
            config.aliases,
            config.server.domains,
            lmtp_queue(config),
            delimiters=config.server.recipient_delimiter,
        )
        # AUTH where there are submission listeners; a queue for other domains where anyone
        # may relay (authenticated users, trusted networks). Passwords are read at each
        # login, so one checker serves every reload.
        if _submission(config) and self.auth is None:
            self.auth = PasswordChecker(
                PasswordFile.in_folder(config.server.directory, config.server.domains),
                config.server.domains,
                config.limits,
                self.loop.call_soon_threadsafe,
            )
        auth = self.auth if _submission(config) else None
        self.policy = LocalPolicy(
            router,
            config.limits,
            queue=queue_folder(config),
            trusted=config.submission.trusted_networks,
            **({"sent_this_hour": auth.sent_this_hour} if auth is not None else {}),
        )
        # DKIM signatures for what this server writes itself (reports) and what local
        # programs drop (pickup); what arrives over SMTP is signed by the checks.
        sign = functools.partial(signature, signer) if signer is not None else None
        self.delivery.after = DeliveredHere(
            config, self.pool, self.syncer, self._journal_soon, sign=sign
        )
        if self.pickup is None:
            self.pickup = Pickup(
                config,
                self.policy,
                self.pool,
                self.syncer,
                self.loop.call_soon_threadsafe,
                self.journal.write,
                signer=signer,
                notices=self.delivery.after,
            )
        else:
            self.pickup.reconfigure(config, self.policy, signer, self.delivery.after)
        # Sends the queue to other servers, in the one worker holding the queue's lock.
        if self.runner is not None and not config.queue.hold:
            self.runner.reconfigure(config, sign)
        elif self.runner is None and not config.queue.hold:
            self.runner = QueueRunner(
                config, self.loop, self.journal.write, self.pool, self.syncer, sign=sign
            )
            self.runner.tally = metrics.record
            if self.listeners:  # running already: a reload lifted the hold
                self.runner.start()
        elif self.runner is not None:
            self.runner.stop()
            self.runner = None
        if self.checks is not None:
            self.retired.append(self.checks)  # inspections under way finish on it
        self.checks = (
            Checks(config, self.loop.call_soon_threadsafe, signer)
            if config.checks.any or signer
            else None
        )
        self._make_verifier(config)
        self.ctx = ServerContext(
            hostname=config.server.hostname,
            limits=config.limits,
            policy=self.policy,
            journal=self.journal,
            submit=self.delivery.submit,
            open_spool=functools.partial(Spool, pool=self.pool),
            tls_available=tls is not None,
            auth=auth,
            dsn_on_receive=config.server.dsn_on_receive,
            inspector=self.checks,
            verifier=self.verifier,
        )

    def _make_verifier(self, config: Config) -> None:
        """``[delivery] lmtp_verify``: the LMTP server asked about recipients at RCPT. A
        reload makes a new one; checks under way on the old one still answer."""
        if self.verifier is not None:
            self.verifier.close()
        lmtp = config.delivery.lmtp
        self.verifier = None
        if lmtp is not None and config.delivery.lmtp_verify:
            self.verifier = LmtpVerifier(
                lmtp,
                config.server.hostname,
                config.server.domains,
                self.loop.call_soon_threadsafe,
                lambda reason: self.journal.write("lmtp_verify", "-", "-", error=reason),
            )

    def _journal_soon(self, event: str, session: str, fields: dict[str, object]) -> None:
        """A journal line from another thread, written on the loop."""
        self.loop.call_soon_threadsafe(lambda: self.journal.write(event, session, "-", **fields))

    def reload(self) -> None:
        """SIGHUP: read the config file again and apply it to new sessions; sessions in
        flight finish under the old one. A config that does not load, a certificate or DKIM
        key that cannot be used, or a listener that cannot be opened leaves everything as
        it was, and the journal says why. Only a server without a supervisor opens and
        closes listeners itself (the supervisor does it for its workers)."""
        try:
            config = _reread(self.config)
            signer = Signer.from_directory(config.server.directory)
            added, removed = self._listener_changes(config)
            opened = bind_all(added) if self.standalone else []
        except (ConfigError, BindError) as exc:
            self.journal.write("reload", "-", "-", ok=False, error=f"{exc}; nothing changed")
            return
        if not self.standalone and (added or removed):
            self.journal.write(
                "reload", "-", "-", ok=False,
                error="listeners changed, but a worker cannot open them: the supervisor does",
            )  # fmt: skip
            return
        self._configure(config, self._reload_tls(config), signer if signer else None)
        for address in removed:
            self.listening.pop(address).close()
        for sock, address in zip(opened, added, strict=True):
            self._listen(sock, address)
        self.journal.write(
            "reload", "-", "-", ok=True, domains=list(config.server.domains),
            listen=[str(a) for a in config.server.listen],
        )  # fmt: skip

    def _listener_changes(self, config: Config) -> tuple[list[ListenAddress], list[ListenAddress]]:
        wanted = list(dict.fromkeys(config.server.listen))
        added = [a for a in wanted if a not in self.listening]
        removed = [a for a in self.listening if a not in wanted]
        return added, removed

    def _listen(self, sock: socket.socket, address: ListenAddress) -> None:
        accept = functools.partial(self._accept, role=address.role, listener=str(address))
        listener = Listener(self.loop, sock, self._admit, accept)
        self.listeners.append(listener)
        self.listening[address] = listener

    # --- lifecycle --------------------------------------------------------------------------
    def run(self) -> None:
        self.journal.write(
            "start",
            "-",
            "-",
            listen=[str(a) for a in self.config.server.listen],
            hostname=self.config.server.hostname,
            worker=self.worker,
            tmp_cleaned=self.tmp_cleaned,
        )
        self.journal.flush()
        for sock, address in zip(self.sockets, self.config.server.listen, strict=True):
            self._listen(sock, address)
        self.loop.add_signal_handler(signal.SIGTERM, self.begin_shutdown)
        self.loop.add_signal_handler(signal.SIGINT, self.begin_shutdown)
        self.loop.add_signal_handler(signal.SIGHUP, self.reload)
        # Signals that arrived while starting up were held (see smtpkit.signals); they are
        # handled from here on, by the handlers above.
        release_server_signals()
        self.loop.call_later(JOURNAL_FLUSH, self._flush_journal)
        self.loop.call_later(SWEEP, self._sweep)
        assert self.pickup is not None
        self.pickup.start()
        if self.runner is not None:
            self.runner.start()
        try:
            self.loop.run()
        finally:
            # Held again while closing down: the loop that handled them is going away.
            defer_server_signals()
            if self.runner is not None:
                self.runner.stop()
            self.pickup.stop()
            for part in [self.checks, *self.retired, self.auth, self.verifier]:
                if part is not None:
                    part.close()
            self.delivery.close()
            self.journal.write(
                "stop", "-", "-", syncs=self.syncer.calls, syncs_shared=self.syncer.shared
            )
            self.journal.close()
            self.loop.close()

    def begin_shutdown(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        self.journal.write("stopping", "-", "-", connections=len(self.connections))
        for listener in self.listeners:
            listener.close()
        self.listeners.clear()
        for conn in list(self.connections):
            conn.shutdown()
        for reader in list(self.awaiting):
            reader.abort("shutdown before the PROXY header")
        if self.runner is not None:
            self.runner.stop()
        self.loop.call_later(GRACE, self._end_grace)
        self._maybe_stop()

    def _end_grace(self) -> None:
        for conn in list(self.connections):
            conn.session.force_close(replies.SHUTTING_DOWN)
        # Sockets whose last reply cannot be delivered are closed by the sweep.

    def _maybe_stop(self) -> None:
        if self.stopping and not self.connections and not self.screening and not self.awaiting:
            self.loop.stop()

    def _reload_tls(self, config: Config) -> TlsContexts | None:
        """The certificate as the files hold it now (renewals without a restart); when they
        do not load, the one in use stays."""
        if config.tls is None:
            return None
        try:
            tls = make_tls_contexts(config.tls)
        except ConfigError as exc:
            # Echoed on stderr with every other event unless --quiet; always in the journal.
            self.journal.write(
                "tls_reload", "-", "-", ok=False, error=f"{exc}; keeping the old certificate"
            )
            return self.tls
        self.journal.write("tls_reload", "-", "-", ok=True)
        return tls

    # --- connections ------------------------------------------------------------------------
    def _admit(self, ip: str) -> bytes | None:
        limits = self.config.limits
        if self.counts.total() >= limits.max_connections:
            self.journal.write("refused", "-", ip, code=421, reason="max_connections")
            metrics.record.connection("refused_limit")
            return TOO_MANY
        # A balancer's connections are many clients': the per-address limit waits for the
        # address its PROXY header names (_proxied).
        if self._behind_proxy(ip):
            return None
        if self.counts.for_ip(ip) >= limits.max_connections_per_ip:
            self.journal.write("refused", "-", ip, code=421, reason="max_connections_per_ip")
            metrics.record.connection("refused_limit")
            return TOO_MANY_FROM_IP
        return None

    def _behind_proxy(self, ip: str) -> bool:
        """Whether ``ip`` is a balancer of ``server.proxy_protocol_from``, which must begin
        each connection with a PROXY header."""
        networks = self.config.server.proxy_protocol_from
        return bool(networks) and any(ipaddress.ip_address(ip) in n for n in networks)

    def _accept(
        self, sock: socket.socket, peer: tuple[str, int], *, role: ListenerRole, listener: str = ""
    ) -> None:
        if not self.counts.add(peer[0]):
            metrics.record.connection("refused_limit")
            refuse(sock, TOO_MANY)
            return
        if self.placement is not None and not self.placement.pinned:
            self._place()  # fixed as soon as the server gets busy; set free by the sweep
        if self._behind_proxy(peer[0]):
            # Counted under the balancer's address until the header names the client.
            done = functools.partial(self._proxied, role=role, listener=listener)
            timeout = self.config.limits.proxy_header_timeout
            self.awaiting.add(HeaderReader(self.loop, sock, peer, timeout, done))
            return
        self._open(sock, peer, role, listener=listener)

    def _proxied(
        self,
        reader: HeaderReader,
        header: Header | None,
        error: str,
        *,
        role: ListenerRole,
        listener: str = "",
    ) -> None:
        """The balancer's header is read (or failed: the socket is closed, nothing was
        sent). The connection now counts under the client's address, and the limit per
        address applies to it; everything after (blocklists, the session, its journal,
        policy, checks and Received: line) knows only the client."""
        self.awaiting.discard(reader)
        balancer = reader.peer
        self.counts.remove(balancer[0])
        if header is None:
            self.journal.write("proxy", new_session_id(), host_port(*balancer), error=error)
            self._maybe_stop()
            return
        client = header.client or balancer
        if self.counts.for_ip(client[0]) >= self.config.limits.max_connections_per_ip:
            self.journal.write(
                "refused", "-", client[0], code=421, reason="max_connections_per_ip",
                via=host_port(*balancer),
            )  # fmt: skip
            metrics.record.connection("refused_limit")
            refuse(reader.sock, TOO_MANY_FROM_IP)
            return
        if not self.counts.add(client[0]):
            metrics.record.connection("refused_limit")
            refuse(reader.sock, TOO_MANY)
            return
        self._open(
            reader.sock, client, role, via=balancer, version=header.version, listener=listener
        )

    def _open(
        self,
        sock: socket.socket,
        peer: tuple[str, int],
        role: ListenerRole,
        *,
        via: tuple[str, int] | None = None,
        version: int = 0,
        listener: str = "",
    ) -> None:
        """A counted connection from ``peer`` (the client) to ``listener`` (its address as
        configured): its session, after the blocklists when they are asked."""
        tls = self.tls.for_role(role) if self.tls is not None else None
        conn = Connection(
            self.loop, sock, peer, self.ctx, tls, self._closed, role=role, listener=listener
        )
        if via is not None:
            # Before the session's connect line, under its id: who passed the client on.
            session = conn.session
            self.journal.write(
                "proxy", session.id, session.peer, via=host_port(*via), version=version
            )
        checks = self.checks
        if checks is not None and checks.screens(role, peer[0]):
            # Greeted once the blocklists have answered (bounded in time).
            self.screening.add(conn)
            checks.screen(peer[0], functools.partial(self._screened, conn))
            return
        self.connections.add(conn)
        conn.start()

    def _screened(self, conn: Connection, listing: Listing | None, problems: list[str]) -> None:
        self.screening.discard(conn)
        self.connections.add(conn)
        fields: dict[str, object] = {"dnsbl_errors": problems} if problems else {}
        if self.stopping:
            conn.refuse(replies.SHUTTING_DOWN, **fields)
        elif listing is not None:
            reply = replies.blocklisted(conn.peer[0], listing.zone, listing.reason)
            conn.refuse(reply, blocklisted=listing.zone, code=listing.code, **fields)
        else:
            if problems:
                self.journal.write("dnsbl", conn.session.id, conn.session.peer, errors=problems)
            conn.start()

    def _closed(self, conn: Connection) -> None:
        # Only now, with the socket closed, does the connection stop counting: see
        # Connection.close for why not at the session's end.
        self.counts.remove(conn.peer[0])
        self.connections.discard(conn)
        self._maybe_stop()

    def _flush_journal(self) -> None:
        self.journal.flush()
        self.loop.call_later(JOURNAL_FLUSH, self._flush_journal)

    def _sweep(self) -> None:
        now = time.monotonic()
        for conn in list(self.connections):
            conn.check_deadline(now)
        if self.placement is not None:
            self._place()
        self.loop.call_later(SWEEP, self._sweep)

    def _place(self) -> None:
        """Fix this worker's threads to its CPU, or set them free, by how busy the server
        is (server/placement.py)."""
        assert self.placement is not None
        self.placement.update(self.counts.total(), enabled=self.config.server.pin_workers)


def batch_scheduling() -> None:
    """Run this thread, and the threads it starts after, under Linux's ``SCHED_BATCH``
    policy (sched(7)): the same share of the CPU and nice value, without preempting the
    thread running when it wakes (ARCHITECTURE.md, "Processes"). A worker's threads wake
    all the time (its event loop on every client's bytes, its delivery thread at every
    finished disk sync) and under the default policy each wake-up preempted what ran, often
    the worker's other thread, which holds the interpreter lock: the woken thread then only
    waited for that lock, for two context switches. Unprivileged; where it is unavailable
    (not Linux, a sandbox that refuses it) the default policy stays."""
    policy = getattr(os, "SCHED_BATCH", None)
    if policy is not None:
        with contextlib.suppress(OSError):  # the default policy: correct, slower under load
            os.sched_setscheduler(0, policy, os.sched_param(0))


def serve(
    config: Config,
    sockets: list[socket.socket],
    *,
    workers: int,
    echo: TextIO | None = None,
    tls: TlsContexts | None = None,
    log: Callable[[str], None] = lambda text: None,
    run_as: Owner | None = None,
) -> int:
    """Run the server on already bound ``sockets`` with ``workers`` processes (1: in this
    process); returns the exit status. ``tls`` is the certificate loaded before the fork: a
    worker started later (after a crash) falls back to it if the files on disk are broken.
    Leftovers in every ``tmp/`` are removed first, before any worker could have a message in
    flight there.

    With ``run_as`` (started by root, the data folder owned by a service user), the workers
    become that user at once and this process stays root as their supervisor, for what needs
    root: on SIGHUP it loads the certificate (whose key may be readable by root only) and
    replaces the workers with ones that use it. Everything under the data folder is touched
    as the owner, never as root."""
    _raise_fd_limit(config.limits.max_connections)
    directory = config.server.directory
    with as_owner(directory):
        try:
            cleaned = _clean_spools(config)
            queue = queue_folder(config)
            make_dirs(queue, 0o700)
            cleaned += clean_queue(queue)
        except OSError as exc:
            # `smtpkit check` (run just before) names these; one line should the folder
            # have changed since
            raise SmtpkitError(
                f"cannot set up {exc.filename or directory}: {exc.strerror}"
            ) from None
        ensure_maildrop(directory)
    # With reloads that replace workers, old and new ones overlap for a while: each needs
    # a row of its own in the shared connection counts.
    slots = 2 * workers
    table = SharedCounts(slots, config.limits.max_connections)
    syncer = SharedSyncer()  # before the fork: its counters are shared memory
    endpoint = start_endpoint(config, slots)  # [metrics]: before the fork, see its module

    if run_as is not None and _submission(config):
        load_hasher()  # before the workers become the owner (see load_hasher)
    # The keys are the owner's (0600); the libraries are loaded before any worker becomes
    # the owner, who may be unable to read where Python lives (see load_mailauth).
    current = _Generation(config, sockets, tls, load_mailauth(config))

    def work(slot: int, restarted: bool = False) -> None:
        if run_as is not None:
            drop_to(run_as)
        batch_scheduling()  # before the worker starts its threads, which inherit it
        endpoint.worker_started(slot)
        now = current
        server = Server(
            now.config,
            now.sockets,
            echo=echo,
            counts=table.slot(slot),
            worker=slot,
            tmp_cleaned=cleaned if slot == 0 and not restarted else 0,
            tls_fallback=now.tls,
            tls_given=run_as is not None,
            syncer=syncer,
            signer=now.signer,
            standalone=workers == 1 and run_as is None,
            placement=Placement.of_worker(slot, workers),
        )
        server.run()

    if workers == 1 and run_as is None:
        work(0)
        return 0
    journal = Journal(config.server.journal_dir, echo=echo)

    def note(event: str, **fields: object) -> None:
        with as_owner(directory):  # the journal's files are the owner's
            journal.write(event, "-", "-", **fields)
            journal.flush()

    def reload() -> str:
        """SIGHUP in the supervisor: what the workers cannot do themselves (open new
        listeners; as root, read the certificate and keys) is done here, and then they are
        replaced; otherwise each reloads in place."""
        nonlocal current
        try:
            new = _reread(config)
            if run_as is None and set(new.server.listen) == set(current.config.server.listen):
                current = _Generation(new, current.sockets, current.tls, current.signer)
                return Supervisor.FORWARD
            signer = load_mailauth(new)
            opened = {
                a: s for a, s in zip(current.config.server.listen, current.sockets, strict=True)
            }
            fresh = [a for a in new.server.listen if a not in opened]
            made = dict(zip(fresh, bind_all(fresh), strict=True))
        except (ConfigError, BindError) as exc:
            note("reload", ok=False, error=f"{exc}; nothing changed")
            log(f"reload failed: {exc}; nothing changed")
            return Supervisor.FAILED
        tls = current.tls
        if new.tls is not None and run_as is not None:
            try:
                tls = make_tls_contexts(new.tls)
                note("tls_reload", ok=True)
            except ConfigError as exc:
                note("tls_reload", ok=False, error=f"{exc}; keeping the old certificate")
                if new == current.config and not made:
                    return Supervisor.FAILED  # nothing else to apply: the workers stay
        socks = [made[a] if a in made else opened[a] for a in new.server.listen]
        for address, sock in opened.items():
            if address not in new.server.listen:
                sock.close()  # the old workers close theirs as they drain
        current = _Generation(new, socks, tls, signer)
        note("reload", ok=True, domains=list(new.server.domains),
             listen=[str(a) for a in new.server.listen])  # fmt: skip
        return Supervisor.REPLACE

    supervisor = Supervisor(
        workers,
        work,
        sockets,
        drain_timeout=GRACE + 20,
        on_death=functools.partial(endpoint.worker_died, then=table.clear),
        log=log,
        on_reload=reload,
        slots=slots,
    )
    return supervisor.run()


@dataclass(frozen=True, slots=True)
class _Generation:
    """What the supervisor starts its next workers with."""

    config: Config
    sockets: list[socket.socket]
    tls: TlsContexts | None
    signer: Signer | None


def _reread(running: Config) -> Config:
    """The config file of ``running`` read again, for a reload; ConfigError when it does not
    load or moves the data folder (that needs a restart)."""
    config = load_config(running.path)
    if config.server.directory != running.server.directory:
        raise ConfigError(f"{config.path}: server.directory cannot change without a restart")
    return config


def _submission(config: Config) -> bool:
    return any(a.role is not ListenerRole.RECEIVE for a in config.server.listen)


def queue_folder(config: Config) -> Path:
    """``DIR/queue``: where mail for other domains waits (who may send there is policy's
    business: authenticated users, trusted networks, local programs)."""
    return config.server.directory / QUEUE_FOLDER


def _clean_spools(config: Config) -> int:
    users = UserStore(config.server.users_dir, config.server.domains)
    spool = users.users_dir / SPOOL_FOLDER
    pools = [p for p in spool.iterdir() if p.is_dir()] if spool.is_dir() else []
    folders = [(address, "tmp") for address in users.addresses()] + [(SPOOL_FOLDER,)]
    return clean_spools(users.users_dir, folders + [(SPOOL_FOLDER, p.name) for p in pools])


def _load_tls(config: Config, fallback: TlsContexts | None) -> TlsContexts | None:
    """The certificate as the files hold it now, else the one loaded at start-up."""
    if config.tls is None:
        return None
    try:
        return make_tls_contexts(config.tls)
    except ConfigError:
        if fallback is None:
            raise
        return fallback


def _raise_fd_limit(connections: int) -> None:
    """Each connection is a descriptor: lift the soft limit toward the hard one so that
    ``max_connections`` can be reached (the usual soft limit, 1024, is too low for it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + 256  # listeners, journal, spool files, pipes
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass
