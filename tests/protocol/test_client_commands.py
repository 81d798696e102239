"""What the client engine sends and refuses to send: the caller's calls, in and out of order;
MAIL and RCPT parameters; AUTH only under TLS; STARTTLS; the message's line ends and dots."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtpkit.protocol.client import (
    ClientConnection,
    ClientState,
    LocalProtocolError,
    Waiting,
)
from smtpkit.protocol.client_events import StartTlsNow
from smtpkit.protocol.replies import Reply
from tests.protocol.test_client import (
    EHLO_AUTH,
    EHLO_FULL,
    EHLO_PLAIN,
    EHLO_TLS,
    FakeServer,
    Plan,
    envelope,
    play,
    rules,
    summarize,
)
from tests.protocol.test_client_replies import feed, ready


def in_message(ehlo: bytes = EHLO_FULL) -> ClientConnection:
    """A connection that has just returned ``SendData``."""
    conn = ready(ehlo)
    conn.send_envelope("a@client.test", ["b@mx.test"])
    conn.data_to_send()
    events = feed(conn, b"250 ok\r\n250 ok\r\n354 go\r\n")
    assert [summarize(e) for e in events][-1] == "SendData"
    assert conn.state is ClientState.MESSAGE
    return conn


def message_wire(chunks: list[bytes]) -> bytes:
    conn = in_message()
    for chunk in chunks:
        conn.send_data(chunk)
    conn.end_data()
    return conn.data_to_send()


# --- the message: line ends and dots (RFC 5321 2.3.8, 4.1.1.4, 4.5.2) ----------------------------


@pytest.mark.parametrize(
    ("chunks", "wire"),
    [
        ([], b".\r\n"),
        ([b""], b".\r\n"),
        ([b"\r\n"], b"\r\n.\r\n"),
        ([b"one line\r\n"], b"one line\r\n.\r\n"),
        # RFC 5321 4.1.1.4: a last line without its CRLF gets one before the dot.
        ([b"no end"], b"no end\r\n.\r\n"),
        ([b"a\r\nb"], b"a\r\nb\r\n.\r\n"),
        # RFC 5321 4.5.2: a line starting with a period gets one more...
        ([b".\r\n"], b"..\r\n.\r\n"),
        ([b".x\r\n..y\r\nz.\r\n"], b"..x\r\n...y\r\nz.\r\n.\r\n"),
        ([b"."], b"..\r\n.\r\n"),
        # ...also when the line starts in the chunk before,
        ([b"a\r\n", b".b\r\n"], b"a\r\n..b\r\n.\r\n"),
        ([b"a\r", b"\n.b"], b"a\r\n..b\r\n.\r\n"),
        ([b"a", b"\r", b"\n", b".", b"\r", b"\n"], b"a\r\n..\r\n.\r\n"),
        ([b".", b"."], b"...\r\n.\r\n"),
        # ...but not in the middle of a line.
        ([b"a", b".b\r\n"], b"a.b\r\n.\r\n"),
        ([b"a\r\n\r\n", b".", b"\r\n"], b"a\r\n\r\n..\r\n.\r\n"),
        # A bare LF is a Unix line end: it goes out as CRLF, and stuffing follows.
        ([b"a\nb\n"], b"a\r\nb\r\n.\r\n"),
        ([b"a\n", b".b\n.\n"], b"a\r\n..b\r\n..\r\n.\r\n"),
        ([b"a\r\nb\nc"], b"a\r\nb\r\nc\r\n.\r\n"),
        ([b"\n.\n"], b"\r\n..\r\n.\r\n"),
        # The smuggling shapes of a bare LF end as plain stuffed lines.
        ([b"x\n.\nMAIL FROM:<evil@example>\r\n"], b"x\r\n..\r\nMAIL FROM:<evil@example>\r\n.\r\n"),
        # 8-bit bytes and NUL are content, not the engine's business.
        ([b"\xc3\xa9\x00\r\n"], b"\xc3\xa9\x00\r\n.\r\n"),
    ],
)
def test_message_wire(chunks: list[bytes], wire: bytes) -> None:
    assert message_wire(chunks) == wire


@pytest.mark.parametrize(
    "chunks", [[b"a\rb"], [b"a\r\rb"], [b"a\r", b"b"], [b"\r", b"\r\n"], [b"x\r.\r\n"]]
)
def test_bare_cr_is_refused(chunks: list[bytes]) -> None:
    conn = in_message()
    with pytest.raises(LocalProtocolError, match="bare CR"):
        for chunk in chunks:
            conn.send_data(chunk)
    # Nothing of the refused chunk went out; the message cannot be finished.
    assert b"\r\r" not in conn.data_to_send()
    assert conn.state is ClientState.MESSAGE


def test_a_message_ending_in_a_bare_cr_is_refused_at_the_end() -> None:
    conn = in_message()
    conn.send_data(b"text\r")
    assert conn.data_to_send() == b"text"
    with pytest.raises(LocalProtocolError, match="bare CR"):
        conn.end_data()
    assert conn.data_to_send() == b""


BODY = st.lists(
    st.sampled_from([b"a", b"bc", b".", b"..", b"\r\n", b"\n", b"\r\n.", b"\n.", b"\xff", b" "]),
    max_size=30,
).map(b"".join)


def reference_wire(body: bytes) -> bytes:
    """Line by line: LF or CRLF ends a line; each line is sent with CRLF, stuffed."""
    lines = body.replace(b"\r\n", b"\n").split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    out = b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines)
    return out + b".\r\n"


@settings(max_examples=300, deadline=None)
@given(body=BODY, cuts=st.lists(st.integers(min_value=0, max_value=120)))
def test_any_message_any_chunks(body: bytes, cuts: list[int]) -> None:
    edges = [0, *sorted({c for c in cuts if c < len(body)}), len(body)]
    chunks = [body[a:b] for a, b in zip(edges, edges[1:], strict=False)]
    wire = message_wire(chunks)
    assert wire == reference_wire(body)
    # Never a bare CR or LF; the terminator only at the very end.
    assert wire.count(b"\r") == wire.count(b"\n") == wire.count(b"\r\n")
    assert (b"\r\n" + wire).find(b"\r\n.\r\n") == len(wire) - 3


# --- the caller's calls out of order -------------------------------------------------------------


def test_nothing_before_the_greeting() -> None:
    conn = ClientConnection("client.test")
    assert conn.waiting_for is Waiting.GREETING
    calls: list[Callable[[], None]] = [
        lambda: conn.send_envelope("a@b.example", ["c@d.example"]),
        conn.quit,
        conn.reset,
        conn.start_tls,
        conn.tls_started,
        conn.end_data,
        lambda: conn.send_data(b"x"),
        lambda: conn.authenticate("PLAIN", "u", "p"),
    ]
    for call in calls:
        with pytest.raises(LocalProtocolError, match="in state connecting"):
            call()
    assert conn.data_to_send() == b""


def test_no_second_command_while_one_is_in_flight() -> None:
    conn = ready()
    conn.send_envelope("a@client.test", ["b@mx.test"])
    with pytest.raises(LocalProtocolError, match=r"send_envelope\(\) in state busy"):
        conn.send_envelope("a@client.test", ["b@mx.test"])
    with pytest.raises(LocalProtocolError, match=r"quit\(\) in state busy"):
        conn.quit()
    with pytest.raises(LocalProtocolError, match=r"send_data\(\) in state busy"):
        conn.send_data(b"early")


def test_no_quit_in_the_middle_of_the_message() -> None:
    conn = in_message()
    with pytest.raises(LocalProtocolError, match=r"quit\(\) in state message"):
        conn.quit()


def test_only_quit_after_a_refused_greeting() -> None:
    conn = ClientConnection("client.test")
    feed(conn, b"554 5.7.1 go away\r\n")
    assert conn.state is ClientState.REFUSED
    assert conn.data_to_send() == b""
    with pytest.raises(LocalProtocolError):
        conn.send_envelope("a@client.test", ["b@mx.test"])
    conn.quit()
    assert conn.data_to_send() == b"QUIT\r\n"
    assert [summarize(e) for e in feed(conn, b"221 bye\r\n")] == ["Closed 221"]


def test_bytes_after_eof_are_a_caller_error() -> None:
    conn = ClientConnection("client.test")
    conn.receive_data(b"")
    with pytest.raises(LocalProtocolError, match="after EOF"):
        conn.receive_data(b"220 late\r\n")


@pytest.mark.parametrize("name", ["", "two words", "a\r\nMAIL", "bücher.example", "-x", "[]"])
def test_helo_name_must_be_a_domain_or_literal(name: str) -> None:
    with pytest.raises(LocalProtocolError, match="not a domain"):
        ClientConnection(name)


@pytest.mark.parametrize(
    "name", ["client", "mail.example.org", "[192.0.2.1]", "[IPv6:2001:db8::1]"]
)
def test_helo_names(name: str) -> None:
    conn = ClientConnection(name)
    feed(conn, b"220 hi\r\n")
    assert conn.data_to_send() == f"EHLO {name}\r\n".encode()


# --- MAIL and RCPT -------------------------------------------------------------------------------


def envelope_wire(ehlo: bytes, *args: object, **kw: object) -> bytes:
    conn = ready(ehlo)
    conn.send_envelope(*args, **kw)  # type: ignore[arg-type]
    return conn.data_to_send()


def test_parameters_follow_what_is_offered() -> None:
    wire = envelope_wire(
        EHLO_FULL,
        "a@client.test",
        ["b@mx.test", "c@mx.test"],
        size=1234,
        eight_bit=True,
        mail_params={"RET": "HDRS", "ENVID": "QQ314159"},
        rcpt_params={"b@mx.test": {"NOTIFY": "SUCCESS,FAILURE", "ORCPT": "rfc822;b+2Bx@mx.test"}},
    )
    assert wire == (
        b"MAIL FROM:<a@client.test> SIZE=1234 BODY=8BITMIME RET=HDRS ENVID=QQ314159\r\n"
        b"RCPT TO:<b@mx.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b+2Bx@mx.test\r\n"
        b"RCPT TO:<c@mx.test>\r\nDATA\r\n"
    )


def test_no_size_or_body_when_not_offered() -> None:
    plain = b"250-mx.test\r\n250 PIPELINING\r\n"
    wire = envelope_wire(plain, "", ["b@mx.test"], size=1234, eight_bit=True)
    assert wire == b"MAIL FROM:<>\r\nRCPT TO:<b@mx.test>\r\nDATA\r\n"


def test_smtputf8_when_an_address_needs_it() -> None:
    wire = envelope_wire(EHLO_FULL, "josé@client.test", ["用户@例子.广告"])
    assert wire == (
        "MAIL FROM:<josé@client.test> SMTPUTF8\r\nRCPT TO:<用户@例子.广告>\r\nDATA\r\n".encode()
    )
    wire = envelope_wire(EHLO_FULL, "a@client.test", ["b@mx.test"], smtputf8=True)
    assert wire.startswith(b"MAIL FROM:<a@client.test> SMTPUTF8\r\n")


def test_smtputf8_needed_but_not_offered() -> None:
    conn = ready(EHLO_PLAIN)
    with pytest.raises(LocalProtocolError, match="SMTPUTF8"):
        conn.send_envelope("a@client.test", ["zoë@mx.test"])
    with pytest.raises(LocalProtocolError, match="SMTPUTF8"):
        conn.send_envelope("a@client.test", ["b@mx.test"], smtputf8=True)
    assert conn.data_to_send() == b"" and conn.state is ClientState.READY


def test_the_null_reverse_path_and_postmaster() -> None:
    wire = envelope_wire(EHLO_PLAIN, "", ["postmaster"])
    assert wire == b"MAIL FROM:<>\r\n"


@pytest.mark.parametrize(
    ("sender", "recipients", "why"),
    [
        ("a@b.example\r\nRSET", ["c@d.example"], "not a reverse-path"),
        ("a@b.example> SIZE=1", ["c@d.example"], "not a reverse-path"),
        ("<a@b.example>", ["c@d.example"], "not a reverse-path"),
        ("a b@c.example", ["c@d.example"], "not a reverse-path"),
        ("a@b.example", ["c@d.example>\r\nDATA"], "not a forward-path"),
        ("a@b.example", [""], "not a forward-path"),
        ("a@b.example", ["nobody"], "not a forward-path"),
        ("a@b.example", [], "no recipient"),
        ("a@b.example", "c@d.example", "sequence of addresses"),
    ],
)
def test_addresses_that_cannot_be_sent(sender: str, recipients: list[str], why: str) -> None:
    conn = ready()
    with pytest.raises(LocalProtocolError, match=why):
        conn.send_envelope(sender, recipients)
    assert conn.data_to_send() == b"" and conn.state is ClientState.READY


@pytest.mark.parametrize(
    ("mail_params", "rcpt_params", "why"),
    [
        ({"SIZE": "1"}, None, "SIZE is set by the engine"),
        ({"body": "8BITMIME"}, None, "BODY is set by the engine"),
        ({"SMTPUTF8": None}, None, "SMTPUTF8 is set by the engine"),
        ({"RET": "HDRS\r\nRSET"}, None, "not an ESMTP parameter value"),
        ({"RET": "a b"}, None, "not an ESMTP parameter value"),
        ({"RET": "a=b"}, None, "not an ESMTP parameter value"),
        ({"RET": ""}, None, "not an ESMTP parameter value"),
        ({"X Y": "1"}, None, "not an ESMTP parameter keyword"),
        ({"-X": "1"}, None, "not an ESMTP parameter keyword"),
        (None, {"b@mx.test": {"NOTIFY": "NEVER\r\nQUIT"}}, "not an ESMTP parameter value"),
        (None, {"other@mx.test": {"NOTIFY": "NEVER"}}, "rcpt_params for"),
    ],
)
def test_parameters_that_cannot_be_sent(
    mail_params: dict[str, str | None] | None,
    rcpt_params: dict[str, dict[str, str | None]] | None,
    why: str,
) -> None:
    conn = ready()
    with pytest.raises(LocalProtocolError, match=why):
        conn.send_envelope(
            "a@client.test", ["b@mx.test"], mail_params=mail_params, rcpt_params=rcpt_params
        )
    assert conn.data_to_send() == b""


def test_dsn_parameters_need_dsn() -> None:
    # Sent anyway, they would get the whole MAIL refused (555): every recipient bounced.
    conn = ready(EHLO_PLAIN)
    with pytest.raises(LocalProtocolError, match="RET needs DSN"):
        conn.send_envelope("a@client.test", ["b@mx.test"], mail_params={"RET": "FULL"})
    with pytest.raises(LocalProtocolError, match="NOTIFY needs DSN"):
        conn.send_envelope(
            "a@client.test", ["b@mx.test"], rcpt_params={"b@mx.test": {"NOTIFY": "NEVER"}}
        )
    # Parameters of extensions the engine does not know pass as given.
    conn.send_envelope("a@client.test", ["b@mx.test"], mail_params={"MT-PRIORITY": "3"})
    assert conn.data_to_send() == b"MAIL FROM:<a@client.test> MT-PRIORITY=3\r\n"


def test_no_parameters_after_helo() -> None:
    conn = ClientConnection("client.test")
    feed(conn, b"220 hi\r\n500 what\r\n250 hello\r\n")
    assert not conn.extended and conn.state is ClientState.READY
    conn.data_to_send()
    with pytest.raises(LocalProtocolError, match="after HELO"):
        conn.send_envelope("a@client.test", ["b@mx.test"], mail_params={"X-FOO": None})
    conn.send_envelope("a@client.test", ["b@mx.test"], size=10, eight_bit=True)
    assert conn.data_to_send() == b"MAIL FROM:<a@client.test>\r\n"


def test_negative_size() -> None:
    with pytest.raises(LocalProtocolError, match="negative size"):
        ready().send_envelope("a@client.test", ["b@mx.test"], size=-1)


# --- STARTTLS (RFC 3207) -------------------------------------------------------------------------


def test_start_tls_only_when_offered() -> None:
    conn = ready(EHLO_PLAIN)
    with pytest.raises(LocalProtocolError, match="does not offer STARTTLS"):
        conn.start_tls()


def test_start_tls_only_once() -> None:
    conn = ClientConnection("client.test", tls=True)
    feed(conn, b"220 hi\r\n" + EHLO_TLS)
    with pytest.raises(LocalProtocolError, match="already active"):
        conn.start_tls()


def test_tls_forgets_what_was_offered_in_the_clear() -> None:
    # RFC 3207 4.2: the EHLO reply over TLS is all that counts: here it drops PIPELINING.
    server = FakeServer(rules(EHLO=[EHLO_TLS, b"250-mx.test\r\n250 SIZE 100\r\n"]))
    out = play(server, Plan([envelope("a@mx.test")], starttls=True))
    assert out.writes[2:5] == [
        b"EHLO client.test\r\n",
        b"MAIL FROM:<sender@client.test>\r\n",
        b"RCPT TO:<a@mx.test>\r\n",
    ]


def test_plaintext_after_the_220_is_never_read() -> None:
    # A man in the middle appending a reply to the 220, hoping it is read as if it came over
    # TLS (the client side of CVE-2011-0411).
    conn = ClientConnection("client.test")
    feed(conn, b"220 hi\r\n" + EHLO_TLS)
    conn.start_tls()
    events = feed(conn, b"220 2.0.0 go ahead\r\n250-evil\r\n250 AUTH PLAIN\r\n")
    assert [summarize(e) for e in events] == [
        "ProtocolError bytes after the 220 to STARTTLS, before TLS",
        "Closed None",
    ]


def test_nothing_is_fed_during_the_handshake() -> None:
    conn = ClientConnection("client.test")
    feed(conn, b"220 hi\r\n" + EHLO_TLS)
    conn.start_tls()
    events = feed(conn, b"220 2.0.0 go ahead\r\n")
    assert events == [StartTlsNow(Reply(220, "2.0.0", ("go ahead",)))]
    assert conn.state is ClientState.TLS_HANDSHAKE and conn.waiting_for is None
    with pytest.raises(LocalProtocolError, match="TLS handshake"):
        conn.receive_data(b"\x16\x03\x03")
    conn.tls_started()
    assert conn.tls
    assert conn.data_to_send() == b"EHLO client.test\r\nSTARTTLS\r\nEHLO client.test\r\n"


def test_eof_during_the_handshake() -> None:
    conn = ClientConnection("client.test")
    feed(conn, b"220 hi\r\n" + EHLO_TLS)
    conn.start_tls()
    feed(conn, b"220 go ahead\r\n")
    assert [summarize(e) for e in feed(conn, b"")] == ["Closed None"]


# --- AUTH (RFC 4954): never in the clear ---------------------------------------------------------


def test_no_auth_before_tls() -> None:
    conn = ready(EHLO_AUTH)
    with pytest.raises(LocalProtocolError, match="before TLS"):
        conn.authenticate("PLAIN", "user", "secret")
    assert conn.data_to_send() == b""
    assert conn.state is ClientState.READY


def tls_ready(ehlo: bytes = EHLO_AUTH) -> ClientConnection:
    conn = ClientConnection("client.test", tls=True)
    feed(conn, b"220 hi\r\n" + ehlo)
    conn.data_to_send()
    return conn


@pytest.mark.parametrize(
    ("mechanism", "why"),
    [("CRAM-MD5", "not supported"), ("XOAUTH2", "not supported"), ("", "not supported")],
)
def test_unsupported_mechanisms(mechanism: str, why: str) -> None:
    with pytest.raises(LocalProtocolError, match=why):
        tls_ready().authenticate(mechanism, "u", "p")


def test_mechanism_not_offered() -> None:
    conn = tls_ready(b"250-mx\r\n250 AUTH LOGIN\r\n")
    with pytest.raises(LocalProtocolError, match="does not offer PLAIN"):
        conn.authenticate("PLAIN", "u", "p")
    conn = tls_ready(b"250 mx\r\n")
    with pytest.raises(LocalProtocolError, match="does not offer LOGIN"):
        conn.authenticate("LOGIN", "u", "p")


def test_nul_in_credentials() -> None:
    with pytest.raises(LocalProtocolError, match="NUL"):
        tls_ready().authenticate("PLAIN", "u\0admin", "p")


def test_credentials_too_long_for_an_auth_line() -> None:
    with pytest.raises(LocalProtocolError, match="too long"):
        tls_ready().authenticate("PLAIN", "u", "p" * 9300)


def test_only_one_successful_auth() -> None:
    conn = tls_ready()
    conn.authenticate("PLAIN", "u", "p")
    assert [summarize(e) for e in feed(conn, b"235 2.7.0 ok\r\n")] == ["AuthResult 235"]
    assert conn.authenticated
    with pytest.raises(LocalProtocolError, match="already authenticated"):
        conn.authenticate("PLAIN", "u", "p")


def test_a_failed_auth_may_be_tried_again() -> None:
    conn = tls_ready()
    conn.authenticate("plain", "u", "wrong")
    events = feed(conn, b"535 5.7.8 Authentication credentials invalid\r\n")
    assert [summarize(e) for e in events] == ["AuthResult 535"]
    assert not events[0].ok  # type: ignore[union-attr]
    assert not conn.authenticated
    conn.authenticate("LOGIN", "u", "right")
    assert conn.data_to_send() == b"AUTH PLAIN AHUAd3Jvbmc=\r\nAUTH LOGIN\r\n"


def test_an_unexpected_challenge_is_cancelled() -> None:
    # RFC 4954 4: "*" cancels; PLAIN had nothing more to say after its initial response.
    conn = tls_ready()
    conn.authenticate("PLAIN", "u", "p")
    conn.data_to_send()
    assert feed(conn, b"334 \r\n") == []
    assert conn.waiting_for is Waiting.AUTH
    assert conn.data_to_send() == b"*\r\n"
    events = feed(conn, b"501 5.7.0 Authentication cancelled\r\n")
    assert [summarize(e) for e in events] == ["AuthResult 501"]
    assert conn.state is ClientState.READY


# --- LMTP (RFC 2033) -----------------------------------------------------------------------------


def test_lmtp_has_no_helo_fallback() -> None:
    server = FakeServer(rules(LHLO=b"500 5.5.1 what\r\n"), lmtp=True)
    out = play(server, Plan([envelope("a@mx.test")], lmtp=True))
    assert out.summary == ["Greeting 220", "HelloRefused 500", "Closed 221"]
    assert out.writes == [b"LHLO client.test\r\n", b"QUIT\r\n"]


def test_lmtp_354_without_recipients_is_a_protocol_error() -> None:
    # RFC 2033 4.2: DATA must then fail with 503; after a 354 nobody knows how many
    # replies the dot would get.
    server = FakeServer(rules(RCPT=b"550 5.1.1 no\r\n"), lmtp=True)
    out = play(server, Plan([envelope("a@mx.test")], lmtp=True))
    assert out.summary[-3:] == [
        "ProtocolError 354 to DATA with no recipient accepted",
        "Done a@mx.test=550",
        "Closed None",
    ]


def test_lmtp_without_pipelining_one_command_at_a_time() -> None:
    server = FakeServer(rules(LHLO=EHLO_PLAIN), lmtp=True, final={"b@mx.test": b"452 full\r\n"})
    out = play(server, Plan([envelope("a@mx.test", "b@mx.test")], lmtp=True))
    assert out.summary[-5:] == [
        "SendData",
        "Message 250 a@mx.test",
        "Message 452 b@mx.test",
        "Done a@mx.test=250 b@mx.test=452",
        "Closed 221",
    ]
    assert out.writes[1:5] == [
        b"MAIL FROM:<sender@client.test>\r\n",
        b"RCPT TO:<a@mx.test>\r\n",
        b"RCPT TO:<b@mx.test>\r\n",
        b"DATA\r\n",
    ]
