"""[checks] end to end: a real ``smtpkit serve`` checks mail arriving on port 25 against SPF,
DKIM and DMARC records served by a real DNS server (NSD), asks DNS blocklists at connect and
a stand-in rspamd over HTTP; and signs what its users send.

The clients connect from 127.0.0.1 (127.0.0.3 for the blocklist), which
``check_loopback = true`` makes a client like any on the internet. The zones:

==================  =======================================================================
domain              records
==================  =======================================================================
good.test           SPF ip4:127.0.0.1 -all; DKIM key at sel._domainkey; DMARC p=reject
forged.test         SPF -all (127.0.0.1 is not allowed); DMARC p=reject
quarantine.test     SPF -all; DMARC p=quarantine
bl.test             a blocklist listing 127.0.0.3, with a TXT reason
==================  =======================================================================
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import http.server
import json
import smtplib
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from smtpkit.config import update_config
from tests.conftest import MailServer, make_server, smtpkit
from tests.dnsserver import DnsServer, run_nsd
from tests.e2e.test_outbound import receiving_smtpkit, wait_until

HOSTNAME = "mx.test.example"  # make_server's server.hostname: the authserv-id


def _txt(text: str) -> str:
    """Zone-file TXT data: strings of at most 255 bytes."""
    return " ".join(f'"{text[i : i + 255]}"' for i in range(0, len(text), 255))


@pytest.fixture(scope="module")
def signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _zones(key: rsa.RSAPrivateKey) -> dict[str, str]:
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    import base64

    record = f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode()}"
    head = "$TTL 60\n@ IN SOA ns hostmaster 1 3600 600 86400 60\n@ IN NS ns\nns IN A 127.0.0.1\n"
    return {
        "good.test": head
        + '@ IN TXT "v=spf1 ip4:127.0.0.1 -all"\n'
        + f"sel._domainkey IN TXT {_txt(record)}\n"
        + '_dmarc IN TXT "v=DMARC1; p=reject"\n',
        "forged.test": head + '@ IN TXT "v=spf1 -all"\n_dmarc IN TXT "v=DMARC1; p=reject"\n',
        "quarantine.test": head
        + '@ IN TXT "v=spf1 -all"\n_dmarc IN TXT "v=DMARC1; p=quarantine"\n',
        "bl.test": head
        + "3.0.0.127 IN A 127.0.0.2\n"
        + '3.0.0.127 IN TXT "listed for testing, see https://bl.test/"\n',
    }


@pytest.fixture(scope="module")
def zones(signing_key: rsa.RSAPrivateKey) -> Iterator[DnsServer]:
    with run_nsd(_zones(signing_key)) as server:
        yield server


def checking_server(root: Path, dns: DnsServer, checks: str = "") -> MailServer:
    config = f"""
[dns]
nameservers = ["{dns.nameserver}"]

[checks]
check_loopback = true
time_limit = 5
{checks}
"""
    server = make_server(root, extra_config=config)
    server.start()
    return server


def message(sender: str, subject: str = "checked", extra: str = "") -> bytes:
    return (
        f"From: Sender <{sender}>\r\nTo: alice@example.org\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '.')}@test>\r\n{extra}\r\nHello, Alice.\r\n"
    ).encode()


def signed(key: rsa.RSAPrivateKey, data: bytes) -> bytes:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    signature = dkim.sign(
        data, b"sel", b"good.test", pem, canonicalize=(b"relaxed", b"relaxed"),
        include_headers=[b"from", b"to", b"subject", b"message-id"],
    )  # fmt: skip
    return signature + data


def deliver(server: MailServer, sender: str, data: bytes) -> tuple[int, bytes]:
    """Send one message to alice; (code, text) of the reply to its final dot."""
    with smtplib.SMTP(server.host, server.port, timeout=30) as client:
        client.ehlo("client.good.test")
        client.mail(sender)
        client.rcpt("alice@example.org")
        try:
            code, text = client.data(data)
        except smtplib.SMTPDataError as exc:
            return exc.smtp_code, exc.smtp_error
        return code, text


def stored(server: MailServer, folder: str = "") -> email.message.EmailMessage:
    path = server.maildir("alice@example.org") / folder / "new"
    (only,) = list(path.iterdir())
    parsed = email.message_from_bytes(only.read_bytes(), policy=email.policy.compat32)
    assert isinstance(parsed, email.message.EmailMessage | email.message.Message)
    return parsed  # type: ignore[return-value]


def results(msg: email.message.Message) -> list[str]:
    """The Authentication-Results fields, unfolded, whitespace runs made one space."""
    return [" ".join(str(v).split()) for v in msg.get_all("Authentication-Results", [])]


def journal(server: MailServer, event: str) -> list[dict[str, Any]]:
    records = server.journal()
    return [r for r in records if r["event"] == event]


def test_signed_mail_from_an_authorized_host_passes_all_three(
    tmp_path: Path, zones: DnsServer, signing_key: rsa.RSAPrivateKey
) -> None:
    server = checking_server(tmp_path, zones)
    code, _ = deliver(server, "bob@good.test", signed(signing_key, message("bob@good.test")))
    assert code == 250
    msg = stored(server)
    assert results(msg) == [
        f"{HOSTNAME}; spf=pass smtp.mailfrom=bob@good.test; "
        "dkim=pass header.d=good.test header.s=sel header.a=rsa-sha256; "
        "dmarc=pass header.from=good.test"
    ]
    # Our field comes first after Return-Path, above our own Received line.
    raw = next((server.maildir("alice@example.org") / "new").iterdir()).read_bytes()
    assert raw.startswith(b"Return-Path: <bob@good.test>\r\nAuthentication-Results: ")
    (line,) = wait_until("the stored line", lambda: journal(server, "stored"))
    assert line["auth"]["spf"] == "pass"
    assert line["auth"]["dmarc"] == "pass"


def test_a_message_changed_after_signing_fails_dkim(
    tmp_path: Path, zones: DnsServer, signing_key: rsa.RSAPrivateKey
) -> None:
    server = checking_server(tmp_path, zones)
    data = signed(signing_key, message("bob@good.test")).replace(b"Hello, Alice.", b"Pay me.")
    code, _ = deliver(server, "bob@good.test", data)
    assert code == 250
    (field,) = results(stored(server))
    assert "dkim=fail" in field and "header.d=good.test" in field
    assert "spf=pass" in field
    assert "dmarc=pass" in field  # SPF alone is aligned: DMARC passes


def test_forged_authentication_results_are_removed(
    tmp_path: Path, zones: DnsServer, signing_key: rsa.RSAPrivateKey
) -> None:
    server = checking_server(tmp_path, zones)
    forged = (
        f"Authentication-Results: {HOSTNAME.upper()};\r\n\tdkim=pass header.d=bank.test\r\n"
        "Authentication-Results: elsewhere.test; spf=pass smtp.mailfrom=x@y.test\r\n"
    )
    data = message("bob@good.test", extra=forged)
    code, _ = deliver(server, "bob@good.test", data)
    assert code == 250
    fields = results(stored(server))
    assert len(fields) == 2
    assert fields[0].startswith(f"{HOSTNAME}; spf=pass")
    assert fields[1] == "elsewhere.test; spf=pass smtp.mailfrom=x@y.test"
    (line,) = wait_until("the stored line", lambda: journal(server, "stored"))
    assert line["removed_authentication_results"] == 1


def test_tag_mode_refuses_nothing(tmp_path: Path, zones: DnsServer) -> None:
    server = checking_server(tmp_path, zones)
    code, _ = deliver(server, "eve@forged.test", message("eve@forged.test"))
    assert code == 250
    (field,) = results(stored(server))
    assert field == (
        f"{HOSTNAME}; spf=fail smtp.mailfrom=eve@forged.test; dkim=none; "
        "dmarc=fail header.from=forged.test"
    )


def test_spf_reject(tmp_path: Path, zones: DnsServer) -> None:
    server = checking_server(tmp_path, zones, 'spf = "reject"')
    code, text = deliver(server, "eve@forged.test", message("eve@forged.test"))
    assert (code, text) == (
        550,
        b"5.7.23 SPF check failed: forged.test does not authorize [127.0.0.1]",
    )
    assert list((server.maildir("alice@example.org") / "new").iterdir()) == []


def test_dmarc_enforce_rejects_and_quarantines(tmp_path: Path, zones: DnsServer) -> None:
    server = checking_server(tmp_path, zones, 'dmarc = "enforce"')
    code, text = deliver(server, "eve@forged.test", message("eve@forged.test"))
    assert (code, text) == (550, b"5.7.1 DMARC policy of forged.test rejects this message")
    code, _ = deliver(server, "eve@quarantine.test", message("eve@quarantine.test"))
    assert code == 250
    assert list((server.maildir("alice@example.org") / "new").iterdir()) == []
    junk = server.maildir("alice@example.org") / ".Junk"
    assert (junk / "maildirfolder").is_file()
    assert sorted(p.name for p in junk.iterdir()) == ["cur", "maildirfolder", "new", "tmp"]
    (field,) = results(stored(server, ".Junk"))
    assert "dmarc=fail header.from=quarantine.test" in field
    rejected = wait_until("the rejected line", lambda: journal(server, "rejected"))
    assert rejected[0]["code"] == 550  # type: ignore[index]
    # Two authors, one of them a p=reject domain: no policy applies, so it is refused.
    two = message("eve@quarantine.test").replace(
        b"From: Sender <eve@quarantine.test>", b"From: eve@quarantine.test, boss@forged.test"
    )
    code, text = deliver(server, "eve@quarantine.test", two)
    assert (code, text) == (550, b"5.7.1 Several From: domains: DMARC cannot be applied")


def test_a_blocklisted_client_is_refused_at_the_greeting(tmp_path: Path, zones: DnsServer) -> None:
    # Started (greeted with 220) from 127.0.0.1, which is not listed.
    server = checking_server(tmp_path, zones, 'dnsbl = ["bl.test"]')
    with socket.create_connection(
        (server.host, server.port), timeout=30, source_address=("127.0.0.3", 0)
    ) as sock:
        reader = sock.makefile("rb")
        assert reader.readline() == (
            b"554 5.7.1 Service unavailable; client [127.0.0.3] listed by bl.test: "
            b"listed for testing, see https://bl.test/\r\n"
        )
        assert reader.readline() == b""  # closed
    listed = wait_until(
        "the connect line",
        lambda: [r for r in journal(server, "connect") if r["peer"].startswith("127.0.0.3")],
    )
    assert [(r["blocklisted"], r["code"]) for r in listed] == [("bl.test", "127.0.0.2")]  # type: ignore[attr-defined]


class _Rspamd(http.server.BaseHTTPRequestHandler):
    """A stand-in for rspamd's /checkv2: the action comes from the message's subject."""

    def do_POST(self) -> None:  # noqa: N802 - the http.server interface
        body = self.rfile.read(int(self.headers["Content-Length"]))
        action = "reject" if b"Subject: spam" in body else "add header"
        answer = {"action": action, "score": 16.5, "required_score": 15.0}
        if action == "reject":
            answer["messages"] = {"smtp_message": "Spam, go away"}
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def rspamd() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Rspamd)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_rspamd_decides(tmp_path: Path, zones: DnsServer, rspamd: str) -> None:
    server = checking_server(tmp_path, zones, f'rspamd = "{rspamd}"')
    code, text = deliver(server, "bob@good.test", message("bob@good.test", subject="spam"))
    assert (code, text) == (550, b"5.7.1 Spam, go away")
    code, _ = deliver(server, "bob@good.test", message("bob@good.test", subject="maybe"))
    assert code == 250
    msg = stored(server)
    assert msg["X-Spam-Status"] == 'Yes, score=16.50 required=15.00 action="add header" (rspamd)'


def test_rspamd_unreachable_fails_closed_when_asked(tmp_path: Path, zones: DnsServer) -> None:
    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))  # a port nobody listens on
        url = f"http://127.0.0.1:{hole.getsockname()[1]}"
        server = checking_server(tmp_path, zones, f'rspamd = "{url}"\nrspamd_fail = "closed"')
        code, text = deliver(server, "bob@good.test", message("bob@good.test"))
    assert (code, text) == (451, b"4.7.1 Message deferred, try again later")


#: The server.hostname of the signing world's sender: a name within its mail domain, so
#: that the reports it writes (From: MAILER-DAEMON@mx.example.org) are signed by the domain's
#: key, as a parent of theirs.
SENDER_HOSTNAME = "mx.example.org"


@dataclass
class SigningWorld:
    """A sender (``example.org``, with alice@example.org, named ``SENDER_HOSTNAME``) whose
    key ``smtpkit dkim keygen`` made (selector s1), its printed record published as is; a
    receiving smtpkit (``dkim.test``, with bob@dkim.test, on 127.0.0.2:25) that checks what
    arrives from loopback. Neither is started: each test starts them when it needs them."""

    sender: MailServer
    receiver: MailServer
    dns: DnsServer
    record: str  # the zone-file line keygen printed


@contextlib.contextmanager
def signing_world(
    root: Path, configure: Callable[[dict[str, Any]], None] | None = None
) -> Iterator[SigningWorld]:
    """The world of ``SigningWorld``; ``configure`` changes the sender's config further."""
    sender = make_server(root / "sender", users=("alice@example.org",))
    made = smtpkit("dkim", "keygen", "example.org", "--selector", "s1", config=sender.config)
    record = next(line for line in made.stdout.splitlines() if " IN TXT " in line)
    head = "$TTL 60\n@ IN SOA ns hostmaster 1 3600 600 86400 60\n@ IN NS ns\nns IN A 127.0.0.1\n"
    zones = {
        "example.org": head
        + '@ IN TXT "v=spf1 ip4:127.0.0.0/8 -all"\n'
        + '_dmarc IN TXT "v=DMARC1; p=reject"\n'
        + "mx IN A 127.0.0.1\n"
        # The HELO name's own SPF record: reports, from <>, are judged by it.
        + 'mx IN TXT "v=spf1 ip4:127.0.0.0/8 -all"\n'
        + record + "\n",
        "dkim.test": head + "@ IN MX 10 mx\nmx IN A 127.0.0.2\n",
    }  # fmt: skip
    with run_nsd(zones) as dns:

        def change(data: dict[str, Any]) -> None:
            data["server"]["hostname"] = SENDER_HOSTNAME
            data["dns"] = {"nameservers": [dns.nameserver]}
            data["submission"] = {"trusted_networks": ["127.0.0.0/8"]}
            if configure is not None:
                configure(data)

        assert update_config(sender.config, change)
        receiver = receiving_smtpkit(
            root, "127.0.0.2", "mx.dkim.test", "dkim.test", "bob@dkim.test"
        )
        with receiver.config.open("a") as fh:
            fh.write(
                f'\n[dns]\nnameservers = ["{dns.nameserver}"]\n[checks]\ncheck_loopback = true\n'
            )
        yield SigningWorld(sender, receiver, dns, record)


def received_at(world: SigningWorld, address: str = "bob@dkim.test") -> email.message.Message:
    """The one message that reaches ``address`` at the receiver, once it is there."""
    (copy,) = wait_until("the copy at the receiver", lambda: world.receiver.new_files(address))  # type: ignore[misc]
    return email.message_from_bytes(copy.read_bytes(), policy=email.policy.compat32)


def test_mail_smtpkit_signs_passes_dkim_at_another_smtpkit(tmp_path: Path) -> None:
    """The sender's key made by `smtpkit dkim keygen`, its printed record published as is;
    the receiving smtpkit finds spf, dkim and dmarc all pass."""
    with signing_world(tmp_path) as world:
        world.receiver.start()
        world.sender.start()
        data = (
            b"From: Alice <alice@example.org>\r\nTo: bob@dkim.test\r\nSubject: signed\r\n"
            b"Message-ID: <signed@example.org>\r\n\r\nSigned by smtpkit.\r\n"
        )
        with smtplib.SMTP(world.sender.host, world.sender.port, timeout=30) as client:
            client.sendmail("alice@example.org", ["bob@dkim.test"], data)
        msg = received_at(world)
        assert msg["DKIM-Signature"] is not None
        assert results(msg) == [
            "mx.dkim.test; spf=pass smtp.mailfrom=alice@example.org; "
            "dkim=pass header.d=example.org header.s=s1 header.a=rsa-sha256; "
            "dmarc=pass header.from=example.org"
        ]
        world.receiver.stop()
