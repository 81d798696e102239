"""No open relay: relay-probe address forms over a real socket to a real ``smtpkit serve``.

Every probe is refused with its exact reply unless it names a real local mailbox, a refused
probe cannot be sent DATA, and after the whole battery the data folder holds nothing but the
config, the journal and the users' Maildir folders: no address ever became a path.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from smtpkit.config import load_config
from smtpkit.delivery.spool import SPOOL_FOLDER
from tests.conftest import MailServer, make_server
from tests.smtpreader import read_reply

USERS = ("alice@example.org", "bob@example.org", "kate@kit.example")
DOMAINS = ("example.org", "kit.example")

OK = (250, "2.1.5")
RELAY = (550, "5.7.1")  # not one of our domains
NO_USER = (550, "5.1.1")  # one of our domains, but no such mailbox
SYNTAX = (501, "5.5.4")  # not an RFC 5321 path at all
PARAM = (555, "5.5.4")  # RFC 5321 4.1.1.11: unrecognised RCPT parameter
NON_ASCII = (553, "5.6.7")  # RFC 6531 3.3 / 3.5: a UTF-8 address without SMTPUTF8

# (id, RCPT TO argument, exact reply). The argument is sent as UTF-8 bytes.
PROBES: list[tuple[str, str, tuple[int, str]]] = [
    # Percent hack: the old "relay through me" routing in the local part.
    ("percent-hack", "<user%other.example@example.org>", NO_USER),
    ("percent-hack-real-user", "<alice%other.example@example.org>", NO_USER),
    ("percent-hack-double", "<user%other.example%third.example@example.org>", NO_USER),
    ("percent-in-domain", "<alice@example.org%other.example>", SYNTAX),
    # Source routes: dropped (RFC 5321 Appendix C); what is left decides.
    ("source-route", "<@example.org:user@other.example>", RELAY),
    ("source-route-list", "<@a,@b:user@other.example>", RELAY),
    ("source-route-to-local", "<@other.example:alice@example.org>", OK),
    # Bang paths (UUCP).
    ("bang-path", "<other.example!user@example.org>", NO_USER),
    ("bang-path-no-domain", "<other!user>", SYNTAX),
    ("bang-path-to-local-name", "<other.example!alice>", SYNTAX),
    # Quoted local parts holding an "@" (or anything else): never a mailbox name.
    ("quoted-at", '<"user@other.example"@example.org>', NO_USER),
    ("quoted-at-local", '<"alice@example.org"@example.org>', NO_USER),
    # RFC 5321 4.1.2: quoting that changes nothing leaves the same mailbox.
    ("quoted-real-user", '<"alice"@example.org>', OK),
    ("quoted-path", '<"../../etc/passwd"@example.org>', NO_USER),
    ("quoted-whole", '<"alice@example.org">', SYNTAX),
    # IP literals, even our own address, and a bare IP.
    ("ip-literal", "<user@[127.0.0.1]>", RELAY),
    ("ip-literal-local-user", "<alice@[127.0.0.1]>", RELAY),
    ("ipv6-literal", "<user@[IPv6:::1]>", RELAY),
    ("ipv4-mapped-literal", "<alice@[IPv6:::ffff:127.0.0.1]>", RELAY),
    ("bad-ip-literal", "<alice@[1.2.3.4.5]>", SYNTAX),
    ("domain-in-literal", "<alice@[example.org]>", SYNTAX),
    ("bare-ip", "<alice@127.0.0.1>", RELAY),
    ("localhost", "<alice@localhost>", RELAY),
    # Trailing dots, sub- and super-domains.
    ("trailing-dot", "<alice@example.org.>", RELAY),
    ("subdomain", "<alice@sub.example.org>", RELAY),
    ("suffix-trick", "<alice@example.org.other.example>", RELAY),
    ("port", "<alice@example.org:25>", SYNTAX),
    # Mixed case: the real mailbox, accepted.
    ("upper-case", "<ALICE@EXAMPLE.ORG>", OK),
    ("mixed-case", "<Alice@Example.Org>", OK),
    ("mixed-case-other-domain", "<Kate@KIT.Example>", OK),
    # IDN look-alikes: Cyrillic a (U+0430), fullwidth e, KELVIN SIGN (U+212A), sent without
    # SMTPUTF8, and the punycode (A-label) forms of the look-alike domains.
    ("cyrillic-a-in-domain", "<alice@ex\u0430mple.org>", NON_ASCII),
    ("cyrillic-a-in-local-part", "<\u0430lice@example.org>", NON_ASCII),
    ("fullwidth-e-in-domain", "<alice@\uff45xample.org>", NON_ASCII),
    ("kelvin-sign-in-domain", "<kate@\u212ait.example>", NON_ASCII),
    ("punycode-lookalike", "<alice@xn--exmple-4nf.org>", RELAY),
    ("punycode-lookalike-local-part", "<xn--lice-8cd@example.org>", NO_USER),
    # Two domains, escapes, empty, several paths, trailing words.
    ("double-at", "<alice@example.org@other.example>", SYNTAX),
    ("escaped-at", "<alice\\@other.example@example.org>", SYNTAX),
    ("empty", "<>", SYNTAX),
    ("nothing", "", SYNTAX),
    ("no-brackets", "alice@example.org", SYNTAX),
    ("unclosed", "<alice@example.org", SYNTAX),
    ("trailing-words", "<alice@example.org> extra", PARAM),
    ("second-path", "<alice@example.org> <x@other.example>", PARAM),
    ("comma-list", "<alice@example.org>,<x@other.example>", SYNTAX),
    # Postmaster: ours is real (RFC 5321 4.5.1), anyone else's is relaying.
    ("postmaster-remote", "<postmaster@other.example>", RELAY),
    ("postmaster-bare", "<postmaster>", OK),
    ("postmaster-mixed-case", "<PostMaster@Example.ORG>", OK),
    # Paths and unknown names in a local domain.
    ("dotdot-local-part", "<../../etc/passwd@example.org>", SYNTAX),
    ("slash-local-part", "<a/b@example.org>", NO_USER),
    ("unknown-user", "<nobody@example.org>", NO_USER),
    ("plus-tag", "<alice+tag@example.org>", OK),  # alice's subaddress (RFC 5233)
    ("plus-tag-unknown", "<nobody+tag@example.org>", NO_USER),
    ("unknown-user-other-domain", "<alice@kit.example>", NO_USER),
    # Control characters: never part of an argument.
    ("nul-byte", "<alice@example.org\x00@other.example>", SYNTAX),
    ("tab", "<alice@example.org>\tNOTIFY=NEVER", SYNTAX),
]


class Client:
    """A raw SMTP client: exact replies, nothing added or hidden (unlike smtplib)."""

    def __init__(self, server: MailServer) -> None:
        self.sock = socket.create_connection((server.host, server.port), timeout=10)
        self.pending = bytearray()  # what arrived past the last reply read
        self.greeting = self.reply()

    def reply(self) -> tuple[int, str]:
        """(code, last line's text); the text starts with the enhanced code if any."""
        got = read_reply(self.sock, self.pending)
        return got.code, got.text.decode()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def cmd(self, line: str | bytes) -> tuple[int, str]:
        self.send((line.encode() if isinstance(line, str) else line) + b"\r\n")
        return self.reply()

    def close(self) -> None:
        self.sock.close()


def code_of(reply: tuple[int, str]) -> tuple[int, str]:
    return reply[0], reply[1].split(" ", 1)[0]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailServer]:
    root = tmp_path_factory.mktemp("relay")
    srv = make_server(
        root, users=USERS, domains=DOMAINS, extra_config="\n[limits]\nmax_errors = 1000\n"
    )
    srv.start()
    try:
        yield srv
    finally:
        if srv.process is not None:
            srv.stop()


@pytest.fixture
def client(server: MailServer) -> Iterator[Client]:
    c = Client(server)
    assert c.greeting[0] == 220
    assert c.cmd("EHLO probe.test")[0] == 250
    try:
        yield c
    finally:
        c.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("argument", "expected"), [p[1:] for p in PROBES], ids=[p[0] for p in PROBES]
)
def test_relay_probe_gets_its_exact_reply(
    client: Client, argument: str, expected: tuple[int, str]
) -> None:
    assert client.cmd("MAIL FROM:<probe@remote.example>") == (250, "2.1.0 Sender OK")
    got = client.cmd(b"RCPT TO:" + argument.encode("utf-8"))
    assert code_of(got) == expected, got
    if expected != OK:
        # A refused probe leaves no recipient: DATA is impossible, and a pipelining client's
        # message lines are read (and refused) as commands, never stored.
        client.send(b"DATA\r\nSubject: probe\r\n\r\nrelay me\r\n.\r\n")
        assert client.reply() == (503, "5.5.1 No valid recipients")
        for _ in range(4):
            assert client.reply() == (500, "5.5.1 Command unrecognized")
    assert client.cmd("RSET") == (250, "2.0.0 OK")
    assert client.cmd("QUIT")[0] == 221


def allowed_tree(server: MailServer, stored: dict[str, int]) -> None:
    """The data folder holds only the config, the journal, the users' Maildirs (with
    ``stored[user]`` files in ``new/``, none elsewhere), the pool of empty spool files, the
    workers' locks, and the (empty) maildrop and queue folders."""
    root = server.directory
    users = root / "users"
    maildirs = {users / u / sub for u in USERS for sub in ("tmp", "new", "cur")}
    spool = users / SPOOL_FOLDER
    # One pool folder per worker process, named by its number.
    pools = {spool / str(n) for n in range(load_config(server.config).server.workers)}
    allowed_dirs = {root, root / "journal", root / "maildrop", root / "queue", users, spool}
    allowed_dirs |= {*pools, *maildirs}
    allowed_dirs |= {users / u for u in USERS}
    found_dirs: set[Path] = set()
    unexpected: list[str] = []
    new_counts: dict[str, int] = {}
    for folder, dirnames, filenames in os.walk(root):
        here = Path(folder)
        found_dirs.add(here)
        for name in dirnames:
            if here / name not in allowed_dirs:
                unexpected.append(f"folder {here / name}")
        for name in filenames:
            path = here / name
            if here == root and name in ("smtpkit.toml", "serve.stderr", "smtpkit.pid"):
                continue
            if here == root / "journal" and path.is_file():
                continue
            if here in pools and path.stat().st_size == 0:
                continue  # ready, empty spool files (SpoolPool)
            if here == spool and name in (".commit-lock", ".maildrop-lock"):
                continue  # the workers' shared locks, empty
            if here == root / "queue" and name == ".lock":
                continue  # the queue runner's lock, empty
            if here.name == "new" and here in maildirs:
                new_counts[here.parent.name] = new_counts.get(here.parent.name, 0) + 1
                continue
            unexpected.append(f"file {path}")
    assert unexpected == []
    assert new_counts == {u: n for u, n in stored.items() if n}
    assert {users / u / sub for u in USERS for sub in ("tmp", "new", "cur")} <= found_dirs


@pytest.mark.timeout(60)
def test_whole_battery_creates_nothing_outside_the_maildirs(server: MailServer) -> None:
    """All probes in one session with RSET between them, DATA pipelined after each refused
    one; then every file and folder of the data folder is accounted for."""
    stored = {u: len(server.new_files(u)) for u in USERS}
    c = Client(server)
    try:
        c.cmd("EHLO battery.test")
        accepted = 0
        for name, argument, expected in PROBES:
            assert c.cmd("MAIL FROM:<probe@remote.example>")[0] == 250, name
            got = c.cmd(b"RCPT TO:" + argument.encode("utf-8"))
            assert code_of(got) == expected, (name, got)
            if expected == OK:
                accepted += 1
            else:
                assert c.cmd("DATA")[0] == 503, name
            assert c.cmd("RSET")[0] == 250, name
        assert accepted == sum(1 for p in PROBES if p[2] == OK)
        c.cmd("QUIT")
    finally:
        c.close()
    allowed_tree(server, stored)


# (MAIL FROM argument, reply, the Return-Path it is stored with). Quotes that change nothing
# are dropped (RFC 5321 4.1.2): "/etc/passwd" is a dot-string.
HOSTILE_SENDERS = [
    ('<"../../etc/passwd"@x>', (250, "2.1.0"), '<"../../etc/passwd"@x>'),
    ('<"/etc/passwd"@example.org>', (250, "2.1.0"), "</etc/passwd@example.org>"),
    ('<"a/../../../new/x"@example.org>', (250, "2.1.0"), '<"a/../../../new/x"@example.org>'),
    ("<../../etc/passwd@x>", SYNTAX, ""),
    ("<a/../../b@x.example>", SYNTAX, ""),
    ("<alice@example.org\x00>", SYNTAX, ""),
]


@pytest.mark.timeout(60)
def test_hostile_sender_stores_only_under_the_recipients_new(server: MailServer) -> None:
    before = {u: set(server.new_files(u)) for u in USERS}
    c = Client(server)
    stored = 0
    try:
        assert c.cmd("EHLO hostile.test")[0] == 250
        for sender, expected, _ in HOSTILE_SENDERS:
            got = c.cmd(b"MAIL FROM:" + sender.encode())
            assert code_of(got) == expected, (sender, got)
            if expected[0] != 250:
                continue
            assert c.cmd("RCPT TO:<alice@example.org>") == (250, "2.1.5 Recipient OK")
            assert c.cmd("DATA")[0] == 354
            got = c.cmd(b"Subject: hostile sender\r\n\r\nbody\r\n.")
            assert got[0] == 250 and got[1].startswith("2.0.0 OK: message stored as "), got
            stored += 1
        c.cmd("QUIT")
    finally:
        c.close()
    alice = "alice@example.org"
    files = set(server.new_files(alice)) - before[alice]
    assert len(files) == stored
    # The sender is text in the Return-Path header, never a path.
    return_paths = sorted(f.read_bytes().split(b"\r\n", 1)[0] for f in files)
    assert return_paths == sorted(
        b"Return-Path: " + stored_as.encode() for _, e, stored_as in HOSTILE_SENDERS if e[0] == 250
    )
    counts = {u: len(b) for u, b in before.items()}
    counts[alice] += stored
    allowed_tree(server, counts)
