"""smtpkit.bounce: reports built and parsed back with the email package: their headers, the
three parts, every delivery-status field, the readable text, what of the original comes
back and how much is read, 8-bit originals, the null sender, and lines within 998 octets."""

from __future__ import annotations

import email
import email.policy
import io
import re
from datetime import UTC, datetime, timedelta, timezone
from email.message import EmailMessage, Message
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtpkit.bounce import (
    FULL_RETURN_LIMIT,
    MAX_RETURNED_HEADERS,
    RETURN_LIMIT,
    STATUS_EXPIRED,
    STATUS_NO_SUCH_DOMAIN,
    STATUS_NULL_MX,
    OriginalEnvelope,
    RecipientStatus,
    build_report,
    status_from_reply,
)

HOST = "mail.example.org"
ARRIVED = datetime(2024, 3, 1, 9, 30, tzinfo=UTC)
NOW = ARRIVED + timedelta(hours=5, minutes=12)
UNTIL = ARRIVED + timedelta(days=5)
SENDER = "alice@example.org"
ORIGINAL = (
    b"Return-Path: <alice@example.org>\r\n"
    b"From: Alice <alice@example.org>\r\n"
    b"To: bob@example.com, carol@example.net\r\n"
    b"Subject: Lunch\r\n"
    b"Message-ID: <1@example.org>\r\n"
    b"\r\n"
    b"See you at noon.\r\n"
)
ORIGINAL_HEADERS = ORIGINAL[: ORIGINAL.index(b"\r\n\r\n") + 2]

BOB = RecipientStatus(
    "bob@example.com",
    "failed",
    "5.1.1",
    remote_mta="mx.example.com",
    diagnostic="550 5.1.1 <bob@example.com>: No such user",
    original_recipient=("rfc822", "Bob@Example.com"),
    last_attempt=NOW,
)
CAROL = RecipientStatus(
    "carol@example.net",
    "failed",
    STATUS_NULL_MX,
    diagnostic="example.net accepts no mail (null MX, RFC 7505)",
    last_attempt=NOW,
)
DAVE = RecipientStatus(
    "dave@example.com",
    "delayed",
    "4.3.0",
    remote_mta="mx.example.com",
    diagnostic="451 4.3.0 Try again later",
    last_attempt=NOW,
    will_retry_until=UNTIL,
)
ERIN = RecipientStatus(
    "erin@example.com",
    "delivered",
    "2.0.0",
    remote_mta="mx.example.com",
    diagnostic="250 2.0.0 Ok: queued as 4F2",
    last_attempt=NOW,
)
FRANK = RecipientStatus("frank@example.com", "relayed", "2.0.0", remote_mta="relay.example.com")
GRACE = RecipientStatus("grace@example.org", "expanded", "2.0.0")


def report(
    recipients: list[RecipientStatus],
    original: bytes = ORIGINAL,
    *,
    sender: str = SENDER,
    envid: str | None = None,
    ret: Any = None,
    **kwargs: Any,
) -> bytes:
    envelope = OriginalEnvelope(sender, ARRIVED, envid=envid, ret=ret)
    return build_report(HOST, envelope, recipients, io.BytesIO(original), now=NOW, **kwargs)


def parse(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    # The report and its parts are well-formed; the original inside is whatever it was.
    assert message.defects == []
    for part in message.iter_parts():
        assert part.defects == [], part.get_content_type()
    return message


def parts(raw: bytes) -> list[Message]:
    payload = parse(raw).get_payload()
    assert isinstance(payload, list)
    return [part for part in payload if isinstance(part, Message)]


def status_blocks(raw: bytes) -> list[dict[str, str]]:
    """The delivery-status part as the email package reads it: one header block each."""
    status = parts(raw)[1]
    assert status.get_content_type() == "message/delivery-status"
    blocks = status.get_payload()
    assert isinstance(blocks, list)
    assert all(isinstance(block, Message) for block in blocks)
    return [
        {name: str(value) for name, value in block.items()}
        for block in blocks
        if isinstance(block, Message)
    ]


def text_of(raw: bytes) -> str:
    text = parts(raw)[0]
    assert isinstance(text, EmailMessage)
    content = text.get_content()
    assert isinstance(content, str)
    return content.replace("\r\n", "\n")


def raw_part(raw: bytes, index: int) -> tuple[bytes, bytes]:
    """The header and content octets of a part, cut out of the report as they are."""
    boundary = parse(raw).get_boundary()
    assert boundary is not None
    chunks = raw.split(b"\r\n--" + boundary.encode())
    head, _, body = chunks[index + 1].partition(b"\r\n\r\n")
    return head, body


# The message and its headers


def test_failed_report_headers() -> None:
    message = parse(report([BOB, CAROL]))
    assert message["From"] == "Mail Delivery System <MAILER-DAEMON@mail.example.org>"
    assert message["To"] == "alice@example.org"
    assert message["Subject"] == "Undelivered Mail Returned to Sender"
    assert message["Date"] == "Fri, 01 Mar 2024 14:42:00 +0000"
    assert re.fullmatch(r"<[^<>@]+@mail\.example\.org>", message["Message-ID"])
    assert message["Auto-Submitted"] == "auto-replied"
    assert message["MIME-Version"] == "1.0"
    assert message.get_content_type() == "multipart/report"
    assert message.get_param("report-type") == "delivery-status"
    assert list(message.keys()) == [
        "From",
        "To",
        "Subject",
        "Date",
        "Message-ID",
        "Auto-Submitted",
        "MIME-Version",
        "Content-Type",
    ]


@pytest.mark.parametrize(
    ("recipients", "subject"),
    [
        ([BOB], "Undelivered Mail Returned to Sender"),
        ([DAVE], "Delayed Mail (still being retried)"),
        ([ERIN], "Successful Mail Delivery Report"),
        ([FRANK], "Successful Mail Delivery Report"),
        ([GRACE], "Successful Mail Delivery Report"),
        ([ERIN, DAVE], "Delayed Mail (still being retried)"),
        ([DAVE, ERIN, BOB], "Undelivered Mail Returned to Sender"),
    ],
)
def test_subject_by_gravest_action(recipients: list[RecipientStatus], subject: str) -> None:
    assert parse(report(recipients))["Subject"] == subject


@pytest.mark.parametrize(
    ("recipients", "third"),
    [
        ([BOB], "message/rfc822"),
        ([DAVE], "text/rfc822-headers"),
        ([ERIN], "text/rfc822-headers"),
        ([FRANK], "text/rfc822-headers"),
        ([GRACE], "text/rfc822-headers"),
    ],
)
def test_three_parts(recipients: list[RecipientStatus], third: str) -> None:
    assert [p.get_content_type() for p in parts(report(recipients))] == [
        "text/plain",
        "message/delivery-status",
        third,
    ]


def test_every_line_ends_in_crlf() -> None:
    raw = report([BOB, CAROL, DAVE], ORIGINAL.replace(b"\r\n", b"\n"))
    assert raw.endswith(b"\r\n")
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert b"\r" not in raw.replace(b"\r\n", b"")


# The delivery-status part (RFC 3464 2.2, 2.3)


def test_failed_fields() -> None:
    assert status_blocks(report([BOB, CAROL], envid="QQ314159")) == [
        {
            "Original-Envelope-Id": "QQ314159",
            "Reporting-MTA": "dns; mail.example.org",
            "Arrival-Date": "Fri, 01 Mar 2024 09:30:00 +0000",
        },
        {
            "Original-Recipient": "rfc822; Bob@Example.com",
            "Final-Recipient": "rfc822; bob@example.com",
            "Action": "failed",
            "Status": "5.1.1",
            "Remote-MTA": "dns; mx.example.com",
            "Diagnostic-Code": "smtp; 550 5.1.1 <bob@example.com>: No such user",
            "Last-Attempt-Date": "Fri, 01 Mar 2024 14:42:00 +0000",
        },
        {
            "Final-Recipient": "rfc822; carol@example.net",
            "Action": "failed",
            "Status": "5.1.10",
            "Diagnostic-Code": "X-smtpkit; example.net accepts no mail (null MX, RFC 7505)",
            "Last-Attempt-Date": "Fri, 01 Mar 2024 14:42:00 +0000",
        },
    ]


def test_without_envid_there_is_no_original_envelope_id() -> None:
    assert status_blocks(report([BOB]))[0] == {
        "Reporting-MTA": "dns; mail.example.org",
        "Arrival-Date": "Fri, 01 Mar 2024 09:30:00 +0000",
    }


def test_delayed_fields() -> None:
    assert status_blocks(report([DAVE]))[1:] == [
        {
            "Final-Recipient": "rfc822; dave@example.com",
            "Action": "delayed",
            "Status": "4.3.0",
            "Remote-MTA": "dns; mx.example.com",
            "Diagnostic-Code": "smtp; 451 4.3.0 Try again later",
            "Last-Attempt-Date": "Fri, 01 Mar 2024 14:42:00 +0000",
            "Will-Retry-Until": "Wed, 06 Mar 2024 09:30:00 +0000",
        }
    ]


def test_success_fields() -> None:
    assert status_blocks(report([ERIN, FRANK, GRACE]))[1:] == [
        {
            "Final-Recipient": "rfc822; erin@example.com",
            "Action": "delivered",
            "Status": "2.0.0",
            "Remote-MTA": "dns; mx.example.com",
            "Diagnostic-Code": "smtp; 250 2.0.0 Ok: queued as 4F2",
            "Last-Attempt-Date": "Fri, 01 Mar 2024 14:42:00 +0000",
        },
        {
            "Final-Recipient": "rfc822; frank@example.com",
            "Action": "relayed",
            "Status": "2.0.0",
            "Remote-MTA": "dns; relay.example.com",
        },
        {"Final-Recipient": "rfc822; grace@example.org", "Action": "expanded", "Status": "2.0.0"},
    ]


def test_expired_message_fails_with_4_4_7() -> None:
    expired = RecipientStatus(
        "dave@example.com", "failed", STATUS_EXPIRED, diagnostic="451 4.3.0 Try again later"
    )
    block = status_blocks(report([expired]))[1]
    assert (block["Action"], block["Status"]) == ("failed", "4.4.7")
    assert block["Diagnostic-Code"] == "smtp; 451 4.3.0 Try again later"


def test_dates_keep_their_offset() -> None:
    paris = timezone(timedelta(hours=1))
    bob = RecipientStatus("bob@example.com", "failed", "5.0.0", last_attempt=NOW.astimezone(paris))
    assert status_blocks(report([bob]))[1]["Last-Attempt-Date"] == (
        "Fri, 01 Mar 2024 15:42:00 +0100"
    )


def test_utf8_addresses_use_the_7bit_utf8_type() -> None:
    """RFC 6533 3: utf-8-addr-xtext keeps message/delivery-status 7-bit."""
    dorte = RecipientStatus(
        "dörte@exämple.com",
        "failed",
        "5.1.1",
        original_recipient=("utf-8", "Dörte@exämple.com"),
    )
    raw = report([dorte])
    block = status_blocks(raw)[1]
    assert block["Final-Recipient"] == "utf-8; d\\x{F6}rte@ex\\x{E4}mple.com"
    assert block["Original-Recipient"] == "utf-8; D\\x{F6}rte@ex\\x{E4}mple.com"
    assert raw_part(raw, 1)[1].isascii()
    assert "<dörte@exämple.com>: delivery failed" in text_of(raw)


def test_multi_line_reply_becomes_one_line() -> None:
    bob = RecipientStatus(
        "bob@example.com",
        "failed",
        status_from_reply("550-5.1.1 The account does not exist.\r\n550 5.1.1 See the FAQ"),
        diagnostic="550-5.1.1 The account does not exist.\r\n550 5.1.1 See the FAQ\r\n",
    )
    block = status_blocks(report([bob]))[1]
    assert block["Status"] == "5.1.1"
    assert block["Diagnostic-Code"] == (
        "smtp; 550-5.1.1 The account does not exist. 550 5.1.1 See the FAQ"
    )


def test_a_diagnostic_cannot_add_fields() -> None:
    bob = RecipientStatus(
        "bob@example.com",
        "failed",
        "5.0.0",
        diagnostic="550 no\r\nAction: delivered\n\nX-Evil: yes\x00\x1b[31m é",
    )
    block = status_blocks(report([bob]))[1]
    assert block["Action"] == "failed"
    assert "X-Evil" not in block
    assert block["Diagnostic-Code"] == "smtp; 550 no Action: delivered X-Evil: yes??[31m ?"


def test_long_diagnostic_is_folded_within_998_octets() -> None:
    words = " ".join(f"word{i}" for i in range(200))
    diagnostic = f"550 5.7.1 {words} {'x' * 2000} end"
    bob = RecipientStatus("bob@example.com", "failed", "5.7.1", diagnostic=diagnostic)
    raw = report([bob])
    lines = raw.split(b"\r\n")
    assert max(len(line) for line in lines) <= 998
    head, body = raw_part(raw, 1)
    field_lines = body.split(b"\r\n")
    start = next(i for i, line in enumerate(field_lines) if line.startswith(b"Diagnostic-Code:"))
    folded = [field_lines[start]]
    folded += [line for line in field_lines[start + 1 :] if line.startswith(b" ")]
    assert len(folded) > 20
    # Folded at spaces within 78 characters while the words allow it.
    assert all(len(line) <= 78 for line in folded[:-5])
    # Unfolded, the value is the diagnostic with its one endless word cut every 900.
    long_word = f"{'x' * 900} {'x' * 900} {'x' * 200}"
    assert status_blocks(raw)[1]["Diagnostic-Code"] == f"smtp; 550 5.7.1 {words} {long_word} end"


def test_endless_diagnostic_is_cut() -> None:
    bob = RecipientStatus("bob@example.com", "failed", "5.0.0", diagnostic="550 " + "ab " * 5000)
    value = status_blocks(report([bob]))[1]["Diagnostic-Code"]
    assert value.startswith("smtp; 550 ab ab")
    assert value.endswith("...")
    assert len(value) == len("smtp; ") + 4000


# The text for a person


def test_failed_text_names_each_recipient_and_reply() -> None:
    assert text_of(report([BOB, CAROL])) == (
        "This is the mail system at mail.example.org.\n"
        "\n"
        "Your message could not be delivered to one or more of its recipients; it\n"
        "will not be tried again for them.\n"
        "\n"
        "<bob@example.com>: delivery failed (5.1.1: bad destination mailbox\n"
        "address).\n"
        "    mx.example.com answered: 550 5.1.1 <bob@example.com>: No such user\n"
        "\n"
        "<carol@example.net>: delivery failed (5.1.10: recipient address has null\n"
        "MX).\n"
        "    example.net accepts no mail (null MX, RFC 7505)\n"
        "\n"
        "Your message is attached.\n"
    )


def test_delayed_text_says_since_when_and_until_when() -> None:
    text = " ".join(text_of(report([DAVE])).split())
    assert "has not been delivered yet" in text
    assert (
        "It has been tried for 5 hours and 12 minutes, since Fri, 01 Mar 2024 09:30:00 +0000,"
        " and it will be tried again" in text
    )
    assert "<dave@example.com>: not delivered yet (4.3.0: mail system status)." in text
    assert "It will be tried until Wed, 06 Mar 2024 09:30:00 +0000." in text
    assert "mx.example.com answered: 451 4.3.0 Try again later" in text
    assert text.endswith("Its headers are attached.")


def test_success_text() -> None:
    text = " ".join(text_of(report([ERIN, FRANK, GRACE])).split())
    assert "Your message was delivered to one or more of its recipients" in text
    assert "<erin@example.com>: delivered to mx.example.com." in text
    assert "mx.example.com answered: 250 2.0.0 Ok: queued as 4F2" in text
    assert "<frank@example.com>: relayed to relay.example.com, a server that sends no" in text
    assert "<grace@example.org>: delivered to a list or alias" in text


def test_text_lines_are_short() -> None:
    raw = report([BOB, CAROL, DAVE, ERIN])
    assert max(len(line) for line in text_of(raw).splitlines()) <= 72


# What of the original comes back (RFC 3461 4.3)


def big_message(size: int) -> bytes:
    line = b"x" * 76 + b"\r\n"
    return ORIGINAL_HEADERS + b"\r\n" + line * (size // len(line) + 1)


@pytest.mark.parametrize(
    ("ret", "size", "whole"),
    [
        (None, 1000, True),
        (None, RETURN_LIMIT, True),
        (None, RETURN_LIMIT + 1, False),
        (None, 300_000, False),
        ("FULL", 1000, True),
        ("FULL", 300_000, True),
        ("HDRS", 1000, False),
        ("HDRS", 300_000, False),
    ],
)
def test_returned_original_by_ret_and_size(ret: str | None, size: int, whole: bool) -> None:
    original = big_message(size)[:size]
    raw = report([BOB], original, ret=ret)
    third = parts(raw)[2]
    head, body = raw_part(raw, 2)
    if whole:
        assert third.get_content_type() == "message/rfc822"
        assert body == original
    else:
        assert third.get_content_type() == "text/rfc822-headers"
        assert body == ORIGINAL_HEADERS
        embedded = email.message_from_bytes(body, policy=email.policy.default)
        assert embedded["Subject"] == "Lunch"


@pytest.mark.parametrize(("ret", "note"), [(None, "100 KB"), ("FULL", "1000 bytes")])
def test_over_the_limit_says_so(ret: str | None, note: str) -> None:
    raw = report([BOB], big_message(300_000), ret=ret, full_limit=1000)
    assert parts(raw)[2].get_content_type() == "text/rfc822-headers"
    text = " ".join(text_of(raw).split())
    assert f"Only its headers are attached: the message is larger than {note}." in text


def test_hdrs_says_as_you_asked() -> None:
    text = " ".join(text_of(report([BOB], ret="HDRS")).split())
    assert text.endswith("Only its headers are attached, as you asked.")


def test_default_limits() -> None:
    assert RETURN_LIMIT == 100 * 1024
    assert FULL_RETURN_LIMIT == 10 * 1024 * 1024
    assert MAX_RETURNED_HEADERS == 100 * 1024


class CountingStream(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.taken = 0

    def read(self, size: int | None = -1, /) -> bytes:
        data = super().read(size)
        self.taken += len(data)
        return data


@pytest.mark.parametrize(
    ("ret", "most"),
    [(None, RETURN_LIMIT + 1), ("FULL", 50_001), ("HDRS", MAX_RETURNED_HEADERS)],
)
def test_reading_is_bounded(ret: str | None, most: int) -> None:
    stream = CountingStream(big_message(5 * 1024 * 1024))
    envelope = OriginalEnvelope(SENDER, ARRIVED, ret=ret)  # type: ignore[arg-type]
    build_report(HOST, envelope, [BOB], stream, now=NOW, full_limit=50_000)
    assert stream.taken <= most


def test_header_section_is_bounded() -> None:
    headers = b"".join(b"X-Filler-%06d: %s\r\n" % (i, b"y" * 60) for i in range(3000))
    original = headers + b"\r\nbody\r\n"
    stream = CountingStream(original)
    envelope = OriginalEnvelope(SENDER, ARRIVED, ret="HDRS")
    raw = build_report(HOST, envelope, [BOB], stream, now=NOW)
    body = raw_part(raw, 2)[1]
    assert len(body) <= MAX_RETURNED_HEADERS
    assert body.endswith(b"\r\n")
    assert headers.startswith(body)
    assert stream.taken <= MAX_RETURNED_HEADERS


def test_a_message_without_body_is_all_header() -> None:
    original = b"Subject: only headers\r\nFrom: a@example.org\r\n"
    assert raw_part(report([DAVE], original), 2)[1] == original


def test_eight_bit_original_round_trips_byte_for_byte() -> None:
    original = (
        "From: Jörg <joerg@example.org>\r\n"
        "Subject: Grüße\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n"
        "\r\n"
        "Schöne Grüße, 東京\r\n"
    ).encode() + b"and a stray octet \xff\xfe\r\n"
    raw = report([BOB], original, ret="FULL")
    head, body = raw_part(raw, 2)
    assert body == original
    assert b"Content-Transfer-Encoding: 8bit" in head
    third = parts(raw)[2]
    assert third.get_content_type() == "message/rfc822"
    embedded = third.get_payload(0)
    assert isinstance(embedded, EmailMessage)
    assert embedded["Subject"] == "Grüße"
    # The rest of the report is still 7-bit.
    assert raw[: raw.index(head)].isascii()


def test_eight_bit_headers_only() -> None:
    original = "Subject: Grüße\r\n\r\nbody\r\n".encode()
    raw = report([DAVE], original)
    head, body = raw_part(raw, 2)
    assert body == "Subject: Grüße\r\n".encode()
    assert b"Content-Transfer-Encoding: 8bit" in head


def test_seven_bit_original_has_no_transfer_encoding() -> None:
    head = raw_part(report([BOB]), 2)[0]
    assert b"Content-Transfer-Encoding" not in head


def test_bare_line_feeds_become_crlf() -> None:
    original = b"Subject: Lunch\n\nSee you\nat noon.\n"
    assert (
        raw_part(report([BOB], original), 2)[1] == b"Subject: Lunch\r\n\r\nSee you\r\nat noon.\r\n"
    )


def test_original_holding_a_boundary_line_stays_one_part() -> None:
    first = report([BOB])
    boundary = parse(first).get_boundary()
    assert boundary is not None
    original = ORIGINAL + b"--" + boundary.encode() + b"--\r\n"
    # Whatever boundary the next report picks, none of the original's lines ends the part.
    raw = report([BOB], original)
    assert raw_part(raw, 2)[1] == original
    assert len(parts(raw)) == 3


# Senders


def test_null_sender_never_gets_a_report() -> None:
    with pytest.raises(ValueError) as caught:
        report([BOB], sender="")
    assert str(caught.value) == "the null sender never gets a delivery report (RFC 5321 6.1)"


@pytest.mark.parametrize(
    "sender", ['"alice smith"@example.org', "alice@[192.0.2.1]", '"a,b;c"@example.org']
)
def test_unusual_senders(sender: str) -> None:
    assert parse(report([BOB], sender=sender))["To"] == sender


def test_utf8_sender_gets_a_utf8_header() -> None:
    """RFC 6531 3.7.1: the report then needs SMTPUTF8, as the original did."""
    raw = report([BOB], sender="jörg@exämple.org")
    assert "To: jörg@exämple.org\r\n".encode() in raw
    assert str(parse(raw)["To"]) == "jörg@exämple.org"


# Refusals


def test_build_report_refusals() -> None:
    envelope = OriginalEnvelope(SENDER, ARRIVED)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"recipients": []}, "a delivery report needs at least one recipient"),
        ({"reporting_host": "mail example"}, "reporting host: must be a host name"),
        ({"reporting_host": "-mail.example.org"}, "reporting host: must be a host name"),
        ({"now": datetime(2024, 3, 1)}, "now: must be a datetime with a time zone"),
        ({"return_limit": -1}, "return limits: must not be negative"),
    ]
    for change, message in cases:
        args: dict[str, Any] = {
            "reporting_host": HOST,
            "envelope": envelope,
            "recipients": [BOB],
            "original": io.BytesIO(ORIGINAL),
            "now": NOW,
        }
        args.update(change)
        with pytest.raises(ValueError) as caught:
            build_report(**args)
        assert str(caught.value) == message


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"address": ""}, "address: an address is required"),
        ({"address": "bob@example.com\r\nBcc: x"}, "address: the address has control characters"),
        ({"address": "b" * 250 + "@example.com"}, "address: longer than 256 octets"),
        ({"action": "bounced"}, "action: must be failed, delayed, delivered, relayed or expanded"),
        ({"status": "5.1"}, "status: must be an RFC 3463 code such as 5.1.1"),
        ({"status": "3.0.0"}, "status: must be an RFC 3463 code such as 5.1.1"),
        ({"status": "5.1.1000"}, "status: must be an RFC 3463 code such as 5.1.1"),
        ({"status": "2.0.0"}, "status: 2.0.0 does not go with action failed"),
        ({"action": "delayed", "status": "5.0.0"}, "status: 5.0.0 does not go with action delayed"),
        (
            {"action": "delivered", "status": "4.0.0"},
            "status: 4.0.0 does not go with action delivered",
        ),
        ({"remote_mta": "mx example"}, "remote_mta: must be a host name or an address literal"),
        ({"remote_mta": "mx\r\n"}, "remote_mta: must be a host name or an address literal"),
        (
            {"original_recipient": ("x400", "bob")},
            "ORCPT: the address type must be rfc822 or utf-8",
        ),
        (
            {"original_recipient": ("rfc822", "a\r\nb")},
            "ORCPT: an rfc822 address must be printable US-ASCII",
        ),
        (
            {"last_attempt": datetime(2024, 3, 1)},
            "last_attempt: must be a datetime with a time zone",
        ),
        ({"will_retry_until": UNTIL}, "will_retry_until: only for a delayed recipient"),
    ],
)
def test_recipient_status_refusals(kwargs: dict[str, Any], message: str) -> None:
    fields: dict[str, Any] = {"address": "bob@example.com", "action": "failed", "status": "5.1.1"}
    fields.update(kwargs)
    with pytest.raises(ValueError) as caught:
        RecipientStatus(**fields)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sender": "a\nb@example.org"}, "sender: the address has control characters"),
        ({"arrival": datetime(2024, 3, 1)}, "arrival: must be a datetime with a time zone"),
        ({"ret": "ALL"}, "RET: must be FULL or HDRS"),
        ({"envid": "a\r\nb"}, "ENVID: must be printable US-ASCII"),
        ({"envid": "x" * 101}, "ENVID: longer than 100 characters"),
    ],
)
def test_original_envelope_refusals(kwargs: dict[str, Any], message: str) -> None:
    fields: dict[str, Any] = {"sender": SENDER, "arrival": ARRIVED}
    fields.update(kwargs)
    with pytest.raises(ValueError) as caught:
        OriginalEnvelope(**fields)
    assert str(caught.value) == message


# Status from a reply (RFC 3463, RFC 2034)


@pytest.mark.parametrize(
    ("reply", "status"),
    [
        ("550 5.1.1 No such user", "5.1.1"),
        ("550-5.1.1 first\r\n550 5.1.1 last", "5.1.1"),
        ("552 5.3.4 Message too big", "5.3.4"),
        ("554 Transaction failed", "5.0.0"),
        ("550 4.1.1 class does not match", "5.0.0"),
        ("550 5.1.1000 detail too long", "5.0.0"),
        ("550 5.1.1.2 not a code", "5.0.0"),
        ("451 4.7.1 Greylisted", "4.7.1"),
        ("421 Service not available", "4.0.0"),
        ("250 2.0.0 Ok", "2.0.0"),
        ("250 Ok", "2.0.0"),
        ("550", "5.0.0"),
        ("550 5.1.10", "5.1.10"),
    ],
)
def test_status_from_reply(reply: str, status: str) -> None:
    assert status_from_reply(reply) == status


@pytest.mark.parametrize("reply", ["", "354 Go ahead", "55 short", "5501 long", "abc"])
def test_status_from_reply_refuses(reply: str) -> None:
    with pytest.raises(ValueError) as caught:
        status_from_reply(reply)
    assert str(caught.value) == (
        "not a final SMTP reply: it must start with a 2xx, 4xx or 5xx code"
    )


def test_status_constants() -> None:
    assert (STATUS_NULL_MX, STATUS_NO_SUCH_DOMAIN, STATUS_EXPIRED) == ("5.1.10", "5.1.2", "4.4.7")


# Whatever a remote server answers


@settings(max_examples=60, deadline=None)
@given(
    diagnostics=st.lists(st.text(max_size=3000), min_size=1, max_size=3),
    original=st.binary(max_size=3000),
)
def test_any_reply_and_original_give_a_parseable_report(
    diagnostics: list[str], original: bytes
) -> None:
    recipients = [
        RecipientStatus(f"r{i}@example.com", "failed", "5.0.0", diagnostic=diagnostic)
        for i, diagnostic in enumerate(diagnostics)
    ]
    raw = report(recipients, original)
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    assert b"\n" not in raw.replace(b"\r\n", b"")
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert [p.get_content_type() for p in message.iter_parts()] == [
        "text/plain",
        "message/delivery-status",
        "message/rfc822",
    ]
    blocks = status_blocks(raw)[1:]
    assert [b["Final-Recipient"] for b in blocks] == [f"rfc822; {r.address}" for r in recipients]
    for block, diagnostic in zip(blocks, diagnostics, strict=True):
        value = block.get("Diagnostic-Code", "").partition("; ")[2]
        assert value.isascii()
        assert len(value) <= 4000 + 4000 // 900
        if re.fullmatch(r"[\x21-\x7e]{1,800}(?: [\x21-\x7e]{1,800})*", diagnostic):
            assert value == diagnostic[:4000]
        if not diagnostic.strip():
            assert "Diagnostic-Code" not in block
