"""Command syntax and sequence: one byte transcript in, exact reply codes out."""

from __future__ import annotations

import pytest

from smtpkit.limits import Limits
from smtpkit.protocol import BadCommand, Expn, Hello, Help, MailFrom, RcptTo, Reply, Vrfy
from smtpkit.protocol import replies as r
from smtpkit.protocol.dsn import MailDsn, RcptDsn
from tests.protocol.protocol_harness import codes, run

EHLO = b"EHLO client.example\r\n"
MAIL = b"MAIL FROM:<a@example.org>\r\n"
RCPT = b"RCPT TO:<b@example.net>\r\n"


def first_bad(transcript: bytes) -> Reply:
    """The reply of the first BadCommand the transcript produced."""
    for event in run([transcript]).events:
        if isinstance(event, BadCommand):
            return event.reply
    raise AssertionError("no BadCommand")


# --- verbs and lines ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (b"NOOP\r\n", 250),
        (b"noop\r\n", 250),
        (b"NoOp\r\n", 250),
        (b"NOOP anything at all\r\n", 250),
        (b"NOOP \xff\xfe\r\n", 250),
        (b"RSET\r\n", 250),
        (b"rset \r\n", 250),
        (b"VRFY someone\r\n", 252),
        (b"EXPN list\r\n", 502),
        (b"HELP\r\n", 214),
        (b"help mail\r\n", 214),
        (b"STARTTLS\r\n", 454),
        (b"QUIT\r\n", 221),
        (b"quit\r\n", 221),
        (b"FOO\r\n", 500),
        (b"\r\n", 500),
        (b" NOOP\r\n", 500),
        (b"NOOPX\r\n", 500),
        (b"NOOP\tx\r\n", 500),
        (b"\x00\x01\x02\r\n", 500),
        (b"\xff\xfe\r\n", 500),
        (b"MAILFROM:<a@b.c>\r\n", 500),
        (b"AUTH PLAIN AGFhAGI=\r\n", 503),  # a command now (RFC 4954): after EHLO only
        # A command now (RFC 3030): before HELO it is refused once its chunk was read.
        (b"BDAT 10 LAST\r\n0123456789", 503),
        (b"BDAT ten\r\n", 421),  # where its chunk ends is unknown: the session ends
    ],
)
def test_verbs(line: bytes, code: int) -> None:
    assert codes(line) == [code]


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        (b"FOO\r\n", r.UNKNOWN_COMMAND),
        (b"NOOP\n", r.BARE_NEWLINE_IN_COMMAND),
        (b"\n", r.BARE_NEWLINE_IN_COMMAND),
        (b"EHLO x\n", r.BARE_NEWLINE_IN_COMMAND),
        (b"NOOP\r\r\n", r.SYNTAX_ERROR_ARGS),
        (b"NO\rOP\r\n", r.SYNTAX_ERROR_ARGS),
        (b"HELO a\rb\r\n", r.SYNTAX_ERROR_ARGS),
        (b"VRFY a\x00b\r\n", r.SYNTAX_ERROR_ARGS),
        (b"VRFY \xff\r\n", r.SYNTAX_ERROR_ARGS),
        (b"QUIT now\r\n", r.SYNTAX_ERROR_ARGS),
        (b"RSET x\r\n", r.SYNTAX_ERROR_ARGS),
        (b"STARTTLS x\r\n", r.SYNTAX_ERROR_ARGS),
        (b"HELO\r\n", r.SYNTAX_ERROR_ARGS),
        (b"HELO \r\n", r.SYNTAX_ERROR_ARGS),
        (b"EHLO\r\n", r.SYNTAX_ERROR_ARGS),
        (b"EHLO a b\r\n", r.SYNTAX_ERROR_ARGS),
        (b"EHLO a\tb\r\n", r.SYNTAX_ERROR_ARGS),
    ],
)
def test_line_errors_exact(line: bytes, reply: Reply) -> None:
    assert first_bad(line) == reply


def test_bare_lf_does_not_hang_and_next_line_works() -> None:
    assert codes(b"NOOP\nNOOP\r\n") == [500, 250]
    assert first_bad(b"NOOP\n") == r.BARE_NEWLINE_IN_COMMAND


def test_bare_lf_then_eof() -> None:
    out = run([b"EHLO x\n"])
    assert out.codes == [500]


@pytest.mark.parametrize(
    ("length", "code"),
    [(510, 250), (511, 250), (512, 250), (513, 500), (600, 500), (5000, 500)],
)
def test_command_line_cap_counts_the_crlf(length: int, code: int) -> None:
    line = b"NOOP " + b"x" * (length - 7) + b"\r\n"
    assert len(line) == length
    assert codes(line + b"NOOP\r\n") == [code, 250]


def test_too_long_reply_is_5_5_6() -> None:
    assert first_bad(b"NOOP " + b"x" * 600 + b"\r\n") == r.COMMAND_TOO_LONG


def test_cap_comes_from_limits() -> None:
    limits = Limits(max_command_line=20)
    assert codes(b"NOOP " + b"x" * 13 + b"\r\n", limits) == [250]
    assert codes(b"NOOP " + b"x" * 14 + b"\r\n", limits) == [500]


def test_one_megabyte_line_keeps_memory_bounded() -> None:
    chunk = 64 * 1024
    line = b"MAIL FROM:<" + b"a" * (1024 * 1024) + b"@b.c>"
    data = EHLO + line + b"\r\nNOOP\r\n"
    out = run([data[i : i + chunk] for i in range(0, len(data), chunk)])
    assert out.codes == [250, 500, 250]
    assert out.replies[2] == r.COMMAND_TOO_LONG
    # Never more than one read plus the cap, and never more than the cap between reads.
    assert out.peak_drained <= 512
    assert out.peak_fed <= 512 + chunk


def test_one_megabyte_line_byte_pieces() -> None:
    data = b"NOOP " + b"y" * 20000 + b"\r\nNOOP\r\n"
    out = run([data[i : i + 7] for i in range(0, len(data), 7)])
    assert out.codes == [500, 250]
    assert out.peak_drained <= 512


def test_too_long_line_logged_with_prefix() -> None:
    out = run([b"NOOP " + b"z" * 1000 + b"\r\n"])
    event = out.events[0]
    assert isinstance(event, BadCommand)
    assert event.line.startswith("NOOP zzz")
    assert len(event.line) <= 100


def test_bad_command_line_is_text() -> None:
    event = run([b"FOO \xff\r\n"]).events[0]
    assert isinstance(event, BadCommand)
    assert event.line == "FOO \\xff"


# --- HELO / EHLO -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "event"),
    [
        (b"EHLO client.example\r\n", Hello("client.example", True)),
        (b"ehlo client.example\r\n", Hello("client.example", True)),
        (b"HELO client.example\r\n", Hello("client.example", False)),
        (b"EHLO [192.0.2.1]\r\n", Hello("[192.0.2.1]", True)),
        (b"EHLO [IPv6:2001:db8::1]\r\n", Hello("[IPv6:2001:db8::1]", True)),
        (b"EHLO  spaced.example  \r\n", Hello("spaced.example", True)),
        (b"EHLO localhost\r\n", Hello("localhost", True)),
    ],
)
def test_hello_events(line: bytes, event: Hello) -> None:
    out = run([line])
    assert out.events[0] == event
    assert out.codes == [250]


def test_ehlo_reply_is_multiline_and_echoes_name() -> None:
    out = run([EHLO])
    assert out.wire[1].startswith(b"250-mx.test Hello client.example\r\n250-PIPELINING\r\n")


@pytest.mark.parametrize(
    "name",
    ["m\u00fcller.example", "a\u0085b", "x\u2028y", "c\u0080", "en\u2002space", "\u212aelvin"],
)
def test_non_ascii_hello_names_are_refused(name: str) -> None:
    """Without SMTPUTF8 a HELO/EHLO name is ASCII (RFC 5321 4.1.2): C1 controls, line and
    Unicode spaces never reach a Received: header or the journal."""
    for verb in (b"EHLO ", b"HELO "):
        out = run([verb + name.encode() + b"\r\n"])
        assert out.replies[1:] == [r.NON_ASCII_HELO]
        assert out.wire[1] == b"501 5.5.2 HELO/EHLO name must be ASCII\r\n"


def test_a_long_hello_name_is_cut_in_the_reply_line() -> None:
    """RFC 5321 4.5.3.1.5: a reply line is at most 512 octets, whatever the name echoed:
    the longest name a command line can carry (505 octets) behind a 60-octet host name."""
    hostname = "mx." + "h" * 49 + ".example"
    name = "a" * 497 + ".example"
    assert len(b"EHLO " + name.encode() + b"\r\n") == 512  # fits a command line
    ehlo_first = r.ehlo(hostname, name, ("PIPELINING",)).to_bytes().split(b"\r\n")[0]
    helo_line = r.helo(hostname, name).to_bytes()
    assert len(ehlo_first + b"\r\n") == 512 and len(helo_line) == 512
    assert ehlo_first.startswith(f"250-{hostname} Hello aaaa".encode())
    assert r.helo(hostname, "client.example").to_bytes() == (
        f"250 {hostname} Hello client.example\r\n".encode()
    )


def test_hello_allowed_in_every_state_and_resets_transaction() -> None:
    assert codes(EHLO + MAIL + EHLO + RCPT) == [250, 250, 250, 503]
    assert codes(EHLO + MAIL + RCPT + b"HELO x\r\nDATA\r\n") == [250, 250, 250, 250, 503]
    assert codes(EHLO + MAIL + RCPT + EHLO + MAIL + RCPT) == [250] * 6


# --- sequence (RFC 5321 4.1.4) -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("transcript", "expected"),
    [
        (MAIL, [r.NEED_HELO]),
        (RCPT, [r.NEED_HELO]),
        (b"DATA\r\n", [r.NEED_HELO]),
        (EHLO + RCPT, [r.BAD_SEQUENCE]),
        (EHLO + b"DATA\r\n", [r.BAD_SEQUENCE]),
        (EHLO + MAIL + MAIL, [r.SENDER_ALREADY]),
        (EHLO + MAIL + RCPT + MAIL, [r.SENDER_ALREADY]),
        (EHLO + MAIL + b"DATA\r\n", [r.NO_VALID_RECIPIENTS]),
        (EHLO + MAIL + b"RCPT TO:<unknown@example.net>\r\nDATA\r\n", [r.NO_VALID_RECIPIENTS]),
        (EHLO + MAIL + b"RSET\r\n" + RCPT, [r.BAD_SEQUENCE]),
        (EHLO + MAIL + RCPT + b"RSET\r\nDATA\r\n", [r.BAD_SEQUENCE]),
        # RSET before HELO keeps the need for HELO.
        (b"RSET\r\n" + MAIL, [r.NEED_HELO]),
        # Syntax is checked only for commands allowed in the state.
        (b"MAIL FROM:<broken\r\n", [r.NEED_HELO]),
        (EHLO + b"DATA now\r\n", [r.BAD_SEQUENCE]),
    ],
)
def test_sequence_refusals(transcript: bytes, expected: list[Reply]) -> None:
    out = run([transcript])
    refused = [e.reply for e in out.events if isinstance(e, BadCommand)]
    assert refused == expected
    assert all(reply.code == 503 and reply.enhanced == "5.5.1" for reply in refused)


@pytest.mark.parametrize(
    ("transcript", "expected"),
    [
        (b"NOOP\r\nVRFY x\r\nEXPN y\r\nHELP\r\nRSET\r\nQUIT\r\n", [250, 252, 502, 214, 250, 221]),
        (EHLO + MAIL + b"NOOP\r\nVRFY x\r\nHELP\r\n" + RCPT, [250, 250, 250, 252, 214, 250]),
        (EHLO + MAIL + b"RCPT TO:<unknown@x.example>\r\n" + RCPT, [250, 250, 550, 250]),
        (EHLO + MAIL + RCPT + RCPT + RCPT, [250, 250, 250, 250, 250]),
        (EHLO + MAIL + RCPT + b"DATA x\r\n", [250, 250, 250, 501]),
        (EHLO + MAIL + b"RSET\r\n" + MAIL, [250, 250, 250, 250]),
        (b"HELO x\r\n" + MAIL + RCPT + b"DATA\r\n.\r\n", [250, 250, 250, 354, 250]),
    ],
)
def test_sequences_accepted(transcript: bytes, expected: list[int]) -> None:
    assert codes(transcript) == expected


def test_commands_after_quit_are_not_read() -> None:
    out = run([EHLO + b"QUIT\r\n" + MAIL + b"NOOP\r\n"])
    assert out.codes == [250, 221]


# --- MAIL FROM ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argument", "address"),
    [
        (b"FROM:<a@example.org>", "a@example.org"),
        (b"from:<a@example.org>", "a@example.org"),
        (b"From:<A.B-c+d@Example.ORG>", "A.B-c+d@Example.ORG"),
        (b"FROM: <a@example.org>", "a@example.org"),
        (b"FROM:<a@example.org>   ", "a@example.org"),
        (b"FROM:<>", ""),
        (b"FROM: <>", ""),
        (b'FROM:<"john doe"@example.org>', '"john doe"@example.org'),
        (b'FROM:<"a>b"@example.org>', '"a>b"@example.org'),
        (b'FROM:<"a\\"b"@example.org>', '"a\\"b"@example.org'),
        (b'FROM:<""@example.org>', '""@example.org'),
        # RFC 5321 4.1.2: quoting that changes nothing is dropped, so one mailbox has one form.
        (b'FROM:<"alice"@example.org>', "alice@example.org"),
        (b'FROM:<"al\\ice"@example.org>', "alice@example.org"),
        (b'FROM:<"a.b"@example.org>', "a.b@example.org"),
        (b'FROM:<"a..b"@example.org>', '"a..b"@example.org'),
        (b'FROM:<"alice@example.org"@example.org>', '"alice@example.org"@example.org'),
        (b"FROM:<a@[192.0.2.1]>", "a@[192.0.2.1]"),
        (b"FROM:<a@[IPv6:2001:db8::1]>", "a@[IPv6:2001:db8::1]"),
        (b"FROM:<a@[ipv6:::1]>", "a@[ipv6:::1]"),
        (b"FROM:<a@[IPv6:::ffff:192.0.2.1]>", "a@[IPv6:::ffff:192.0.2.1]"),
        (b"FROM:<a@[x-tag:any.thing]>", "a@[x-tag:any.thing]"),
        (b"FROM:<a@example.org.>", "a@example.org."),
        (b"FROM:<a@localhost>", "a@localhost"),
        (b"FROM:<a@123.example>", "a@123.example"),
        (b"FROM:<a@xn--bcher-kva.example>", "a@xn--bcher-kva.example"),
        (b"FROM:<!#$%&'*+-/=?^_`{|}~@example.org>", "!#$%&'*+-/=?^_`{|}~@example.org"),
        (b"FROM:<@a.example,@b.example:user@d.example>", "user@d.example"),
        (b"FROM:<@a.example:user@d.example>", "user@d.example"),
        ("FROM:<jörg@exämple.de>".encode(), "jörg@exämple.de"),
        ("FROM:<用户@例子.广告>".encode(), "用户@例子.广告"),
    ],
)
def test_mail_paths_accepted(argument: bytes, address: str) -> None:
    out = run([EHLO + b"MAIL " + argument + b"\r\n"])
    assert out.codes == [250, 250]
    assert out.events[1] == MailFrom(address)


@pytest.mark.parametrize(
    "argument",
    [
        b"",
        b"FROM:",
        b"FROM",
        b"FROM <a@example.org>",
        b"FROM :<a@example.org>",
        b"TO:<a@example.org>",
        b"FROM:a@example.org",
        b"FROM:<a@example.org",
        b"FROM:a@example.org>",
        b"FROM:<<a@example.org>>",
        b"FROM:<a>",
        b"FROM:<postmaster>",
        b"FROM:<@example.org>",
        b"FROM:<a@>",
        b"FROM:<a@@example.org>",
        b"FROM:<a@b@example.org>",
        b"FROM:<.a@example.org>",
        b"FROM:<a.@example.org>",
        b"FROM:<a..b@example.org>",
        b"FROM:<a b@example.org>",
        b"FROM:<a@exa mple.org>",
        b"FROM:<a@-example.org>",
        b"FROM:<a@example-.org>",
        b"FROM:<a@example..org>",
        b"FROM:<a@.example.org>",
        b"FROM:<a@example.org..>",
        b"FROM:<a@exa_mple.org>",
        b"FROM:<a@[300.1.1.1]>",
        b"FROM:<a@[1.2.3]>",
        b"FROM:<a@[1.2.3.4.5]>",
        b"FROM:<a@[IPv6:zz::1]>",
        b"FROM:<a@[IPv6:fe80::1%eth0]>",
        b"FROM:<a@[]>",
        b"FROM:<a@[notag]>",
        b"FROM:<a@[-bad:x]>",
        b"FROM:<a@[1.2.3.4>",
        b'FROM:<"unterminated@example.org>',
        b'FROM:<"a"b@example.org>',
        b"FROM:<a(comment)@example.org>",
        b"FROM:<a@example.org>SIZE=10",
        b"FROM:<>SIZE=10",
        b"FROM:<a,b@example.org>",
        b"FROM:<@a.example,user@d.example>",
        b"FROM:<@a.example:@b.example:user@d.example>",
        b"FROM:<a@\xff.example>",
        b"FROM:<\xc3@example.org>",
        b"FROM:<a\x00@example.org>",
        b"FROM:<a\x7f@example.org>",
    ],
)
def test_mail_paths_refused_501(argument: bytes) -> None:
    out = run([EHLO + b"MAIL " + argument + b"\r\n"])
    assert out.codes == [250, 501]
    assert out.replies[2].enhanced == "5.5.4"


@pytest.mark.parametrize(
    ("local", "domain", "code"),
    [
        (64, 10, 250),
        (65, 10, 501),
        (1, 252, 250),  # <1@252> is exactly 256 octets with the brackets
        (1, 253, 501),
        (60, 193, 250),
        (60, 194, 501),
    ],
)
def test_path_length_limits(local: int, domain: int, code: int) -> None:
    # Labels of 9 octets; a cut that ends on a dot gets a letter instead.
    name = ("d" * 9 + ".") * 30
    name = name[: domain - 1] + "e"
    path = f"<{'l' * local}@{name}>".encode()
    assert codes(EHLO + b"MAIL FROM:" + path + b"\r\n", Limits(max_command_line=1000)) == [
        250,
        code,
    ]


def test_utf8_lengths_are_octets() -> None:
    local = "é" * 32  # 64 octets
    assert codes(EHLO + f"MAIL FROM:<{local}@example.org>\r\n".encode()) == [250, 250]
    local = "é" * 32 + "x"  # 65 octets, 33 characters
    assert codes(EHLO + f"MAIL FROM:<{local}@example.org>\r\n".encode()) == [250, 501]


@pytest.mark.parametrize(
    ("params", "code", "event"),
    [
        (b" SIZE=1000", 250, MailFrom("a@example.org", size=1000)),
        (b" size=0", 250, MailFrom("a@example.org", size=0)),
        (b" SIZE=00012", 250, MailFrom("a@example.org", size=12)),
        (b" SIZE=" + b"9" * 20, 250, MailFrom("a@example.org", size=int("9" * 20))),
        (b" BODY=8BITMIME", 250, MailFrom("a@example.org", body="8BITMIME")),
        (b" body=8bitmime", 250, MailFrom("a@example.org", body="8BITMIME")),
        (b" BODY=7bit", 250, MailFrom("a@example.org", body="7BIT")),
        (b" SIZE=5 BODY=7BIT", 250, MailFrom("a@example.org", size=5, body="7BIT")),
        (b"  BODY=7BIT   SIZE=5  ", 250, MailFrom("a@example.org", size=5, body="7BIT")),
        (b" SIZE=abc", 501, None),
        (b" SIZE=-1", 501, None),
        (b" SIZE=1.5", 501, None),
        (b" SIZE=" + b"9" * 21, 501, None),
        (b" SIZE=", 501, None),
        (b" SIZE", 501, None),
        (b" SIZE=\xd9\xa3", 501, None),
        (b" BODY=binarymime", 250, MailFrom("a@example.org", body="BINARYMIME")),
        (b" BODY=BINARY", 501, None),
        (b" BODY=", 501, None),
        (b" BODY", 501, None),
        (b" SIZE=1 SIZE=2", 501, None),
        (b" BODY=7BIT body=8BITMIME", 501, None),
        (b" =x", 501, None),
        (b" -X=1", 501, None),
        (b" FOO=a=b", 501, None),
        (b" FOO=1", 555, None),
        (b" FOO", 555, None),
        (b" SMTPUTF8", 250, MailFrom("a@example.org", smtputf8=True)),
        (b" smtputf8", 250, MailFrom("a@example.org", smtputf8=True)),
        (b" SMTPUTF8=YES", 501, None),
        (b" SMTPUTF8 SMTPUTF8", 501, None),
        (b" AUTH=<>", 555, None),
        (b" SIZE=1 FOO=1", 555, None),
        # RFC 3461 DSN: the engine checks the syntax; whether DSN is offered is the session's.
        (b" RET=HDRS", 250, MailFrom("a@example.org", dsn=MailDsn(ret="HDRS"))),
        (b" ret=full ENVID=QQ+2B1", 250, MailFrom("a@example.org", dsn=MailDsn("FULL", "QQ+1"))),
        (b" RET=NONE", 501, None),
        (b" RET", 501, None),
        (b" ENVID=a+zz", 501, None),
        (b" ENVID=" + b"x" * 101, 501, None),
        (b" RET=FULL RET=HDRS", 501, None),
    ],
)
def test_mail_parameters_after_ehlo(params: bytes, code: int, event: MailFrom | None) -> None:
    out = run([EHLO + b"MAIL FROM:<a@example.org>" + params + b"\r\n"])
    assert out.codes == [250, code]
    if event is not None:
        assert out.events[1] == event
    elif code == 501:
        assert out.replies[2] == r.SYNTAX_ERROR_PARAMS
    else:
        assert out.replies[2] == r.UNKNOWN_PARAMETER


@pytest.mark.parametrize(
    ("params", "code"),
    [(b" SIZE=100", 555), (b" BODY=8BITMIME", 555), (b" FOO", 555), (b"", 250)],
)
def test_mail_parameters_need_ehlo(params: bytes, code: int) -> None:
    assert codes(b"HELO client\r\nMAIL FROM:<a@example.org>" + params + b"\r\n") == [250, code]


def test_helo_after_ehlo_turns_parameters_off() -> None:
    transcript = EHLO + b"HELO x\r\nMAIL FROM:<a@example.org> SIZE=1\r\n"
    assert codes(transcript) == [250, 250, 555]


def test_null_sender_with_parameters() -> None:
    out = run([EHLO + b"MAIL FROM:<> SIZE=10 BODY=8BITMIME\r\n"])
    assert out.events[1] == MailFrom("", size=10, body="8BITMIME")


# --- RCPT TO -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argument", "address"),
    [
        (b"TO:<b@example.net>", "b@example.net"),
        (b"to:<b@example.net>", "b@example.net"),
        (b"TO: <b@example.net>", "b@example.net"),
        (b"TO:<postmaster>", "postmaster"),
        (b"TO:<Postmaster>", "Postmaster"),
        (b"TO:<POSTMASTER>", "POSTMASTER"),
        (b"TO:<postmaster@example.net>", "postmaster@example.net"),
        (b"TO:<@relay.example:b@example.net>", "b@example.net"),
        (b"TO:<@r1.example,@r2.example:b@example.net>", "b@example.net"),
        (b'TO:<"b c"@example.net>', '"b c"@example.net'),
        (b"TO:<b@example.net.>", "b@example.net."),
        (b"TO:<b@[192.0.2.7]>", "b@[192.0.2.7]"),
        ("TO:<ü@example.net>".encode(), "ü@example.net"),
    ],
)
def test_rcpt_paths_accepted(argument: bytes, address: str) -> None:
    out = run([EHLO + MAIL + b"RCPT " + argument + b"\r\n"])
    assert out.codes == [250, 250, 250]
    assert out.events[2] == RcptTo(address)


@pytest.mark.parametrize(
    ("params", "dsn"),
    [
        (b" NOTIFY=NEVER", RcptDsn(notify=frozenset({"NEVER"}))),
        (b" notify=success,Delay", RcptDsn(notify=frozenset({"SUCCESS", "DELAY"}))),
        (b" ORCPT=rfc822;b+2Bx@example.net", RcptDsn(orcpt=("rfc822", "b+x@example.net"))),
        (
            b" NOTIFY=FAILURE ORCPT=RFC822;b@example.net",
            RcptDsn(notify=frozenset({"FAILURE"}), orcpt=("rfc822", "b@example.net")),
        ),
    ],
)
def test_rcpt_dsn_parameters(params: bytes, dsn: RcptDsn) -> None:
    out = run([EHLO + MAIL + b"RCPT TO:<b@example.net>" + params + b"\r\n"])
    assert out.codes == [250, 250, 250]
    assert out.events[2] == RcptTo("b@example.net", dsn=dsn)


def test_rcpt_parameters_need_ehlo() -> None:
    transcript = b"HELO client\r\n" + MAIL + b"RCPT TO:<b@example.net> NOTIFY=NEVER\r\n"
    assert codes(transcript) == [250, 250, 555]


@pytest.mark.parametrize(
    ("argument", "reply"),
    [
        (b"TO:<>", r.SYNTAX_ERROR_ARGS),
        (b"TO:b@example.net", r.SYNTAX_ERROR_ARGS),
        (b"TO:<b>", r.SYNTAX_ERROR_ARGS),
        (b"TO:<postmaster", r.SYNTAX_ERROR_ARGS),
        (b"TO:<post master>", r.SYNTAX_ERROR_ARGS),
        (b"FROM:<b@example.net>", r.SYNTAX_ERROR_ARGS),
        (b"TO <b@example.net>", r.SYNTAX_ERROR_ARGS),
        (b"", r.SYNTAX_ERROR_ARGS),
        (b"TO:<b@example.net>x", r.SYNTAX_ERROR_ARGS),
        (b"TO:<postmaster>x", r.SYNTAX_ERROR_ARGS),
        (b"TO:<b@example.net> SIZE=1", r.UNKNOWN_PARAMETER),
        (b"TO:<b@example.net> NOTIFY=NEVER,SUCCESS", r.SYNTAX_ERROR_PARAMS),
        (b"TO:<b@example.net> NOTIFY=SOMETIMES", r.SYNTAX_ERROR_PARAMS),
        (b"TO:<b@example.net> NOTIFY", r.SYNTAX_ERROR_PARAMS),
        (b"TO:<b@example.net> NOTIFY=NEVER NOTIFY=NEVER", r.SYNTAX_ERROR_PARAMS),
        (b"TO:<b@example.net> ORCPT=b@example.net", r.SYNTAX_ERROR_PARAMS),
        (b"TO:<b@example.net> ORCPT=x400;b", r.SYNTAX_ERROR_PARAMS),
        (b"TO:<b@example.net> ORCPT=rfc822;a+zz", r.SYNTAX_ERROR_PARAMS),
        (b"TO:<postmaster> X", r.UNKNOWN_PARAMETER),
    ],
)
def test_rcpt_refused(argument: bytes, reply: Reply) -> None:
    assert first_bad(EHLO + MAIL + b"RCPT " + argument + b"\r\n") == reply


def test_rcpt_refusal_keeps_state() -> None:
    # A refused RCPT (syntax or policy) leaves the transaction where it was.
    transcript = EHLO + MAIL + b"RCPT TO:<>\r\nRCPT TO:<unknown@x.example>\r\n" + RCPT
    assert codes(transcript + b"DATA\r\n.\r\n") == [250, 250, 501, 550, 250, 354, 250]


# --- VRFY / EXPN / HELP ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "event"),
    [
        (b"VRFY\r\n", Vrfy("")),
        (b"VRFY  alice \r\n", Vrfy("alice")),
        (b"VRFY Alice Smith <alice@example.org>\r\n", Vrfy("Alice Smith <alice@example.org>")),
        (b"EXPN staff\r\n", Expn("staff")),
        (b"HELP\r\n", Help("")),
        (b"HELP RCPT\r\n", Help("RCPT")),
        ("VRFY jörg\r\n".encode(), Vrfy("jörg")),
    ],
)
def test_argument_events(line: bytes, event: object) -> None:
    assert run([line]).events[0] == event
