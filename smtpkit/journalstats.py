"""What the journal says in numbers: ``smtpkit journal stats`` and ``prune``, as values.

The statistics are counted per UTC hour, the hour of the file a line is in: connections,
messages accepted (``stored``), messages and recipients refused, each refusal put in one of
a small closed set of reasons (``REASONS``), and the share of sessions that used TLS; over
the whole span, the busiest sender domains and client addresses. Nothing here prints.

Why the reading is done the way it is: a busy server writes a million lines a day, and most
of them (``helo``, accepted recipients, ``close``, the queue runner's lines) count for
nothing here. Each line's event name is sliced out of its bytes, and only the few kinds
that count, and of those only refusals where that shows in the bytes, are parsed as JSON.
The files are read forwards in large blocks; memory grows with the number of sessions open
at once, never with the journal.

The reasons come from the replies' exact texts, looked up in a table keyed by the reply
catalogue's own constants (``REPLY_REASONS``), so a reply whose text changes moves with it.
A text the catalogue does not know (a scanner's own words, a journal written by another
version) falls back to its codes (``reason_for_code``).
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from smtpkit.journal import _is_hour_file, hour_name
from smtpkit.protocol import replies
from smtpkit.protocol.replies import Reply

__all__ = [
    "REASONS",
    "REPLY_BUILDERS",
    "REPLY_REASONS",
    "TOP",
    "Hour",
    "Stats",
    "compute",
    "expired",
    "hour_start",
    "reason_for_code",
    "reason_for_rejected",
    "reason_for_reply",
]

TOP: Final = 10  # entries in the top lists
BLOCK: Final = 1024 * 1024  # bytes read at a time: large blocks keep the per-line cost low

# --- reasons -----------------------------------------------------------------------------------
RELAY: Final = "relay"
UNKNOWN_USER: Final = "unknown_user"
SIZE: Final = "size"
BARE_LF: Final = "bare_lf"  # bare CR or LF: how SMTP smuggling starts
POLICY: Final = "policy"  # authentication, TLS, sending as someone else
BLOCKLISTED: Final = "blocklisted"
SPF: Final = "spf"
DMARC: Final = "dmarc"
SPAM: Final = "spam"
LIMITS: Final = "limits"  # connection, recipient, error, time and sending limits
OTHER: Final = "other"

REASONS: Final = (
    RELAY,
    UNKNOWN_USER,
    SIZE,
    BARE_LF,
    POLICY,
    BLOCKLISTED,
    SPF,
    DMARC,
    SPAM,
    LIMITS,
    OTHER,
)

# Every refusal in the catalogue, by its constant: tests/test_journalstats.py checks that no
# 4xx or 5xx constant is missing, so a new reply must be given its reason here.
REPLY_REASONS: Final[Mapping[Reply, str]] = {
    replies.RELAY_DENIED: RELAY,
    replies.UNKNOWN_USER: UNKNOWN_USER,
    replies.MAILBOX_REFUSED: UNKNOWN_USER,
    replies.MESSAGE_TOO_BIG: SIZE,
    replies.BARE_NEWLINE_IN_DATA: BARE_LF,
    replies.BARE_NEWLINE_IN_COMMAND: BARE_LF,
    replies.TLS_REQUIRED: POLICY,
    replies.AUTH_REQUIRED: POLICY,
    replies.AUTH_FAILED: POLICY,
    replies.AUTH_NEEDS_TLS: POLICY,
    replies.AUTH_THROTTLED: POLICY,
    replies.AUTH_CANCELLED: POLICY,
    replies.AUTH_BAD_RESPONSE: POLICY,
    replies.AUTH_NOT_OFFERED: POLICY,
    replies.AUTH_ALREADY: POLICY,
    replies.AUTH_IN_TRANSACTION: POLICY,
    replies.AUTH_UNKNOWN_MECHANISM: POLICY,
    replies.TOO_MANY_AUTH_FAILURES: POLICY,
    replies.SENDER_NOT_OWNED: POLICY,
    replies.FROM_NOT_OWNED: POLICY,
    replies.PROXY_NOT_ALLOWED: POLICY,
    replies.TOO_MANY_CONNECTIONS: LIMITS,
    replies.TOO_MANY_CONNECTIONS_FROM_IP: LIMITS,
    replies.TOO_MANY_RECIPIENTS: LIMITS,
    replies.TOO_MANY_ERRORS: LIMITS,
    replies.SESSION_TOO_LONG: LIMITS,
    replies.SENDING_LIMIT: LIMITS,
    # Our own trouble, or a client that does not speak SMTP well: neither says anything
    # about who is sending.
    replies.DATA_LINE_TOO_LONG: OTHER,
    replies.NON_ASCII_ADDRESS: OTHER,
    replies.BAD_DESTINATION: OTHER,
    replies.UNKNOWN_PARAMETER: OTHER,
    replies.SHUTTING_DOWN: OTHER,
    replies.TIMEOUT: OTHER,
    replies.LOCAL_ERROR: OTHER,
    replies.STORAGE_FULL: OTHER,
    replies.MAILBOX_SERVER_UNAVAILABLE: OTHER,
    replies.MAILBOX_UNAVAILABLE: OTHER,
    replies.TLS_NOT_AVAILABLE: OTHER,
    replies.AUTH_UNAVAILABLE: OTHER,
    replies.UNKNOWN_COMMAND: OTHER,
    replies.COMMAND_TOO_LONG: OTHER,
    replies.SYNTAX_ERROR_ARGS: OTHER,
    replies.SYNTAX_ERROR_PARAMS: OTHER,
    replies.EXPN_DISABLED: OTHER,
    replies.BAD_SEQUENCE: OTHER,
    replies.NEED_HELO: OTHER,
    replies.SENDER_ALREADY: OTHER,
    replies.NO_VALID_RECIPIENTS: OTHER,
    replies.TLS_ALREADY_ACTIVE: OTHER,
    replies.NON_ASCII_HELO: OTHER,
    replies.BDAT_UNREADABLE: OTHER,
    replies.DATA_AFTER_BDAT: OTHER,
    replies.BINARYMIME_NEEDS_BDAT: OTHER,
    replies.BDAT_NEEDS_EHLO: OTHER,
}

_MARK = "MARKMARK"  # stands in for the values of a built reply, to find its fixed start


def _blocklisted(value: str) -> Reply:
    return replies.blocklisted(value, value, value)


def _spf_failed(value: str) -> Reply:
    return replies.spf_failed(value, value)


def _spam_rejected(value: str) -> Reply:
    # With the scanner's own words the text is anything: only its default can be matched.
    return replies.spam_rejected(None)


def _scan_deferred(value: str) -> Reply:
    return replies.scan_deferred(None)


# The catalogue's replies built from values, each called with a marker: the text before the
# marker is what every such reply starts with (the whole text when the values do not show).
REPLY_BUILDERS: Final[tuple[tuple[Callable[[str], Reply], str], ...]] = (
    (_blocklisted, BLOCKLISTED),
    (_spf_failed, SPF),
    (replies.dmarc_rejected, DMARC),
    (_spam_rejected, SPAM),
    (_scan_deferred, SPAM),
)


def _exact_and_prefixes() -> tuple[dict[str, str], tuple[tuple[str, str], ...]]:
    exact = {str(reply): reason for reply, reason in REPLY_REASONS.items()}
    prefixes: list[tuple[str, str]] = []
    for build, reason in REPLY_BUILDERS:
        text = str(build(_MARK))
        at = text.find(_MARK)
        if at < 0:
            exact[text] = reason
        else:
            prefixes.append((text[:at], reason))
    return exact, tuple(prefixes)


_EXACT, _PREFIXES = _exact_and_prefixes()


def reason_for_reply(text: str) -> str | None:
    """The reason for a reply the catalogue sends, by its text (``str(reply)``, as the
    journal writes it); ``None`` for a text it does not send."""
    reason = _EXACT.get(text)
    if reason is not None:
        return reason
    for prefix, reason in _PREFIXES:
        if text.startswith(prefix):
            return reason
    return None


_ENHANCED = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")


def reason_for_code(code: int, text: str = "") -> str:
    """The reason for a refusal the catalogue does not know, from its reply code, its
    enhanced code (RFC 3463) and a few words: replies of other versions keep their codes
    more faithfully than their wording."""
    words = text.split(None, 2)
    enhanced = words[1] if len(words) > 1 and _ENHANCED.fullmatch(words[1]) else ""
    lowered = text.lower()
    if code == 552 or enhanced.endswith(".3.4"):
        return SIZE
    if enhanced.endswith(".1.1"):
        return UNKNOWN_USER
    if enhanced.endswith(".7.23"):
        return SPF
    if "dmarc" in lowered:
        return DMARC
    if "spam" in lowered:
        return SPAM
    if "relay" in lowered and (code in (550, 554) or enhanced.startswith("5.7.")):
        return RELAY
    if code == 421 or enhanced == "4.5.3" or "limit" in lowered:
        return LIMITS
    if "bare <cr>" in lowered or "bare <lf>" in lowered:
        return BARE_LF
    if enhanced.startswith(("5.7.", "4.7.")):
        return POLICY
    return OTHER


def _refusal_reason(code: int, text: str) -> str:
    return reason_for_reply(text) or reason_for_code(code, text)


def reason_for_rejected(record: Mapping[str, Any], text: str | None) -> str:
    """The reason a ``rejected`` line's message was refused, with the text of the reply
    that refused it when the journal has it (the session's next ``reply`` line).

    The line's own fields come first where they decide: ``scan`` is only there when the
    content scanner was asked, and nothing after it can refuse, so the scanner refused it
    (with words of its own, or because it failed and the admin chose to fail closed);
    ``authors`` is the From: check of submission. Without the text, the authentication
    results tell SPF and DMARC apart.
    """
    scan = record.get("scan")
    if isinstance(scan, str):
        return OTHER if scan.startswith("failed") else SPAM
    if "authors" in record:
        return POLICY
    code = record.get("code")
    if not isinstance(code, int):
        return OTHER  # the maildrop's: a file that could not be read or routed
    if text is not None:
        return _refusal_reason(code, text)
    auth = record.get("auth")
    if isinstance(auth, dict):
        if auth.get("spf") == "fail" and auth.get("dmarc") != "fail":
            return SPF
        if auth.get("dmarc") == "fail":
            return DMARC
    if code == 550 and set(record) <= {"time", "session", "peer", "event", "size", "code"}:
        # The DATA reader's own 550s, bare CR/LF and overlong lines, cannot be told apart
        # without the reply; smuggling attempts are by far the commoner.
        return BARE_LF
    return reason_for_code(code)


# --- the values --------------------------------------------------------------------------------
@dataclass(slots=True)
class Hour:
    """One UTC hour's counts (or a span's, for the totals).

    ``connections`` counts every connection the server answered, those turned away by a
    blocklist or the connection limits included; ``sessions`` only those that were greeted,
    the ones that could have used TLS, so that refused ones do not dilute its share.
    """

    start: datetime | None
    connections: int = 0
    sessions: int = 0
    tls_sessions: int = 0
    accepted: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    recipients_refused: Counter[str] = field(default_factory=Counter)

    @property
    def tls_share(self) -> float | None:
        return self.tls_sessions / self.sessions if self.sessions else None

    def add(self, other: Hour) -> None:
        self.connections += other.connections
        self.sessions += other.sessions
        self.tls_sessions += other.tls_sessions
        self.accepted += other.accepted
        self.refused.update(other.refused)
        self.recipients_refused.update(other.recipients_refused)

    def to_json(self) -> dict[str, Any]:
        """Every reason is present, zeros too, so that a consumer can rely on the keys."""
        found: dict[str, Any] = {}
        if self.start is not None:
            found["hour"] = self.start.strftime("%Y-%m-%dT%H:%M:%SZ")
        share = self.tls_share
        found.update(
            connections=self.connections,
            sessions=self.sessions,
            tls_sessions=self.tls_sessions,
            tls_share=None if share is None else round(share, 4),
            accepted=self.accepted,
            refused=sum(self.refused.values()),
            refused_by_reason={r: self.refused[r] for r in REASONS},
            recipients_refused=sum(self.recipients_refused.values()),
            recipients_refused_by_reason={r: self.recipients_refused[r] for r in REASONS},
        )
        return found


def _top(counts: Counter[str], count: int) -> list[tuple[str, int]]:
    """The ``count`` largest, ties in name order, so that the same journal always gives
    the same list."""
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:count]


@dataclass(slots=True)
class Stats:
    """The statistics of the journal from ``start`` to ``end``: ``hours`` runs without gaps
    from the first hour file in the span to ``end``'s hour (or the last file's, if later)."""

    start: datetime
    end: datetime
    hours: list[Hour]
    sender_domains: Counter[str]  # messages accepted, by the sender's domain ("<>": none)
    peers: Counter[str]  # connections, by client address
    files: int  # hour files read
    lines: int  # lines in the span

    def total(self) -> Hour:
        total = Hour(None)
        for hour in self.hours:
            total.add(hour)
        return total

    def top_sender_domains(self, count: int = TOP) -> list[tuple[str, int]]:
        return _top(self.sender_domains, count)

    def top_peers(self, count: int = TOP) -> list[tuple[str, int]]:
        return _top(self.peers, count)

    def to_json(self) -> dict[str, Any]:
        """One JSON document: the span, the reasons, the hours, the totals, the top lists."""
        return {
            "since": self.start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "until": self.end.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "files": self.files,
            "lines": self.lines,
            "reasons": list(REASONS),
            "hours": [hour.to_json() for hour in self.hours],
            "totals": self.total().to_json(),
            "top_sender_domains": [
                {"domain": domain, "messages": n} for domain, n in self.top_sender_domains()
            ],
            "top_peers": [
                {"address": address, "connections": n} for address, n in self.top_peers()
            ],
        }


# --- reading -----------------------------------------------------------------------------------
def hour_start(name: str) -> datetime | None:
    """The start of the hour an hour file is named for; ``None`` for any other name
    (``2026_13_01_00`` has the shape of one but is no hour)."""
    if not _is_hour_file(name):
        return None
    try:
        return datetime.strptime(name, "%Y_%m_%d_%H").replace(tzinfo=UTC)
    except ValueError:
        return None


def _hour_files(directory: Path) -> list[tuple[datetime, Path]]:
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        start = hour_start(name)
        if start is not None:
            found.append((start, directory / name))
    found.sort()
    return found


def _lines(path: Path) -> Iterator[list[bytes]]:
    """The complete lines of ``path`` a block at a time, without their newlines; a last line
    without one is still being written and is left out, as ``journal.tail`` does."""
    try:
        fh = path.open("rb")
    except FileNotFoundError:  # pruned while we read
        return
    with fh:
        pending = b""
        while True:
            block = fh.read(BLOCK)
            if not block:
                return
            lines = (pending + block).split(b"\n") if pending else block.split(b"\n")
            pending = lines.pop()
            yield lines


def _field(line: bytes, key: bytes) -> bytes:
    """A string field of the journal's head (``session``, ``peer``) straight from the bytes:
    our own ids and addresses, which hold no quote or escape."""
    at = line.find(key)
    if at < 0:
        return b""
    at += len(key)
    return line[at : line.find(b'"', at)]


def _address(peer: bytes) -> str:
    """``192.0.2.1:4000`` and ``[2001:db8::1]:25`` without the port; a bare address (the
    ``refused`` lines') as it is."""
    if peer.startswith(b"["):
        return peer[1 : peer.find(b"]")].decode("ascii", "replace")
    host, colon, port = peer.rpartition(b":")
    if colon and port.isdigit() and b":" not in host:
        return host.decode("ascii", "replace")
    return peer.decode("ascii", "replace")


def _domain(sender: object) -> str:
    if not isinstance(sender, str) or not sender:
        return "<>"
    return sender.rpartition("@")[2].lower() or sender.lower()


_SESSION = b'"session":"'
_PEER = b'"peer":"'
_EVENT = b'"event":"'
_ACCEPTED = b',"code":250}'  # how an accepted mail or rcpt line ends (code is its last field)
_PLAIN_CONNECT = b'"event":"connect"}'  # a connect line with no TLS and no blocklist


def _loads(line: bytes) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _code(record: Mapping[str, Any]) -> int:
    code = record.get("code")
    return code if isinstance(code, int) else 0


def _text(record: Mapping[str, Any]) -> str:
    text = record.get("text")
    return text if isinstance(text, str) else ""


class _Counting:
    """The state of one pass over the span."""

    def __init__(self) -> None:
        self.sender_domains: Counter[str] = Counter()
        self.peers: Counter[str] = Counter()
        self.lines = 0
        # Open sessions, by id: the hour they connected in, where their TLS is counted.
        self.open: dict[bytes, Hour] = {}
        # A ``rejected`` line waiting for the reply that refused the message, which the
        # session journals next unless it sent the same text before (then it is counted, not
        # written): the hour, the line and its code.
        self.pending: dict[bytes, tuple[Hour, dict[str, Any], int]] = {}
        # Per session, the texts that refused messages, by code (None: more than one), for
        # the refusals whose text was not written again.
        self.texts: dict[bytes, dict[int, str | None]] = {}

    def feed(self, hour: Hour, lines: list[bytes], floor: bytes | None) -> None:
        """Count ``lines`` of ``hour``'s file; with ``floor``, only those whose time is at or
        after it (the span's first hour)."""
        pending = self.pending
        self.lines += len(lines)
        for line in lines:
            at = line.find(_EVENT)
            if at < 0:
                self.lines -= 1
                continue
            if floor is not None and line[9:33] < floor:
                self.lines -= 1
                continue
            at += 9
            event = line[at : line.find(b'"', at)]
            if pending:
                sid = _field(line, _SESSION)
                if sid in pending and self._settle(sid, event, line):
                    continue
            if event == b"rcpt":
                if not line.endswith(_ACCEPTED):
                    record = _loads(line)
                    if record is not None:
                        reason = _refusal_reason(_code(record), _text(record))
                        hour.recipients_refused[reason] += 1
            elif event == b"connect":
                self._connect(hour, line)
            elif event == b"close":
                if self.open or self.texts:
                    self._close(_field(line, _SESSION))
            elif event == b"stored":
                record = _loads(line)
                if record is not None:
                    hour.accepted += 1
                    self.sender_domains[_domain(record.get("sender"))] += 1
            elif event == b"mail":
                if not line.endswith(_ACCEPTED):
                    record = _loads(line)
                    if record is not None:
                        hour.refused[_refusal_reason(_code(record), _text(record))] += 1
            elif event == b"tls":
                opened = self.open.get(_field(line, _SESSION))
                if opened is not None:
                    opened.tls_sessions += 1
            elif event == b"rejected":
                self._rejected(hour, line)
            elif event == b"refused":
                hour.connections += 1
                hour.refused[LIMITS] += 1
                self.peers[_address(_field(line, _PEER))] += 1

    def _connect(self, hour: Hour, line: bytes) -> None:
        hour.connections += 1
        self.peers[_address(_field(line, _PEER))] += 1
        sid = _field(line, _SESSION)
        if line.endswith(_PLAIN_CONNECT):
            hour.sessions += 1
            self.open[sid] = hour
            return
        record = _loads(line)
        if record is None:
            return
        if "blocklisted" in record:
            hour.refused[BLOCKLISTED] += 1
            return  # refused at once: never a session
        hour.sessions += 1
        if "tls" in record:
            hour.tls_sessions += 1  # implicit TLS (port 465)
            return
        self.open[sid] = hour

    def _rejected(self, hour: Hour, line: bytes) -> None:
        record = _loads(line)
        if record is None:
            return
        code = record.get("code")
        if not isinstance(code, int):
            # The maildrop's: no reply follows.
            hour.refused[reason_for_rejected(record, None)] += 1
            return
        self.pending[_field(line, _SESSION)] = (hour, record, code)

    def _settle(self, sid: bytes, event: bytes, line: bytes) -> bool:
        """A line of a session with a ``rejected`` line waiting: the refusal's reply (True:
        nothing more to count in it), or a sign that none is coming."""
        hour, rejected, code = self.pending.pop(sid)
        if event == b"reply":
            record = _loads(line)
            if record is not None and _code(record) == code:
                text = _text(record)
                texts = self.texts.setdefault(sid, {})
                texts[code] = text if texts.get(code, text) == text else None
                hour.refused[reason_for_rejected(rejected, text)] += 1
                return True
        self._unanswered(sid, hour, rejected, code)
        return False

    def _unanswered(self, sid: bytes, hour: Hour, rejected: dict[str, Any], code: int) -> None:
        text = self.texts.get(sid, {}).get(code)
        hour.refused[reason_for_rejected(rejected, text)] += 1

    def _close(self, sid: bytes) -> None:
        self.open.pop(sid, None)
        waiting = self.pending.pop(sid, None)
        if waiting is not None:
            self._unanswered(sid, *waiting)
        self.texts.pop(sid, None)

    def finish(self) -> None:
        for sid, waiting in list(self.pending.items()):
            self._unanswered(sid, *waiting)
        self.pending.clear()


def _stamp(when: datetime) -> bytes:
    """``when`` as the journal writes times, to compare with a line's bytes."""
    return (when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z").encode("ascii")


def compute(directory: Path, start: datetime, end: datetime | None = None) -> Stats:
    """The statistics of the journal in ``directory`` from ``start`` (aware) to ``end``
    (default: now). Every line of the hour files from ``start``'s hour on counts, and of
    that first hour only the lines at or after ``start``."""
    start = start.astimezone(UTC)
    end = datetime.now(UTC) if end is None else end.astimezone(UTC)
    first = start.replace(minute=0, second=0, microsecond=0)
    files = [(when, path) for when, path in _hour_files(directory) if when >= first]
    counting = _Counting()
    hours: dict[datetime, Hour] = {}
    floor = _stamp(start)
    for when, path in files:
        hour = hours.setdefault(when, Hour(when))
        for lines in _lines(path):
            counting.feed(hour, lines, floor if when == first else None)
    counting.finish()
    rows: list[Hour] = []
    if files:
        when = files[0][0]
        last = max(files[-1][0], end.replace(minute=0, second=0, microsecond=0))
        while when <= last:
            rows.append(hours.get(when) or Hour(when))
            when += timedelta(hours=1)
    return Stats(
        start, end, rows, counting.sender_domains, counting.peers, len(files), counting.lines
    )


# --- retention ---------------------------------------------------------------------------------
def expired(
    directory: Path, cutoff: datetime, now: datetime | None = None
) -> list[tuple[Path, int]]:
    """The hour files whose hour ended at or before ``cutoff`` (every event in them is older),
    oldest first, with their sizes.

    The hour is read from the name, never from the modification time, which a copy or a
    late append changes. Only regular files with an hour's name count, and never the
    current hour's file (or a later one, from a clock set wrong), whatever ``cutoff`` is:
    the server is writing it.
    """
    now = datetime.now(UTC) if now is None else now.astimezone(UTC)
    current = hour_name(now)
    found: list[tuple[Path, int]] = []
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return []
    for entry in entries:
        start = hour_start(entry.name)
        if start is None or entry.name >= current or start + timedelta(hours=1) > cutoff:
            continue
        if not entry.is_file(follow_symlinks=False):
            continue
        found.append((Path(entry.path), entry.stat(follow_symlinks=False).st_size))
    found.sort()
    return found
