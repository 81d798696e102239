"""Session: events -> policy -> replies -> storage, with no socket (a list transport)."""

from __future__ import annotations

import base64
import functools
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from smtpkit.config import ListenerRole
from smtpkit.delivery.commit import commit_batch
from smtpkit.delivery.queue import entry_name
from smtpkit.delivery.router import Router
from smtpkit.delivery.spool import Spool, SpoolPool
from smtpkit.delivery.targets import Delivery
from smtpkit.journal import Journal
from smtpkit.limits import BareNewline, Limits
from smtpkit.policy import Decision, LocalPolicy, SessionFacts, TlsInfo
from smtpkit.protocol.events import Hello
from smtpkit.session import ServerContext, Session, new_session_id
from smtpkit.users import UserStore


class ListTransport:
    def __init__(self) -> None:
        self.out = bytearray()
        self.closed = False
        self.tls = False
        self.congested = False

    def write(self, data: bytes) -> None:
        self.out += data

    def close(self) -> None:
        self.closed = True

    def start_tls(self) -> None:
        self.tls = True

    def take(self) -> list[str]:
        lines = self.out.decode().split("\r\n")[:-1]
        self.out.clear()
        return lines


class Harness:
    def __init__(self, root: Path, limits: Limits, deferred: bool = False) -> None:
        (root / "users").mkdir()
        self.store = UserStore(root / "users", ("example.org",))
        self.alice = self.store.add("alice@example.org")
        self.bob = self.store.add("bob@example.org")
        router = Router(
            self.store, {"postmaster@example.org": ("alice@example.org",)}, ("example.org",)
        )
        self.pending: list[tuple[Delivery, Callable[[Delivery], None]]] = []
        self.pool = SpoolPool(root / "users" / ".spool" / "0")
        self.pool.folder.mkdir(parents=True)
        self.deferred = deferred
        self.journal = Journal(root / "journal")
        self.ctx = ServerContext(
            hostname="mx.example.org",
            limits=limits,
            policy=LocalPolicy(router, limits),
            journal=self.journal,
            submit=self.submit,
            open_spool=functools.partial(Spool, pool=self.pool),
        )
        self.transport = ListTransport()
        self.session = Session(self.ctx, self.transport, ("192.0.2.7", 4000), "sid")
        self.session.start()

    def submit(self, delivery: Delivery, done: Callable[[Delivery], None]) -> None:
        if self.deferred:
            self.pending.append((delivery, done))
        else:
            done(commit_batch([delivery])[0])

    def say(self, data: bytes) -> list[str]:
        self.session.receive(data)
        return self.transport.take()


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    harness = Harness(tmp_path, Limits(max_recipients=3, max_errors=5, max_message_size=2000))
    assert harness.transport.take() == ["220 mx.example.org ESMTP smtpkit"]
    return harness


def codes(lines: list[str]) -> list[str]:
    return [line[:3] for line in lines if line[3] == " "]


def test_ehlo_lists_extensions(h: Harness) -> None:
    assert h.say(b"EHLO client.test\r\n") == [
        "250-mx.example.org Hello client.test",
        "250-SIZE 2000",
        "250-PIPELINING",
        "250-8BITMIME",
        "250-SMTPUTF8",
        "250-BINARYMIME",
        "250-CHUNKING",
        "250-ENHANCEDSTATUSCODES",
        "250 HELP",
    ]


def test_a_pipelined_transaction_is_stored(h: Harness) -> None:
    lines = h.say(
        b"EHLO c\r\nMAIL FROM:<s@remote.test>\r\nRCPT TO:<alice@example.org>\r\n"
        b"RCPT TO:<nobody@example.org>\r\nRCPT TO:<x@relay.test>\r\nDATA\r\n"
        b"Subject: t\r\n\r\n..dot\r\n.\r\nQUIT\r\n"
    )
    assert codes(lines) == ["250", "250", "250", "550", "550", "354", "250", "221"]
    # The message's id carries the node's tag, as a queue entry's name does.
    message_id = entry_name("sid.1")
    assert message_id.startswith("sid.1-")
    assert lines[-2] == f"250 2.0.0 OK: message stored as {message_id}"
    assert h.transport.closed
    (stored,) = (h.alice / "new").iterdir()
    data = stored.read_bytes()
    assert data.startswith(b"Return-Path: <s@remote.test>\r\nReceived: from c ([192.0.2.7])\r\n")
    trace = f"\tby mx.example.org (smtpkit) with ESMTP id {message_id}\r\n\tfor <alice@example.org>"
    assert trace.encode() in data
    assert data.endswith(b"\r\nSubject: t\r\n\r\n.dot\r\n")


def test_replies_wait_for_durable_storage(tmp_path: Path) -> None:
    h = Harness(tmp_path, Limits(), deferred=True)
    h.transport.take()
    lines = h.say(
        b"HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\nx\r\n.\r\nNOOP\r\n"
    )
    assert codes(lines) == ["250", "250", "250", "354"]  # nothing after the dot yet
    assert h.session.waiting and len(h.pending) == 1
    delivery, done = h.pending.pop()
    done(commit_batch([delivery])[0])
    assert codes(h.transport.take()) == ["250", "250"]  # the 250 for the message, then NOOP


def test_recipient_limit_and_postmaster(h: Harness) -> None:
    lines = h.say(
        b"HELO c\r\nMAIL FROM:<s@r.test>\r\nRCPT TO:<alice@example.org>\r\nRCPT TO:<Postmaster>\r\n"
        b"RCPT TO:<BOB@EXAMPLE.ORG>\r\nRCPT TO:<bob@example.org>\r\n"
    )
    assert lines[-1] == "452 4.5.3 Too many recipients"
    assert codes(lines) == ["250", "250", "250", "250", "250", "452"]


def test_error_budget_ends_with_421(h: Harness) -> None:
    lines = h.say(b"BOGUS\r\n" * 6)
    assert codes(lines) == ["500"] * 5 + ["421"]
    assert lines[-1] == "421 4.7.0 Too many errors, closing connection"
    assert h.transport.closed
    assert h.say(b"NOOP\r\n") == []


def test_oversized_message_is_refused_and_session_goes_on(h: Harness) -> None:
    big = b"x" * 900 + b"\r\n"
    lines = h.say(
        b"HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n" + big * 3 + b".\r\n"
    )
    assert lines[-1] == "552 5.3.4 Message size exceeds fixed maximum message size"
    assert list((h.bob / "new").iterdir()) == [] and list((h.bob / "tmp").iterdir()) == []
    lines = h.say(b"MAIL FROM:<>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\nsmall\r\n.\r\n")
    assert codes(lines) == ["250", "250", "354", "250"]


def test_storage_failure_is_451_and_nothing_in_new(h: Harness) -> None:
    h.say(b"HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<bob@example.org>\r\n")
    (h.bob / "new").rename(h.bob / "moved")
    lines = h.say(b"DATA\r\nhello\r\n.\r\n")
    assert lines[-1] == "451 4.3.0 Local error in processing, try again later"
    assert list((h.bob / "tmp").iterdir()) == []


def test_vrfy_reveals_nothing_and_starttls_is_unavailable(h: Harness) -> None:
    assert (
        h.say(b"VRFY alice\r\nVRFY nobody\r\n")
        == ["252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery"] * 2
    )
    assert h.say(b"STARTTLS\r\n") == ["454 4.7.0 TLS not available"]


def test_timeout_and_shutdown_send_421(h: Harness) -> None:
    h.session.timeout()
    assert h.transport.take() == ["421 4.4.2 Timeout exceeded, closing connection"]
    assert h.transport.closed


def test_shutdown_waits_for_the_message_in_flight(h: Harness) -> None:
    h.say(b"HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\npart")
    h.session.shutdown()
    assert h.transport.take() == [] and not h.transport.closed
    lines = h.say(b"\r\n.\r\n")
    assert codes(lines) == ["250", "421"]
    assert lines[-1] == "421 4.3.2 Service shutting down, closing connection"


def journal_events(h: Harness) -> list[dict[str, object]]:
    h.journal.flush()
    lines = []
    for path in sorted((h.journal.directory).iterdir()):
        lines += [json.loads(line) for line in path.read_text().splitlines()]
    return lines


def test_every_refused_command_spends_the_error_budget(h: Harness) -> None:
    """STARTTLS without TLS (454) and EXPN (502) count like syntax errors (max_errors 5)."""
    lines = h.say(b"STARTTLS\r\n" * 3 + b"EXPN staff\r\n" * 3)
    assert lines == ["454 4.7.0 TLS not available"] * 3 + [
        "502 5.5.1 EXPN is not supported",
        "502 5.5.1 EXPN is not supported",
        "421 4.7.0 Too many errors, closing connection",
    ]
    assert h.transport.closed


def test_junk_commands_count_only_past_their_budget(tmp_path: Path) -> None:
    h = Harness(tmp_path, Limits(max_errors=3, max_junk_commands=4))
    h.transport.take()
    # 4 junk commands are free; the 5th and 6th count; the 7th is the 3rd error.
    lines = h.say(b"NOOP\r\nRSET\r\nHELP\r\nVRFY x\r\n" + b"NOOP\r\n" * 5)
    assert codes(lines) == ["250", "250", "214", "252", "250", "250", "250", "421"]
    assert lines[-1] == "421 4.7.0 Too many errors, closing connection"


def test_a_delivered_message_renews_the_junk_budget(tmp_path: Path) -> None:
    h = Harness(tmp_path, Limits(max_errors=3, max_junk_commands=2))
    h.transport.take()
    message = b"MAIL FROM:<>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\nhi\r\n.\r\n"
    lines = h.say(b"HELO c\r\n" + b"NOOP\r\n" * 3 + message + b"NOOP\r\n" * 3)
    # 3 NOOPs: one error; a message; 3 NOOPs again: one more error only, so no 421.
    assert codes(lines) == ["250"] * 4 + ["250", "250", "354", "250"] + ["250"] * 3
    assert not h.transport.closed


def test_recipients_past_the_limit_count_once_then_past_the_overshoot(tmp_path: Path) -> None:
    h = Harness(tmp_path, Limits(max_recipients=2, max_errors=3, max_recipient_overshoot=3))
    h.transport.take()
    rcpt = b"RCPT TO:<bob@example.org>\r\n"
    lines = h.say(b"HELO c\r\nMAIL FROM:<>\r\n" + rcpt * 8)
    # 2 accepted; 452 #1 counts (error 1), #2-#3 free, #4 and #5 count (errors 2 and 3).
    assert codes(lines) == ["250", "250", "250", "250"] + ["452"] * 5 + ["421"]


def test_a_refused_message_counts_and_a_storage_failure_does_not(tmp_path: Path) -> None:
    h = Harness(tmp_path, Limits(max_errors=2, max_message_size=10))
    h.transport.take()
    big = b"MAIL FROM:<>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n" + b"x" * 20 + b"\r\n.\r\n"
    lines = h.say(b"HELO c\r\n" + big)
    assert codes(lines) == ["250", "250", "250", "354", "552"]
    (h.bob / "new").rename(h.bob / "moved")
    small = b"MAIL FROM:<>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\nx\r\n.\r\n"
    lines = h.say(small + small)
    assert codes(lines) == ["250", "250", "354", "451"] * 2
    assert not h.transport.closed
    assert codes(h.say(big)) == ["250", "250", "354", "552", "421"]


def test_session_time_limit_closes_with_421(h: Harness) -> None:
    h.say(b"HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\npart")
    h.session.expire()
    assert h.transport.take() == ["421 4.7.0 Session time limit exceeded, closing connection"]
    assert h.transport.closed
    assert list((h.bob / "tmp").iterdir()) == [] and list((h.bob / "new").iterdir()) == []


def test_a_congested_transport_stops_the_answers_until_resume(h: Harness) -> None:
    h.transport.congested = True
    assert h.say(b"NOOP\r\nNOOP\r\n") == []
    assert h.session.stalled
    h.transport.congested = False
    h.session.resume()
    assert h.transport.take() == ["250 2.0.0 OK"] * 2


def test_repeats_are_journaled_in_bounded_space(h: Harness) -> None:
    h.say(b"EHLO c\r\nEHLO c\r\nEHLO c\r\nNOOP\r\nNOOP\r\nSTARTTLS\r\nSTARTTLS\r\nSTARTTLS\r\n")
    h.say(b"QUIT\r\n")
    h.session.connection_lost("closed")
    events = [
        {k: v for k, v in e.items() if k not in ("time", "session", "peer")}
        for e in journal_events(h)
    ]
    assert events == [
        {"event": "connect"},
        {"event": "helo", "name": "c", "extended": True},
        {"event": "reply", "code": 454, "text": "454 4.7.0 TLS not available"},
        {"event": "repeated", "reply": "454 4.7.0 TLS not available", "count": 2},
        {"event": "repeated", "command": "EHLO", "count": 2},
        {"event": "repeated", "command": "NOOP", "count": 2},
        {"event": "close", "reason": "quit", "messages": 0},
    ]


# --- AUTH on a submission listener (RFC 4954, RFC 6409) ------------------------------------------


class FakeAuth:
    """Passwords checked at once: alice@example.org / secret."""

    def __init__(self) -> None:
        self.failures: list[tuple[str, str]] = []
        self.sent_by: list[str] = []
        self.block = False

    def blocked(self, peer: str, user: str | None = None) -> bool:
        return self.block

    def check(
        self, user: str, password: str, done: Callable[[str | None], None], peer: str = ""
    ) -> None:
        if user == "unreadable@example.org":
            done("")  # the password file could not be read
            return
        ok = (user.lower(), password) == ("alice@example.org", "secret")
        done("alice@example.org" if ok else None)

    def failed(self, peer: str, user: str) -> None:
        self.failures.append((peer, user))

    def sent(self, user: str) -> None:
        self.sent_by.append(user)


def submission(tmp_path: Path, *, tls: bool = True) -> tuple[Harness, FakeAuth]:
    tmp_path.mkdir(exist_ok=True)
    h = Harness(tmp_path, Limits(max_errors=20))
    auth = FakeAuth()
    h.ctx.auth = auth
    router = h.ctx.policy.rules.router  # type: ignore[attr-defined]
    h.ctx.policy = LocalPolicy(router, h.ctx.limits, queue=tmp_path / "queue")
    (tmp_path / "queue").mkdir()
    h.session = Session(
        h.ctx, h.transport, ("192.0.2.7", 4000), "sid", role=ListenerRole.SUBMISSION
    )
    if tls:
        h.session.tls = TlsInfo("TLSv1.3", "TLS_AES_256_GCM_SHA384")
    h.session.start()
    h.transport.take()
    return h, auth


def b64(text: str) -> bytes:
    return base64.b64encode(text.encode())


def test_auth_is_offered_only_under_tls_on_submission(tmp_path: Path) -> None:
    h, _ = submission(tmp_path)
    assert "250-AUTH PLAIN LOGIN" in h.say(b"EHLO c\r\n")
    plain, _ = submission(tmp_path / "plain", tls=False)
    assert not any("AUTH" in line for line in plain.say(b"EHLO c\r\n"))
    assert plain.say(b"AUTH PLAIN " + b64("\0alice@example.org\0secret") + b"\r\n") == [
        "538 5.7.11 Encryption required for requested authentication mechanism"
    ]
    assert plain.say(b"MAIL FROM:<alice@example.org>\r\n") == [
        "530 5.7.0 Must issue a STARTTLS command first"
    ]


def test_port_25_offers_no_auth(h: Harness) -> None:
    assert not any("AUTH" in line for line in h.say(b"EHLO c\r\n"))
    assert h.say(b"AUTH PLAIN " + b64("\0a\0b") + b"\r\n") == [
        "503 5.5.1 Authentication not enabled here"
    ]


def test_auth_plain_with_an_initial_response(tmp_path: Path) -> None:
    h, auth = submission(tmp_path)
    h.say(b"EHLO c\r\n")
    assert h.say(b"AUTH PLAIN " + b64("\0alice@example.org\0secret") + b"\r\n") == [
        "235 2.7.0 Authentication successful"
    ]
    assert h.say(b"AUTH PLAIN " + b64("\0alice@example.org\0secret") + b"\r\n") == [
        "503 5.5.1 Already authenticated"
    ]
    assert h.session.user == "alice@example.org"


def test_auth_plain_and_login_with_334_continuations(tmp_path: Path) -> None:
    h, _ = submission(tmp_path)
    h.say(b"EHLO c\r\n")
    assert h.say(b"AUTH PLAIN\r\n") == ["334 "]
    assert h.say(b64("\0alice@example.org\0secret") + b"\r\n") == [
        "235 2.7.0 Authentication successful"
    ]
    login, _ = submission(tmp_path / "login")
    login.say(b"EHLO c\r\n")
    assert login.say(b"AUTH LOGIN\r\n") == ["334 VXNlcm5hbWU6"]
    assert login.say(b64("alice@example.org") + b"\r\n") == ["334 UGFzc3dvcmQ6"]
    assert login.say(b64("secret") + b"\r\n") == ["235 2.7.0 Authentication successful"]
    # AUTH LOGIN with the user name as the initial response.
    third, _ = submission(tmp_path / "third")
    third.say(b"EHLO c\r\n")
    assert third.say(b"AUTH LOGIN " + b64("alice@example.org") + b"\r\n") == ["334 UGFzc3dvcmQ6"]
    assert third.say(b64("secret") + b"\r\n") == ["235 2.7.0 Authentication successful"]


def test_auth_refusals(tmp_path: Path) -> None:
    h, auth = submission(tmp_path)
    h.say(b"EHLO c\r\n")
    assert h.say(b"AUTH CRAM-MD5\r\n") == ["504 5.5.4 Unrecognized authentication type"]
    assert h.say(b"AUTH LOGIN\r\n*\r\n") == [
        "334 VXNlcm5hbWU6",
        "501 5.7.0 Authentication cancelled",
    ]
    assert h.say(b"AUTH PLAIN\r\nnot base64!\r\n") == [
        "334 ",
        "501 5.5.2 Cannot decode the response",
    ]
    assert h.say(b"AUTH PLAIN " + b64("\0alice@example.org\0wrong") + b"\r\n") == [
        "535 5.7.8 Authentication credentials invalid"
    ]
    assert auth.failures == [("192.0.2.7", "alice@example.org")]
    # The exchange over, commands are commands again.
    assert h.say(b"NOOP\r\n") == ["250 2.0.0 OK"]
    assert h.say(b"MAIL FROM:<alice@example.org>\r\n") == ["530 5.7.0 Authentication required"]


def test_three_failures_close_the_session(tmp_path: Path) -> None:
    h, _ = submission(tmp_path)
    h.say(b"EHLO c\r\n")
    bad = b"AUTH PLAIN " + b64("\0alice@example.org\0nope") + b"\r\n"
    assert h.say(bad * 3) == ["535 5.7.8 Authentication credentials invalid"] * 3 + [
        "421 4.7.0 Too many authentication failures, closing connection"
    ]
    assert h.transport.closed


def test_a_check_that_cannot_be_made_is_454_not_535(tmp_path: Path) -> None:
    h, auth = submission(tmp_path)
    h.say(b"EHLO c\r\n")
    assert h.say(b"AUTH PLAIN " + b64("\0unreadable@example.org\0x") + b"\r\n") == [
        "454 4.7.0 Temporary authentication failure, try again later"
    ]
    assert auth.failures == []  # not the client's failure


def test_a_blocked_address_gets_454(tmp_path: Path) -> None:
    h, auth = submission(tmp_path)
    auth.block = True
    h.say(b"EHLO c\r\n")
    assert h.say(b"AUTH PLAIN " + b64("\0alice@example.org\0secret") + b"\r\n") == [
        "454 4.7.0 Too many authentication failures, try again later"
    ]


def test_an_authenticated_user_sends_as_themselves_only(tmp_path: Path) -> None:
    h, auth = submission(tmp_path)
    h.say(b"EHLO c\r\nAUTH PLAIN " + b64("\0alice@example.org\0secret") + b"\r\n")
    assert h.say(b"MAIL FROM:<bob@example.org>\r\n") == [
        "553 5.7.1 Sender address not owned by the authenticated user"
    ]
    # postmaster@ is aliased to alice: hers to use; the null sender is anyone's.
    assert h.say(b"MAIL FROM:<postmaster@example.org>\r\nRSET\r\nMAIL FROM:<>\r\nRSET\r\n") == [
        "250 2.1.0 Sender OK",
        "250 2.0.0 OK",
        "250 2.1.0 Sender OK",
        "250 2.0.0 OK",
    ]
    lines = h.say(
        b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n"
        b"From: Bob <bob@example.org>\r\nSubject: forged\r\n\r\nhi\r\n.\r\n"
    )
    assert lines[-1] == "550 5.7.1 From: header address not owned by the authenticated user"
    assert list((h.bob / "new").iterdir()) == []
    assert auth.sent_by == []


def test_submission_adds_date_and_message_id_and_queues_remote_mail(tmp_path: Path) -> None:
    h, auth = submission(tmp_path)
    lines = h.say(
        b"EHLO c\r\nAUTH PLAIN " + b64("\0alice@example.org\0secret") + b"\r\n"
        b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.org>\r\n"
        b"RCPT TO:<friend@remote.example>\r\nDATA\r\n"
        b"From: Alice <alice@example.org>\r\nSubject: hello\r\n\r\nbody\r\n.\r\n"
    )
    message_id = entry_name("sid.1")
    assert lines[-1] == f"250 2.0.0 OK: message stored as {message_id}"
    (stored,) = (h.bob / "new").iterdir()
    message = stored.read_bytes()
    assert f"with ESMTPSA id {message_id} (using TLSv1.3".encode() in message
    headers = message.split(b"\r\n\r\n", 1)[0]
    assert b"\r\nDate: " in headers and b"\r\nMessage-ID: <" in headers
    assert message.endswith(b"From: Alice <alice@example.org>\r\nSubject: hello\r\n\r\nbody\r\n")
    (envelope,) = (tmp_path / "queue").glob("*.env")
    data = json.loads(envelope.read_text())
    assert data["sender"] == "alice@example.org" and data["version"] == 1
    assert [r["address"] for r in data["recipients"]] == ["friend@remote.example"]
    # One id: the reply's, the Received: field's and the queue entry's.
    assert data["id"] == message_id
    assert (tmp_path / "queue" / data["id"]).read_bytes() == message
    assert auth.sent_by == ["alice@example.org"]


def test_headers_present_are_left_alone(tmp_path: Path) -> None:
    h, _ = submission(tmp_path)
    h.say(
        b"EHLO c\r\nAUTH PLAIN " + b64("\0alice@example.org\0secret") + b"\r\n"
        b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n"
        b"Date: Mon, 30 Nov 2026 06:00:00 +0000\r\nMessage-ID: <x@y>\r\n\r\nbody\r\n.\r\n"
    )
    (stored,) = (h.bob / "new").iterdir()
    assert stored.read_bytes().count(b"Message-ID:") == 1
    assert stored.read_bytes().count(b"\r\nDate:") == 1


# --- CHUNKING and BINARYMIME (RFC 3030) ------------------------------------------------------


def bdat(content: bytes, last: bool = False) -> bytes:
    return b"BDAT %d%s\r\n" % (len(content), b" LAST" if last else b"") + content


ENVELOPE = b"EHLO c\r\nMAIL FROM:<s@remote.test>\r\nRCPT TO:<bob@example.org>\r\n"


def test_a_message_in_chunks_is_stored_and_journaled(h: Harness) -> None:
    lines = h.say(ENVELOPE + bdat(b"Subject: t\r\n\r\n..not stuffed\r") + bdat(b"\nbye\r\n", True))
    assert lines[-2] == "250 2.0.0 28 octets received"
    assert lines[-1].startswith("250 2.0.0 OK: message stored as sid.1")
    (stored,) = (h.bob / "new").iterdir()
    data = stored.read_bytes()
    assert data.startswith(b"Return-Path: <s@remote.test>\r\nReceived: from c ([192.0.2.7])\r\n")
    assert data.endswith(b"\r\nSubject: t\r\n\r\n..not stuffed\r\nbye\r\n")
    (line,) = [e for e in journal_events(h) if e["event"] == "stored"]
    assert line["chunks"] == 2 and line["size"] == len(data)


def test_the_last_chunk_is_answered_only_once_durable(tmp_path: Path) -> None:
    h = Harness(tmp_path, Limits(), deferred=True)
    h.transport.take()
    lines = h.say(ENVELOPE + bdat(b"a\r\n") + bdat(b"b\r\n", True) + b"NOOP\r\n")
    assert codes(lines) == ["250", "250", "250", "250"]  # nothing after the last chunk yet
    assert h.session.waiting and h.session.in_data and len(h.pending) == 1
    delivery, done = h.pending.pop()
    done(commit_batch([delivery])[0])
    assert codes(h.transport.take()) == ["250", "250"]  # the message, then NOOP


def test_a_chunk_over_the_size_limit_and_its_pipelined_rest_count_as_one_error(
    tmp_path: Path,
) -> None:
    """A big pipelined message refused for size (RFC 3030 2: every chunk in flight is read
    and refused) is one error, not a 421 (max_errors 5); the session goes on."""
    h = Harness(tmp_path, Limits(max_message_size=2000, max_errors=5))
    h.transport.take()
    rest = b"".join(bdat(b"x" * 998 + b"\r\n") for _ in range(20)) + bdat(b"end\r\n", True)
    lines = h.say(ENVELOPE + bdat(b"y" * 998 + b"\r\n") + bdat(b"z" * 1500 + b"\r\n") + rest)
    assert codes(lines) == ["250", "250", "250", "250", "552"] + ["503"] * 21
    assert not h.transport.closed
    assert list((h.bob / "new").iterdir()) == [] and list((h.bob / "tmp").iterdir()) == []
    assert h.session.errors == 1
    lines = h.say(b"MAIL FROM:<>\r\nRCPT TO:<bob@example.org>\r\n" + bdat(b"ok\r\n", True))
    assert codes(lines) == ["250", "250", "250"]
    rejected = [e for e in journal_events(h) if e["event"] == "rejected"]
    assert rejected == [{**rejected[0], "size": 998 + 2 + 1502, "code": 552, "chunks": 2}]


def test_refused_chunks_past_the_allowance_count(tmp_path: Path) -> None:
    h = Harness(tmp_path, Limits(max_errors=3, max_refused_chunks=2))
    h.transport.take()
    lines = h.say(ENVELOPE + bdat(b"bare\n") + bdat(b"a") * 5)
    # The refusal (1 error), two free, then two more errors: 421 at the third.
    assert codes(lines) == ["250", "250", "250", "550", "503", "503", "503", "503", "421"]


def test_bdat_without_a_transaction_counts_as_an_error(h: Harness) -> None:
    lines = h.say(b"EHLO c\r\n" + bdat(b"MAIL FROM:<x@y>\r\n") * 5)
    assert codes(lines) == ["250"] + ["503"] * 5 + ["421"]


def test_bdat_0_is_a_junk_command(tmp_path: Path) -> None:
    h = Harness(tmp_path, Limits(max_errors=2, max_junk_commands=3))
    h.transport.take()
    lines = h.say(ENVELOPE + b"BDAT 0\r\n" * 5)
    # Three are free, the fourth and fifth count: the fifth is the second error.
    assert codes(lines) == ["250"] * 8 + ["421"]


def test_a_spool_that_cannot_be_made_refuses_the_first_chunk_after_reading_it(
    h: Harness,
) -> None:
    h.say(ENVELOPE)
    h.pool.folder.rename(h.pool.folder.with_name("moved"))
    lines = h.say(bdat(b"MAIL FROM:<e@x.test>\r\n") + bdat(b"QUIT\r\n", True) + b"NOOP\r\n")
    assert lines[0] == "451 4.3.0 Local error in processing, try again later"
    assert codes(lines) == ["451", "503", "250"]
    assert h.session.errors == 0  # our trouble, not the client's
    assert not h.transport.closed


def test_binarymime_is_stored_exactly_and_data_is_refused(h: Harness) -> None:
    content = b"Subject: bin\r\n\r\n" + bytes(range(256)) + b"\r\n.\r\n\n\r"
    lines = h.say(
        b"EHLO c\r\nMAIL FROM:<s@remote.test> BODY=BINARYMIME\r\nRCPT TO:<bob@example.org>\r\n"
        b"DATA\r\n" + bdat(content, True)
    )
    assert lines[-2] == "503 5.5.1 BODY=BINARYMIME requires BDAT, not DATA"
    assert lines[-1].startswith("250 2.0.0 OK: message stored as sid.1")
    (stored,) = (h.bob / "new").iterdir()
    assert stored.read_bytes().endswith(content)


def test_data_after_bdat_is_refused_in_the_same_transaction(h: Harness) -> None:
    lines = h.say(ENVELOPE + bdat(b"a\r\n") + b"DATA\r\n" + bdat(b"b\r\n", True))
    assert lines[-2] == "503 5.5.1 DATA not allowed after BDAT"
    assert codes(lines)[-1] == "250"
    (stored,) = (h.bob / "new").iterdir()
    assert stored.read_bytes().endswith(b"\r\na\r\nb\r\n")


def test_a_malformed_bdat_closes_the_session(h: Harness) -> None:
    lines = h.say(ENVELOPE + b"BDAT 12 MORE\r\nQUIT\r\nNOOP\r\n")
    assert lines[-1] == "421 4.5.0 Malformed BDAT command, closing connection"
    assert h.transport.closed


def test_shutdown_between_chunks_waits_for_the_last(h: Harness) -> None:
    h.say(ENVELOPE + bdat(b"part\r\n"))
    h.session.shutdown()
    assert h.transport.take() == [] and not h.transport.closed
    lines = h.say(bdat(b"end\r\n", True))
    assert codes(lines) == ["250", "421"]


def test_normalize_stores_bare_lf_as_crlf(tmp_path: Path) -> None:
    h = Harness(tmp_path, Limits(bare_newline=BareNewline.NORMALIZE))
    h.transport.take()
    h.say(b"HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n")
    lines = h.say(b"Subject: lf\n\nline\n.\nmore\r\n.\r\n" + ENVELOPE + bdat(b"x\ny\n", True))
    assert codes(lines) == ["250", "250", "250", "250", "250"]
    first, second = sorted((h.bob / "new").iterdir(), key=lambda p: p.stat().st_mtime_ns)
    assert first.read_bytes().endswith(b"\r\nSubject: lf\r\n\r\nline\r\n\r\nmore\r\n")
    assert second.read_bytes().endswith(b"\r\nx\r\ny\r\n")
    lines = h.say(b"MAIL FROM:<>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\nX: a\rFrom: f\r\n.\r\n")
    assert lines[-1] == "550 5.6.0 Message refused: bare <CR> or <LF> in data"


def test_policy_facts_name_the_listener_and_its_role(tmp_path: Path) -> None:
    """A rule may tell listeners apart by their address as configured, not only by role."""
    h = Harness(tmp_path, Limits())
    seen: list[SessionFacts] = []
    policy = h.ctx.policy

    class Watching:
        def __getattr__(self, name: str) -> object:
            return getattr(policy, name)

        def check_helo(self, facts: SessionFacts, event: Hello) -> Decision:
            seen.append(facts)
            return policy.check_helo(facts, event)

    h.ctx.policy = Watching()  # type: ignore[assignment]
    h.session = Session(
        h.ctx, h.transport, ("192.0.2.7", 4000), "sid",
        role=ListenerRole.SUBMISSION, listener="192.0.2.1:587",
    )  # fmt: skip
    h.session.start()
    h.transport.take()
    assert codes(h.say(b"EHLO client.test\r\n")) == ["250"]
    assert [(f.peer, f.role, f.listener) for f in seen] == [
        ("192.0.2.7", ListenerRole.SUBMISSION, "192.0.2.1:587")
    ]


def test_session_ids_are_unique_and_a_forked_worker_draws_its_own() -> None:
    # Ids are cut from blocks of random bytes; a worker forked mid-block must not hand out
    # the ids its parent hands out next (they name queue entries and journal sessions).
    ids = [new_session_id() for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert all(len(i) == 12 and int(i, 16) >= 0 for i in ids)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, to the parent
        try:
            os.write(write, " ".join(new_session_id() for _ in range(300)).encode())
        finally:
            os._exit(0)
    os.close(write)
    mine = {new_session_id() for _ in range(300)}
    with os.fdopen(read) as pipe:
        theirs = set(pipe.read().split())
    assert os.waitpid(pid, 0)[1] == 0
    assert len(theirs) == 300
    assert not mine & theirs
