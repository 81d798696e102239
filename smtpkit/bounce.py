"""Delivery status notifications (RFC 3464) in a ``multipart/report`` (RFC 6522), built with
the email package.

``build_report`` turns what the queue runner learnt about some recipients of one message
into a complete message for that message's envelope sender, with three parts:

1. ``text/plain``: what happened, for a person;
2. ``message/delivery-status``: the same for programs, one block for the message and one
   per recipient (RFC 3464 2.2, 2.3);
3. the original: ``message/rfc822`` with the whole message, or ``text/rfc822-headers``
   with its header section only.

Which of the two the third part is (RFC 3461 4.3):

- a report without a failed recipient (delayed, delivered, relayed, expanded): the headers
  only, since "if a DSN contains no indications of delivery failure, only the headers of
  the message SHOULD be returned";
- ``RET=HDRS``: the headers only;
- ``RET=FULL``: the whole message when it is at most ``full_limit`` octets (by default
  ``FULL_RETURN_LIMIT``, the largest message the server accepts by default), else the
  headers only: a report is built in memory, and the limit keeps it bounded;
- no ``RET``: the whole message when it is at most ``return_limit`` octets (by default
  ``RETURN_LIMIT``, 100 KiB, as Postfix's ``bounce_size_limit``), else the headers only.

The original is read from a stream, never more than the applicable limit plus one octet,
and the header section at most ``MAX_RETURNED_HEADERS`` octets (cut at a line end).

No line of a report is longer than 998 octets (RFC 5322 2.1.1): fields are folded at spaces
within 78 characters where the words allow, and no word of a diagnostic is longer than 900.
The report uses CRLF line ends and is 7-bit unless the original part holds 8-bit octets, in
which case that part says ``Content-Transfer-Encoding: 8bit`` and the report must be sent
with ``BODY=8BITMIME`` (RFC 6152).

A report never goes to the null sender (RFC 5321 6.1, RFC 3464 3): ``build_report``
refuses an empty sender, so a report, itself sent from the null sender, never causes one.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.generator import BytesGenerator
from email.headerregistry import Address
from email.message import EmailMessage, Message
from email.policy import SMTP, SMTPUTF8, EmailPolicy
from email.utils import format_datetime, make_msgid
from io import BytesIO
from typing import BinaryIO, Final, Literal

from smtpkit.addresses import is_host_name
from smtpkit.protocol.dsn import MailDsn, RcptDsn, Ret, utf8_addr_xtext_encode

__all__ = [
    "ACTIONS",
    "FULL_RETURN_LIMIT",
    "MAX_RETURNED_HEADERS",
    "RETURN_LIMIT",
    "STATUS_EXPIRED",
    "STATUS_NO_SUCH_DOMAIN",
    "STATUS_NULL_MX",
    "Action",
    "OriginalEnvelope",
    "RecipientStatus",
    "build_report",
    "status_from_reply",
]

Action = Literal["failed", "delayed", "delivered", "relayed", "expanded"]
#: RFC 3464 2.3.3, in the order the readable text lists them.
ACTIONS: Final[tuple[Action, ...]] = ("failed", "delayed", "delivered", "relayed", "expanded")

#: Without RET, the whole message is returned up to this size (Postfix bounce_size_limit).
RETURN_LIMIT: Final = 100 * 1024
#: With RET=FULL, up to this size: the default largest message (``Limits.max_message_size``).
FULL_RETURN_LIMIT: Final = 10 * 1024 * 1024
#: The most of a header section a report returns.
MAX_RETURNED_HEADERS: Final = 100 * 1024

#: RFC 7505 4.1: the recipient's domain has a null MX, it accepts no mail.
STATUS_NULL_MX: Final = "5.1.10"
#: RFC 3463 X.1.2, bad destination system address: the domain does not exist (NXDOMAIN).
STATUS_NO_SUCH_DOMAIN: Final = "5.1.2"
#: RFC 3463 X.4.7, delivery time expired: retried until the queue gave up.
STATUS_EXPIRED: Final = "4.4.7"

# RFC 3464 2.3.4: status-code = DIGIT "." 1*3DIGIT "." 1*3DIGIT, with class 2, 4 or 5.
_STATUS: Final = re.compile(r"[245]\.[0-9]{1,3}\.[0-9]{1,3}")
# RFC 3464 2.3.4: the class follows the action. A failed recipient may carry a 4.x.y: a
# temporary problem that lasted until the queue gave up (RFC 3463 4.4.7 asks for "the code
# for the actual problem found when delivery was attempted" where possible).
_STATUS_CLASSES: Final[dict[str, str]] = {
    "failed": "45",
    "delayed": "4",
    "delivered": "2",
    "relayed": "2",
    "expanded": "2",
}
# RFC 5321 4.2: a reply starts with its three-digit code, then a space or (not the last
# line) a hyphen; RFC 2034 4: the enhanced status code comes first in the text.
_REPLY: Final = re.compile(r"([245])[0-9]{2}(?:[ -]|$)")
_ENHANCED: Final = re.compile(r"([245])\.[0-9]{1,3}\.[0-9]{1,3}(?=\s|$)")
# RFC 3464 2.3.5 mta-name for the "dns" type: a host name, or an address literal.
_MTA_NAME: Final = re.compile(r"[A-Za-z0-9.:\[\]-]{1,255}")
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
# RFC 5321 4.5.3.1.3: a path is at most 256 octets, so every address field fits its line.
_MAX_ADDRESS: Final = 256
# A diagnostic is a remote server's reply, multi-line or endless: it is cut here, and its
# words at _MAX_WORD so that each folded line stays within 998 octets (RFC 5322 2.1.1).
_MAX_DIAGNOSTIC: Final = 4000
_MAX_WORD: Final = 900
_FOLD_WIDTH: Final = 78  # RFC 5322 2.1.1: SHOULD be no more than 78 characters
_TEXT_WIDTH: Final = 72
_LINE_ENDS: Final = re.compile(rb"\r\n|\r|\n")

_SUBJECTS: Final[dict[str, str]] = {
    "failed": "Undelivered Mail Returned to Sender",
    "delayed": "Delayed Mail (still being retried)",
    "delivered": "Successful Mail Delivery Report",
}
# RFC 3463 3: what the subject, and some details, of a status code mean.
_STATUS_SUBJECTS: Final = (
    "other or undefined status",
    "addressing status",
    "mailbox status",
    "mail system status",
    "network and routing status",
    "mail delivery protocol status",
    "message content or media status",
    "security or policy status",
)
_STATUS_DETAILS: Final[dict[str, str]] = {
    "1.1": "bad destination mailbox address",
    "1.2": "bad destination system address",
    "1.10": "recipient address has null MX",
    "2.1": "mailbox disabled, not accepting messages",
    "2.2": "mailbox full",
    "3.4": "message too big for system",
    "4.1": "no answer from host",
    "4.2": "bad connection",
    "4.4": "unable to route",
    "4.7": "delivery time expired",
    "7.1": "delivery not authorized, message refused",
}


def status_from_reply(reply: str) -> str:
    """The RFC 3464 Status of an SMTP reply such as ``550 5.1.1 No such user``: its enhanced
    status code when it gives one of its own class (RFC 3463 2), else class.0.0."""
    code = _REPLY.match(reply)
    if code is None:
        raise ValueError("not a final SMTP reply: it must start with a 2xx, 4xx or 5xx code")
    enhanced = _ENHANCED.match(reply, code.end())
    if enhanced is not None and enhanced.group(1) == code.group(1):
        return enhanced.group(0)
    return f"{code.group(1)}.0.0"


def _check_address(name: str, address: str) -> None:
    if not isinstance(address, str) or not address:
        raise ValueError(f"{name}: an address is required")
    if _CONTROL.search(address):
        raise ValueError(f"{name}: the address has control characters")
    if len(address.encode("utf-8")) > _MAX_ADDRESS:
        raise ValueError(f"{name}: longer than {_MAX_ADDRESS} octets")


def _check_aware(name: str, when: datetime | None) -> None:
    if when is not None and (not isinstance(when, datetime) or when.utcoffset() is None):
        raise ValueError(f"{name}: must be a datetime with a time zone")


@dataclass(frozen=True, slots=True)
class RecipientStatus:
    """What became of one recipient: its RFC 3464 2.3 fields.

    ``status`` is an RFC 3463 code of the action's class (``status_from_reply`` derives it
    from a reply); ``diagnostic`` the remote server's whole reply, or a short text of ours;
    ``original_recipient`` the recipient's ORCPT as ``RcptDsn.orcpt`` keeps it;
    ``will_retry_until`` only for a delayed recipient (RFC 3464 2.3.8).
    """

    address: str
    action: Action
    status: str
    remote_mta: str | None = None
    diagnostic: str | None = None
    original_recipient: tuple[str, str] | None = None
    last_attempt: datetime | None = None
    will_retry_until: datetime | None = None

    def __post_init__(self) -> None:
        _check_address("address", self.address)
        if self.action not in ACTIONS:
            raise ValueError("action: must be failed, delayed, delivered, relayed or expanded")
        if not isinstance(self.status, str) or not _STATUS.fullmatch(self.status):
            raise ValueError("status: must be an RFC 3463 code such as 5.1.1")
        if self.status[0] not in _STATUS_CLASSES[self.action]:
            raise ValueError(f"status: {self.status} does not go with action {self.action}")
        if self.remote_mta is not None and not _MTA_NAME.fullmatch(self.remote_mta):
            raise ValueError("remote_mta: must be a host name or an address literal")
        if self.diagnostic is not None and not isinstance(self.diagnostic, str):
            raise ValueError("diagnostic: must be a string")
        if self.original_recipient is not None:
            RcptDsn(orcpt=self.original_recipient)  # the checks ORCPT passed on the way in
        _check_aware("last_attempt", self.last_attempt)
        _check_aware("will_retry_until", self.will_retry_until)
        if self.will_retry_until is not None and self.action != "delayed":
            raise ValueError("will_retry_until: only for a delayed recipient")


@dataclass(frozen=True, slots=True)
class OriginalEnvelope:
    """The envelope of the message reported on: its sender, when it arrived, and the DSN
    parameters of its MAIL command (``MailDsn.ret`` and ``MailDsn.envid``)."""

    sender: str
    arrival: datetime
    envid: str | None = None
    ret: Ret | None = None

    def __post_init__(self) -> None:
        if self.sender:
            _check_address("sender", self.sender)
        _check_aware("arrival", self.arrival)
        MailDsn(ret=self.ret, envid=self.envid)  # the checks RET and ENVID passed


class _Generator(BytesGenerator):
    """Writes a ``message/rfc822`` part given as text with its 8-bit octets as surrogates
    (``surrogateescape``) back as those octets: the original is returned exactly as it was
    received, never re-encoded (RFC 2046 5.2.1 allows 7bit, 8bit and binary only). The
    stock generator encodes that text as strict ASCII."""

    def _encode(self, s: str) -> bytes:
        return s.encode("ascii", "surrogateescape")


def _clean(text: str) -> str:
    """One line of printable US-ASCII: a multi-line reply's lines joined by spaces, as
    Postfix writes them; any other character as "?" (RFC 3464 2.3.6 text is US-ASCII)."""
    text = re.sub(r"[^\x20-\x7e]", "?", " ".join(text.split()))
    if len(text) > _MAX_DIAGNOSTIC:
        text = text[: _MAX_DIAGNOSTIC - 3] + "..."
    return " ".join(
        word[i : i + _MAX_WORD] for word in text.split(" ") for i in range(0, len(word), _MAX_WORD)
    )


def _fold(name: str, value: str) -> str:
    """``value`` folded at single spaces (RFC 5322 2.2.3) so that, after ``name: ``, each
    line is at most 78 characters where the words allow. Unfolding gives ``value`` back."""
    lines: list[str] = []
    line = ""
    width = _FOLD_WIDTH - len(name) - 2
    for word in re.split(r"(?<=\S) (?=\S)", value):
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line, width = " " + word, _FOLD_WIDTH
        else:
            line = f"{line} {word}" if line else word
    lines.append(line)
    return "\n".join(lines)


def _block(policy: EmailPolicy[EmailMessage], fields: list[tuple[str, str]]) -> Message:
    """One group of delivery-status fields. Stored raw, and written as they are by a policy
    with ``refold_source="none"``: the email package's own folding would turn a long word
    into an RFC 2047 encoded word, which a DSN field must not hold."""
    block = Message(policy=policy)
    for name, value in fields:
        block.set_raw(name, _fold(name, value))
    return block


def _typed_address(address: str) -> str:
    """An address field's value (RFC 3464 2.3.2): ``rfc822;`` when it is ASCII, else the
    ``utf-8`` type in its 7-bit utf-8-addr-xtext form (RFC 6533 3), which keeps this part
    ``message/delivery-status``."""
    if address.isascii():
        return f"rfc822; {address}"
    return f"utf-8; {utf8_addr_xtext_encode(address)}"


def _diagnostic_code(diagnostic: str) -> str:
    """RFC 3464 2.3.6: type "smtp" for a server's reply; our own words are not one."""
    text = _clean(diagnostic)
    return f"smtp; {text}" if _REPLY.match(text) else f"X-smtpkit; {text}"


def _status_fields(
    host: str, envelope: OriginalEnvelope, recipients: Sequence[RecipientStatus]
) -> list[list[tuple[str, str]]]:
    # RFC 3464 2.2: the per-message fields, in the order of its grammar.
    message = []
    if envelope.envid is not None:
        message.append(("Original-Envelope-Id", envelope.envid))
    message.append(("Reporting-MTA", f"dns; {host}"))
    message.append(("Arrival-Date", format_datetime(envelope.arrival)))
    blocks = [message]
    for r in recipients:
        # RFC 3464 2.3: the per-recipient fields, in the order of its grammar.
        fields = []
        if r.original_recipient is not None:
            addr_type, address = r.original_recipient
            if addr_type == "utf-8":
                address = utf8_addr_xtext_encode(address)
            fields.append(("Original-Recipient", f"{addr_type}; {address}"))
        fields.append(("Final-Recipient", _typed_address(r.address)))
        fields.append(("Action", r.action))
        fields.append(("Status", r.status))
        if r.remote_mta is not None:
            fields.append(("Remote-MTA", f"dns; {r.remote_mta}"))
        if r.diagnostic is not None and _clean(r.diagnostic):
            fields.append(("Diagnostic-Code", _diagnostic_code(r.diagnostic)))
        if r.last_attempt is not None:
            fields.append(("Last-Attempt-Date", format_datetime(r.last_attempt)))
        if r.will_retry_until is not None:
            fields.append(("Will-Retry-Until", format_datetime(r.will_retry_until)))
        blocks.append(fields)
    return blocks


def _read_up_to(stream: BinaryIO, size: int) -> bytes:
    chunks: list[bytes] = []
    got = 0
    while got < size:
        chunk = stream.read(min(size - got, 65536))
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _header_end(data: bytes) -> int | None:
    """Where the header section of ``data`` ends (after its last line end), if it does."""
    if data.startswith((b"\r\n", b"\n")):
        return 0
    ends = [i + 1 for i in (data.find(b"\n\r\n"), data.find(b"\n\n")) if i >= 0]
    return min(ends) if ends else None


def _read_headers(data: bytes, stream: BinaryIO) -> bytes:
    """The header section, from what was read already and then the stream, bounded."""
    while True:
        end = _header_end(data)
        if end is not None and end <= MAX_RETURNED_HEADERS:
            return data[:end]
        if end is not None or len(data) >= MAX_RETURNED_HEADERS:
            return data[: data.rfind(b"\n", 0, MAX_RETURNED_HEADERS) + 1]
        more = stream.read(MAX_RETURNED_HEADERS - len(data))
        if not more:
            return data  # a message that is all header
        data += more


@dataclass(frozen=True, slots=True)
class _Returned:
    data: bytes
    whole: bool
    note: str


def _returned(
    original: BinaryIO,
    envelope: OriginalEnvelope,
    failed: bool,
    return_limit: int,
    full_limit: int,
) -> _Returned:
    """What of the original goes back, by the rule in this module's docstring."""
    if not failed:
        return _Returned(_read_headers(b"", original), False, "Its headers are attached.")
    if envelope.ret == "HDRS":
        note = "Only its headers are attached, as you asked."
        return _Returned(_read_headers(b"", original), False, note)
    limit = full_limit if envelope.ret == "FULL" else return_limit
    data = _read_up_to(original, limit + 1)
    if len(data) <= limit:
        return _Returned(data, True, "Your message is attached.")
    note = f"Only its headers are attached: the message is larger than {_size(limit)}."
    return _Returned(_read_headers(data, original), False, note)


def _size(octets: int) -> str:
    if octets >= 1024 * 1024 and octets % (1024 * 1024) == 0:
        return f"{octets // (1024 * 1024)} MB"
    if octets >= 1024 and octets % 1024 == 0:
        return f"{octets // 1024} KB"
    return f"{octets} bytes"


def _original_part(returned: _Returned, policy: EmailPolicy[EmailMessage]) -> EmailMessage:
    # RFC 6522 3 / RFC 3464 2: the whole message, or its headers as text/rfc822-headers.
    # Line ends become CRLF like the rest of the report; a queued message has them already.
    data = _LINE_ENDS.sub(b"\r\n", returned.data)
    part = EmailMessage(policy=policy)
    if returned.whole:
        part["Content-Type"] = "message/rfc822"
        part["Content-Description"] = "Returned message"
    else:
        part["Content-Type"] = "text/rfc822-headers"
        part["Content-Description"] = "Returned message headers"
    if not data.isascii():
        part["Content-Transfer-Encoding"] = "8bit"
    part.set_payload(data.decode("ascii", "surrogateescape"))
    return part


def _duration(seconds: float) -> str:
    minutes = max(0, int(seconds // 60))
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    parts = [(days, "day"), (hours, "hour")] if days else [(hours, "hour"), (minutes, "minute")]
    words = [f"{n} {unit}{'' if n == 1 else 's'}" for n, unit in parts if n]
    return " and ".join(words) or "less than a minute"


def _status_meaning(status: str) -> str:
    _, subject, detail = status.split(".")
    known = _STATUS_DETAILS.get(f"{subject}.{detail}")
    if known is not None:
        return known
    index = int(subject)
    return _STATUS_SUBJECTS[index] if index < len(_STATUS_SUBJECTS) else "unknown status"


def _recipient_text(r: RecipientStatus) -> list[str]:
    """A paragraph on one recipient: what became of it, and the server's answer."""
    where = f" to {r.remote_mta}" if r.remote_mta else ""
    if r.action == "failed":
        first = f"<{r.address}>: delivery failed ({r.status}: {_status_meaning(r.status)})."
    elif r.action == "delayed":
        first = f"<{r.address}>: not delivered yet ({r.status}: {_status_meaning(r.status)})."
        if r.will_retry_until is not None:
            first += f" It will be tried until {format_datetime(r.will_retry_until)}."
    elif r.action == "delivered":
        first = f"<{r.address}>: delivered{where}."
    elif r.action == "relayed":
        first = (
            f"<{r.address}>: relayed{where}, a server that sends no delivery notifications:"
            " you will hear no more about this recipient."
        )
    else:
        first = f"<{r.address}>: delivered to a list or alias, which forwards it further."
    lines = textwrap.wrap(first, _TEXT_WIDTH, break_long_words=False, break_on_hyphens=False)
    text = _clean(r.diagnostic or "")
    if text:
        if r.remote_mta and _REPLY.match(text):
            text = f"{r.remote_mta} answered: {text}"
        lines += textwrap.wrap(
            text,
            _TEXT_WIDTH,
            initial_indent="    ",
            subsequent_indent="    ",
            break_long_words=False,
            break_on_hyphens=False,
        )
    return lines


def _explanation(
    host: str,
    envelope: OriginalEnvelope,
    recipients: Sequence[RecipientStatus],
    now: datetime,
    returned: _Returned,
) -> str:
    actions = {r.action for r in recipients}
    paragraphs = [f"This is the mail system at {host}."]
    if "failed" in actions:
        paragraphs.append(
            "Your message could not be delivered to one or more of its recipients;"
            " it will not be tried again for them."
        )
    if "delayed" in actions:
        paragraphs.append(
            "Your message has not been delivered yet to one or more of its recipients."
            f" It has been tried for {_duration((now - envelope.arrival).total_seconds())},"
            f" since {format_datetime(envelope.arrival)}, and it will be tried again:"
            " there is no need to send it again."
        )
    if actions & {"delivered", "relayed", "expanded"}:
        paragraphs.append(
            "Your message was delivered to one or more of its recipients, as you asked to be told."
        )
    wrapped = [textwrap.fill(p, _TEXT_WIDTH, break_long_words=False) for p in paragraphs]
    for action in ACTIONS:
        wrapped += ["\n".join(_recipient_text(r)) for r in recipients if r.action == action]
    wrapped.append(textwrap.fill(returned.note, _TEXT_WIDTH, break_long_words=False))
    return "\n\n".join(wrapped) + "\n"


def build_report(
    reporting_host: str,
    envelope: OriginalEnvelope,
    recipients: Sequence[RecipientStatus],
    original: BinaryIO,
    *,
    now: datetime | None = None,
    return_limit: int = RETURN_LIMIT,
    full_limit: int = FULL_RETURN_LIMIT,
) -> bytes:
    """A delivery status notification (RFC 3464) for ``envelope.sender`` about
    ``recipients`` of the message in ``original`` (read from where it stands, bounded),
    reported by ``reporting_host``: a whole RFC 5322 message with CRLF line ends, to be
    sent from the null sender. ``ValueError`` for the null sender, no recipients, or a
    value that does not fit its field."""
    if not envelope.sender:
        raise ValueError("the null sender never gets a delivery report (RFC 5321 6.1)")
    if not recipients:
        raise ValueError("a delivery report needs at least one recipient")
    if not is_host_name(reporting_host):
        raise ValueError("reporting host: must be a host name")
    if return_limit < 0 or full_limit < 0:
        raise ValueError("return limits: must not be negative")
    now = datetime.now(UTC) if now is None else now
    _check_aware("now", now)
    actions = {r.action for r in recipients}
    # RFC 6531 3.7.1: a sender with a UTF-8 address can only be written in a UTF-8 header
    # (the report then needs SMTPUTF8, as the original did).
    policy = (SMTP if envelope.sender.isascii() else SMTPUTF8).clone(refold_source="none")

    returned = _returned(original, envelope, "failed" in actions, return_limit, full_limit)

    report = EmailMessage(policy=policy)
    report["From"] = Address("Mail Delivery System", "MAILER-DAEMON", reporting_host)
    report["To"] = envelope.sender
    # One subject for the gravest news: a failure, else a delay, else a success.
    gravest = next((a for a in ("failed", "delayed") if a in actions), "delivered")
    report["Subject"] = _SUBJECTS[gravest]
    report["Date"] = format_datetime(now)
    report["Message-ID"] = make_msgid(domain=reporting_host)
    # RFC 3834 5: an automatic reply, which (RFC 3834 2) no responder answers in turn.
    report["Auto-Submitted"] = "auto-replied"
    report["MIME-Version"] = "1.0"
    report["Content-Type"] = "multipart/report; report-type=delivery-status"

    text = EmailMessage(policy=policy)
    explanation = _explanation(reporting_host, envelope, recipients, now, returned)
    if explanation.isascii():
        text.set_content(explanation, charset="us-ascii", cte="7bit")
    else:
        text.set_content(explanation, charset="utf-8", cte="quoted-printable")
    del text["MIME-Version"]  # set_content adds it; it belongs to the report's top only
    text["Content-Description"] = "Notification"
    report.attach(text)

    status = EmailMessage(policy=policy)
    status["Content-Type"] = "message/delivery-status"
    status["Content-Description"] = "Delivery report"
    status.set_payload(
        [_block(policy, fields) for fields in _status_fields(reporting_host, envelope, recipients)]
    )
    report.attach(status)

    report.attach(_original_part(returned, policy))

    out = BytesIO()
    _Generator(out, policy=policy).flatten(report)
    return out.getvalue()
