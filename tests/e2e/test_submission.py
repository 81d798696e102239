"""Submission end to end: a real `smtpkit serve` with port 25, STARTTLS submission (587-like)
and implicit TLS (465-like) listeners on loopback; real clients (smtplib, swaks)."""

from __future__ import annotations

import base64
import json
import signal
import smtplib
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from smtpkit.config import update_config
from smtpkit.limits import BareNewline
from tests.conftest import MailServer, free_port, make_server, need_program, smtpkit
from tests.e2e.test_outbound import wait_until

PASSWORD = "correct horse battery staple"


@dataclass
class Submission:
    server: MailServer
    starttls: int  # the [submission] listen port
    implicit: int  # the [submission] implicit_tls port

    def context(self) -> ssl.SSLContext:
        """A client that trusts the server's self-signed certificate, TLS 1.2+."""
        context = ssl.create_default_context(cafile=str(self.server.directory / "tls" / "cert.pem"))
        context.check_hostname = False  # connecting to 127.0.0.1, certificate for the MX name
        return context

    def smtp(self) -> smtplib.SMTP:
        smtp = smtplib.SMTP(self.server.host, self.starttls, timeout=30)
        smtp.starttls(context=self.context())
        smtp.ehlo()
        return smtp

    def journal(self) -> list[dict[str, Any]]:
        return self.server.journal()

    def queue(self) -> list[dict[str, Any]]:
        out = smtpkit("queue", "list", "--json", config=self.server.config).stdout
        return [json.loads(line) for line in out.splitlines()]


def add_submission(server: MailServer, extra: str = "") -> tuple[int, int]:
    """A self-signed certificate and the two submission listeners (STARTTLS, implicit TLS) on
    free ports, added to ``server``'s config with ``extra`` lines; returns the two ports."""
    smtpkit("tls", "self-signed", config=server.config)
    starttls, implicit = free_port(), free_port()
    with server.config.open("a") as fh:
        fh.write(
            f'\n[submission]\nlisten = ["127.0.0.1:{starttls}"]\n'
            f'implicit_tls = ["127.0.0.1:{implicit}"]\n{extra}'
            # These tests look at what waits in the queue: nothing is sent on (delivery has
            # tests of its own, in a DNS world of their own).
            "\n[queue]\nhold = true\n"
        )
    return starttls, implicit


def set_password(server: MailServer, user: str, password: str) -> None:
    """``smtpkit user passwd --stdin``, as a script sets a password."""
    result = smtpkit("user", "passwd", "--stdin", user, config=server.config, input=password + "\n")
    assert result.stdout.strip() == f"Password set for {user}"


def start_submission(
    root: Path, extra: str = "", *, bare_newline: BareNewline | None = None
) -> Submission:
    server = make_server(root)
    if bare_newline is not None:

        def change(data: dict[str, Any]) -> None:
            data["server"]["bare_newline"] = str(bare_newline)

        assert update_config(server.config, change)
    starttls, implicit = add_submission(server, extra)
    set_password(server, "alice@example.org", PASSWORD)
    server.start("--workers", "2")
    return Submission(server, starttls, implicit)


def test_starttls_and_login_deliver_locally_and_queue_for_other_domains(sub: Submission) -> None:
    with sub.smtp() as smtp:
        smtp.login("alice@example.org", PASSWORD)
        refused = smtp.sendmail(
            "alice@example.org",
            ["bob@example.org", "friend@remote.example"],
            "From: Alice <alice@example.org>\r\nSubject: hello\r\n\r\nHi both\r\n",
        )
    assert refused == {}
    (local,) = sub.server.new_files("bob@example.org")
    message = local.read_bytes()
    assert b"with ESMTPSA id " in message
    head = message.split(b"\r\n\r\n", 1)[0]
    assert b"\r\nDate: " in head and b"\r\nMessage-ID: <" in head
    (queued,) = sub.queue()
    assert queued["sender"] == "alice@example.org"
    assert [(r["address"], r["state"]) for r in queued["recipients"]] == [
        ("friend@remote.example", "queued")
    ]
    # One message, one 250: the local copy and the queued one are the same bytes.
    queue_file = sub.server.directory / "queue" / queued["id"]
    assert queue_file.read_bytes() == message
    listing = smtpkit("queue", "list", config=sub.server.config).stdout.splitlines()
    assert listing[0].startswith(queued["id"]) and listing[0].endswith("<alice@example.org>")
    assert listing[1:] == ["    queued    friend@remote.example", "1 message in the queue."]


def test_implicit_tls_and_login(sub: Submission) -> None:
    with smtplib.SMTP_SSL(sub.server.host, sub.implicit, context=sub.context()) as smtp:
        assert "AUTH" in smtp.ehlo()[1].decode()
        smtp.login("alice@example.org", PASSWORD)
        smtp.sendmail("alice@example.org", ["bob@example.org"], "Subject: 465\r\n\r\nx\r\n")
    assert len(sub.server.new_files("bob@example.org")) == 1
    connects = [r for r in sub.journal() if r["event"] == "connect" and r.get("tls")]
    assert connects and connects[0]["tls"] in ("TLSv1.2", "TLSv1.3")


def test_no_password_before_tls_and_no_mail_before_auth(sub: Submission) -> None:
    plain = socket.create_connection((sub.server.host, sub.starttls), timeout=10)
    with plain:
        reader = plain.makefile("rb")
        assert reader.readline().startswith(b"220 ")
        plain.sendall(b"EHLO client.test\r\n")
        lines = []
        while not (line := reader.readline()).startswith(b"250 "):
            lines.append(line)
        assert not any(b"AUTH" in line for line in lines)
        plain.sendall(b"AUTH PLAIN AGFsaWNlQGV4YW1wbGUub3JnAHBhc3M=\r\n")
        assert reader.readline() == (
            b"538 5.7.11 Encryption required for requested authentication mechanism\r\n"
        )
        plain.sendall(b"MAIL FROM:<alice@example.org>\r\n")
        assert reader.readline() == b"530 5.7.0 Must issue a STARTTLS command first\r\n"
    with sub.smtp() as smtp:
        assert smtp.mail("alice@example.org") == (530, b"5.7.0 Authentication required")


def test_a_wrong_password_is_535_and_never_journaled(sub: Submission) -> None:
    # One mechanism on purpose: smtplib's login() tries PLAIN, then LOGIN after a 535.
    with sub.smtp() as smtp, pytest.raises(smtplib.SMTPAuthenticationError) as caught:
        smtp.user, smtp.password = "alice@example.org", "not the password"
        smtp.auth("PLAIN", smtp.auth_plain)
    assert caught.value.smtp_code == 535
    assert caught.value.smtp_error == b"5.7.8 Authentication credentials invalid"
    # Counted once its session has ended (its close line is written after the auth lines).
    (first,) = wait_until(  # type: ignore[misc]
        "the failure is journaled", lambda: [r for r in sub.journal() if r["event"] == "auth"]
    )
    wait_until(
        "its session's end",
        lambda: [
            r for r in sub.journal() if r["event"] == "close" and r["session"] == first["session"]
        ],
    )
    auths = [r for r in sub.journal() if r["event"] == "auth"]
    assert [(r["user"], r["result"]) for r in auths] == [("alice@example.org", "failed")]
    journal_text = "".join(p.read_text() for p in (sub.server.directory / "journal").iterdir())
    assert "not the password" not in journal_text and PASSWORD not in journal_text


def test_users_cannot_pose_as_others(sub: Submission) -> None:
    with sub.smtp() as smtp:
        smtp.login("alice@example.org", PASSWORD)
        code, text = smtp.mail("bob@example.org")
        assert (code, text) == (553, b"5.7.1 Sender address not owned by the authenticated user")
        smtp.rset()
        with pytest.raises(smtplib.SMTPDataError) as caught:
            smtp.sendmail(
                "alice@example.org",
                ["friend@remote.example"],
                "From: Bob <bob@example.org>\r\nSubject: forged\r\n\r\nx\r\n",
            )
    assert (caught.value.smtp_code, caught.value.smtp_error) == (
        550,
        b"5.7.1 From: header address not owned by the authenticated user",
    )
    assert sub.queue() == []


@pytest.mark.timeout(120)
def test_brute_force_from_one_address_is_slowed_down(sub: Submission) -> None:
    """3 failures end a session (421); after 5 within 10 minutes the address gets 454 for
    AUTH, even with the right password (bounded: 6 attempts)."""
    guess = "PLAIN AGFsaWNlQGV4YW1wbGUub3JnAGd1ZXNz"  # alice@example.org / guess
    with sub.smtp() as smtp:
        for _ in range(3):
            assert smtp.docmd("AUTH", guess) == (
                535,
                b"5.7.8 Authentication credentials invalid",
            )
        assert smtp.getreply() == (
            421,
            b"4.7.0 Too many authentication failures, closing connection",
        )
        smtp.close()
    for _ in range(2):  # failures 4 and 5 (in a worker or the other)
        with sub.smtp() as smtp:
            assert smtp.docmd("AUTH", guess)[0] == 535
    # Each worker counts its own failures: the 454 comes once one worker has seen 5, so
    # more failures may be needed with 2 workers (bounded). The right password is tried on
    # two connections in a row: should the kernel hand connections to the workers in turn,
    # one try per guess would always meet the worker the guesses do not reach.
    right = "PLAIN " + base64.b64encode(f"\0alice@example.org\0{PASSWORD}".encode()).decode()
    throttled = False
    for _attempt in range(10):
        for _try in range(2):
            with sub.smtp() as smtp:
                code, text = smtp.docmd("AUTH", right)
                if code == 454:
                    assert text == b"4.7.0 Too many authentication failures, try again later"
                    throttled = True
                    break
                smtp.close()
        if throttled:
            break
        with sub.smtp() as smtp:
            assert smtp.docmd("AUTH", guess)[0] in (535, 454)  # 454: this worker is there
    else:
        raise AssertionError("the address was never slowed down")
    deadline = time.monotonic() + 10  # the journal is appended every 20 ms
    while not any(r["event"] == "auth" and r["result"] == "throttled" for r in sub.journal()):
        assert time.monotonic() < deadline, "no throttled auth event in the journal"
        time.sleep(0.05)


def test_port_25_offers_no_auth_and_still_refuses_relaying(sub: Submission) -> None:
    with smtplib.SMTP(sub.server.host, sub.server.port, timeout=10) as smtp:
        smtp.starttls(context=sub.context())
        smtp.ehlo()
        assert not smtp.has_extn("auth")
        smtp.mail("x@remote.example")
        assert smtp.rcpt("friend@remote.example") == (550, b"5.7.1 Relaying denied")


def test_swaks_auth_plain_and_login(sub: Submission) -> None:
    swaks = need_program("swaks", "swaks")
    for auth, tls in (("PLAIN", "--tls"), ("LOGIN", "--tlsc")):
        port = sub.starttls if tls == "--tls" else sub.implicit
        result = subprocess.run(
            [swaks, "--server", f"{sub.server.host}:{port}", tls, "--auth", auth,
             "--auth-user", "alice@example.org", "--auth-password", PASSWORD,
             "--from", "alice@example.org", "--to", "bob@example.org",
             "--header", f"Subject: swaks {auth}"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        assert "235 2.7.0 Authentication successful" in result.stdout
    assert len(sub.server.new_files("bob@example.org")) == 2


def test_trusted_networks_relay_on_port_25_without_auth(tmp_path: Path) -> None:
    sub = start_submission(tmp_path, 'trusted_networks = ["127.0.0.0/8"]\n')
    try:
        with smtplib.SMTP(sub.server.host, sub.server.port, timeout=10) as smtp:
            smtp.sendmail("app@example.org", ["friend@remote.example"], "Subject: app\r\n\r\nx\r\n")
        (queued,) = sub.queue()
        assert queued["sender"] == "app@example.org"
    finally:
        sub.server.stop()


@pytest.mark.timeout(120)
def test_a_queued_message_survives_sigkill_right_after_its_250(tmp_path: Path) -> None:
    sub = start_submission(tmp_path)
    with sub.smtp() as smtp:
        smtp.login("alice@example.org", PASSWORD)
        smtp.sendmail("alice@example.org", ["friend@remote.example"], "Subject: s\r\n\r\nx\r\n")
    assert sub.server.stop(signal.SIGKILL) == -signal.SIGKILL
    sub.server.start("--workers", "2")
    try:
        (queued,) = sub.queue()
        assert queued["recipients"][0]["address"] == "friend@remote.example"
        assert (
            (sub.server.directory / "queue" / queued["id"])
            .read_bytes()
            .endswith(b"Subject: s\r\n\r\nx\r\n")
        )
    finally:
        sub.server.stop()


def test_submission_listeners_need_tls(tmp_path: Path) -> None:
    server = make_server(tmp_path)
    with server.config.open("a") as fh:
        fh.write('\n[submission]\nimplicit_tls = ["127.0.0.1:4650"]\n')
    result = smtpkit("check", config=server.config, check=False)
    assert result.returncode == 1
    assert result.stdout.strip() == (
        "error: submission -> implicit_tls: needs [tls]: passwords are only ever sent under "
        "TLS (smtpkit tls self-signed, or a certificate and key) "
        f"({server.config})"
    )


# --- the hardening battery on the submission listeners ------------------------------------------


def authenticated(sub: Submission, implicit: bool) -> tuple[ssl.SSLSocket, Any]:
    """A raw TLS socket, past EHLO and AUTH, on the STARTTLS or the implicit-TLS listener."""
    context = sub.context()
    if implicit:
        raw = socket.create_connection((sub.server.host, sub.implicit), timeout=30)
        sock = context.wrap_socket(raw)
        reader = sock.makefile("rb")
        assert reader.readline().startswith(b"220 ")
    else:
        raw = socket.create_connection((sub.server.host, sub.starttls), timeout=30)
        plain = raw.makefile("rb")
        assert plain.readline().startswith(b"220 ")
        raw.sendall(b"EHLO hostile.test\r\nSTARTTLS\r\n")
        while not plain.readline().startswith(b"250 "):
            pass
        assert plain.readline().startswith(b"220 ")
        sock = context.wrap_socket(raw)
        reader = sock.makefile("rb")
    token = base64.b64encode(f"\0alice@example.org\0{PASSWORD}".encode())
    sock.sendall(b"EHLO hostile.test\r\nAUTH PLAIN " + token + b"\r\n")
    while not reader.readline().startswith(b"250 "):
        pass
    assert reader.readline() == b"235 2.7.0 Authentication successful\r\n"
    return sock, reader


@pytest.fixture(params=list(BareNewline), ids=str)
def bare_newline(request: pytest.FixtureRequest) -> BareNewline:
    return BareNewline(request.param)


@pytest.fixture
def sub_bare(tmp_path: Path, bare_newline: BareNewline) -> Iterator[Submission]:
    """The submission listeners under ``[server] bare_newline`` set to ``bare_newline``."""
    made = start_submission(tmp_path, bare_newline=bare_newline)
    yield made
    if made.server.process is not None:
        made.server.stop()


@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "implicit-tls"])
def test_smuggling_and_limits_hold_on_submission(
    sub_bare: Submission, bare_newline: BareNewline, implicit: bool
) -> None:
    """Every bare-newline end-of-data variant, a 1 MB command line and a message over the
    size limit, after AUTH, under both settings of ``[server] bare_newline``: answered
    exactly as on port 25. Never a second message: a refused one leaves nothing, and under
    "normalize" a variant of bare LFs only is the one message, queued with every bare LF
    as CRLF and the smuggled transaction as text lines inside it."""
    from tests.e2e.test_smuggling import BARE_VARIANTS, REFUSED, SMUGGLED, normalized

    sub = sub_bare
    accepted: list[bytes] = []  # the bodies sent of the messages stored
    for variant in BARE_VARIANTS.values():  # a session each: every 550 spends the budget
        body = b"hi" + variant + SMUGGLED + b"\r\n"  # with the CRLF of the real end
        stored = bare_newline is BareNewline.NORMALIZE and b"\r" not in variant.replace(
            b"\r\n", b""
        )
        sock, reader = authenticated(sub, implicit)
        with sock:
            sock.sendall(
                b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<friend@remote.example>\r\nDATA\r\n"
                b"Subject: smuggle\r\n\r\n" + body + b".\r\n"
            )
            # Exactly one reply to the one real final dot.
            replies = [reader.readline() for _ in range(4)]
            assert [line[:3] for line in replies[:3]] == [b"250", b"250", b"354"]
            if stored:
                assert replies[-1].startswith(b"250 2.0.0 OK"), replies[-1]
                accepted.append(body)
            else:
                assert replies[-1] == b"%d %s\r\n" % REFUSED
            sock.sendall(b"NOOP\r\n")  # what was smuggled was never run as commands
            assert reader.readline() == b"250 2.0.0 OK\r\n"
    sock, reader = authenticated(sub, implicit)
    with sock:
        sock.sendall(b"NOOP " + b"x" * 1024 * 1024 + b"\r\n")
        assert reader.readline() == b"500 5.5.6 Command line too long\r\n"
        sock.sendall(b"MAIL FROM:<alice@example.org> SIZE=99999999\r\n")
        assert reader.readline() == b"552 5.3.4 Message size exceeds fixed maximum message size\r\n"
    # One queued message per variant stored: the eight of bare LFs only under "normalize",
    # none under "reject"; each for the one recipient given, never the smuggled one.
    assert len(accepted) == (8 if bare_newline is BareNewline.NORMALIZE else 0)
    queued = sub.queue()
    assert [(q["sender"], [r["address"] for r in q["recipients"]]) for q in queued] == [
        ("alice@example.org", ["friend@remote.example"])
    ] * len(accepted)
    bodies = [
        (sub.server.directory / "queue" / q["id"]).read_bytes().split(b"\r\n\r\n", 1)[1]
        for q in queued
    ]
    assert sorted(bodies) == sorted(normalized(body) for body in accepted)
    assert sub.server.new_files("bob@example.org") == []


@pytest.mark.timeout(300)
def test_testssl_finds_nothing_older_than_tls_1_2_on_submission(
    sub: Submission, tmp_path: Path
) -> None:
    """testssl.sh's protocol checks against the STARTTLS listener and the implicit-TLS one:
    SSLv2, SSLv3, TLS 1.0 and 1.1 are refused there, as on port 25."""
    from tests.e2e.test_tls import OLD_PROTOCOLS, protocols_by_testssl

    for port, starttls in ((sub.starttls, True), (sub.implicit, False)):
        report = tmp_path / f"testssl-{port}.json"
        found = protocols_by_testssl(sub.server.host, port, report, starttls=starttls)
        assert {k: found[k] for k in OLD_PROTOCOLS} == dict.fromkeys(
            OLD_PROTOCOLS, "not offered"
        ), (port, found)
        assert found["TLS1_2"] == "offered", (port, found)
        assert found["TLS1_3"].startswith("offered"), (port, found)


def test_submission_refuses_cbc_ciphers_port_25_does_not(sub: Submission) -> None:
    """Passwords travel only under AEAD ciphers; opportunistic TLS on port 25 stays wide."""
    cbc = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cbc.check_hostname = False
    cbc.verify_mode = ssl.CERT_NONE
    cbc.maximum_version = ssl.TLSVersion.TLSv1_2
    cbc.set_ciphers("ECDHE-ECDSA-AES128-SHA256:ECDHE-RSA-AES128-SHA256")  # CBC only
    with smtplib.SMTP(sub.server.host, sub.server.port, timeout=10) as smtp:
        smtp.starttls(context=cbc)
        assert isinstance(smtp.sock, ssl.SSLSocket)
        cipher = smtp.sock.cipher()
        assert cipher is not None and cipher[0].endswith("AES128-SHA256")
    with (
        pytest.raises(ssl.SSLError, match="handshake failure"),
        smtplib.SMTP_SSL(sub.server.host, sub.implicit, context=cbc, timeout=10),
    ):
        pass
    with (
        smtplib.SMTP(sub.server.host, sub.starttls, timeout=10) as smtp,
        pytest.raises(ssl.SSLError, match="handshake failure"),
    ):
        smtp.starttls(context=cbc)


# Alice's PLAIN credentials, as an AUTH command's initial response.
TOKEN = base64.b64encode(f"\0alice@example.org\0{PASSWORD}".encode())


@pytest.mark.parametrize(
    "injected",
    [
        b"AUTH PLAIN " + TOKEN + b"\r\n",
        b"AUTH PLAIN " + TOKEN + b"\r\nMAIL FROM:<alice@example.org>\r\n"
        b"RCPT TO:<friend@remote.example>\r\nDATA\r\nSubject: injected\r\n\r\nx\r\n.\r\n",
        b"EHLO evil.test\r\nAUTH LOGIN\r\n",
        b"NOOP\r\nNOOP\r\nNOOP\r\n",
    ],
    ids=["auth", "auth-and-message", "ehlo-auth-login", "noops"],
)
def test_commands_pipelined_after_starttls_on_submission_are_discarded(
    sub: Submission, injected: bytes
) -> None:
    """CVE-2011-0411 on the STARTTLS submission listener: what comes in plaintext in the
    same write as STARTTLS is dropped with the plaintext session, never run once TLS is up
    (an injected AUTH would have logged the session in, an injected message been queued)."""
    from tests.e2e.test_tls import Peer

    peer = Peer(sub.server, sub.starttls)
    try:
        assert peer.reply().startswith(b"220 ")
        assert peer.command(b"EHLO client.test").startswith(b"250-")
        peer.send(b"STARTTLS\r\n" + injected)  # one write: they arrive in one read
        assert peer.reply() == b"220 2.0.0 Ready to start TLS\r\n"
        assert peer.quiet_for(0.2), "a reply to an injected command came in plaintext"
        peer.starttls(sub.context())
        # The first reply inside TLS answers our first encrypted command, nothing else.
        ehlo = peer.command(b"EHLO client.test")
        assert ehlo.startswith(b"250-mx.test.example Hello client.test\r\n")
        assert b"\r\n250-AUTH PLAIN LOGIN\r\n" in ehlo and ehlo.endswith(b"250 HELP\r\n")
        # Not logged in: no injected AUTH ran.
        assert peer.command(b"MAIL FROM:<alice@example.org>") == (
            b"530 5.7.0 Authentication required\r\n"
        )
        assert peer.command(b"AUTH PLAIN " + TOKEN) == b"235 2.7.0 Authentication successful\r\n"
        # No MAIL FROM is in effect: the injected one was dropped with the rest.
        assert peer.command(b"RCPT TO:<friend@remote.example>") == (
            b"503 5.5.1 Bad sequence of commands\r\n"
        )
        assert peer.command(b"QUIT").startswith(b"221 ")
        assert peer.closed_within(5) < 5 and not peer.buffer
    finally:
        peer.close()
    assert sub.queue() == []
    wait_until("the session's end", lambda: any(r["event"] == "close" for r in sub.journal()))
    # One AUTH in the journal: ours, inside TLS.
    auths = [r for r in sub.journal() if r["event"] == "auth"]
    assert [(r["mechanism"], r["user"], r["result"]) for r in auths] == [
        ("PLAIN", "alice@example.org", "ok")
    ]


SIZE_LIMIT = 64 * 1024  # [limits] max_message_size of the servers below


@pytest.fixture
def sub_small(tmp_path: Path) -> Iterator[Submission]:
    """The submission listeners with a small ``max_message_size``."""
    made = start_submission(tmp_path, f"\n[limits]\nmax_message_size = {SIZE_LIMIT}\n")
    yield made
    if made.server.process is not None:
        made.server.stop()


def transaction(sock: ssl.SSLSocket, reader: Any, content: bytes) -> bytes:
    """One message from alice for a local and a remote recipient, ``content`` sent as is
    (with the final dot); returns the reply to the final dot."""
    sock.sendall(
        b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.org>\r\n"
        b"RCPT TO:<friend@remote.example>\r\nDATA\r\n"
    )
    replies = [reader.readline() for _ in range(4)]
    assert [line[:4] for line in replies] == [b"250 ", b"250 ", b"250 ", b"354 "], replies
    sock.sendall(content + b".\r\n")
    reply: bytes = reader.readline()
    return reply


def nothing_left_in_the_spool(sub: Submission) -> bool:
    """Every spool file is an empty one of the pools, made ahead of need: a refused
    message's file was removed."""
    for path in (sub.server.directory / "users" / ".spool").rglob("*"):
        try:
            if path.is_file() and path.stat().st_size:
                return False
        except FileNotFoundError:  # taken or removed meanwhile
            continue
    return True


@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "implicit-tls"])
def test_an_over_long_data_line_is_refused_on_submission(
    sub_small: Submission, implicit: bool
) -> None:
    """RFC 5321 4.5.3.1.6: a text line is at most 1000 octets with its CRLF. One octet more,
    after AUTH, is refused at the final dot (550 5.6.0) and stored nowhere; what followed
    the long line in the message was never read as commands; 1000 octets are accepted."""
    sub = sub_small
    sock, reader = authenticated(sub, implicit)
    with sock:
        long_line = b"x" * 999 + b"\r\n"  # 1001 octets
        smuggled = b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<eve@remote.example>\r\n"
        reply = transaction(sock, reader, b"Subject: long\r\n\r\n" + long_line + smuggled)
        assert reply == b"550 5.6.0 Message refused: text line longer than 1000 octets\r\n"
        sock.sendall(b"NOOP\r\n")
        assert reader.readline() == b"250 2.0.0 OK\r\n"
        fits = b"y" * 998 + b"\r\n"  # 1000 octets
        reply = transaction(sock, reader, b"Subject: fits\r\n\r\n" + fits)
        assert reply.startswith(b"250 2.0.0 OK"), reply
    # The one message stored and queued is the one that fits.
    (queued,) = sub.queue()
    assert [r["address"] for r in queued["recipients"]] == ["friend@remote.example"]
    data = (sub.server.directory / "queue" / queued["id"]).read_bytes()
    assert data.endswith(b"Subject: fits\r\n\r\n" + fits)
    (local,) = sub.server.new_files("bob@example.org")
    assert local.read_bytes() == data
    wait_until("the refused message's spool file gone", lambda: nothing_left_in_the_spool(sub))


@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "implicit-tls"])
def test_a_message_over_the_size_limit_is_refused_on_submission(
    sub_small: Submission, implicit: bool
) -> None:
    """RFC 1870: a message really over ``max_message_size``, declared with no SIZE= (or a
    SIZE= that lies), is read to its end and refused (552 5.3.4) there; nothing of it is
    stored or queued, and the session goes on. A message of exactly the limit is taken."""
    sub = sub_small
    head = b"Subject: big\r\n\r\n"
    line = b"z" * 78 + b"\r\n"
    body = line * ((SIZE_LIMIT - len(head)) // len(line) - 1)
    body += b"w" * (SIZE_LIMIT - len(head) - len(body) - 2) + b"\r\n"  # 80 to 160 octets
    exactly = head + body
    assert len(exactly) == SIZE_LIMIT
    sock, reader = authenticated(sub, implicit)
    with sock:
        too_big = b"552 5.3.4 Message size exceeds fixed maximum message size\r\n"
        assert transaction(sock, reader, exactly + b"+\r\n") == too_big  # 3 octets over
        assert transaction(sock, reader, exactly * 3) == too_big
        sock.sendall(b"MAIL FROM:<alice@example.org> SIZE=1000\r\n")  # a lie, found out
        assert reader.readline() == b"250 2.1.0 Sender OK\r\n"
        sock.sendall(b"RCPT TO:<friend@remote.example>\r\nDATA\r\n")
        assert [reader.readline()[:4] for _ in range(2)] == [b"250 ", b"354 "]
        sock.sendall(exactly + b"more\r\n.\r\n")
        assert reader.readline() == too_big
        sock.sendall(b"NOOP\r\n")
        assert reader.readline() == b"250 2.0.0 OK\r\n"
        reply = transaction(sock, reader, exactly)
        assert reply.startswith(b"250 2.0.0 OK"), reply
    (queued,) = sub.queue()
    data = (sub.server.directory / "queue" / queued["id"]).read_bytes()
    assert data.endswith(b"\r\n" + exactly) and b"more\r\n" not in data
    (local,) = sub.server.new_files("bob@example.org")
    assert local.read_bytes() == data
    stored = [r for r in sub.journal() if r["event"] == "stored"]
    assert len(stored) == 1
    wait_until("the refused messages' spool files gone", lambda: nothing_left_in_the_spool(sub))
