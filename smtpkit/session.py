"""One SMTP session: protocol events in, policy decisions, replies out, mail to storage.

The session owns no socket: it is driven by ``receive()`` and the ``Transport`` it is given
(``server.connection`` in production, a list of bytes in tests). Every reply leaves through
``_reply``, the one choke point that journals errors, counts the error budget and closes the
session after a 421 (ARCHITECTURE.md, "Invariants").
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.parser import BytesHeaderParser, HeaderParser
from email.utils import format_datetime, getaddresses, make_msgid
from types import MappingProxyType
from typing import Any, Protocol

from smtpkit import metrics
from smtpkit.addresses import host_port
from smtpkit.config import ListenerRole
from smtpkit.delivery.queue import entry_name
from smtpkit.delivery.spool import Spool
from smtpkit.delivery.targets import JUNK, Delivery, DsnRequest, Mailbox, Target
from smtpkit.journal import Journal
from smtpkit.limits import Limits
from smtpkit.policy import Accept, Decision, Defer, Policy, Reject, SessionFacts, TlsInfo
from smtpkit.protocol import NEED_DATA, PAUSED, ServerConnection, State, replies
from smtpkit.protocol import events as ev
from smtpkit.protocol.dsn import MailDsn, RcptDsn
from smtpkit.protocol.replies import Reply
from smtpkit.sasl import MECHANISMS, Credentials, Exchange, SaslError

__all__ = [
    "REPEAT_LINE",
    "Deliver",
    "Inspected",
    "Inspection",
    "Inspector",
    "ServerContext",
    "Session",
    "TlsInfo",
    "Transport",
    "Verdict",
    "new_session_id",
]

# A refusal repeated this many times gets a ``repeated`` journal line with the count, so a
# long session's journal stays bounded by what it did, not by how often it did it.
REPEAT_LINE = 1000
# What a message no inspector looked at adds to its journal line: nothing (one shared,
# read-only mapping instead of an empty dict per session).
_NOTHING_CHECKED: Mapping[str, Any] = MappingProxyType({})

# The engine's states inside a message: its content is being read (DATA, a BDAT chunk), or
# more chunks of it are to come; the data timeout applies.
_IN_MESSAGE = frozenset({State.DATA, State.CHUNK, State.BDAT})

Submit = Callable[[Delivery, Callable[[Delivery], None]], None]


class Authenticator(Protocol):
    """Checks passwords for AUTH, off the event loop, and keeps the brute-force counts."""

    def blocked(self, peer: str, user: str | None = None) -> bool:
        """Too many recent failures from this address, or for this user name (unless the
        user logged in from this address before): AUTH gets 454 for now."""

    def check(
        self, user: str, password: str, done: Callable[[str | None], None], peer: str = ""
    ) -> None:
        """Check a password in the background; ``done`` gets the user's canonical address,
        None for a wrong one, or "" when it could not check (try later), on the loop.
        ``peer`` is the client's address."""

    def failed(self, peer: str, user: str) -> None:
        """Count a failure against the address and the user name."""

    def sent(self, user: str) -> None:
        """A message from ``user`` was accepted (for the per-user sending limit)."""


@dataclass(frozen=True, slots=True)
class Inspection:
    """A finished message, before it is committed: what the checks (``Inspector``) see."""

    spool: Spool
    peer: str  # the client's IP address
    helo: str
    sender: str  # "" for the null sender
    recipients: tuple[str, ...]
    user: str | None  # the authenticated user, if any


@dataclass(frozen=True, slots=True)
class Deliver:
    """The checks let the message through; its local copies go into the Junk folder when
    ``junk``."""

    junk: bool = False


#: What the checks decided, as a type the session acts on (never a reply code): deliver,
#: refuse for good (the policy's ``Reject``, a 5xx), or for now (``Defer``, a 4xx).
Verdict = Deliver | Reject | Defer


@dataclass(frozen=True, slots=True)
class Inspected:
    """What the checks decided (``verdict``) and what they found (``fields``, for the
    journal's ``stored`` or ``rejected`` line). The spool may have been rewritten (header
    fields added)."""

    verdict: Verdict = Deliver()
    fields: dict[str, Any] = field(default_factory=dict)


class Inspector(Protocol):
    """Checks a message before it is committed (mail authentication, a content scanner,
    DKIM signing of what leaves), off the event loop."""

    def wanted(self, role: ListenerRole, peer: str, user: str | None) -> bool:
        """Whether messages of such a session are inspected at all."""

    def inspect(self, inspection: Inspection, done: Callable[[Inspected], None]) -> None:
        """Inspect in the background; ``done`` is called on the loop. Until then nothing
        else touches the spool."""


class RecipientVerifier(Protocol):
    """Asks the mail store about a recipient the policy accepted, before its 250
    (``[delivery] lmtp_verify``: the LMTP server), off the event loop."""

    def verify(self, decision: Accept, done: Callable[[Decision], None]) -> Decision | None:
        """The decision now (nothing to ask, or the answer is known), or None: ``done``
        gets it later, on the loop. Until then the session reads nothing more."""


class Transport(Protocol):
    """What a session needs from its connection."""

    def write(self, data: bytes) -> None: ...

    def close(self) -> None:
        """Close once everything written so far has been sent."""

    def start_tls(self) -> None:
        """Begin the TLS handshake once everything written so far has been sent; call
        ``Session.tls_started`` when it completes."""

    @property
    def congested(self) -> bool:
        """Replies wait unsent past the transport's bound: the session stops answering
        (parses nothing more) until ``Session.resume()`` is called."""


@dataclass(slots=True)
class ServerContext:
    """What every session of a server shares."""

    hostname: str
    limits: Limits
    policy: Policy
    journal: Journal
    submit: Submit
    open_spool: Callable[[bytes], Spool]
    tls_available: bool = False
    auth: Authenticator | None = None
    #: Offer DSN (RFC 3461) on the receive listeners too (it always is on submission).
    dsn_on_receive: bool = False
    #: Checks each message before it is committed; None: none.
    inspector: Inspector | None = None
    #: Asks the mail store about each accepted recipient at RCPT; None: nobody is asked.
    verifier: RecipientVerifier | None = None


# Session ids are cut from random bytes drawn in blocks: one getrandom(2) per 256 sessions
# rather than one each. A forked worker starts with an empty block of its own, or two
# processes would hand out the same ids. Only the event loop's thread makes sessions: there
# is no lock.
_ID_BYTES = 6
_id_block = b""
_id_next = 0


def _new_id_block() -> None:
    global _id_block, _id_next
    _id_block, _id_next = b"", 0


os.register_at_fork(after_in_child=_new_id_block)


def new_session_id() -> str:
    global _id_block, _id_next
    start = _id_next
    if start >= len(_id_block):
        _id_block, start = os.urandom(_ID_BYTES * 256), 0
    _id_next = start + _ID_BYTES
    return _id_block[start : start + _ID_BYTES].hex()


_date_cache: tuple[int, str] = (-1, "")


def _date_now() -> str:
    """The RFC 5322 date for a Received line, formatted once per second."""
    global _date_cache
    second = int(time.time())
    if _date_cache[0] != second:
        _date_cache = (second, format_datetime(datetime.fromtimestamp(second, UTC)))
    return _date_cache[1]


def _address_literal(host: str) -> str:
    return f"[IPv6:{host}]" if ":" in host else f"[{host}]"


class Session:
    """Drives one connection from greeting to close."""

    # Slots: a server holds thousands of idle sessions, and past 30 attributes an instance
    # dict no longer shares its keys with the others (1.5 KB more per session).
    __slots__ = (
        "_authors",
        "_body",
        "_checked",
        "_chunk_failure",
        "_chunks",
        "_delivered_here",
        "_dot",
        "_headers",
        "_last_helo",
        "_mail_dsn",
        "_message_id",
        "_overshoot",
        "_rcpt_dsn",
        "_refused_chunks",
        "_repeated_commands",
        "_repeats",
        "_sasl",
        "_smtputf8",
        "auth_failures",
        "close_reason",
        "closed",
        "conn",
        "ctx",
        "draining",
        "errors",
        "helo_name",
        "id",
        "junk",
        "listener",
        "messages",
        "peer",
        "peer_host",
        "peer_port",
        "recipients",
        "role",
        "sender",
        "spool",
        "stalled",
        "targets",
        "tls",
        "transport",
        "user",
        "waiting",
    )

    def __init__(
        self,
        ctx: ServerContext,
        transport: Transport,
        peer: tuple[str, int],
        session_id: str | None = None,
        role: ListenerRole = ListenerRole.RECEIVE,
        listener: str = "",
    ) -> None:
        self.ctx = ctx
        self.role = role
        self.listener = listener  # one string per listener, shared by its sessions
        self.transport = transport
        self.peer_host, self.peer_port = peer[0], peer[1]
        self.peer = host_port(self.peer_host, self.peer_port)
        self.id = session_id or new_session_id()
        self.conn = ServerConnection(ctx.limits)
        self.errors = 0
        self.junk = 0  # junk commands since the last delivered message
        self.stalled = False  # stopped answering until the transport drains (resume())
        self.closed = False
        self.close_reason = ""
        self.waiting = False  # a message is being made durable; replies wait for it
        self.draining = False  # shutdown asked: close after the current transaction
        self.tls: TlsInfo | None = None
        self.user: str | None = None  # the authenticated user's address
        self.auth_failures = 0
        self._sasl: Exchange | None = None
        self.helo_name = ""
        self.messages = 0
        self._message_id = ""  # the current message's (see _open_spool)
        # Journal lines in bounded space: a refusal repeated is counted, not written again
        # (reply text -> repeats not yet journaled); junk commands and repeated greetings,
        # which get no line of their own, are counted per verb. Both are journaled as
        # ``repeated`` lines at the end.
        # Made at the first one: most sessions never repeat anything, and a server holds
        # thousands of idle sessions (so are the per-transaction containers below).
        self._repeats: dict[str, int] | None = None
        self._repeated_commands: dict[str, int] | None = None
        self._last_helo: tuple[str, bool] | None = None
        # BDAT commands refused since the last refused chunk (None: no chunk refused yet):
        # RFC 3030 2 has a client's pipelined chunks read after a refusal; they are refused
        # too, but count with it as one error (up to limits.max_refused_chunks).
        self._refused_chunks: int | None = None
        self._reset_transaction()

    # --- driving ---------------------------------------------------------------------------
    def start(self, tls: TlsInfo | None = None) -> None:
        """Greet the client; ``tls`` when the connection began with a TLS handshake
        (implicit TLS, RFC 8314)."""
        if tls is None:
            self._journal("connect")
        else:
            self.tls = tls
            self._journal("connect", tls=tls.version, cipher=tls.cipher)
            metrics.record.tls(tls.version)
        metrics.record.connection("accepted")
        self._reply(replies.greeting(self.ctx.hostname))

    def receive(self, data: bytes) -> None:
        """Bytes from the client; ``b""`` when it closed its side."""
        if self.closed:
            return
        self.conn.receive_data(data)
        self._pump()

    @property
    def in_data(self) -> bool:
        return self.conn.state in _IN_MESSAGE or self.waiting

    def resume(self) -> None:
        """The transport drained: go on with what the client pipelined."""
        self.stalled = False
        self._pump()

    def timeout(self) -> None:
        """The idle deadline passed (RFC 5321 4.5.3.2)."""
        if not self.closed:
            self._journal("timeout", state=self.conn.state.name)
            self._abort_spool()
            self._reply(replies.TIMEOUT)

    def expire(self) -> None:
        """The session outlived ``limits.max_session_time``; a message in flight is dropped
        (never acknowledged, so the sender retries it)."""
        if not self.closed:
            self._journal("timeout", state=self.conn.state.name, limit="session")
            self._abort_spool()
            self._reply(replies.SESSION_TOO_LONG)

    def shutdown(self) -> None:
        """Server is stopping: close now, or after the message in flight is answered."""
        if self.closed:
            return
        if self.in_data:
            self.draining = True
            return
        self._reply(replies.SHUTTING_DOWN)

    def refuse_service(self, reply: Reply, **fields: object) -> None:
        """Greet with a refusal (RFC 5321 3.1: 554, no service here) and close: the client
        is on a blocklist. ``fields`` go to the journal's ``connect`` line."""
        self._journal("connect", **fields)
        metrics.record.connection("blocklisted" if "blocklisted" in fields else "shutdown")
        self._reply(reply, journaled=True)
        self.closed = True
        self.close_reason = str(reply)
        self.transport.close()

    def force_close(self, reply: Reply) -> None:
        """Answer ``reply`` (a 421) and close whatever the state; a message in flight is
        dropped (the sender was never told 250 and will retry)."""
        if self.closed:
            return
        self.waiting = False
        self.draining = False
        self._abort_spool()
        self._reply(reply)

    def tls_started(self, info: TlsInfo) -> None:
        self.tls = info
        self._journal("tls", version=info.version, cipher=info.cipher)
        metrics.record.tls(info.version)
        self._pump()

    def connection_lost(self, reason: str = "") -> None:
        """The socket is gone: ``reason`` is why (a reset, an error, a timeout), or
        ``"closed"`` when it closed after our last reply, which the session names better
        (``quit``, ``peer closed``, or the 421 sent)."""
        if self.spool is not None:
            self._abort_spool()
        self.closed = True
        if reason == "closed" and self.close_reason:
            reason = self.close_reason
        for text, count in (self._repeats or {}).items():
            if count:
                self._journal("repeated", reply=text, count=count)
        for verb, count in (self._repeated_commands or {}).items():
            self._journal("repeated", command=verb, count=count)
        self._journal("close", reason=reason or "peer closed", messages=self.messages)

    # --- the one choke point ----------------------------------------------------------------
    def _reply(self, reply: Reply, *, journaled: bool = False) -> None:
        """Every reply leaves here: errors are journaled (unless the command's own event
        already carries the reply, ``journaled``), and a 421 or 221 closes."""
        if self.closed:
            return
        self.transport.write(self.conn.send(reply))
        if reply.code >= 400 and not journaled:
            self._journal_reply(reply)
        if reply.closes or reply.code == 221:
            self.closed = True
            self.close_reason = "quit" if reply.code == 221 else str(reply)
            self._abort_spool()
            self.transport.close()

    def _refuse(self, reply: Reply, *, counts: bool = True, journaled: bool = False) -> None:
        """A refused command: answered, and counted against ``limits.max_errors``, which
        ends the session with 421 4.7.0 once reached."""
        self._reply(reply, journaled=journaled)
        if counts:
            self._count_error()

    def _count_error(self) -> None:
        self.errors += 1
        if self.errors >= self.ctx.limits.max_errors:
            self._reply(replies.TOO_MANY_ERRORS)

    def _junk_command(self, event: ev.Event, reply: Reply, verb: str = "") -> None:
        """NOOP, RSET, VRFY, HELP: free up to ``limits.max_junk_commands`` since the last
        delivered message, then each counts as an error."""
        self._count_command(verb or type(event).__name__.upper())
        self.junk += 1
        self._reply(reply)
        if self.junk > self.ctx.limits.max_junk_commands:
            self._count_error()

    def _count_command(self, verb: str) -> None:
        """One more of a command that gets no journal line of its own."""
        counts = self._repeated_commands
        if counts is None:
            counts = self._repeated_commands = {}
        counts[verb] = counts.get(verb, 0) + 1

    def _journal_reply(self, reply: Reply) -> None:
        """The first of each refusal gets its own line; identical ones after it are counted
        and journaled as one ``repeated`` line (at close, or every ``REPEAT_LINE`` of them)."""
        text = str(reply)
        if self._repeats is None:
            self._repeats = {}
        count = self._repeats.get(text)
        if count is None or reply.closes:
            self._repeats[text] = 0
            self._journal("reply", code=reply.code, text=text)
            return
        count += 1
        if count >= REPEAT_LINE:
            self._journal("repeated", reply=text, count=count)
            count = 0
        self._repeats[text] = count

    def _journal(self, event: str, **fields: Any) -> None:
        self.ctx.journal.write(event, self.id, self.peer, **fields)

    # --- events -----------------------------------------------------------------------------
    def _pump(self) -> None:
        conn = self.conn
        transport = self.transport
        while not self.closed and not self.waiting:
            if transport.congested:
                # The client is not reading: answer nothing more until it does, so its
                # pipelined commands wait in the buffers, not as replies in our memory.
                self.stalled = True
                return
            event = conn.next_event()
            if event is NEED_DATA or event is PAUSED:
                return
            handler = _HANDLERS[type(event)]
            handler(self, event)

    def _reset_transaction(self) -> None:
        self.sender: str | None = None
        self.recipients: list[str] = []
        self._overshoot = 0  # RCPTs refused for being past max_recipients
        self.targets: dict[Target, None] = {}  # ordered, each once
        self._mail_dsn: MailDsn | None = None  # RFC 3461 parameters, when given
        self._smtputf8 = False  # the MAIL said SMTPUTF8: UTF-8 addresses (RFC 6531 3.4)
        self._body: str | None = None  # the MAIL's BODY= value (RFC 6152, RFC 3030)
        self._rcpt_dsn: dict[str, RcptDsn] | None = None
        self._delivered_here: list[str] | None = None
        self._headers: bytearray | None = None
        self._authors: Sequence[str] = ()
        self._checked: Mapping[str, Any] = _NOTHING_CHECKED  # the inspector's, for the journal
        self._dot = 0.0  # when the final dot came (time.monotonic()), for the metrics
        self.spool: Spool | None = None
        self._chunks = 0  # BDAT chunks of this message (RFC 3030)
        # Why this BDAT message is refused at the end of its current chunk (a storage
        # error at its first one): the chunk is read all the same.
        self._chunk_failure: Reply | None = None

    def _abort_spool(self) -> None:
        if self.spool is not None:
            self.spool.abort()
            self.spool = None

    def _on_hello(self, event: ev.Hello) -> None:
        self._reset_transaction()
        refusal = _refusal(self.ctx.policy.check_helo(self._facts(), event))
        if refusal is not None:
            self._refuse(refusal)
            return
        if (event.name, event.extended) == self._last_helo:
            # The same greeting again only counts: a repeated EHLO is not worth a line each.
            self._count_command("EHLO" if event.extended else "HELO")
        else:
            self._last_helo = (event.name, event.extended)
            self._journal("helo", name=event.name, extended=event.extended)
        self.helo_name = event.name
        if event.extended:
            self._reply(replies.ehlo(self.ctx.hostname, event.name, self._extensions()))
        else:
            self._reply(replies.helo(self.ctx.hostname, event.name))

    def _facts(self) -> SessionFacts:
        return SessionFacts(
            peer=self.peer_host,
            role=self.role,
            listener=self.listener,
            tls=self.tls,
            helo=self.helo_name,
            user=self.user,
            smtputf8=self._smtputf8,
        )

    def _extensions(self) -> tuple[str, ...]:
        ext = [
            f"SIZE {self.ctx.limits.max_message_size}",
            "PIPELINING",
            "8BITMIME",
            # RFC 6531: UTF-8 addresses in a transaction whose MAIL says SMTPUTF8; the
            # policy holds them to the mailbox rules of addresses.py.
            "SMTPUTF8",
            # RFC 3030: messages in counted chunks, binary ones too; on every listener.
            "BINARYMIME",
            "CHUNKING",
            "ENHANCEDSTATUSCODES",
        ]
        # RFC 3207 4.2: STARTTLS is not offered again once TLS is on.
        if self.ctx.tls_available and self.tls is None:
            ext.append("STARTTLS")
        # RFC 4954 / RFC 8314: AUTH only on the submission listeners, and only under TLS,
        # so that no password ever crosses the network in clear.
        if self._auth_offered() and self.tls is not None:
            ext.append("AUTH " + " ".join(MECHANISMS))
        if self._dsn_offered():
            ext.append("DSN")
        ext.append("HELP")
        return tuple(ext)

    def _dsn_offered(self) -> bool:
        """RFC 3461 on the submission listeners; on port 25 only when configured: success
        notices asked for by anyone would mail what they send to whomever they name as
        the sender (backscatter)."""
        return self.role is not ListenerRole.RECEIVE or self.ctx.dsn_on_receive

    def _on_mail(self, event: ev.MailFrom) -> None:
        if event.dsn is not None and not self._dsn_offered():
            refusal: Reply | None = replies.UNKNOWN_PARAMETER
        else:
            refusal = _refusal(self.ctx.policy.check_mail(self._facts(), event))
        if refusal is not None:
            self._journal("mail", sender=event.address, code=refusal.code, text=str(refusal))
            metrics.record.refused(refusal)
            self._refuse(refusal, journaled=True)
            return
        self.sender = event.address
        self._mail_dsn = event.dsn
        self._smtputf8 = event.smtputf8
        self._body = event.body
        self._journal("mail", sender=event.address, size=event.size, code=250)
        self._reply(replies.OK_SENDER)

    def _on_rcpt(self, event: ev.RcptTo) -> None:
        limits = self.ctx.limits
        if len(self.recipients) >= limits.max_recipients:
            self._overshoot += 1
            self._journal_rcpt(event, replies.TOO_MANY_RECIPIENTS)
            counts = self._overshoot == 1 or self._overshoot > limits.max_recipient_overshoot
            self._refuse(replies.TOO_MANY_RECIPIENTS, counts=counts, journaled=True)
            return
        if event.dsn is not None and not self._dsn_offered():
            self._journal_rcpt(event, replies.UNKNOWN_PARAMETER)
            self._refuse(replies.UNKNOWN_PARAMETER, journaled=True)
            return
        decision = self.ctx.policy.check_rcpt(self._facts(), event)
        verifier = self.ctx.verifier
        if verifier is not None and isinstance(decision, Accept) and decision.targets:
            verified = verifier.verify(decision, functools.partial(self._verified, event))
            if verified is None:
                self.waiting = True  # the engine reads nothing more until the answer
                return
            decision = verified
        self._rcpt_decided(event, decision)

    def _verified(self, event: ev.RcptTo, decision: Decision) -> None:
        """The mail store answered about a recipient (on the loop)."""
        self.waiting = False
        if self.closed:
            return
        self._rcpt_decided(event, decision)
        self._pump()

    def _rcpt_decided(self, event: ev.RcptTo, decision: Decision) -> None:
        targets = decision.targets if isinstance(decision, Accept) else ()
        # Accepted with no target would go nowhere: that is an unknown user too.
        refusal = _refusal(decision) or (None if targets else replies.UNKNOWN_USER)
        if refusal is not None:
            self._journal_rcpt(event, refusal)
            self._refuse(refusal, journaled=True)
            return
        self.recipients.append(event.address)
        if event.dsn is not None:
            if self._rcpt_dsn is None:
                self._rcpt_dsn = {}
            self._rcpt_dsn[event.address] = event.dsn
            if event.dsn.wants("delivered") and any(isinstance(t, Mailbox) for t in targets):
                if self._delivered_here is None:
                    self._delivered_here = []
                self._delivered_here.append(event.address)
        for target in targets:
            self.targets[target] = None
        self._journal("rcpt", to=event.address, sender=self.sender, code=250)
        self._reply(replies.OK_RECIPIENT)

    def _owns(self, user: str, address: str) -> bool:
        return bool(address) and self.ctx.policy.sends_as(user, address, utf8=self._smtputf8)

    def _journal_rcpt(self, event: ev.RcptTo, reply: Reply) -> None:
        """A refused recipient, with its sender and the reply: "which senders were refused
        today" is one query on the journal."""
        self._journal(
            "rcpt", to=event.address, sender=self.sender, code=reply.code, text=str(reply)
        )
        metrics.record.refused(reply)

    def _on_data(self, event: ev.Data) -> None:
        self.messages += 1
        self._reply(self._open_spool() or replies.START_DATA)

    def _open_spool(self) -> Reply | None:
        """A new message begins (DATA, or its first chunk): its spool file, or the reply
        refusing it when that cannot be made."""
        # One id for the message wherever an admin looks for it: the 250 reply, Received:,
        # the journal, and the queue (its entry name, node tag and all, when it is queued;
        # the same form when it is not, so ids stay unique across the nodes of a cluster).
        self._message_id = entry_name(f"{self.id}.{self.messages}")
        spool = self.ctx.open_spool(self._trace_header())
        if spool.error is not None:
            self._journal("error", error=str(spool.error))
            metrics.record.refused_for("error")
            spool.abort()
            return replies.STORAGE_FULL if spool.error.disk_full else replies.LOCAL_ERROR
        self.spool = spool
        # An authenticated user's message: its header section is held back (bounded) until
        # it is complete, to add what RFC 6409 8 lets submission add, and to check From:.
        self._headers = bytearray() if self.user is not None else None
        return None

    def _on_bdat(self, event: ev.Bdat) -> None:
        """A chunk begins (RFC 3030 2); its reply is due at its end. The first chunk of a
        message opens its spool, as DATA does."""
        self._chunks += 1
        if self._chunks == 1:
            self.messages += 1
            self._chunk_failure = self._open_spool()

    def _on_chunk_end(self, event: ev.EndOfChunk) -> None:
        """A chunk was read whole. A refused one ends its transaction (RFC 3030 2); the
        last one's reply is the message's, sent once it is durable, as after the dot."""
        failure = event.error or self._chunk_failure
        if failure is not None:
            self._abort_spool()
            if event.error is not None:
                self._journal(
                    "rejected", size=event.total, code=event.error.code, chunks=self._chunks
                )
                metrics.record.refused(event.error)
            self._finish(failure, refused=event.error is not None)
            self._refused_chunks = 0
            return
        if event.last:
            self._dot = time.monotonic()
            spool, self.spool = self.spool, None
            if spool is None:  # pragma: no cover - the first chunk made it, or failed
                self._finish(replies.LOCAL_ERROR)
                return
            self._complete(spool, event.total)
            return
        reply = replies.chunk_received(event.size)
        if event.size:
            self._reply(reply)
        else:
            # "BDAT 0" without LAST adds nothing: a NOOP by another name.
            self._junk_command(event, reply, "BDAT")

    def _on_refused_chunk(self, event: ev.RefusedChunk) -> None:
        """A BDAT the engine refused; its chunk was read and dropped. The ones a client
        pipelined after a refused chunk count with that refusal, once."""
        counted = self._refused_chunks
        if counted is not None:
            self._refused_chunks = counted + 1
        free = counted is not None and counted < self.ctx.limits.max_refused_chunks
        self._refuse(event.reply, counts=not free)

    def _trace_header(self) -> bytes:
        """Return-Path (RFC 5321 4.4) and our Received line, prepended to the message."""
        protocol = "ESMTP" if self.conn.extended else "SMTP"
        if self._smtputf8:
            # RFC 6531 4.3: UTF8SMTP (then S, A as RFC 3848 adds them) for a transaction
            # with SMTPUTF8, which only an EHLO session can have.
            protocol = "UTF8SMTP"
        tls = ""
        if self.tls is not None:
            # RFC 3848: ESMTPS when the session is under TLS.
            protocol += "S"
            tls = f" (using {self.tls.version} with cipher {self.tls.cipher})"
        if self.user is not None:
            protocol += "A"  # RFC 3848: ESMTPA, ESMTPSA: the client authenticated
        # RFC 5321 7.2: naming the recipient only when there is one, so a Bcc stays hidden.
        rcpt = f"\r\n\tfor <{self.recipients[0]}>" if len(self.recipients) == 1 else ""
        stamp = _date_now()
        text = (
            f"Return-Path: <{self.sender or ''}>\r\n"
            f"Received: from {self.helo_name} ({_address_literal(self.peer_host)})\r\n"
            f"\tby {self.ctx.hostname} (smtpkit) with {protocol} id {self._message_id}{tls}"
            f"{rcpt};\r\n\t{stamp}\r\n"
        )
        if rcpt and all(isinstance(t, Mailbox) for t in self.targets):
            # The recipient as the client gave it, subaddress and all (alice+lists@), in the
            # field mail filters and Sieve (address :detail "delivered-to") read; as Dovecot's
            # LMTP writes it. Only for one recipient: every mailbox gets the same file.
            text += f"Delivered-To: {self.recipients[0]}\r\n"
        return text.encode("utf-8", "surrogateescape")

    def _on_chunk(self, event: ev.DataChunk) -> None:
        if self.spool is None:
            return
        held = self._headers
        if held is None:
            self.spool.write(event.data)
            return
        held += event.data
        if len(held) > _MAX_HEADERS or _header_end(held) >= 0:
            self._release_headers()

    def _release_headers(self) -> None:
        """Write the held header section, with Date: and Message-ID: added when the client
        left them out (RFC 6409 8.2, 8.3), and note the From: addresses."""
        held, self._headers = self._headers, None
        if held is None or self.spool is None:
            return
        end = _header_end(held)
        section = bytes(held[: end if end >= 0 else len(held)])
        if self._smtputf8:
            # RFC 6532: header fields in UTF-8, so a From: may name a UTF-8 address.
            headers = HeaderParser().parsestr(section.decode("utf-8", "surrogateescape"))
        else:
            headers = BytesHeaderParser().parsebytes(section)
        self._authors = [address for _, address in getaddresses(headers.get_all("From", []))]
        added = ""
        if headers.get("Date") is None:
            added += f"Date: {_date_now()}\r\n"
        if headers.get("Message-ID") is None:
            added += f"Message-ID: {make_msgid(domain=self.ctx.hostname)}\r\n"
        if added:
            self.spool.write(added.encode("ascii"))
        self.spool.write(bytes(held))

    def _on_end(self, event: ev.EndOfData) -> None:
        self._dot = time.monotonic()
        spool, self.spool = self.spool, None
        if spool is None:  # pragma: no cover - the engine only sends EndOfData after DATA
            self._finish(replies.LOCAL_ERROR)
            return
        if event.error is not None:
            spool.abort()
            self._journal("rejected", size=event.size, code=event.error.code)
            metrics.record.refused(event.error)
            self._finish(event.error, refused=True)
            return
        self._complete(spool, event.size)

    def _complete(self, spool: Spool, size: int) -> None:
        """The message is whole (the final dot, the last chunk) and broke no rule of the
        protocol: check what is left to check, then commit it; the reply waits for that."""
        self.spool = spool
        self._release_headers()  # a message with no body: all headers
        self.spool = None
        if spool.error is not None:
            spool.abort()
            self._journal("error", size=size, error=str(spool.error))
            metrics.record.refused_for("error")
            self._finish(replies.STORAGE_FULL if spool.error.disk_full else replies.LOCAL_ERROR)
            return
        user = self.user
        if user is not None and not all(self._owns(user, a) for a in self._authors):
            # Mail that leaves is signed for its From: domain: no user may pose as another.
            spool.abort()
            self._journal("rejected", size=size, code=550, authors=self._authors)
            metrics.record.refused(replies.FROM_NOT_OWNED)
            self._finish(replies.FROM_NOT_OWNED, refused=True)
            return
        self.waiting = True
        inspector = self.ctx.inspector
        if inspector is not None and inspector.wanted(self.role, self.peer_host, user):
            inspection = Inspection(
                spool,
                self.peer_host,
                self.helo_name,
                self.sender or "",
                tuple(self.recipients),
                user,
            )
            inspector.inspect(inspection, functools.partial(self._inspected, spool, size))
            return
        self._commit(spool)

    def _inspected(self, spool: Spool, size: int, result: Inspected) -> None:
        """The checks are done (on the loop): refuse the message, or commit it."""
        if self.closed:
            spool.abort()  # the client is gone: it was never told 250
            self.waiting = False
            return
        self._checked = result.fields
        match result.verdict:
            case Deliver(junk=junk):
                if junk:
                    self.targets = {
                        (Mailbox(t.path, JUNK) if isinstance(t, Mailbox) else t): None
                        for t in self.targets
                    }
                self._commit(spool)
            case Reject(reply=reply) | Defer(reply=reply):
                spool.abort()
                self.waiting = False
                self._journal("rejected", size=size, code=reply.code, **result.fields)
                metrics.record.refused_for("checks")
                # Refused for good, the message counts against the error budget; deferred
                # (greylisting, a scanner that could not be asked), it does not.
                self._finish(reply, refused=isinstance(result.verdict, Reject))
                self._pump()

    def _commit(self, spool: Spool) -> None:
        dsn = None
        if self._mail_dsn is not None or self._rcpt_dsn:
            dsn = DsnRequest(
                self._mail_dsn or MailDsn(),
                dict(self._rcpt_dsn or {}),
                tuple(self._delivered_here or ()),
            )
        delivery = Delivery(
            spool,
            tuple(self.targets),
            sender=self.sender or "",
            message_id=self._message_id,
            dsn=dsn,
            smtputf8=self._smtputf8,
            body=self._body,
        )
        self.ctx.submit(delivery, self._delivered)

    def _delivered(self, delivery: Delivery) -> None:
        self.waiting = False
        error = delivery.error
        if error is None:
            self._journal(
                "stored",
                id=self._message_id,
                size=delivery.spool.size,
                sender=self.sender,
                to=self.recipients,
                files=delivery.stored,
                **({"chunks": self._chunks} if self._chunks else {}),
                **self._checked,
            )
            metrics.record.stored(delivery.spool.size, len(self.recipients), self._dot)
            self.junk = 0
            if self.user is not None and self.ctx.auth is not None:
                self.ctx.auth.sent(self.user)
            self._finish(replies.stored(self._message_id))
        else:
            self._journal("error", id=self._message_id, error=str(error))
            metrics.record.refused_for("error")
            self._finish(replies.STORAGE_FULL if error.disk_full else replies.LOCAL_ERROR)
        self._pump()

    def _finish(self, reply: Reply, *, refused: bool = False) -> None:
        """Answer the final dot; the transaction is over either way. A message refused for
        its content counts as an error; a storage failure is ours and does not."""
        self._reset_transaction()
        self._refuse(reply, counts=refused)
        if self.draining:
            self._reply(replies.SHUTTING_DOWN)

    def _on_rset(self, event: ev.Rset) -> None:
        self._reset_transaction()
        self._junk_command(event, replies.OK)

    def _on_noop(self, event: ev.Noop) -> None:
        self._junk_command(event, replies.OK)

    def _on_quit(self, event: ev.Quit) -> None:
        self._reply(replies.closing(self.ctx.hostname))

    def _on_vrfy(self, event: ev.Vrfy) -> None:
        # RFC 5321 3.5.3 allows 252: we reveal nothing about which users exist.
        self._junk_command(event, replies.CANNOT_VRFY)

    def _on_expn(self, event: ev.Expn) -> None:
        self._refuse(replies.EXPN_DISABLED)

    def _on_help(self, event: ev.Help) -> None:
        self._junk_command(event, replies.help_text())

    def _on_starttls(self, event: ev.StartTls) -> None:
        if self.tls is not None:
            self._refuse(replies.TLS_ALREADY_ACTIVE)
        elif not self.ctx.tls_available:
            self._refuse(replies.TLS_NOT_AVAILABLE)
        else:
            # RFC 3207 4.2: everything about the session so far is forgotten.
            self._reset_transaction()
            self.helo_name = ""
            self._last_helo = None  # the greeting under TLS gets its own line
            self._reply(replies.TLS_READY)
            self.transport.start_tls()

    # --- AUTH (RFC 4954) -------------------------------------------------------------------
    def _auth_offered(self) -> bool:
        return self.role is not ListenerRole.RECEIVE and self.ctx.auth is not None

    def _on_auth(self, event: ev.Auth) -> None:
        auth = self.ctx.auth
        if auth is None or not self._auth_offered():
            self._refuse(replies.AUTH_NOT_OFFERED)
        elif self.user is not None:
            self._refuse(replies.AUTH_ALREADY)
        elif self.tls is None:
            self._refuse(replies.AUTH_NEEDS_TLS)
        elif auth.blocked(self.peer_host):
            self._journal("auth", mechanism=event.mechanism, result="throttled")
            self._refuse(replies.AUTH_THROTTLED, journaled=True)
        else:
            try:
                self._sasl = Exchange(event.mechanism)
                self._auth_step(self._sasl.feed(event.initial))
            except SaslError as exc:
                self._auth_refused(event.mechanism, exc.reply)

    def _on_auth_response(self, event: ev.AuthResponse) -> None:
        exchange = self._sasl
        if exchange is None:  # pragma: no cover - the engine reads responses only after 334
            self._refuse(replies.BAD_SEQUENCE)
            return
        if event.refusal is not None:
            self._auth_refused(exchange.mechanism, event.refusal)
            return
        try:
            self._auth_step(exchange.feed(event.text))
        except SaslError as exc:
            self._auth_refused(exchange.mechanism, exc.reply)

    def _auth_step(self, got: str | Credentials) -> None:
        if isinstance(got, str):
            self._reply(replies.challenge(got))
            return
        auth = self.ctx.auth
        assert auth is not None
        if auth.blocked(self.peer_host, got.user):
            # Too many failures for this user name: no password is checked for now.
            mechanism = self._sasl.mechanism if self._sasl is not None else "?"
            self._sasl = None
            self._journal("auth", mechanism=mechanism, user=got.user, result="throttled")
            self._refuse(replies.AUTH_THROTTLED, journaled=True)
            return
        # The password check is slow by design: it runs in the background, and the engine
        # reads nothing more until it is answered.
        self.waiting = True
        done = functools.partial(self._auth_checked, got.user)
        auth.check(got.user, got.password, done, self.peer_host)

    def _auth_checked(self, claimed: str, user: str | None) -> None:
        self.waiting = False
        mechanism = self._sasl.mechanism if self._sasl is not None else "?"
        self._sasl = None
        if self.closed:
            return
        if user == "":
            self._journal("auth", mechanism=mechanism, user=claimed, result="unavailable")
            self._refuse(replies.AUTH_UNAVAILABLE, journaled=True)
        elif user is not None:
            self.user = user
            self._journal("auth", mechanism=mechanism, user=user, result="ok")
            self._reply(replies.AUTH_OK)
        else:
            assert self.ctx.auth is not None
            self.ctx.auth.failed(self.peer_host, claimed)
            self.auth_failures += 1
            self._journal("auth", mechanism=mechanism, user=claimed, result="failed")
            self._refuse(replies.AUTH_FAILED, journaled=True)
            if self.auth_failures >= self.ctx.limits.max_auth_failures_per_session:
                self._reply(replies.TOO_MANY_AUTH_FAILURES)
        self._pump()

    def _auth_refused(self, mechanism: str, reply: Reply) -> None:
        self._sasl = None
        self._journal("auth", mechanism=mechanism, result=f"refused {reply.code}")
        self._refuse(reply, journaled=True)

    def _on_bad(self, event: ev.BadCommand) -> None:
        self._refuse(event.reply)

    def _on_closed(self, event: ev.ConnectionClosed) -> None:
        self._abort_spool()
        self.closed = True
        self.close_reason = "peer closed"
        self.transport.close()


#: How much of a header section is held back before it is written as it is.
_MAX_HEADERS = 64 * 1024


def _header_end(data: bytearray) -> int:
    """Where the body starts (after the empty line), or -1 while the headers go on."""
    if data.startswith(b"\r\n"):
        return 2
    found = data.find(b"\r\n\r\n")
    return found + 4 if found >= 0 else -1


def _refusal(decision: Decision) -> Reply | None:
    """The reply refusing the command, or None when the decision accepts it."""
    match decision:
        case Accept():
            return None
        case Reject(reply=reply) | Defer(reply=reply):
            return reply


_HANDLERS: dict[type[Any], Callable[[Session, Any], None]] = {
    ev.Hello: Session._on_hello,
    ev.MailFrom: Session._on_mail,
    ev.RcptTo: Session._on_rcpt,
    ev.Data: Session._on_data,
    ev.DataChunk: Session._on_chunk,
    ev.EndOfData: Session._on_end,
    ev.Bdat: Session._on_bdat,
    ev.EndOfChunk: Session._on_chunk_end,
    ev.RefusedChunk: Session._on_refused_chunk,
    ev.Rset: Session._on_rset,
    ev.Noop: Session._on_noop,
    ev.Quit: Session._on_quit,
    ev.Vrfy: Session._on_vrfy,
    ev.Expn: Session._on_expn,
    ev.Help: Session._on_help,
    ev.StartTls: Session._on_starttls,
    ev.Auth: Session._on_auth,
    ev.AuthResponse: Session._on_auth_response,
    ev.BadCommand: Session._on_bad,
    ev.ConnectionClosed: Session._on_closed,
}
