"""Local mail through LMTP (RFC 2033): the ``[delivery] lmtp`` keys, the router queueing
local recipients, the queue runner's LMTP next hop, and ``lmtp_verify``'s short sessions
against a scripted LMTP server (tests/lmtp_server.py). The link over a Unix socket is in
tests/test_link.py; Dovecot itself in tests/e2e/test_lmtp.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from smtpkit.config import Config, LmtpServer, NextHop, parse_config
from smtpkit.delivery.commit import commit_batch
from smtpkit.delivery.queue import read_envelope
from smtpkit.delivery.router import Router
from smtpkit.delivery.spool import Spool, SpoolPool
from smtpkit.delivery.targets import Delivery, DsnRequest, Mailbox, Remote
from smtpkit.errors import ConfigError
from smtpkit.outbound.link import Candidate, Job
from smtpkit.outbound.runner import QueueRunner, _outcome
from smtpkit.outbound.schedule import Result
from smtpkit.policy import Accept, Decision, Defer, Reject
from smtpkit.protocol import replies
from smtpkit.protocol.dsn import MailDsn, RcptDsn
from smtpkit.protocol.replies import Reply
from smtpkit.server.loop import EventLoop
from smtpkit.server.verify import Answer, LmtpVerifier, Unreachable, ask, judge
from smtpkit.users import UserStore
from tests.lmtp_server import LmtpServerThread, running
from tests.test_link import run_until


@pytest.fixture
def lmtp_server(tmp_path: Path) -> Iterator[LmtpServerThread]:
    with running(tmp_path / "lmtp.sock") as server:
        yield server


# --- config ----------------------------------------------------------------------------------


def load(tmp_path: Path, **delivery: object) -> Config:
    data = {"server": {"domains": ["example.org"]}, "delivery": delivery}
    return parse_config(data, tmp_path / "smtpkit.toml")


def test_lmtp_keys_load(tmp_path: Path) -> None:
    config = load(tmp_path, lmtp="unix:/run/dovecot/lmtp", lmtp_verify=True)
    assert config.delivery.lmtp == LmtpServer(socket=Path("/run/dovecot/lmtp"))
    assert config.delivery.lmtp_verify is True
    assert config.delivery.lmtp_max_connections == 10
    tcp = load(tmp_path, lmtp="127.0.0.1:2424", lmtp_max_connections=3).delivery
    assert tcp.lmtp == LmtpServer(hop=NextHop("127.0.0.1", 2424))
    assert str(tcp.lmtp) == "127.0.0.1:2424"
    assert tcp.lmtp_max_connections == 3
    assert load(tmp_path, lmtp="imap.example.org").delivery.lmtp == LmtpServer(
        hop=NextHop("imap.example.org", 24)
    )
    assert load(tmp_path).delivery.lmtp is None


@pytest.mark.parametrize(
    ("delivery", "error"),
    [
        ({"lmtp": "unix:run/lmtp"}, "delivery -> lmtp: 'unix:run/lmtp': the socket must be an"),
        ({"lmtp": "127.0.0.1:25"}, "delivery -> lmtp: '127.0.0.1:25': port 25 is SMTP's"),
        ({"lmtp": "not a host"}, "delivery -> lmtp: 'not a host' is not HOST[:PORT]"),
        ({"lmtp_verify": True}, "delivery -> lmtp_verify: needs lmtp"),
        ({"lmtp": "[::1]:24", "lmtp_max_connections": 0}, "delivery -> lmtp_max_connections"),
    ],
)
def test_lmtp_keys_are_checked(tmp_path: Path, delivery: dict[str, object], error: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, **delivery)
    assert error in str(caught.value)


# --- the router --------------------------------------------------------------------------------


def test_with_lmtp_local_recipients_are_queued_by_canonical_address(tmp_path: Path) -> None:
    (tmp_path / "users").mkdir()
    users = UserStore(tmp_path / "users", ("example.org",))
    users.add("alice@example.org")
    users.add("bob@example.org")
    aliases = {"sales@example.org": ("alice@example.org", "bob@example.org")}
    queue = tmp_path / "queue"
    router = Router(users, aliases, ("example.org",), lmtp_queue=queue)
    assert router.resolve("Alice@Example.ORG") == (Remote("alice@example.org", queue),)
    assert router.resolve("sales@example.org") == (
        Remote("alice@example.org", queue),
        Remote("bob@example.org", queue),
    )
    # Users are still smtpkit's: an unknown one reaches nothing (550 5.1.1 at RCPT).
    assert router.resolve("carol@example.org") == ()
    plain = Router(users, aliases, ("example.org",))
    assert plain.resolve("alice@example.org") == (Mailbox(users.mailbox("alice@example.org")),)


def test_with_lmtp_each_recipient_keeps_the_dsn_of_the_rcpt_it_came_from(tmp_path: Path) -> None:
    """An alias, a subaddress or another spelling reaches a queue recipient named by its
    mailbox: the NOTIFY and ORCPT of its RCPT go with it all the same (RFC 3461 5.2.1)."""
    (tmp_path / "users").mkdir()
    users = UserStore(tmp_path / "users", ("example.org",))
    users.add("alice@example.org")
    users.add("bob@example.org")
    users.add("carol@example.org")
    aliases = {"sales@example.org": ("alice@example.org", "bob@example.org")}
    queue = tmp_path / "queue"
    queue.mkdir()
    router = Router(users, aliases, ("example.org",), lmtp_queue=queue, delimiters="+")
    never = RcptDsn(frozenset({"NEVER"}))
    success = RcptDsn(frozenset({"SUCCESS"}), ("rfc822", "Carol+News@example.org"))
    asked = {"sales@example.org": never, "Carol+News@example.org": success}
    targets = tuple(t for rcpt in asked for t in router.resolve(rcpt))
    pool = SpoolPool(tmp_path / "users" / ".spool" / "0")
    pool.folder.mkdir(parents=True)
    delivery = Delivery(
        Spool(b"", pool),
        targets,
        sender="s@example.net",
        message_id="4f1c2a9b0e3d.1",
        dsn=DsnRequest(MailDsn(), asked),
    )
    delivery.spool.write(b"Subject: x\r\n\r\nx\r\n")
    commit_batch([delivery])
    assert delivery.error is None
    (envelope,) = queue.glob("*.env")
    entry = read_envelope(envelope)
    assert {(r.address, r.dsn) for r in entry.recipients} == {
        ("alice@example.org", never),
        ("bob@example.org", never),
        ("carol@example.org", success),
    }


# --- the runner's outcome of an LMTP reply ------------------------------------------------------


def job(final: bool) -> Job:
    return Job("id-1", "s@example.net", ("alice@example.org",), "/dev/null", 10, final=final)


def test_an_lmtp_250_is_final_delivery_and_a_550_a_failure() -> None:
    ok = Reply(250, "2.0.0", ("<alice@example.org> saved",))
    assert _outcome(job(final=True), ok, "").result is Result.DELIVERED
    assert _outcome(job(final=False), ok, "").result is Result.RELAYED  # no DSN offered
    gone = Reply(550, "5.1.1", ("<alice@example.org> User doesn't exist",))
    failed = _outcome(job(final=True), gone, "")
    assert (failed.result, failed.status) == (Result.FAILED, "5.1.1")
    later = _outcome(job(final=True), Reply(452, "4.2.2", ("over quota",)), "")
    assert (later.result, later.status) == (Result.DEFERRED, "4.2.2")


def test_the_runner_sends_local_recipients_to_the_lmtp_server(tmp_path: Path) -> None:
    config = parse_config(
        {
            "server": {"domains": ["example.org"], "directory": str(tmp_path)},
            "delivery": {"lmtp": "unix:/run/dovecot/lmtp"},
            "routes": {"example.com": "[192.0.2.1]:25"},
        },
        tmp_path / "smtpkit.toml",
    )
    loop = EventLoop()
    runner = QueueRunner(config, loop, lambda *a, **k: None, pool=None)  # type: ignore[arg-type]
    try:
        local = runner._destination("alice@example.org")
        assert (local.kind, local.key) == ("lmtp", "lmtp:unix:/run/dovecot/lmtp")
        assert local.socket == Path("/run/dovecot/lmtp")
        assert runner._destination("bob@example.org") is local  # one destination, one pool
        assert runner._destination("x@example.com").kind == "route"
        candidates, problem = runner._resolve(local)
        assert problem is None
        assert candidates == [Candidate("localhost", "/run/dovecot/lmtp", 0, unix=True)]
        assert str(candidates[0]) == "unix:/run/dovecot/lmtp"
    finally:
        runner.stop()
        loop.close()


# --- lmtp_verify ------------------------------------------------------------------------------


def test_judge_maps_the_rcpt_replies() -> None:
    ok = Answer("a@example.org", 250, "2.1.5 OK")
    assert judge([ok]) == Accept()
    unknown = Answer("b@example.org", 550, "5.1.1 <b@example.org> User doesn't exist")
    assert judge([ok, unknown]) == Reject(replies.UNKNOWN_USER)
    disabled = Answer("c@example.org", 552, "5.2.2 Mailbox is full")
    assert judge([disabled]) == Reject(replies.MAILBOX_REFUSED)
    busy = Answer("d@example.org", 451, "4.3.0 Temporary internal error")
    assert judge([ok, busy]) == Defer(replies.MAILBOX_UNAVAILABLE)
    assert judge([busy, unknown]) == Reject(replies.UNKNOWN_USER)  # a retry changes nothing
    assert str(replies.MAILBOX_SERVER_UNAVAILABLE).startswith("451 4.4.3 ")


def test_ask_is_a_short_session_without_data(lmtp_server: LmtpServerThread) -> None:
    lmtp_server.script.rcpt = lambda a: "550 5.1.1 no such user" if a[0] == "x" else "250 ok"
    server = LmtpServer(socket=lmtp_server.path)
    answers = ask(server, "mx.example.org", ["alice@example.org", "x@example.org"], 5)
    assert [(a.address, a.code) for a in answers] == [
        ("alice@example.org", 250),
        ("x@example.org", 550),
    ]
    assert lmtp_server.commands == ["LHLO", "MAIL", "RCPT", "RCPT", "RSET", "QUIT"]
    assert lmtp_server.delivered == []


def test_ask_an_absent_server_is_unreachable(tmp_path: Path) -> None:
    with pytest.raises(Unreachable, match="lmtp.sock"):
        ask(LmtpServer(socket=tmp_path / "lmtp.sock"), "mx.example.org", ["a@example.org"], 5)


def test_the_verifier_answers_on_the_loop_and_keeps_what_was_accepted(
    tmp_path: Path, lmtp_server: LmtpServerThread
) -> None:
    lmtp_server.script.rcpt = lambda a: "550 5.1.1 no such user" if a[0] == "x" else "250 ok"
    loop = EventLoop()
    notes: list[str] = []
    verifier = LmtpVerifier(LmtpServer(socket=lmtp_server.path), "mx.example.org",
                            ("example.org",), loop.call_soon_threadsafe, notes.append)  # fmt: skip
    queue = tmp_path / "queue"
    got: list[Decision] = []
    alice = Accept((Remote("alice@example.org", queue),))
    assert verifier.verify(alice, got.append) is None
    run_until(loop, lambda: len(got) == 1)
    assert got == [alice]
    # Accepted a moment ago: no session this time.
    assert verifier.verify(alice, got.append) == alice
    assert lmtp_server.connections == 1
    # Another domain's recipient (a relay target) is not the LMTP server's business.
    remote = Accept((Remote("carol@example.net", queue),))
    assert verifier.verify(remote, got.append) == remote
    assert verifier.verify(Accept((Remote("x@example.org", queue),)), got.append) is None
    run_until(loop, lambda: len(got) == 2)
    assert got[1] == Reject(replies.UNKNOWN_USER)
    lmtp_server.close()
    (lmtp_server.path).unlink()
    bob = Accept((Remote("bob@example.org", queue),))
    assert verifier.verify(bob, got.append) is None
    run_until(loop, lambda: len(got) == 3)
    assert got[2] == Defer(replies.MAILBOX_SERVER_UNAVAILABLE)
    assert notes and "lmtp.sock" in notes[0]
    verifier.close()
    loop.close()
