"""Picking up what local programs dropped with ``smtpkit-sendmail`` (``DIR/maildrop/``).

One worker at a time picks up (it holds a lock beside the spool pool folders; another takes
over if it dies). It learns of new files through inotify, and looks anyway every few seconds
(a missed event, files dropped while the server was stopped). Each file is untrusted input:
``maildrop.read`` checks its form and size; the sender comes from the file's owner (``-f``
counts only for root and the data folder's owner, as Postfix trusts only its own users);
the message is copied into a spool file behind our trace header, with the line rules of
SMTP applied (a bare CR or LF ends a line, a line over 998 octets is broken, as Postfix's
cleanup does), then committed like any message: local recipients to their Maildirs, others
to the queue. The file is removed once the message is durable, or when it is refused.

sendmail's -N, -R and -V become the ``DsnRequest`` a session builds from SMTP's NOTIFY, RET
and ENVID (the same NOTIFY on every recipient), so the queue keeps them in its envelope as it
does for SMTP, and a local delivery that NOTIFY=SUCCESS asks about gets its success notice
(the server's ``outbound/reports.DeliveredHere``, which its delivery thread runs for SMTP's
messages and this thread after its own commits).

The work runs in a thread of its own: reading and writing files never stalls the event
loop. Journal lines are handed to the loop.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import re
import select
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smtpkit.config import Config, ListenerRole
from smtpkit.delivery.commit import commit_batch
from smtpkit.delivery.queue import entry_name
from smtpkit.delivery.spool import Spool, SpoolPool
from smtpkit.delivery.syncer import SharedSyncer
from smtpkit.delivery.targets import Delivery, DsnRequest, Mailbox, Target
from smtpkit.maildrop import DropEnvelope, MaildropError, leftovers, maildrop_path, pending, read
from smtpkit.policy import Accept, LocalPolicy, SessionFacts
from smtpkit.protocol.events import RcptTo
from smtpkit.protocol.replies import UNKNOWN_USER
from smtpkit.server import inotify
from smtpkit.server.checks import sign_spool

if TYPE_CHECKING:
    from smtpkit.mailauth.signing import Signer

__all__ = ["Pickup"]

SCAN_EVERY = 5.0  # seconds between looks at the folder when inotify says nothing
_MAX_LINE = 998  # RFC 5321 4.5.3.1.6 without its CRLF
_LINE_END = re.compile(rb"\r\n|\r|\n")

Journal = Callable[..., None]


def _no_notices(deliveries: list[Delivery]) -> None:
    """No success notices (a pickup without a server's, as in tests)."""


class Pickup:
    """Runs in its own thread; ``stop()`` ends it."""

    def __init__(
        self,
        config: Config,
        policy: LocalPolicy,
        pool: SpoolPool,
        syncer: SharedSyncer,
        journal: Callable[[Callable[[], None]], None],
        write_journal: Journal,
        signer: Signer | None = None,
        notices: Callable[[list[Delivery]], None] | None = None,
    ) -> None:
        self.config = config
        self.signer = signer  # DKIM: what local programs send leaves signed
        self.policy = policy
        self.pool = pool
        self.syncer = syncer
        self._call_soon = journal
        self._write = write_journal
        self.folder = maildrop_path(config.server.directory)
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name="smtpkit-pickup", daemon=True)
        self._counter = 0
        # Success notices for local delivery: the server's, which its delivery thread runs.
        self._notices = notices if notices is not None else _no_notices

    def reconfigure(
        self,
        config: Config,
        policy: LocalPolicy,
        signer: Signer | None,
        notices: Callable[[list[Delivery]], None] | None = None,
    ) -> None:
        """A reloaded config, for the files picked up from now on (attributes are swapped
        whole: the pickup thread reads each once per file)."""
        notices = notices if notices is not None else _no_notices
        self.config, self.policy, self.signer, self._notices = config, policy, signer, notices

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        os.write(self._wake_w, b"x")
        self._thread.join()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _journal(self, event: str, session: str, **fields: Any) -> None:
        self._call_soon(lambda: self._write(event, session, "local", **fields))

    # --- the thread --------------------------------------------------------------------------
    def _run(self) -> None:
        lock = self._lock()
        if lock < 0:
            return
        watch = -1
        try:
            while not self._stop.is_set():
                # Only one worker picks up: the others wait for the lock, in case it dies.
                try:
                    fcntl.lockf(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    self._wait(-1, SCAN_EVERY)
                    continue
                if watch < 0:
                    watch = inotify.watch(self.folder)
                self._scan()
                self._wait(watch, SCAN_EVERY)
        finally:
            if watch >= 0:
                os.close(watch)
            os.close(lock)

    def _lock(self) -> int:
        try:
            return os.open(
                self.pool.folder.parent / ".maildrop-lock",
                os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                0o600,
            )
        except OSError:
            return -1

    def _wait(self, watch: int, timeout: float) -> None:
        # Any inotify event means "look": what it says is not needed.
        fds = [self._wake_r] + ([watch] if watch >= 0 else [])
        ready, _, _ = select.select(fds, [], [], timeout)
        if watch in ready:
            try:
                while os.read(watch, 65536):
                    pass
            except BlockingIOError:
                pass

    def _scan(self) -> None:
        try:
            files = pending(self.folder)
        except OSError:
            return
        for path in files:
            if self._stop.is_set():
                return
            self._take(path)
        try:
            stale = leftovers(self.folder, older_than=3600)
        except OSError:
            stale = []
        for path in stale:
            try:
                path.unlink()
            except OSError:
                pass

    # --- one file --------------------------------------------------------------------------
    def _take(self, path: Path) -> None:
        self._counter += 1
        session = f"local{os.getpid():x}{self._counter:x}"
        limits = self.config.limits
        try:
            dropped = read(path, max_size=limits.max_message_size)
        except MaildropError as exc:
            self._journal("rejected", session, file=path.name, error=str(exc))
            _remove(path)
            return
        with dropped:
            sender = self._sender(dropped.uid, dropped.envelope.sender)
            targets, accepted, local, refused = self._route(dropped.envelope.recipients)
            for address, reply in refused:
                self._journal("rcpt", session, to=address, sender=sender, code=reply[0],
                              text=reply[1])  # fmt: skip
            if not targets:
                self._journal("rejected", session, file=path.name, sender=sender,
                              error="no recipient can be delivered")  # fmt: skip
                _remove(path)
                return
            # Its name in the queue, the journal and Received: alike.
            message_id = entry_name(f"{session}.1")
            spool = Spool(self._trace(dropped.uid, sender, message_id), self.pool)
            head = _HeaderScan()
            for chunk in _lines(dropped.chunks()):
                head.feed(chunk)
                spool.write(chunk)
            signed = ""
            if self.signer is not None and spool.error is None:
                signed = sign_spool(self.signer, spool)
            # A local program has no SMTPUTF8 to say: the message needs it when an address
            # or a header field is UTF-8 (as Postfix's smtputf8_autodetect_classes does).
            addresses = (sender, *accepted)
            utf8 = head.utf8 or not all(a.isascii() for a in addresses)
            delivery = Delivery(
                spool,
                targets,
                sender=sender,
                message_id=message_id,
                dsn=_dsn_request(dropped.envelope, accepted, local),
                smtputf8=utf8,
            )
            commit_batch([delivery], self.syncer)
        if delivery.error is not None:
            # Stays in the maildrop: tried again at the next look.
            self._journal("error", session, id=message_id, error=str(delivery.error))
            return
        _remove(path)
        self._journal(
            "stored", session, id=message_id, size=spool.size, sender=sender, to=accepted,
            files=delivery.stored, uid=dropped.uid, **({"dkim_sign": signed} if signed else {}),
        )  # fmt: skip
        self._notices([delivery])

    def _sender(self, uid: int, requested: str | None) -> str:
        owner = os.stat(self.config.server.directory).st_uid
        if requested is not None and uid in (0, owner):
            return requested
        try:
            login = pwd.getpwuid(uid).pw_name
        except KeyError:
            login = f"uid{uid}"
        domain = self.config.submission.local_sender_domain or self.config.server.hostname
        return f"{login}@{domain}"

    def _route(
        self, recipients: tuple[str, ...]
    ) -> tuple[tuple[Target, ...], list[str], list[str], list[tuple[str, tuple[int, str]]]]:
        """Each recipient as a trusted local program's: local ones to their mailboxes,
        others to the queue. A bare name (cron's default ``MAILTO`` is the login) is a user
        of the first local domain. Returns the targets, the accepted addresses (bare names
        qualified), those of them with a mailbox here, and the refused ones."""
        # UTF-8 addresses are taken (the message is then marked SMTPUTF8), under the rules
        # they meet in SMTP: look-alikes of a local user are refused, never mapped.
        facts = SessionFacts(
            peer="127.0.0.1", role=ListenerRole.RECEIVE, user="local", smtputf8=True
        )
        targets: dict[Target, None] = {}
        accepted: list[str] = []
        local: list[str] = []
        refused: list[tuple[str, tuple[int, str]]] = []
        for address in recipients:
            if "@" not in address:
                address = f"{address}@{self.config.server.domains[0]}"
            decision = self.policy.check_rcpt(facts, RcptTo(address))
            if isinstance(decision, Accept) and decision.targets:
                accepted.append(address)
                if any(isinstance(t, Mailbox) for t in decision.targets):
                    local.append(address)
                for target in decision.targets:
                    targets[target] = None
            else:
                reply = decision.reply if not isinstance(decision, Accept) else UNKNOWN_USER
                refused.append((address, (reply.code, str(reply))))
        return tuple(targets), accepted, local, refused

    def _trace(self, uid: int, sender: str, message_id: str) -> bytes:
        stamp = format_datetime(datetime.now(UTC))
        return (
            f"Return-Path: <{sender}>\r\n"
            f"Received: by {self.config.server.hostname} (smtpkit, from userid {uid})\r\n"
            f"\tid {message_id}; {stamp}\r\n"
        ).encode("utf-8", "replace")


def _dsn_request(
    envelope: DropEnvelope, accepted: list[str], local: list[str]
) -> DsnRequest | None:
    """-N, -R and -V as the DSN request SMTP's MAIL and RCPT parameters make (a session's
    ``_commit``): NOTIFY for each accepted recipient, by the address the policy accepted;
    SUCCESS for one with a mailbox here is ours to report once the message is stored."""
    if not envelope.has_dsn:
        return None
    rcpt = envelope.rcpt_dsn()
    per_recipient = {address: rcpt for address in accepted} if rcpt.notify is not None else {}
    delivered_here = tuple(a for a in local if rcpt.wants("delivered"))
    return DsnRequest(envelope.mail_dsn(), per_recipient, delivered_here)


def _lines(chunks: Any) -> Any:
    """The message with every line ending in CRLF (a bare CR or LF ends a line) and lines
    over 998 octets broken, as a stream of chunks."""
    rest = b""
    for chunk in chunks:
        data = rest + chunk
        # Keep a trailing CR back: it may be the first half of a CRLF.
        cut = len(data) - 1 if data.endswith(b"\r") else len(data)
        pieces = _LINE_END.split(data[:cut])
        rest = pieces.pop() + data[cut:]
        yield b"".join(_broken(p) + b"\r\n" for p in pieces)
    if rest:
        for piece in _LINE_END.split(rest):
            if piece:
                yield _broken(piece) + b"\r\n"


class _HeaderScan:
    """Whether the header section of a message, fed as chunks of whole CRLF lines, holds
    octets over 127: UTF-8 header fields (RFC 6532)."""

    def __init__(self) -> None:
        self.utf8 = False
        self._done = False

    def feed(self, chunk: bytes) -> None:
        if self._done:
            return
        for line in chunk.split(b"\r\n")[:-1]:
            if not line:
                self._done = True
                return
            if not line.isascii():
                self.utf8 = True


def _broken(line: bytes) -> bytes:
    if len(line) <= _MAX_LINE:
        return line
    return b"\r\n".join(line[i : i + _MAX_LINE] for i in range(0, len(line), _MAX_LINE))


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
