"""Asking a content scanner the admin already runs: rspamd's HTTP API (``POST /checkv2``).

The message goes as the request body, the envelope as request headers (``IP``, ``Helo``,
``From``, one ``Rcpt`` per recipient, ``User`` for an authenticated sender); the answer is
JSON whose ``action`` decides: ``reject`` refuses the message (``550 5.7.1``), ``soft
reject`` and ``greylist`` defer it (``451 4.7.1``), ``add header`` and ``rewrite subject``
mark it as spam, ``no action`` accepts it. Blocking, bounded by a time limit: the caller runs
it on a thread. Any failure (no answer in time, refused connection, a reply that is not
rspamd's) is a ``ScanFailed``: the caller applies the admin's fail-open or fail-closed choice.
"""

from __future__ import annotations

import enum
import http.client
import json
import os
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass

from smtpkit.addresses import host_port
from smtpkit.errors import SmtpkitError

__all__ = ["ScanAction", "ScanFailed", "ScanVerdict", "parse_url", "scan"]

# What one answer may weigh: rspamd's JSON for one message is a few KB with every symbol.
_MAX_ANSWER = 1 << 20


class ScanFailed(SmtpkitError):
    """rspamd gave no usable answer; the text says why."""


class ScanAction(enum.Enum):
    ACCEPT = "accept"
    SPAM = "spam"  # accepted, marked
    DEFER = "defer"
    REJECT = "reject"


_ACTIONS = {
    "no action": ScanAction.ACCEPT,
    "add header": ScanAction.SPAM,
    "rewrite subject": ScanAction.SPAM,
    "soft reject": ScanAction.DEFER,
    "greylist": ScanAction.DEFER,
    "reject": ScanAction.REJECT,
}


@dataclass(frozen=True, slots=True)
class ScanVerdict:
    """rspamd's answer: what to do, its score against its threshold, and the text it asks
    the SMTP reply to carry (``messages.smtp_message``), if any."""

    action: ScanAction
    rspamd_action: str
    score: float
    required: float
    smtp_message: str | None = None

    def header(self) -> bytes:
        """The ``X-Spam-Status`` line added to an accepted message (CRLF ended)."""
        flag = "Yes" if self.action is not ScanAction.ACCEPT else "No"
        return (
            f"X-Spam-Status: {flag}, score={self.score:.2f} required={self.required:.2f} "
            f'action="{self.rspamd_action}" (rspamd)\r\n'
        ).encode("ascii", "replace")


def parse_url(text: str) -> tuple[str, int, str]:
    """``http://HOST:PORT[/base]`` -> (host, port, path of checkv2); ``ValueError`` else."""
    parts = urllib.parse.urlsplit(text)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"{text!r} is not an http://HOST:PORT URL")
    try:
        port = parts.port or 11333
    except ValueError:
        raise ValueError(f"{text!r}: bad port") from None
    return parts.hostname, port, parts.path.rstrip("/") + "/checkv2"


def scan(
    url: str,
    message_path: str,
    *,
    ip: str,
    helo: str | None,
    sender: str,
    recipients: Sequence[str],
    user: str | None,
    timeout: float,
) -> ScanVerdict:
    """Send the message in ``message_path`` to rspamd at ``url`` and read its verdict."""
    host, port, path = parse_url(url)
    where = host_port(host, port)  # [::1]:11333 for an IPv6 address
    headers = {"IP": ip, "From": sender or "<>", "Content-Type": "application/octet-stream"}
    if helo:
        headers["Helo"] = helo
    if user:
        headers["User"] = user
    try:
        size = os.stat(message_path).st_size
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            connection.putrequest("POST", path)
            for name, value in headers.items():
                connection.putheader(name, _safe(value))
            for recipient in recipients:
                connection.putheader("Rcpt", _safe(recipient))
            connection.putheader("Content-Length", str(size))
            connection.endheaders()
            with open(message_path, "rb") as body:
                while chunk := body.read(65536):
                    connection.send(chunk)
            response = connection.getresponse()
            data = response.read(_MAX_ANSWER + 1)
        finally:
            connection.close()
    except (OSError, http.client.HTTPException) as exc:
        raise ScanFailed(f"rspamd at {where}: {exc or type(exc).__name__}") from None
    if response.status != 200:
        raise ScanFailed(f"rspamd at {where}: HTTP {response.status} {response.reason}")
    if len(data) > _MAX_ANSWER:
        raise ScanFailed(f"rspamd at {where}: answer over {_MAX_ANSWER} bytes")
    return _verdict(data, where)


def _verdict(data: bytes, where: str) -> ScanVerdict:
    try:
        answer = json.loads(data)
    except ValueError:
        raise ScanFailed(f"rspamd at {where}: the answer is not JSON") from None
    if not isinstance(answer, dict):
        raise ScanFailed(f"rspamd at {where}: the answer is not a JSON object")
    action_text = answer.get("action")
    action = _ACTIONS.get(action_text) if isinstance(action_text, str) else None
    if action is None:
        raise ScanFailed(f"rspamd at {where}: unknown action {action_text!r}")
    message = None
    messages = answer.get("messages")
    if isinstance(messages, dict) and isinstance(messages.get("smtp_message"), str):
        message = _printable(messages["smtp_message"])
    return ScanVerdict(
        action=action,
        rspamd_action=str(action_text),
        score=_number(answer.get("score")),
        required=_number(answer.get("required_score")),
        smtp_message=message or None,
    )


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _printable(text: str) -> str:
    """One line of printable ASCII, bounded: it goes into an SMTP reply."""
    return "".join(c if " " <= c <= "~" else " " for c in text)[:200].strip()


def _safe(value: str) -> str:
    """A header value without line breaks (a recipient or HELO name is client data)."""
    return "".join(c for c in value if c not in "\r\n")
