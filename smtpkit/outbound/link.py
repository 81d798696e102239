"""One outbound SMTP connection on the event loop: the socket, TLS and timeouts around the
sans-I/O ``ClientConnection``.

A ``Link`` is made for one destination with the addresses to try, in order (the MX hosts'
addresses, a route's, the smarthost's, or the LMTP server's, which may be a Unix socket). It
connects to the first that answers (each connect bounded by ``connect_timeout``), says EHLO
(LHLO), starts TLS when offered (or required), authenticates when it has credentials, and
then asks its owner for work: ``owner.ready`` returns the next ``Job`` (one message, some of
its recipients) or None, and ``owner.finished`` gets each job's per-recipient replies. When
no address gives a session, ``owner.failed`` gets the reason. Nothing here blocks: connects,
TLS handshakes, reads and writes all wait for the loop.

With ``idle_timeout``, a link with no job left stays connected that long (``idle``), and
``wake()`` gives it the next one: the LMTP server is one host that takes message after
message, and a connection per message would cost it a process start each time.

Timeouts are those of RFC 5321 4.5.3.2 for each reply awaited (``reply_timeout`` caps
them all when set), and 3 minutes for each write of the message while it streams.
"""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from smtpkit.protocol.client import NEED_DATA, PAUSED, ClientConnection, Waiting
from smtpkit.protocol.client_events import (
    AuthResult,
    Closed,
    Greeting,
    HelloRefused,
    ProtocolError,
    Ready,
    SendData,
    StartTlsNow,
    StartTlsRefused,
    TransactionDone,
)
from smtpkit.protocol.connection import LocalProtocolError
from smtpkit.protocol.replies import Reply
from smtpkit.server.loop import EventLoop

__all__ = ["Candidate", "Job", "Link", "LinkOwner", "Security", "TIMEOUTS"]

_READ = selectors.EVENT_READ
_WRITE = selectors.EVENT_WRITE
_CHUNK = 65536
_MAX_OUT = 256 * 1024  # read no more of the message while this much waits to be written

#: RFC 5321 4.5.3.2: the least time to wait for each reply, in seconds.
TIMEOUTS: dict[Waiting | None, float] = {
    Waiting.GREETING: 300.0,
    Waiting.EHLO: 300.0,
    Waiting.LHLO: 300.0,
    Waiting.HELO: 300.0,
    Waiting.STARTTLS: 300.0,
    Waiting.AUTH: 300.0,
    Waiting.RSET: 300.0,
    Waiting.MAIL: 300.0,
    Waiting.RCPT: 300.0,
    Waiting.DATA: 120.0,
    Waiting.END_OF_DATA: 600.0,
    Waiting.QUIT: 60.0,
    None: 180.0,  # streaming the message: each write (RFC 5321 4.5.3.2.5)
}
_HANDSHAKE_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class Candidate:
    """One address to try: the host's name (for TLS and reports), the address, the port;
    with ``unix``, the address is the path of a Unix socket (an LMTP server here)."""

    host: str
    address: str
    port: int
    unix: bool = False

    def __str__(self) -> str:
        """``name[address]:port``, as Postfix writes a relay: the brackets always hold the
        address, an IPv6 one too (``mx.example[2001:db8::1]:25``), so it needs no second
        pair (``addresses.host_port`` is for an address alone)."""
        if self.unix:
            return f"unix:{self.address}"
        return f"{self.host}[{self.address}]:{self.port}"


@dataclass(frozen=True, slots=True)
class Security:
    """How a link uses TLS: ``starttls`` when offered (``required``: or give up),
    ``implicit`` from the first byte; ``context`` verifies or not; ``credentials`` are only
    ever sent once TLS is up."""

    context: ssl.SSLContext | None
    starttls: bool = True
    required: bool = False
    implicit: bool = False
    credentials: tuple[str, str] | None = None


@dataclass(slots=True)
class Job:
    """One transaction: a message and some of its recipients."""

    entry_id: str
    sender: str
    recipients: tuple[str, ...]
    path: str
    size: int
    mail_params: dict[str, str | None] = field(default_factory=dict)
    rcpt_params: dict[str, dict[str, str | None]] = field(default_factory=dict)
    #: The next hop is the final delivery (an LMTP server): its 250 means "in the mailbox".
    final: bool = False
    #: The message came with SMTPUTF8 (RFC 6531), and as binary (BODY=BINARYMIME, RFC 3030).
    smtputf8: bool = False
    binary: bool = False
    #: What the message holds (scan_message), when the caller read it already: one message
    #: to several destinations is read once, not once per job.
    content: Content | None = None
    #: Recipients the link failed before sending, for a reason of its own ("5.6.7 ..."):
    #: reported with the transaction's results.
    refused: dict[str, str] = field(default_factory=dict)
    #: Filled in by the link: whether the next hop offered DSN (success notices then are
    #: its business), and the TLS version used (None: in the clear).
    dsn_offered: bool = False
    tls: str | None = None
    remote: str = ""  # the host's name, as a report's Remote-MTA gives it
    peer: str = ""  # name, address and port, as the journal gives it


class LinkOwner(Protocol):
    def ready(self, link: Link) -> Job | None: ...

    def finished(self, link: Link, job: Job, results: list[tuple[str, Reply | None, str]]) -> None:
        """``results``: per recipient, the deciding reply (None: none came) and, when no
        reply decides, why (our words)."""

    def failed(self, link: Link, reason: str, reply: Reply | None, permanent: bool) -> None: ...

    def closed(self, link: Link) -> None: ...


class _Refused(Exception):
    """This candidate gives no session: try the next."""

    def __init__(self, reason: str, reply: Reply | None = None) -> None:
        super().__init__(reason)
        self.reply = reply


class Link:
    def __init__(
        self,
        loop: EventLoop,
        owner: LinkOwner,
        candidates: list[Candidate],
        *,
        helo_name: str,
        security: Security,
        connect_timeout: float,
        reply_timeout: float | None = None,
        loops_back: Callable[[str], bool] = lambda name: False,
        lmtp: bool = False,
        idle_timeout: float = 0.0,
    ) -> None:
        self.loop = loop
        self.owner = owner
        self.candidates = list(candidates)
        self.helo_name = helo_name
        self.security = security
        self.connect_timeout = connect_timeout
        self.reply_timeout = reply_timeout
        self.loops_back = loops_back
        self.lmtp = lmtp
        self.idle_timeout = idle_timeout
        self.sock: socket.socket | None = None
        self.candidate: Candidate | None = None
        self.engine: ClientConnection | None = None
        self.job: Job | None = None
        self.deadline = float("inf")
        self.closed = False
        self.sessions = 0  # transactions done on this connection
        self._out = bytearray()
        self._events = 0
        self._phase = "idle"  # connecting | handshake | smtp | done
        self._message_fd = -1
        self._streaming = False
        self._last_reason = "no address to try"
        self._ended_here = False  # this side ended the connection: _last_reason stands
        self._no_more_jobs = False
        self._last_reply: Reply | None = None
        self._tls_version: str | None = None
        self._plain_retry: set[str] = set()  # addresses whose TLS failed: once more in clear
        self._idle = False  # connected, no job: waiting for wake() until _idle_until
        self._idle_until = 0.0

    # --- life -------------------------------------------------------------------------------
    def start(self) -> None:
        self._next_candidate()

    def abort(self, reason: str) -> None:
        """Drop the connection now (shutdown): a job under way gets no replies."""
        if self.closed:
            return
        if self.engine is not None and self._phase == "smtp":
            self._feed_eof(reason, ours=True)
        else:
            self._close_socket()
            self._finish()

    @property
    def idle(self) -> bool:
        """Connected and waiting for a job (``idle_timeout``): ``wake()`` gives it one."""
        return self._idle and not self.closed

    def wake(self) -> bool:
        """Ask the owner for a job now, if idle; False when the link is not idle (busy,
        still connecting, or gone)."""
        if not self.idle:
            return False
        self._idle = False
        self._take_job()
        self._send()
        return True

    def close_idle(self) -> None:
        """End the connection with QUIT if it is idle (a reload: its next hop may have
        changed); a busy link finishes its job first and then stays or goes as usual."""
        if self.idle and self.engine is not None:
            self._idle = False
            self.engine.quit()
            self._send()

    def check_deadline(self, now: float) -> None:
        if self.closed or now < self.deadline:
            return
        if self._idle:
            self.close_idle()
        elif self._phase == "connecting":
            self._give_up_candidate(f"connect timed out after {self.connect_timeout:g}s")
        elif self._phase == "handshake":
            self._give_up_candidate("TLS handshake timed out")
        else:
            waiting = self.engine.waiting_for if self.engine is not None else None
            what = waiting.value if waiting is not None else "message write"
            self._feed_eof(f"timed out waiting for the {what} reply", ours=True)

    @property
    def remote(self) -> str:
        return str(self.candidate) if self.candidate is not None else "-"

    # --- connecting -------------------------------------------------------------------------
    def _next_candidate(self) -> None:
        self._close_socket()
        if not self.candidates:
            permanent = self._last_reply is not None and self._last_reply.code >= 500
            self._phase = "done"
            self.closed = True
            self.owner.failed(self, self._last_reason, self._last_reply, permanent)
            return
        self.candidate = self.candidates.pop(0)
        self.engine = None
        self._ended_here = False
        self._tls_version = None
        candidate = self.candidate
        target: str | tuple[str, int]
        if candidate.unix:
            family, target = socket.AF_UNIX, candidate.address
        else:
            family = socket.AF_INET6 if ":" in candidate.address else socket.AF_INET
            target = (candidate.address, candidate.port)
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as exc:
            self._give_up_candidate(f"cannot make a socket: {exc.strerror}")
            return
        sock.setblocking(False)
        self.sock = sock
        self._phase = "connecting"
        self.deadline = time.monotonic() + self.connect_timeout
        code = sock.connect_ex(target)
        if code not in (0, errno.EINPROGRESS):
            self._give_up_candidate(f"connect: {os.strerror(code)}")
            return
        self._set_events(_WRITE)

    def _connected(self) -> None:
        assert self.sock is not None and self.candidate is not None
        code = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            self._give_up_candidate(f"connect: {os.strerror(code)}")
            return
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.security.implicit:
            self._begin_tls()
            return
        self._begin_smtp(tls=False)

    def _begin_smtp(self, *, tls: bool) -> None:
        self._phase = "smtp"
        self.engine = ClientConnection(self.helo_name, tls=tls, lmtp=self.lmtp)
        self._await_reply()
        self._set_events(_READ)

    def _give_up_candidate(self, reason: str, reply: Reply | None = None) -> None:
        self._last_reason = f"{self.remote}: {reason}"
        self._last_reply = reply
        self._next_candidate()

    # --- TLS --------------------------------------------------------------------------------
    def _begin_tls(self) -> None:
        assert self.sock is not None and self.candidate is not None
        context = self.security.context
        if context is None:  # pragma: no cover - STARTTLS is only sent with a context
            self._give_up_candidate("no TLS context")
            return
        self._unregister()
        try:
            self.sock = context.wrap_socket(
                self.sock,
                server_hostname=self.candidate.host if context.check_hostname else None,
                do_handshake_on_connect=False,
            )
        except (OSError, ssl.SSLError, ValueError) as exc:
            self._tls_failed(f"TLS: {exc}")
            return
        self._phase = "handshake"
        self.deadline = time.monotonic() + _HANDSHAKE_TIMEOUT
        self._handshake()

    def _handshake(self) -> None:
        sock = self.sock
        assert isinstance(sock, ssl.SSLSocket)
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            self._set_events(_READ)
            return
        except ssl.SSLWantWriteError:
            self._set_events(_WRITE)
            return
        except ssl.SSLCertVerificationError as exc:
            self._tls_failed(f"certificate not trusted: {exc.verify_message}", verify=True)
            return
        except (OSError, ssl.SSLError) as exc:
            self._tls_failed(f"TLS handshake failed: {exc}")
            return
        self._tls_version = sock.version()
        if self.engine is None:  # implicit TLS
            self._begin_smtp(tls=True)
        else:
            self._phase = "smtp"
            self.engine.tls_started()
            self._pump()

    def _tls_failed(self, reason: str, *, verify: bool = False) -> None:
        assert self.candidate is not None
        # Opportunistic TLS (RFC 7435): a server whose TLS is broken still gets its mail, in
        # the clear, on a second connection to the same address.
        opportunistic = not (verify or self.security.required or self.security.implicit)
        if opportunistic and self.candidate.address not in self._plain_retry:
            self._plain_retry.add(self.candidate.address)
            self.candidates.insert(0, self.candidate)
        self._give_up_candidate(reason)

    # --- events -----------------------------------------------------------------------------
    def _set_events(self, events: int) -> None:
        if self.sock is None or events == self._events:
            return
        if self._events == 0:
            self.loop.register(self.sock, events, self._on_event)
        else:
            self.loop.modify(self.sock, events, self._on_event)
        self._events = events

    def _unregister(self) -> None:
        if self.sock is not None and self._events:
            self.loop.unregister(self.sock)
        self._events = 0

    def _on_event(self, mask: int) -> None:
        if self.closed:
            return
        if self._phase == "connecting":
            self._connected()
        elif self._phase == "handshake":
            self._handshake()
        else:
            if mask & _WRITE:
                self._flush()
            if mask & _READ and not self.closed and self._phase == "smtp":
                self._read()

    def _read(self) -> None:
        sock = self.sock
        assert sock is not None and self.engine is not None
        try:
            data = sock.recv(_CHUNK)
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return
        except (OSError, ssl.SSLError) as exc:
            self._feed_eof(f"connection lost: {exc}")
            return
        while isinstance(sock, ssl.SSLSocket) and sock.pending():
            try:
                data += sock.recv(_CHUNK)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                break
            except (OSError, ssl.SSLError):
                break
        if not data:
            self._feed_eof("the server closed the connection")
            return
        try:
            self.engine.receive_data(data)
        except LocalProtocolError:
            self._feed_eof("bytes from the server after it closed")
            return
        self._await_reply()
        self._pump()

    def _flush(self) -> None:
        sock = self.sock
        if sock is None:
            return
        while self._out:
            try:
                sent = sock.send(self._out[:_CHUNK])
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                break
            except (OSError, ssl.SSLError) as exc:
                self._feed_eof(f"connection lost: {exc}")
                return
            del self._out[:sent]
            self.deadline = time.monotonic() + self._timeout(None)
        if self._streaming and len(self._out) < _MAX_OUT:
            self._stream()
        events = _READ | (_WRITE if self._out or self._streaming else 0)
        self._set_events(events)

    def _write(self, data: bytes) -> None:
        self._out += data
        if self._out or self._streaming:
            self._flush()

    def _timeout(self, waiting: Waiting | None) -> float:
        value = TIMEOUTS.get(waiting, 300.0)
        return min(value, self.reply_timeout) if self.reply_timeout else value

    def _await_reply(self) -> None:
        if self._idle:
            self.deadline = self._idle_until
            return
        waiting = self.engine.waiting_for if self.engine is not None else None
        self.deadline = time.monotonic() + self._timeout(waiting)

    def _send(self) -> None:
        """Write what the engine has to say, and wait for its reply."""
        if self.engine is not None and self.sock is not None:
            self._write(self.engine.data_to_send())
            self._await_reply()

    def _feed_eof(self, reason: str, *, ours: bool = False) -> None:
        """The connection is over from our side (``ours``: a timeout, a stop) or theirs: let
        the engine end what is under way (a transaction gets no replies: RFC 5321 3.8, try
        again later)."""
        self._last_reason = f"{self.remote}: {reason}"
        self._ended_here = ours
        self._stop_streaming()
        engine = self.engine
        self._close_socket()
        if engine is None:
            self._finish()
            return
        engine.receive_data(b"")
        self._pump(reason)

    # --- the SMTP dialogue ------------------------------------------------------------------
    def _pump(self, lost: str | None = None) -> None:
        engine = self.engine
        while engine is not None and not self.closed:
            event = engine.next_event()
            if event is NEED_DATA or event is PAUSED:
                break
            try:
                self._on_smtp(event, lost)
            except LocalProtocolError as exc:
                # Our own call was wrong for this server (an envelope it cannot take):
                # this job fails for good, the connection is not trusted further.
                self._job_refused(str(exc))
                return
            if self.engine is not engine:
                return  # moved on to another candidate
        if engine is not None:
            self._send()

    def _on_smtp(self, event: object, lost: str | None) -> None:
        engine = self.engine
        assert engine is not None
        match event:
            case Greeting(reply=reply):
                if reply.code >= 300:
                    engine.quit()
                    self._write(engine.data_to_send())
                    self._give_up_candidate(f"greeting: {_said(reply)}", reply)
            case Ready(reply=reply):
                self._ready(reply)
            case HelloRefused(reply=reply):
                self._give_up_candidate(f"EHLO refused: {_said(reply)}", reply)
            case StartTlsNow():
                self._write(engine.data_to_send())
                self._begin_tls()
            case StartTlsRefused(reply=reply):
                if self.security.required:
                    engine.quit()
                    self._give_up_candidate(f"STARTTLS refused: {_said(reply)}", reply)
                else:
                    self._take_job()
            case AuthResult(reply=reply):
                if not 200 <= reply.code < 300:
                    engine.quit()
                    self._write(engine.data_to_send())
                    self._give_up_candidate(f"authentication failed: {_said(reply)}", reply)
                else:
                    self._take_job()
            case SendData():
                self._start_streaming()
            case TransactionDone(results=results):
                self._done(results, lost)
            case ProtocolError(description=text):
                # "The connection closed while waiting for ...": the step the server left
                # at. When this side closed it, its own reason (a timeout) says why.
                if not self._ended_here:
                    self._last_reason = f"{self.remote}: {text}"
            case Closed(reply=reply):
                if reply is not None and reply.code == 421 and self.sessions == 0:
                    self._last_reason = f"{self.remote}: {_said(reply)}"
                    self._last_reply = reply
                if self.job is not None:  # pragma: no cover - TransactionDone comes first
                    self._done((), lost)
                self._close_socket()
                if self.sessions == 0 and self._phase != "done" and not self._no_more_jobs:
                    self._next_candidate()  # never got to send: try the next address
                else:
                    self._finish()
            case _:
                pass  # MailResult, RecipientResult, MessageResult, ResetResult: in the Done

    def _ready(self, reply: Reply) -> None:
        engine = self.engine
        assert engine is not None and self.candidate is not None
        name = reply.lines[0].split(" ", 1)[0] if reply.lines else ""
        if name and self.loops_back(name):
            engine.quit()
            self._write(engine.data_to_send())
            self._last_reply = None
            self.candidates.clear()
            self._last_reason = f"{self.remote}: mail for this host loops back to myself"
            self._close_socket()
            self._phase = "done"
            self.closed = True
            self.owner.failed(self, self._last_reason, None, True)
            return
        security = self.security
        if not engine.tls and security.context is not None and security.starttls:
            plain = self.candidate.address in self._plain_retry
            if engine.extensions.starttls and not plain:
                engine.start_tls()
                return
            if security.required:
                engine.quit()
                self._write(engine.data_to_send())
                self._give_up_candidate("does not offer STARTTLS, and TLS is required")
                return
        if security.credentials is not None and not engine.authenticated:
            if not engine.tls:
                engine.quit()
                self._give_up_candidate("no TLS: the password is never sent in the clear")
                return
            mechanism = next((m for m in ("PLAIN", "LOGIN") if m in engine.extensions.auth), None)
            if mechanism is None:
                engine.quit()
                self._give_up_candidate("offers neither AUTH PLAIN nor AUTH LOGIN")
                return
            engine.authenticate(mechanism, *security.credentials)
            return
        self._take_job()

    def _take_job(self) -> None:
        engine = self.engine
        assert engine is not None
        job = self.owner.ready(self)
        if job is None:
            # Nothing left for this host: the close that follows is the end, not a reason
            # to try the next address (jobs queued meanwhile get a link of their own, or
            # wake this one while it is idle).
            self._no_more_jobs = True
            if self.idle_timeout > 0:
                self._idle = True
                self._idle_until = time.monotonic() + self.idle_timeout
                return
            engine.quit()
            return
        self.job = job
        job.remote = self.candidate.host if self.candidate is not None else ""
        job.peer = self.remote
        job.tls = self._tls_version
        job.dsn_offered = engine.extensions.dsn
        limit = engine.extensions.size
        if limit and job.size > limit:
            # RFC 1870 6.1: the server says in advance it will not take it.
            self._job_result(
                [
                    (
                        a,
                        None,
                        f"5.3.4 message size {job.size} exceeds the limit of "
                        f"{self.remote}, {limit}",
                    )
                    for a in job.recipients
                ]  # fmt: skip
            )
            self._take_job()
            return
        content = job.content or scan_message(job.path, binary=job.binary)
        unsendable = _unsendable(job, content, engine.extensions.smtputf8, self.remote)
        if unsendable:
            job.refused = unsendable
            job.recipients = tuple(a for a in job.recipients if a not in unsendable)
            if not job.recipients:
                self._job_result([])
                self._take_job()
                return
        mail_params = job.mail_params if job.dsn_offered else {}
        rcpt_params = job.rcpt_params if job.dsn_offered else {}
        engine.send_envelope(
            job.sender,
            job.recipients,
            size=job.size,
            eight_bit=content.eight_bit,
            # RFC 6531 3.4: passed on whenever the next hop offers it; without it the
            # message goes only when nothing in it needs it (_unsendable).
            smtputf8=job.smtputf8 and engine.extensions.smtputf8,
            mail_params=mail_params,
            rcpt_params={a: p for a, p in rcpt_params.items() if p and a in job.recipients},
        )

    def _job_refused(self, reason: str) -> None:
        if self.job is not None:
            self._job_result([(a, None, f"5.6.0 {reason}") for a in self.job.recipients])
        self._close_socket()
        self._finish()

    def _start_streaming(self) -> None:
        assert self.job is not None
        try:
            self._message_fd = os.open(self.job.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError as exc:
            self._feed_eof(f"cannot read the queued message: {exc.strerror}", ours=True)
            return
        try:
            _skip_return_path(self._message_fd)
        except OSError as exc:
            self._feed_eof(f"cannot read the queued message: {exc.strerror}", ours=True)
            return
        self._streaming = True
        self._stream()

    def _stream(self) -> None:
        engine = self.engine
        assert engine is not None
        while self._streaming and len(self._out) < _MAX_OUT:
            try:
                chunk = os.read(self._message_fd, _CHUNK)
            except OSError as exc:
                self._feed_eof(f"cannot read the queued message: {exc.strerror}", ours=True)
                return
            if not chunk:
                self._stop_streaming()
                engine.end_data()
                self._out += engine.data_to_send()
                self._await_reply()
                break
            engine.send_data(chunk)
            self._out += engine.data_to_send()

    def _stop_streaming(self) -> None:
        self._streaming = False
        if self._message_fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._message_fd)
            self._message_fd = -1

    def _done(self, results: tuple[tuple[str, Reply | None], ...], lost: str | None) -> None:
        why = lost or self._last_reason
        self.sessions += 1
        self._job_result([(a, r, "" if r is not None else why) for a, r in results])
        if self.sock is not None and self.engine is not None:
            self._take_job()

    def _job_result(self, results: list[tuple[str, Reply | None, str]]) -> None:
        job, self.job = self.job, None
        if job is not None:
            refused: list[tuple[str, Reply | None, str]] = [
                (a, None, why) for a, why in job.refused.items()
            ]
            self.owner.finished(self, job, results + refused)

    # --- the end ----------------------------------------------------------------------------
    def _close_socket(self) -> None:
        self._stop_streaming()
        sock, self.sock = self.sock, None
        if sock is not None:
            self._unregister_sock(sock)
            with contextlib.suppress(OSError):
                sock.close()
        self._out.clear()

    def _unregister_sock(self, sock: socket.socket) -> None:
        if self._events:
            self.loop.unregister(sock)
        self._events = 0

    def _finish(self) -> None:
        if self.closed:
            return
        self._phase = "done"
        self.closed = True
        self.owner.closed(self)


def _skip_return_path(fd: int) -> None:
    """Position ``fd`` after the ``Return-Path:`` line a queued message starts with: it is
    for the final mailbox, and a sending server does not pass it on (RFC 5321 4.4)."""
    head = os.pread(fd, 1024, 0)
    end = head.find(b"\r\n") if head[:12].lower() == b"return-path:" else -1
    os.lseek(fd, end + 2 if end >= 0 else 0, os.SEEK_SET)


def _said(reply: Reply) -> str:
    return str(reply).strip()


@dataclass(frozen=True, slots=True)
class Content:
    """What a queued message holds, as far as a next hop's extensions matter."""

    #: Octets over 127 anywhere (then BODY=8BITMIME, RFC 6152).
    eight_bit: bool = False
    #: Octets over 127 in the header section: UTF-8 header fields (RFC 6532).
    utf8_headers: bool = False
    #: For a binary message: what SMTP DATA cannot carry, in words (None: nothing).
    not_text: str | None = None


def scan_message(path: str, *, binary: bool) -> Content:
    """Read the message for what a next hop must offer to take it; an unreadable file is
    found again when it is streamed."""
    eight_bit = False
    head = bytearray()
    in_head = True
    whole = bytearray() if binary else None
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                eight_bit = eight_bit or not chunk.isascii()
                if in_head:
                    head += chunk
                    end = head.find(b"\r\n\r\n")
                    if end >= 0:
                        del head[end:]
                        in_head = False
                if whole is not None:
                    whole += chunk
                elif eight_bit and not in_head:
                    break
    except OSError:
        return Content()
    return Content(eight_bit, not bytes(head).isascii(), _not_text(bytes(whole)) if whole else None)


def _not_text(data: bytes) -> str | None:
    """Why a message sent as BODY=BINARYMIME cannot go as SMTP DATA text (RFC 5321 2.3.8,
    4.5.3.1.6; RFC 6152 3: no NUL, CRLF line ends only, lines of at most 998 octets)."""
    if b"\0" in data:
        return "a NUL octet"
    lines = data.split(b"\r\n")
    if any(b"\r" in line or b"\n" in line for line in lines):
        return "a CR or LF outside a CRLF line end"
    if any(len(line) > 998 for line in lines):
        return "a line longer than 998 octets"
    return None


def _unsendable(job: Job, content: Content, smtputf8: bool, remote: str) -> dict[str, str]:
    """The recipients of ``job`` that ``remote`` cannot be sent, with the reason (a
    permanent one, "5.6.x ..."): what the next hop lacks stays lacking on a retry."""
    if content.not_text is not None:
        # smtpkit sends with DATA only: a binary message goes on when it is text after all.
        why = (
            f"5.6.3 the message was sent as binary (BODY=BINARYMIME) and holds "
            f"{content.not_text}, which {remote} cannot be sent without conversion"
        )
        return dict.fromkeys(job.recipients, why)
    if smtputf8:
        return {}
    # RFC 6531 3.2 (and its status codes X.6.7, X.6.9): without SMTPUTF8 at the next hop,
    # no UTF-8 address and no UTF-8 header field may go there; smtpkit does not downgrade.
    lacks = f"{remote} does not offer SMTPUTF8"
    if not job.sender.isascii():
        return dict.fromkeys(job.recipients, f"5.6.7 {lacks}, needed for the sender {job.sender}")
    # UTF-8 header fields are for the next hop to pass on; an LMTP server is the mail store
    # itself (final delivery), which keeps them as the octets they are (8BITMIME).
    if job.smtputf8 and content.utf8_headers and not job.final:
        return dict.fromkeys(
            job.recipients, f"5.6.9 {lacks}, needed for the message's UTF-8 header fields"
        )
    # The report names the address (Final-Recipient); its diagnostic stays ASCII.
    return {a: f"5.6.7 {lacks}, needed for this UTF-8 address" for a in job.recipients
            if not a.isascii()}  # fmt: skip
