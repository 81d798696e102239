"""Local mail handed to a real Dovecot over LMTP (``[delivery] lmtp``), and several smtpkit
nodes in front of it.

Each test starts its own Dovecot (run as root, as CI does) from a config it writes: IMAP and
LMTP on free loopback ports, LMTP also on a Unix socket, a Maildir store of its own owned by
``nobody``, and its users in a passwd-file. smtpkit accepts, makes the message durable in its
queue, and its queue runner hands it to Dovecot; the tests read it back over IMAP.

The cluster test puts two smtpkit nodes on port 25 of 127.0.0.2 and 127.0.0.3 behind MX
records of ``cluster.test`` at two preferences (NSD), both delivering to one Dovecot, and a
third smtpkit sending to them through that DNS; the first node is killed (SIGKILL, all its
processes) in the middle of the load and started again. Every wait is for a condition.
"""

from __future__ import annotations

import email
import email.policy
import imaplib
import os
import re
import smtplib
import subprocess
import threading
import time
import tomllib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import pytest
import tomli_w

from tests.conftest import MailServer, free_port, make_server, need_program, smtpkit, unavailable
from tests.dnsserver import DnsServer, run_nsd
from tests.e2e.faultclient import kill_tree
from tests.e2e.test_outbound import (
    journal,
    queue_entries,
    reports,
    sending_server,
    wait_journal,
    wait_until,
)

LMTP = Path("/usr/lib/dovecot/lmtp")  # Debian's dovecot-lmtpd
IMAP = Path("/usr/lib/dovecot/imap")  # Debian's dovecot-imapd
PASSWORD = "secret"


@dataclass
class Dovecot:
    """A Dovecot of the test's own: IMAP and LMTP on loopback, LMTP also on ``socket``."""

    root: Path
    users: tuple[str, ...]
    program: str
    imap_port: int = 0
    lmtp_port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        return self.root / "lmtp.sock"

    @property
    def store(self) -> Path:
        return self.root / "store"

    def configure(self) -> Path:
        self.imap_port = self.imap_port or free_port()
        self.lmtp_port = self.lmtp_port or free_port()
        for folder in ("run", "state", "store"):
            (self.root / folder).mkdir(exist_ok=True)
        os.chown(self.store, 65534, 65534)  # nobody:nogroup, whose mail processes write it
        (self.root / "users").write_text(
            "".join(f"{user}:{{PLAIN}}{PASSWORD}::::::\n" for user in self.users)
        )
        config = self.root / "dovecot.conf"
        config.write_text(
            f"""\
base_dir = {self.root}/run
state_dir = {self.root}/state
log_path = {self.root}/dovecot.log
protocols = imap lmtp
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
auth_failure_delay = 0
mail_location = maildir:{self.store}/%u
mail_uid = 65534
mail_gid = 65534
first_valid_uid = 1
first_valid_gid = 1
passdb {{
  driver = passwd-file
  args = {self.root}/users
}}
userdb {{
  driver = passwd-file
  args = {self.root}/users
  default_fields = uid=65534 gid=65534 home={self.store}/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {self.lmtp_port}
  }}
  unix_listener {self.socket} {{
    mode = 0666
  }}
}}
"""
        )
        return config

    def start(self) -> None:
        config = self.configure()
        with (self.root / "dovecot.stderr").open("ab") as stderr:
            self.process = subprocess.Popen(
                [self.program, "-F", "-c", str(config)], stdout=subprocess.DEVNULL, stderr=stderr
            )
        deadline = time.monotonic() + 30
        while not self._answers():
            if self.process.poll() is not None:
                raise AssertionError(
                    f"dovecot exited with {self.process.returncode}:\n{self.log()}"
                )
            assert time.monotonic() < deadline, f"dovecot did not start:\n{self.log()}"
            time.sleep(0.05)

    def _answers(self) -> bool:
        try:
            with smtplib.LMTP("127.0.0.1", self.lmtp_port, timeout=2) as client:
                client.noop()
            with smtplib.LMTP(str(self.socket), timeout=2) as client:
                client.noop()
        except (OSError, smtplib.SMTPException):
            return False
        return True

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # the master stops its processes, then itself
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def log(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else "(no log)"

    def imap(self, user: str) -> imaplib.IMAP4:
        client = imaplib.IMAP4("127.0.0.1", self.imap_port, timeout=10)
        client.login(user, PASSWORD)
        return client

    def message_ids(self, user: str) -> list[str]:
        """The Message-ID of every message in the user's INBOX, read over IMAP."""
        with self.imap(user) as client:
            status, data = client.select("INBOX", readonly=True)
            assert status == "OK"
            if data[0] == b"0":
                return []
            status, fetched = client.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
            assert status == "OK"
            out = []
            for item in fetched:
                if isinstance(item, tuple):
                    header = item[1].decode().strip()
                    out.append(header.partition(":")[2].strip())
            return out

    def messages(self, user: str) -> list[bytes]:
        with self.imap(user) as client:
            status, data = client.select("INBOX", readonly=True)
            if data[0] == b"0":
                return []
            status, fetched = client.fetch("1:*", "(BODY.PEEK[])")
            return [item[1] for item in fetched if isinstance(item, tuple)]


@pytest.fixture
def dovecot_program() -> str:
    program = need_program("dovecot", "dovecot-core")
    for binary, package in ((LMTP, "dovecot-lmtpd"), (IMAP, "dovecot-imapd")):
        if not binary.exists():
            unavailable(f"{binary} not found: install the Debian package {package} (.ci/run does)")
    if os.geteuid() != 0:
        unavailable("Dovecot's test instance runs as root (CI does)")
    return program


@pytest.fixture
def store(dovecot_program: str, open_tmp_path: Path) -> Iterator[Dovecot]:
    dovecot = Dovecot(open_tmp_path / "dovecot", ("alice@example.org", "bob@example.org"),
                      dovecot_program)  # fmt: skip
    dovecot.root.mkdir()
    dovecot.start()
    try:
        yield dovecot
    finally:
        dovecot.stop()


def lmtp_node(root: Path, lmtp: str, extra: str = "", users: tuple[str, ...] = ()) -> MailServer:
    """An smtpkit on 127.0.0.1 whose local mail goes to ``lmtp``; retries a second apart."""
    config = f"""
[delivery]
lmtp = "{lmtp}"
connect_timeout = 2
reply_timeout = 5
{extra}
"""
    if "[queue]" not in extra:
        config += "\n[queue]\nmin_retry = 1\nmax_retry = 2\n"
    return make_server(root, users=("alice@example.org", "bob@example.org", *users),
                       extra_config=config)  # fmt: skip


def message(subject: str, message_id: str, sender: str = "carol@example.net") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "alice@example.org"
    msg["Subject"] = subject
    msg["Message-ID"] = message_id
    msg.set_content("Through LMTP.\n")
    return msg


def submit(server: MailServer, msg: EmailMessage, to: list[str], sender: str) -> None:
    with smtplib.SMTP(server.host, server.port, timeout=30) as client:
        client.send_message(msg, from_addr=sender, to_addrs=to)


def rcpt_reply(server: MailServer, address: str) -> tuple[int, bytes]:
    with smtplib.SMTP(server.host, server.port, timeout=60) as client:
        client.ehlo("client.test")
        assert client.mail("carol@example.net")[0] == 250
        return client.rcpt(address)


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_mail_arrives_in_dovecot_and_reads_over_imap(
    open_tmp_path: Path, store: Dovecot, transport: str
) -> None:
    lmtp = f"127.0.0.1:{store.lmtp_port}" if transport == "tcp" else f"unix:{store.socket}"
    server = lmtp_node(open_tmp_path / "node", lmtp)
    server.start()
    submit(server, message("hello Dovecot", "<one@lmtp.test>"), ["alice@example.org"],
           "carol@example.net")  # fmt: skip
    ids = wait_until("the message in Dovecot", lambda: store.message_ids("alice@example.org"))
    assert ids == ["<one@lmtp.test>"]
    [text] = store.messages("alice@example.org")
    assert b"Subject: hello Dovecot" in text
    assert b"Return-Path: <carol@example.net>" in text  # Dovecot's, from MAIL FROM
    assert b"by mx.test.example (smtpkit)" in text  # our trace travelled with it
    # Nothing of it in smtpkit's own Maildir: the users' mail lives in Dovecot now.
    assert server.new_files("alice@example.org") == []
    wait_until("an empty queue", lambda: not queue_entries(server))
    (line,) = wait_journal(server, "delivered")
    assert line["to"] == "alice@example.org"
    peer = f"unix:{store.socket}" if transport == "unix" else f"[127.0.0.1]:{store.lmtp_port}"
    assert str(line["peer"]).endswith(peer)


def test_mail_waits_in_the_queue_while_dovecot_is_down(open_tmp_path: Path, store: Dovecot) -> None:
    # Retries an hour apart: only the flush brings them in once Dovecot is back.
    server = lmtp_node(open_tmp_path / "node", f"unix:{store.socket}",
                       "[queue]\nmin_retry = 3600\nmax_retry = 3600\n")  # fmt: skip
    server.start()
    store.stop()
    for i in range(3):
        submit(server, message(f"wait {i}", f"<wait-{i}@lmtp.test>"),
               ["alice@example.org", "bob@example.org"], "carol@example.net")  # fmt: skip

    def all_deferred() -> bool:
        entries = queue_entries(server)
        return len(entries) == 3 and all(
            r["state"] == "deferred" and r["attempts"] >= 1
            for e in entries
            for r in e["recipients"]  # type: ignore[attr-defined]
        )

    wait_until("three deferred messages", all_deferred)
    rcpt = queue_entries(server)[0]["recipients"][0]  # type: ignore[index]
    assert str(store.socket) in rcpt["last_error"]
    assert wait_journal(server, "deferred")[0]["status"] == "4.4.1"
    store.start()
    assert smtpkit("queue", "flush", config=server.config).stdout == (
        "The server is trying every waiting message now.\n"
    )
    wait_until("an empty queue", lambda: not queue_entries(server))
    expected = [f"<wait-{i}@lmtp.test>" for i in range(3)]
    for user in ("alice@example.org", "bob@example.org"):
        assert sorted(store.message_ids(user)) == expected
    # Once Dovecot answered, one connection carried all three messages.
    assert len({line["peer"] for line in journal(server, "delivered")}) == 1


def test_a_recipient_dovecot_refuses_bounces_with_a_report(
    open_tmp_path: Path, store: Dovecot
) -> None:
    # ghost is one of smtpkit's users, but Dovecot has no such mailbox: without lmtp_verify
    # the message is accepted, and Dovecot's 550 comes back to the sender as a report.
    server = lmtp_node(open_tmp_path / "node", f"127.0.0.1:{store.lmtp_port}",
                       users=("ghost@example.org",))  # fmt: skip
    server.start()
    submit(server, message("to a ghost", "<ghost@lmtp.test>", "alice@example.org"),
           ["ghost@example.org", "bob@example.org"], "alice@example.org")  # fmt: skip
    wait_until("an empty queue", lambda: not queue_entries(server))
    assert store.message_ids("bob@example.org") == ["<ghost@lmtp.test>"]
    # The report goes to alice, a local sender: through LMTP too, into Dovecot.
    wait_until("the report", lambda: len(store.messages("alice@example.org")) == 1)
    [report] = store.messages("alice@example.org")
    assert b"Subject: Undelivered Mail Returned to Sender" in report
    assert b"Final-Recipient: rfc822; ghost@example.org" in report
    assert b"Status: 5.1.1" in report
    assert b"Diagnostic-Code: smtp; 550 5.1.1 <ghost@example.org> User doesn't exist" in report
    assert reports(server, "alice@example.org") == []  # not in smtpkit's Maildir
    (line,) = wait_journal(server, "bounced")
    assert line["to"] == "ghost@example.org"


def test_notify_success_is_answered_once_dovecot_has_it(
    open_tmp_path: Path, store: Dovecot
) -> None:
    # Dovecot's 250 is final delivery (it offers no DSN to pass the request on to): the
    # "delivered" notice is smtpkit's to send, through LMTP back into the sender's mailbox.
    server = lmtp_node(open_tmp_path / "node", f"unix:{store.socket}")
    document = tomllib.loads(server.config.read_text())
    document["server"]["dsn_on_receive"] = True
    server.config.write_text(tomli_w.dumps(document))
    server.start()
    with smtplib.SMTP(server.host, server.port, timeout=30) as client:
        client.sendmail("alice@example.org", ["bob@example.org"],
                        b"Subject: tell me\r\nMessage-ID: <dsn@lmtp.test>\r\n\r\nhi\r\n",
                        rcpt_options=["NOTIFY=SUCCESS"])  # fmt: skip
    wait_until("the notice", lambda: store.messages("alice@example.org"))
    [notice] = store.messages("alice@example.org")
    assert b"Subject: Successful Mail Delivery Report" in notice
    assert b"Action: delivered" in notice
    assert store.message_ids("bob@example.org") == ["<dsn@lmtp.test>"]


def test_lmtp_verify_refuses_unknown_users_at_rcpt(open_tmp_path: Path, store: Dovecot) -> None:
    server = lmtp_node(open_tmp_path / "node", f"unix:{store.socket}", "lmtp_verify = true",
                       users=("ghost@example.org",))  # fmt: skip
    server.start()
    assert rcpt_reply(server, "alice@example.org")[0] == 250
    code, text = rcpt_reply(server, "ghost@example.org")  # smtpkit's, not Dovecot's
    assert (code, text) == (550, b"5.1.1 No such user here")
    assert rcpt_reply(server, "carol@example.org")[0] == 550  # nobody's: the router refuses
    submit(server, message("verified", "<verified@lmtp.test>"), ["alice@example.org"],
           "carol@example.net")  # fmt: skip
    wait_until("the message", lambda: store.message_ids("alice@example.org"))


def test_lmtp_verify_defers_while_the_lmtp_server_is_down(
    open_tmp_path: Path, store: Dovecot
) -> None:
    server = lmtp_node(open_tmp_path / "node", f"127.0.0.1:{store.lmtp_port}",
                       "lmtp_verify = true")  # fmt: skip
    server.start()
    store.stop()
    code, text = rcpt_reply(server, "alice@example.org")
    assert (code, text) == (451, b"4.4.3 Mailbox server unavailable, try again later")
    (line,) = wait_journal(server, "lmtp_verify")
    assert f"127.0.0.1:{store.lmtp_port}" in str(line["error"])
    store.start()
    assert rcpt_reply(server, "alice@example.org")[0] == 250


def test_queue_import_of_a_dead_nodes_folder_delivers_everything_once(
    open_tmp_path: Path, store: Dovecot
) -> None:
    lmtp = f"127.0.0.1:{store.lmtp_port}"
    # The node that dies holds its mail ([queue] hold: it sends nothing), so all of it is
    # in its queue when it is killed.
    dead = lmtp_node(open_tmp_path / "dead", lmtp, "[queue]\nhold = true\n")
    live = lmtp_node(open_tmp_path / "live", lmtp)
    dead.start()
    live.start()
    ids = [f"<moved-{i}@lmtp.test>" for i in range(10)]
    for i, message_id in enumerate(ids):
        submit(dead, message(f"moved {i}", message_id), ["alice@example.org"],
               "carol@example.net")  # fmt: skip
    assert len(queue_entries(dead)) == 10
    assert dead.process is not None
    kill_tree(dead.process)
    dead.process = None
    result = smtpkit("queue", "import", str(dead.directory), config=live.config)
    lines = result.stdout.splitlines()
    source, target = dead.directory / "queue", live.directory / "queue"
    assert lines[0] == f"Imported 10 messages from {source} into {target}."
    assert len(lines) == 11 and all("(1 recipient waiting)" in line for line in lines[1:])
    assert queue_entries(dead) == []
    wait_until("all ten in Dovecot", lambda: len(store.message_ids("alice@example.org")) >= 10)
    wait_until("an empty queue", lambda: not queue_entries(live))
    assert sorted(store.message_ids("alice@example.org")) == sorted(ids)
    assert len(wait_journal(live, "imported", 10)) == 10


# --- two nodes behind MX records, one killed under load -----------------------------------------

CLUSTER_ZONE = """\
$ORIGIN cluster.test.
$TTL 60
@               IN SOA   ns hostmaster 1 3600 600 86400 60
@               IN NS    ns
ns              IN A     127.0.0.1
@               IN MX    10 mx1
@               IN MX    20 mx2
mx1             IN A     127.0.0.2
mx2             IN A     127.0.0.3
"""
LOAD = 100
FORGED = "forged.example"


def cluster_node(root: Path, number: int, lmtp: str, dns: DnsServer) -> MailServer:
    """Node ``number`` of the cluster: port 25 of 127.0.0.(1 + number), mx<number>. It
    checks the mail it receives although the sender is on this machine (``check_loopback``),
    asking ``dns``."""
    host = f"127.0.0.{1 + number}"
    directory = root / f"node{number}"
    smtpkit("init", str(directory), "--domain", "cluster.test",
            "--hostname", f"mx{number}.cluster.test", "--listen", f"{host}:25")  # fmt: skip
    config = directory / "smtpkit.toml"
    document = tomllib.loads(config.read_text())
    document["server"]["workers"] = 2
    document["delivery"] = {"lmtp": lmtp, "connect_timeout": 2, "reply_timeout": 5}
    document["queue"] = {"min_retry": 1, "max_retry": 2}
    # One authserv-id for the whole cluster (docs/deploy.md): a node removes forged
    # Authentication-Results of any node, and filters trust one name.
    document["checks"] = {"authserv_id": "cluster.test", "check_loopback": True}
    document["dns"] = {"nameservers": [dns.nameserver]}
    config.write_text(tomli_w.dumps(document))
    smtpkit("user", "add", "alice@cluster.test", config=config)
    return MailServer(directory, config, host, 25, "cluster.test")


@pytest.fixture
def cluster_dns() -> Iterator[DnsServer]:
    with run_nsd({"cluster.test": CLUSTER_ZONE}) as server:
        yield server


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_nodes_one_killed_under_load_lose_nothing(
    dovecot_program: str, open_tmp_path: Path, cluster_dns: DnsServer
) -> None:
    dovecot = Dovecot(open_tmp_path / "dovecot", ("alice@cluster.test",), dovecot_program)
    dovecot.root.mkdir()
    dovecot.start()
    try:
        run_cluster(open_tmp_path, dovecot, cluster_dns)
    finally:
        dovecot.stop()


def run_cluster(root: Path, dovecot: Dovecot, dns: DnsServer) -> None:
    lmtp = f"127.0.0.1:{dovecot.lmtp_port}"
    node1, node2 = cluster_node(root, 1, lmtp, dns), cluster_node(root, 2, lmtp, dns)
    node1.start()
    node2.start()
    sender = sending_server(root / "sender", dns)
    sender.start()
    ids = [f"<load-{i}@sender.test>" for i in range(LOAD)]
    acknowledged: list[str] = []
    problems: list[str] = []

    def load() -> None:
        for i, message_id in enumerate(ids):
            msg = message(f"load {i}", message_id, "alice@example.org")
            # Forged in the name of the cluster: whichever node takes it removes it.
            msg["Authentication-Results"] = f"cluster.test; dkim=pass header.d={FORGED}"
            try:
                submit(sender, msg, ["alice@cluster.test"], "alice@example.org")
            except (OSError, smtplib.SMTPException) as exc:
                problems.append(f"{message_id}: {exc}")
                continue
            acknowledged.append(message_id)

    thread = threading.Thread(target=load)
    thread.start()
    try:
        # In the middle of the load: node 1 has taken some of it, and more is coming.
        wait_until("node 1 under load", lambda: len(journal(node1, "stored")) >= LOAD // 5, 120)
        assert node1.process is not None
        killed = kill_tree(node1.process)
        node1.process = None
        stored_by_1 = len(journal(node1, "stored"))
        # The sender falls back to the MX at the next preference while node 1 is down.
        wait_until("node 2 taking over", lambda: journal(node2, "stored"), 120)
        node1.start("--workers", "2")
    finally:
        thread.join(120)
    assert not thread.is_alive()
    wait_until("the sender's queue empty", lambda: not queue_entries(sender), 180)
    wait_until("both nodes' queues empty",
               lambda: not queue_entries(node1) and not queue_entries(node2), 180)  # fmt: skip
    wait_until("every message in Dovecot",
               lambda: set(acknowledged) <= set(dovecot.message_ids("alice@cluster.test")),
               180)  # fmt: skip
    found = Counter(dovecot.message_ids("alice@cluster.test"))
    duplicates = {message_id: n for message_id, n in found.items() if n > 1}
    missing = sorted(set(acknowledged) - set(found))
    print(
        f"\ncluster: {len(acknowledged)} of {LOAD} acknowledged to the sender "
        f"({len(problems)} refused: {problems[:3]}); node 1 killed with "
        f"{len(killed)} worker(s) after storing {stored_by_1}; in Dovecot: "
        f"{sum(found.values())} messages, {len(found)} distinct, "
        f"{sum(duplicates.values()) - len(duplicates)} duplicate(s) {sorted(duplicates)}"
    )
    assert missing == []
    assert len(acknowledged) == LOAD  # the sender itself never went down
    # A copy more only where the crash cut a transaction between its end and its answer:
    # the sender's sessions to node 1 (max_per_domain) and node 1's LMTP connections.
    assert sum(duplicates.values()) - len(duplicates) <= 10 + 10
    assert set(found) <= set(ids)
    assert_one_authserv_id(dovecot.messages("alice@cluster.test"))


def assert_one_authserv_id(stored: list[bytes]) -> None:
    """Each message in the store has one Authentication-Results, the cluster's, whichever
    node took it; both nodes took some."""
    by_node: Counter[str] = Counter()
    for raw in stored:
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        results = [str(v) for v in msg.get_all("Authentication-Results", [])]
        assert len(results) == 1, (msg["Message-ID"], results)
        assert results[0].startswith("cluster.test;"), results
        assert FORGED not in results[0]
        assert "spf=" in results[0] and "dmarc=" in results[0], results
        # The node's own Received line sits under the header it added.
        node = re.search(r"by (mx[12])\.cluster\.test ", " ".join(msg.get_all("Received", [])))
        assert node is not None, msg.get_all("Received")
        by_node[node.group(1)] += 1
    assert set(by_node) == {"mx1", "mx2"}, by_node


def test_utf8_mail_into_a_dovecot_lmtp_without_smtputf8(
    dovecot_program: str, open_tmp_path: Path
) -> None:
    # Dovecot 2.3's LMTP does not offer SMTPUTF8. UTF-8 header fields still reach the store
    # (final delivery, 8BITMIME); a UTF-8 address cannot be named to it, and fails with 5.6.7
    # and a report, while the other recipients of the message are delivered.
    muller = "müller@example.org"
    dovecot = Dovecot(open_tmp_path / "dovecot", ("alice@example.org", "bob@example.org"),
                      dovecot_program)  # fmt: skip
    dovecot.root.mkdir()
    dovecot.start()
    try:
        server = lmtp_node(open_tmp_path / "node", f"unix:{dovecot.socket}", users=(muller,))
        server.start()
        text = (
            "From: alice@example.org\r\nTo: undisclosed-recipients:;\r\nSubject: Grüße\r\n"
            "Message-ID: <utf8@lmtp.test>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n\r\nÄpfel.\r\n"
        ).encode()
        with smtplib.SMTP(server.host, server.port, timeout=30) as client:
            client.ehlo("client.test")
            client.sendmail("alice@example.org", [muller, "bob@example.org"], text,
                            mail_options=["SMTPUTF8"])  # fmt: skip
        (got,) = wait_until("bob's copy in Dovecot", lambda: dovecot.messages("bob@example.org"))
        assert got.endswith(text.split(b"\r\n", 2)[2])  # UTF-8 Subject and body intact
        (bounced,) = wait_journal(server, "bounced")
        assert (bounced["to"], bounced["status"]) == (muller, "5.6.7")
        assert bounced["reason"] == (
            f"unix:{dovecot.socket} does not offer SMTPUTF8, needed for this UTF-8 address"
        )
        (report,) = wait_until("alice's report", lambda: dovecot.messages("alice@example.org"))
        assert b"Final-Recipient: utf-8; m\\x{FC}ller@example.org" in report
        assert b"Status: 5.6.7" in report
        wait_until("an empty queue", lambda: not queue_entries(server))
    finally:
        dovecot.stop()
