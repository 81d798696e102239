"""SMTPUTF8 (RFC 6531) in the engine: the MAIL parameter, and UTF-8 paths in MAIL and RCPT.

The engine only checks syntax: a UTF-8 address parses with or without the parameter, and the
``MailFrom`` event says whether it was given, for the session's policy to decide.
"""

from __future__ import annotations

import pytest

from smtpkit.protocol import MailFrom, RcptTo
from smtpkit.protocol import replies as r
from tests.protocol.protocol_harness import codes, run, split_at

EHLO = b"EHLO client.example\r\n"
# "müller" in NFC and in NFD (u + U+0308 COMBINING DIAERESIS), and a U-label domain.
NFC = "m\u00fcller@example.org"
NFD = "mu\u0308ller@example.org"
ULABEL = "info@b\u00fccher.example"


@pytest.mark.parametrize(
    ("params", "event"),
    [
        (" SMTPUTF8", MailFrom(NFC, smtputf8=True)),
        (" BODY=8BITMIME SMTPUTF8", MailFrom(NFC, body="8BITMIME", smtputf8=True)),
        (" SmtpUtf8 BODY=8BITMIME", MailFrom(NFC, body="8BITMIME", smtputf8=True)),
        (" SMTPUTF8 SIZE=10", MailFrom(NFC, size=10, smtputf8=True)),
        ("", MailFrom(NFC)),
    ],
)
def test_smtputf8_parameter(params: str, event: MailFrom) -> None:
    out = run([EHLO + f"MAIL FROM:<{NFC}>{params}\r\n".encode()])
    assert out.codes == [250, 250]
    assert out.events[1] == event


@pytest.mark.parametrize(
    ("params", "reply"),
    [
        (b" SMTPUTF8=", r.SYNTAX_ERROR_PARAMS),
        (b" SMTPUTF8=1", r.SYNTAX_ERROR_PARAMS),
        (b" SMTPUTF8 smtputf8", r.SYNTAX_ERROR_PARAMS),
        (b" UTF8SMTP", r.UNKNOWN_PARAMETER),
    ],
)
def test_smtputf8_parameter_refused(params: bytes, reply: r.Reply) -> None:
    out = run([EHLO + b"MAIL FROM:<a@example.org>" + params + b"\r\n"])
    assert out.codes == [250, reply.code]
    assert out.replies[2] == reply


def test_smtputf8_needs_ehlo() -> None:
    # RFC 5321 4.1.1.2: no parameters after HELO, so no SMTPUTF8 transaction either.
    assert codes(b"HELO client\r\nMAIL FROM:<a@example.org> SMTPUTF8\r\n") == [250, 555]


def test_null_sender_with_smtputf8() -> None:
    out = run([EHLO + b"MAIL FROM:<> SMTPUTF8\r\n"])
    assert out.events[1] == MailFrom("", smtputf8=True)


@pytest.mark.parametrize("address", [NFC, NFD, ULABEL, "\u7528\u6237@\u4f8b\u5b50.example"])
def test_utf8_paths_are_parsed_as_given(address: str) -> None:
    """No normalization in the engine: NFD stays NFD, U-labels stay U-labels (the policy
    names the mailbox)."""
    transcript = EHLO + f"MAIL FROM:<{address}> SMTPUTF8\r\nRCPT TO:<{address}>\r\n".encode()
    out = run([transcript])
    assert out.codes == [250, 250, 250]
    assert out.events[1:3] == [MailFrom(address, smtputf8=True), RcptTo(address)]


@pytest.mark.parametrize(
    "line",
    [
        b"MAIL FROM:<m\xc3ller@example.org> SMTPUTF8\r\n",  # not UTF-8
        b"MAIL FROM:<m\xc3\xbcller@example.org>SMTPUTF8\r\n",  # no space before it
        b"MAIL FROM:<m\xc3\xbc ller@example.org> SMTPUTF8\r\n",
    ],
)
def test_bad_utf8_paths_are_syntax_errors(line: bytes) -> None:
    out = run([EHLO + line])
    assert out.codes == [250, 501]


TRANSCRIPT = (
    EHLO
    + f"MAIL FROM:<{NFD}> BODY=8BITMIME SMTPUTF8\r\nRCPT TO:<{ULABEL}>\r\nDATA\r\n".encode()
    + "Subject: gr\u00fc\u00dfe\r\n\r\n\u00e4\u00f6\u00fc\r\n.\r\nQUIT\r\n".encode()
)


def test_an_smtputf8_transaction_at_every_split_point() -> None:
    whole = run([TRANSCRIPT])
    assert whole.codes == [250, 250, 250, 354, 250, 221]
    assert whole.messages == ["Subject: gr\u00fc\u00dfe\r\n\r\n\u00e4\u00f6\u00fc\r\n".encode()]
    for cut in range(1, len(TRANSCRIPT)):
        assert run(split_at(TRANSCRIPT, [cut])).comparable() == whole.comparable()
