"""The client engine over real sockets, against real servers on loopback: ``smtpkit serve``
(port 25 and submission with STARTTLS and AUTH) and Postfix's ``smtp-sink`` (SMTP with and
without PIPELINING, LMTP, refusals). The loop here is the smallest runner: blocking socket,
write what the engine has, read when it needs bytes, wrap the socket when it says so."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from smtpkit.protocol.client import ClientConnection, NeedData, Paused
from smtpkit.protocol.client_events import ClientEvent, Closed, StartTlsNow, TransactionDone
from tests.conftest import free_port, make_server, need_program, wait_for_banner
from tests.e2e.test_submission import PASSWORD, start_submission
from tests.protocol.test_client import Plan, envelope, summarize

# LF line ends, dots at line starts, no line end at the end: the engine's job to fix.
BODY = (
    b"From: someone@remote.example\nSubject: engine test\n\n",
    b".a line with a dot\n..two dots\r\n",
    b".",
    b"\nlast line without an end",
)
# The body as a mailbox gets it, after the header.
SENT_BODY = b".a line with a dot\r\n..two dots\r\n.\r\nlast line without an end\r\n"


def drive(
    sock: socket.socket,
    conn: ClientConnection,
    plan: Plan,
    wrap: Callable[[socket.socket], socket.socket] | None = None,
) -> list[ClientEvent]:
    """Run ``plan`` over ``sock`` until ``Closed``."""
    events: list[ClientEvent] = []
    while True:
        event = conn.next_event()
        # Write before reading: answering a reply the engine may have sent a command of its
        # own (the next RCPT, HELO, MAIL after RSET) without an event.
        data = conn.data_to_send()
        if data:
            sock.sendall(data)
        if isinstance(event, NeedData):
            conn.receive_data(sock.recv(65536))
            continue
        assert not isinstance(event, Paused), "paused outside the TLS handshake"
        events.append(event)
        if isinstance(event, StartTlsNow):
            assert wrap is not None
            sock = wrap(sock)
        plan.react(conn, event)
        if isinstance(event, Closed):
            sock.sendall(conn.data_to_send())
            sock.close()
            return events


def connect(port: int, *, lmtp: bool = False) -> tuple[socket.socket, ClientConnection]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    return sock, ClientConnection("client.test", lmtp=lmtp)


# --- smtpkit serve -------------------------------------------------------------------------------


def test_delivers_to_smtpkit(tmp_path: Path) -> None:
    server = make_server(tmp_path)
    server.start()
    sock, conn = connect(server.port)
    plan = Plan(
        [
            envelope(
                "alice@example.org", "nobody@example.org", "bob@example.org", body=BODY, size=200
            ),
            envelope("bob@example.org", body=(b"Subject: second\r\n\r\nagain\r\n",)),
        ]
    )
    plan.envelopes[0].sender = "someone@remote.example"
    events = drive(sock, conn, plan)
    assert conn.extensions.pipelining and conn.extensions.size == 10 * 1024 * 1024
    assert [summarize(e) for e in events] == [
        "Greeting 220",
        "Ready",
        "MailResult 250",
        "Rcpt alice@example.org 250",
        "Rcpt nobody@example.org 550",
        "Rcpt bob@example.org 250",
        "SendData",
        "Message 250 alice@example.org,bob@example.org",
        "Done alice@example.org=250 nobody@example.org=550 bob@example.org=250",
        "MailResult 250",
        "Rcpt bob@example.org 250",
        "SendData",
        "Message 250 bob@example.org",
        "Done bob@example.org=250",
        "Closed 221",
    ]
    done = next(e for e in events if isinstance(e, TransactionDone))
    refused = dict(done.results)["nobody@example.org"]
    assert refused is not None and refused.enhanced == "5.1.1"
    (alice,) = server.new_files("alice@example.org")
    head, body = alice.read_bytes().split(b"\r\n\r\n", 1)
    assert b"\r\nSubject: engine test" in head and b"\nReturn-Path: <someone@remote.example>" in (
        b"\n" + head
    )
    assert body == SENT_BODY
    assert len(server.new_files("bob@example.org")) == 2


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_starttls_and_auth_with_smtpkit_submission(tmp_path: Path, mechanism: str) -> None:
    sub = start_submission(tmp_path)
    context = sub.context()

    def wrap(sock: socket.socket) -> socket.socket:
        return context.wrap_socket(sock, server_hostname="mx.test.example")

    sock, conn = connect(sub.starttls)
    plan = Plan(
        # Submission checks that From: is the user's own address.
        [
            envelope(
                "bob@example.org",
                body=(b"From: alice@example.org\nSubject: engine test\n\n", *BODY[1:]),
            )
        ],
        starttls=True,
        require_tls=True,
        auth=(mechanism, "alice@example.org", PASSWORD),
    )
    plan.envelopes[0].sender = "alice@example.org"
    events = drive(sock, conn, plan, wrap)
    assert [summarize(e) for e in events] == [
        "Greeting 220",
        "Ready",
        "StartTlsNow 220",
        "Ready",
        "AuthResult 235",
        "MailResult 250",
        "Rcpt bob@example.org 250",
        "SendData",
        "Message 250 bob@example.org",
        "Done bob@example.org=250",
        "Closed 221",
    ]
    # AUTH was offered only over TLS, and the engine saw the difference.
    first, second = (e for e in events if type(e).__name__ == "Ready")
    assert not first.extensions.auth  # type: ignore[union-attr]
    assert {"PLAIN", "LOGIN"} <= second.extensions.auth  # type: ignore[union-attr]
    (message,) = sub.server.new_files("bob@example.org")
    assert message.read_bytes().split(b"\r\n\r\n", 1)[1] == SENT_BODY
    assert b"with ESMTPSA" in message.read_bytes()


# --- Postfix's smtp-sink -------------------------------------------------------------------------


class Sink:
    """``smtp-sink`` on loopback, dumping each transaction into ``folder``."""

    def __init__(self, root: Path, *flags: str) -> None:
        program = need_program("smtp-sink", "postfix")
        self.folder = root / "dump"
        self.folder.mkdir(mode=0o777)
        self.folder.chmod(0o777)  # smtp-sink writes as nobody when started by root
        self.port = free_port()
        command = [program, *flags, "-d", f"{self.folder}/%M."]
        if os.geteuid() == 0:
            command += ["-u", "nobody"]
        command += [f"127.0.0.1:{self.port}", "10"]
        self.process = subprocess.Popen(command, stderr=subprocess.DEVNULL)
        wait_for_banner("127.0.0.1", self.port, self.process)

    def dumps(self) -> list[bytes]:
        """Each transaction smtp-sink stored (its headers, then the message with LF ends),
        skipping the banner check's empty session."""
        found = [p.read_bytes() for p in sorted(self.folder.iterdir())]
        return sorted(d for d in found if b"X-Rcpt-Args" in d)

    def stop(self) -> None:
        # smtp-sink has no clean shutdown: SIGTERM simply ends it.
        self.process.terminate()
        self.process.wait(timeout=10)


@pytest.fixture
def sink_factory(open_tmp_path: Path) -> Iterator[Callable[..., Sink]]:
    started: list[Sink] = []

    def start(*flags: str) -> Sink:
        sink = Sink(open_tmp_path / str(len(started)), *flags)
        started.append(sink)
        return sink

    for i in range(3):
        (open_tmp_path / str(i)).mkdir(mode=0o755)
    yield start
    for sink in started:
        sink.stop()


def sink_plan(lmtp: bool = False) -> Plan:
    return Plan(
        [
            envelope("a@sink.test", "b@sink.test", "c@sink.test", body=BODY, size=300),
            envelope("d@sink.test", body=(b"Subject: 2\r\n\r\n.\r\n",)),
        ],
        lmtp=lmtp,
    )


SINK_EVENTS = [
    "Greeting 220",
    "Ready",
    "MailResult 250",
    "Rcpt a@sink.test 250",
    "Rcpt b@sink.test 250",
    "Rcpt c@sink.test 250",
    "SendData",
    "Message 250 a@sink.test,b@sink.test,c@sink.test",
    "Done a@sink.test=250 b@sink.test=250 c@sink.test=250",
    "MailResult 250",
    "Rcpt d@sink.test 250",
    "SendData",
    "Message 250 d@sink.test",
    "Done d@sink.test=250",
    "Closed 221",
]


def assert_sink_got_both(sink: Sink) -> None:
    first, second = sink.dumps()
    if b"<d@sink.test>" in first:
        first, second = second, first
    # smtp-sink offers no SIZE: the engine sends none.
    assert b"X-Mail-Args: <sender@client.test>\n" in first
    assert first.count(b"X-Rcpt-Args: ") == 3
    # smtp-sink stores LF line ends and unstuffed dots.
    assert b"Subject: engine test\n\n.a line with a dot\n..two dots\n.\n" in first
    assert b"last line without an end\n" in first
    assert b"Subject: 2\n\n.\n" in second


@pytest.mark.parametrize("pipelining", [True, False])
def test_delivers_to_smtp_sink(sink_factory: Callable[..., Sink], pipelining: bool) -> None:
    sink = sink_factory(*([] if pipelining else ["-p"]))
    sock, conn = connect(sink.port)
    events = drive(sock, conn, sink_plan())
    assert conn.extensions.pipelining is pipelining
    assert [summarize(e) for e in events] == SINK_EVENTS
    assert_sink_got_both(sink)


def test_delivers_to_smtp_sink_over_lmtp(sink_factory: Callable[..., Sink]) -> None:
    sink = sink_factory("-L")
    sock, conn = connect(sink.port, lmtp=True)
    events = drive(sock, conn, sink_plan(lmtp=True))
    summary = [summarize(e) for e in events]
    # RFC 2033 4.2: one reply per accepted recipient after the dot.
    assert summary[6:10] == [
        "SendData",
        "Message 250 a@sink.test",
        "Message 250 b@sink.test",
        "Message 250 c@sink.test",
    ]
    assert summary[:6] == SINK_EVENTS[:6] and summary[10:] == SINK_EVENTS[8:]
    assert_sink_got_both(sink)


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        # Hard refusal of every RCPT (no PIPELINING then): no DATA, RSET before the next MAIL.
        (
            ["-f", "RCPT"],
            [
                "Rcpt x@sink.test 500",
                "Rcpt y@sink.test 500",
                "Done x@sink.test=500 y@sink.test=500",
            ],
        ),
        (["-r", "MAIL"], ["MailResult 450", "Done x@sink.test=450 y@sink.test=450"]),
        (
            ["-r", "."],
            [
                "Rcpt x@sink.test 250",
                "Rcpt y@sink.test 250",
                "SendData",
                "Message 450 x@sink.test,y@sink.test",
                "Done x@sink.test=450 y@sink.test=450",
            ],
        ),
        (
            ["-Q", "DATA"],
            [
                "Rcpt x@sink.test 250",
                "Rcpt y@sink.test 250",
                "Done x@sink.test=421 y@sink.test=421",
            ],
        ),
    ],
)
def test_smtp_sink_refusals(
    sink_factory: Callable[..., Sink], flags: list[str], expected: list[str]
) -> None:
    sink = sink_factory(*flags)
    sock, conn = connect(sink.port)
    plan = Plan([envelope("x@sink.test", "y@sink.test"), envelope("z@sink.test")])
    summary = [summarize(e) for e in drive(sock, conn, plan)]
    assert all(line in summary for line in expected), summary
    if flags[0] == "-Q":
        assert summary[-1] == "Closed 421"
    else:
        # The connection survives the refusal: the second envelope goes out on it.
        assert summary[-1] == "Closed 221" and any(
            s.startswith("Done z@sink.test") for s in summary
        )
