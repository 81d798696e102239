"""``[delivery] lmtp_verify``: local recipients checked with the LMTP server at RCPT, off the
event loop, as Postfix's ``reject_unverified_recipient`` does.

The router knows who smtpkit's users are (``users/``, aliases); the LMTP server (Dovecot)
knows which mailboxes it will take. Asking it during the SMTP session turns what would be a
bounce later into a refusal while the sender is still connected, so no report goes to a
forged sender. A check is one short LMTP session (RFC 2033) on a thread of a small pool:
LHLO, ``MAIL FROM:<>``, an RCPT per address, RSET, QUIT, each step bounded by ``TIMEOUT``.
The session reads nothing more until the answer is back on the loop (``Session.waiting``).

What the answers decide: every address accepted, the recipient is (and the answer is kept
``POSITIVE_TTL`` seconds, so the next message to the same user costs no session); a 5xx
refuses it (``550 5.1.1`` for an unknown user); a 4xx defers it (``450 4.2.0``); a server
that cannot be reached, a timeout or a broken answer defers it with ``451 4.4.3``, never a
guess either way. Refusals are never kept: a mailbox made in Dovecot counts at the next try.
"""

from __future__ import annotations

import concurrent.futures
import re
import smtplib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from smtpkit.config import LmtpServer
from smtpkit.delivery.targets import Remote
from smtpkit.policy import Accept, Decision, Defer, Reject
from smtpkit.protocol import replies

__all__ = ["POSITIVE_TTL", "TIMEOUT", "Answer", "LmtpVerifier", "Unreachable", "ask", "judge"]

#: Seconds for each step of a check (connect, each reply).
TIMEOUT = 10.0
#: Seconds an accepted address is taken as accepted without asking again.
POSITIVE_TTL = 60.0
#: Checks under way at most; more recipients meanwhile are deferred (451 4.4.3): a server
#: that answers slowly must not gather sessions without bound.
MAX_PENDING = 256
THREADS = 4
_CACHE_SIZE = 4096
_STATUS = re.compile(r"([245])\.(\d{1,3})\.\d{1,3}\b")


class Unreachable(Exception):
    """The LMTP server could not be asked: the reason, in our words."""


@dataclass(frozen=True, slots=True)
class Answer:
    """The LMTP server's reply to one RCPT."""

    address: str
    code: int
    text: str


def ask(
    server: LmtpServer, hostname: str, addresses: Sequence[str], timeout: float
) -> list[Answer]:
    """One short LMTP session (blocking: call it on a thread): the RCPT reply for each of
    ``addresses``. Raises ``Unreachable`` when the server gives no answer to go by."""
    client = smtplib.LMTP(local_hostname=hostname, timeout=timeout)
    try:
        if server.socket is not None:
            code, text = client.connect(str(server.socket))
        else:
            assert server.hop is not None
            code, text = client.connect(server.hop.host, server.hop.port)
        _expect(220, code, text, "greeting")
        code, text = client.ehlo()  # LHLO, for smtplib.LMTP
        _expect(250, code, text, "LHLO")
        # The null sender, as a report would be sent: the answer is about the mailbox,
        # not about who writes to it, so it can be kept for every sender.
        code, text = client.mail("")
        _expect(250, code, text, "MAIL")
        answers = []
        for address in addresses:
            code, text = client.rcpt(address)
            answers.append(Answer(address, code, text.decode("utf-8", "replace")))
    except (OSError, smtplib.SMTPException) as exc:
        raise Unreachable(f"LMTP server {server}: {exc or type(exc).__name__}") from None
    try:
        client.rset()
        client.quit()
    except (OSError, smtplib.SMTPException):
        pass  # the answers are in: how the session ends changes nothing
    finally:
        client.close()
    return answers


def _expect(wanted: int, code: int, text: bytes, step: str) -> None:
    if code != wanted:
        said = text.decode("utf-8", "replace").replace("\n", " ")
        raise Unreachable(f"{step}: {code} {said}")


def judge(answers: Sequence[Answer]) -> Decision:
    """What the RCPT replies decide for a recipient: all positive, it is accepted; one
    refusal refuses it, a deferral defers it (a refusal weighs more: trying again will not
    change it)."""
    refused = [a for a in answers if 500 <= a.code < 600]
    if refused:
        status = _STATUS.match(refused[0].text)
        unknown = status is None or status.group(2) == "1"  # X.1.X: the address (RFC 3463)
        return Reject(replies.UNKNOWN_USER if unknown else replies.MAILBOX_REFUSED)
    if any(400 <= a.code < 500 for a in answers):
        return Defer(replies.MAILBOX_UNAVAILABLE)
    if all(200 <= a.code < 300 for a in answers):
        return Accept()
    return Defer(replies.MAILBOX_SERVER_UNAVAILABLE)  # 1xx or 3xx to RCPT: out of step


class LmtpVerifier:
    """Checks recipients with the LMTP server ``server`` on a pool of threads; answers on
    the loop through ``call_soon`` (its thread-safe scheduler). Everything but ``ask`` runs
    on the loop, so the cache needs no lock. ``note(reason)`` hears why the server could not
    be asked (for the journal)."""

    def __init__(
        self,
        server: LmtpServer,
        hostname: str,
        domains: Sequence[str],
        call_soon: Callable[[Callable[[], None]], None],
        note: Callable[[str], None] = lambda reason: None,
        *,
        timeout: float = TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.server = server
        self.hostname = hostname
        self.domains = frozenset(domains)
        self.timeout = timeout
        self._call_soon = call_soon
        self._note = note
        self._clock = clock
        self._accepted: dict[str, float] = {}  # address -> until when it counts as accepted
        self._pending = 0
        self._pool = concurrent.futures.ThreadPoolExecutor(
            THREADS, thread_name_prefix="smtpkit-verify"
        )

    def verify(self, decision: Accept, done: Callable[[Decision], None]) -> Decision | None:
        """The decision for a recipient the policy accepted with ``decision``: now, when
        nothing needs asking (no LMTP target, or all accepted a moment ago), or None, and
        ``done(decision)`` is called on the loop once the LMTP server has answered."""
        now = self._clock()
        unknown = [
            t.address
            for t in decision.targets
            if isinstance(t, Remote)
            and t.address.rpartition("@")[2] in self.domains
            and self._accepted.get(t.address, 0.0) <= now
        ]
        if not unknown:
            return decision
        if self._pending >= MAX_PENDING:
            self._note(f"{MAX_PENDING} recipient checks under way already")
            return Defer(replies.MAILBOX_SERVER_UNAVAILABLE)
        self._pending += 1
        future = self._pool.submit(ask, self.server, self.hostname, unknown, self.timeout)

        def back(future: concurrent.futures.Future[list[Answer]]) -> None:
            self._call_soon(lambda: self._answered(decision, future, done))

        future.add_done_callback(back)
        return None

    def _answered(
        self,
        decision: Accept,
        future: concurrent.futures.Future[list[Answer]],
        done: Callable[[Decision], None],
    ) -> None:
        self._pending -= 1
        try:
            answers = future.result()
        except Unreachable as exc:
            self._note(str(exc))
            done(Defer(replies.MAILBOX_SERVER_UNAVAILABLE))
            return
        except Exception as exc:  # noqa: BLE001 - whatever it was, the answer is "not now"
            self._note(f"LMTP server {self.server}: {type(exc).__name__}: {exc}")
            done(Defer(replies.MAILBOX_SERVER_UNAVAILABLE))
            return
        verdict = judge(answers)
        if isinstance(verdict, Accept):
            if len(self._accepted) >= _CACHE_SIZE:
                self._accepted.clear()  # bounded: however many addresses are tried
            until = self._clock() + POSITIVE_TTL
            for answer in answers:
                self._accepted[answer.address] = until
            done(decision)
        else:
            done(verdict)

    def close(self) -> None:
        """No new checks; those under way finish (their sessions still wait for them)."""
        self._pool.shutdown(wait=False)
