"""Journal statistics as values: a journal written by ``Journal`` itself (on a held clock),
with the lines ``session.py``, ``server.py`` and ``pickup.py`` write, counted exactly per hour
and per reason; the reply-to-reason table against the reply catalogue; which hour files
prune may remove."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import smtpkit.journal
from smtpkit.journal import Journal
from smtpkit.journalstats import (
    REASONS,
    REPLY_BUILDERS,
    REPLY_REASONS,
    Hour,
    compute,
    expired,
    hour_start,
    reason_for_code,
    reason_for_rejected,
    reason_for_reply,
)
from smtpkit.protocol import replies
from smtpkit.protocol.replies import Reply

H04 = datetime(2026, 11, 30, 4, tzinfo=UTC)
SINCE = H04 + timedelta(minutes=10)  # the span starts inside its first hour
END = H04 + timedelta(hours=3, minutes=40)  # 07:40


class Clock:
    """Stands in for the ``time`` module the journal reads its clock from."""

    def __init__(self) -> None:
        self.now = 0.0

    def time(self) -> float:
        return self.now


class Writer:
    """Writes journal lines through ``Journal`` at chosen times."""

    def __init__(self, directory: Path, clock: Clock) -> None:
        self.journal = Journal(directory)
        self.clock = clock

    def __call__(self, when: datetime, event: str, session: str, peer: str, **fields: Any) -> None:
        self.clock.now = when.timestamp()
        self.journal.write(event, session, peer, **fields)


def _refused_rcpt(
    w: Writer, when: datetime, sid: str, peer: str, to: str, sender: str, reply: Reply
) -> None:
    # As Session._journal_rcpt writes it.
    w(when, "rcpt", sid, peer, to=to, sender=sender, code=reply.code, text=str(reply))


def _message(
    w: Writer, when: datetime, sid: str, peer: str, sender: str, n: int, to: str = "bob@ok.test"
) -> None:
    """MAIL, RCPT and the stored line of an accepted message, as the session writes them."""
    w(when, "mail", sid, peer, sender=sender, size=None, code=250)
    w(when, "rcpt", sid, peer, to=to, sender=sender, code=250)
    w(
        when,
        "stored",
        sid,
        peer,
        id=f"{sid}.{n}",
        size=1234,
        sender=sender,
        to=[to],
        files=[f"{to}/new/x{n}"],
        auth={"spf": "pass", "dkim": [], "dmarc": "none"},
    )


def write_journal(directory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The journal every test of the statistics counts: hours 04, 05, 06 (one line, a reply
    of 05's) and 07 of 2026-11-30. The expected counts are in ``EXPECTED``."""
    clock = Clock()
    monkeypatch.setattr(smtpkit.journal, "time", clock)
    w = Writer(directory, clock)
    t = H04

    def at(minutes: float) -> datetime:
        return t + timedelta(minutes=minutes)

    # 04:05, before the span: none of it counts.
    w(at(5), "connect", "s0", "198.51.100.9:1000")
    _message(w, at(5), "s0", "198.51.100.9:1000", "early@before.test", 1)
    w(at(5), "close", "s0", "198.51.100.9:1000", reason="quit", messages=1)
    # s1: STARTTLS, a relay attempt among its recipients, two messages stored.
    p1 = "192.0.2.1:40001"
    w(at(15), "connect", "s1", p1)
    w(at(15), "helo", "s1", p1, name="mx.example.com", extended=True)
    w(at(15), "tls", "s1", p1, version="TLSv1.3", cipher="TLS_AES_256_GCM_SHA384")
    _refused_rcpt(
        w, at(15), "s1", p1, "x@elsewhere.test", "alice@Example.COM", replies.RELAY_DENIED
    )
    _message(w, at(15), "s1", p1, "alice@Example.COM", 1)
    _message(w, at(16), "s1", p1, "alice@example.com", 2)
    w(at(16), "close", "s1", p1, reason="quit", messages=2)
    # s2: an unknown user, then nothing.
    p2 = "192.0.2.2:40002"
    w(at(20), "connect", "s2", p2)
    w(at(20), "mail", "s2", p2, sender="m@spam.test", size=None, code=250)
    _refused_rcpt(w, at(20), "s2", p2, "nobody@ok.test", "m@spam.test", replies.UNKNOWN_USER)
    w(at(20), "close", "s2", p2, reason="peer closed", messages=0)
    # s3: on a blocklist (Session.refuse_service), and a connection over the per-IP limit.
    w(at(25), "connect", "s3", "203.0.113.7:5000", blocklisted="zen.example", code=554)
    w(at(25), "close", "s3", "203.0.113.7:5000", reason="554 ...", messages=0)
    w(at(30), "refused", "-", "192.0.2.1", code=421, reason="max_connections_per_ip")
    # s4: implicit TLS; a line too long twice, then a bare LF. The second too-long line's
    # reply is not written again (the same text), and another session's line comes between
    # the first rejected line and its reply, as workers' and sessions' lines do.
    p4 = "192.0.2.1:40004"
    w(at(40), "connect", "s4", p4, tls="TLSv1.3", cipher="TLS_AES_128_GCM_SHA256")
    w(at(40), "mail", "s4", p4, sender="bob@example.net", size=None, code=250)
    w(at(40), "rcpt", "s4", p4, to="bob@ok.test", sender="bob@example.net", code=250)
    w(at(40), "rejected", "s4", p4, size=100, code=550)
    p5 = "192.0.2.3:40005"
    w(at(41), "connect", "s5", p5)
    long = replies.DATA_LINE_TOO_LONG
    w(at(41), "reply", "s4", p4, code=long.code, text=str(long))
    w(at(42), "mail", "s4", p4, sender="bob@example.net", size=None, code=250)
    w(at(42), "rejected", "s4", p4, size=100, code=550)
    w(at(42.5), "mail", "s4", p4, sender="bob@example.net", size=None, code=250)
    w(at(42.5), "rejected", "s4", p4, size=100, code=550)
    bare = replies.BARE_NEWLINE_IN_DATA
    w(at(42.5), "reply", "s4", p4, code=bare.code, text=str(bare))
    w(at(42.5), "close", "s4", p4, reason="peer closed", messages=3)
    # s5: SPF, then DMARC, refused at the final dot.
    w(at(43), "mail", "s5", p5, sender="x@forged.test", size=None, code=250)
    spf = {"spf": "fail", "dkim": [], "dmarc": "fail"}
    w(at(43), "rejected", "s5", p5, size=200, code=550, auth=spf)
    refusal = replies.spf_failed("forged.test", "192.0.2.3")
    w(at(43), "reply", "s5", p5, code=550, text=str(refusal))
    w(at(44), "mail", "s5", p5, sender="y@strict.test", size=None, code=250)
    dmarc = {"spf": "pass", "dkim": ["fail strict.test"], "dmarc": "fail"}
    w(at(44), "rejected", "s5", p5, size=200, code=550, auth=dmarc)
    refusal = replies.dmarc_rejected("strict.test")
    w(at(44), "reply", "s5", p5, code=550, text=str(refusal))
    w(at(44), "close", "s5", p5, reason="quit", messages=2)
    # s6: connects at 04:59:59, STARTTLS and its message in the next hour. Its TLS counts
    # where it connected; its message where it was stored. The null sender.
    p6 = "192.0.2.4:40006"
    w(H04 + timedelta(minutes=59, seconds=59), "connect", "s6", p6)
    t = H04 + timedelta(hours=1)  # 05:00
    w(at(0.02), "tls", "s6", p6, version="TLSv1.2", cipher="ECDHE-RSA-AES256-GCM-SHA384")
    _message(w, at(0.1), "s6", p6, "", 1)
    w(at(0.1), "close", "s6", p6, reason="quit", messages=1)
    # s7 on submission: authentication required, a sender not owned, a From: not owned,
    # a declared size too big, one recipient too many.
    p7 = "[2001:db8::5]:40007"
    w(at(10), "connect", "s7", p7)
    need = replies.AUTH_REQUIRED
    w(at(10), "mail", "s7", p7, sender="carol@example.com", code=need.code, text=str(need))
    w(at(11), "auth", "s7", p7, mechanism="PLAIN", user="carol@example.com", result="ok")
    theirs = replies.SENDER_NOT_OWNED
    w(at(11), "mail", "s7", p7, sender="dan@example.com", code=theirs.code, text=str(theirs))
    w(at(12), "mail", "s7", p7, sender="carol@example.com", size=None, code=250)
    w(at(12), "rcpt", "s7", p7, to="eve@far.test", sender="carol@example.com", code=250)
    w(at(12), "rejected", "s7", p7, size=300, code=550, authors=["dan@example.com"])
    owned = replies.FROM_NOT_OWNED
    w(at(12), "reply", "s7", p7, code=owned.code, text=str(owned))
    big = replies.MESSAGE_TOO_BIG
    w(at(13), "mail", "s7", p7, sender="carol@example.com", code=big.code, text=str(big))
    w(at(14), "mail", "s7", p7, sender="carol@example.com", size=None, code=250)
    many = replies.TOO_MANY_RECIPIENTS
    _refused_rcpt(w, at(14), "s7", p7, "r101@far.test", "carol@example.com", many)
    w(at(15), "close", "s7", p7, reason="quit", messages=0)
    # s8: the content scanner refuses in its own words; then it fails, the admin having
    # chosen to fail closed, at 05:59:59, and the reply goes into the 06 file.
    p8 = "192.0.2.1:40008"
    w(at(20), "connect", "s8", p8)
    w(at(20), "mail", "s8", p8, sender="s@spam.test", size=None, code=250)
    w(at(20), "rejected", "s8", p8, size=50, code=550, scan="reject", score=15.5)
    w(at(20), "reply", "s8", p8, code=550, text="550 5.7.1 Gtube pattern")
    w(at(59.99), "rejected", "s8", p8, size=50, code=451, scan="failed: timed out")
    deferred = replies.scan_deferred(None)
    w(H04 + timedelta(hours=2), "reply", "s8", p8, code=451, text=str(deferred))
    w(H04 + timedelta(hours=2), "close", "s8", p8, reason="peer closed", messages=2)
    # The maildrop: a recipient refused, a file refused, one message stored.
    w(at(30), "rcpt", "local1a", "local", to="nobody@ok.test", sender="root@example.org",
      code=550, text=str(replies.UNKNOWN_USER))  # fmt: skip
    w(at(30), "rejected", "local1a", "local", file="1a.drop", sender="root@example.org",
      error="no recipient can be delivered")  # fmt: skip
    w(at(31), "stored", "local1b", "local", id="local1b.1", size=10, sender="root@example.org",
      to=["bob@ok.test"], files=["bob@ok.test/new/y"], uid=0)  # fmt: skip
    # Another version's wording of a relay refusal; the queue runner's lines count for
    # nothing here.
    w(at(40), "rcpt", "local1c", "local", to="z@far.test", sender="root@example.org",
      code=554, text="554 5.7.1 <z@far.test>: Relay access denied")  # fmt: skip
    w(at(41), "queued", "q1", "-", id="q1", sender="carol@example.com", recipients=1)
    w(at(41), "delivered", "q1", "mx.far.test", id="q1", to="eve@far.test", tls="TLSv1.3")
    # 07:30: one plain message; then a line still being written.
    t = H04 + timedelta(hours=3)
    p9 = "192.0.2.9:40009"
    w(at(30), "connect", "s9", p9)
    _message(w, at(30), "s9", p9, "dave@Example.NET", 1)
    w(at(30), "close", "s9", p9, reason="quit", messages=1)
    w.journal.close()
    with (directory / "2026_11_30_07").open("a") as fh:
        fh.write('{"time":"2026-11-30T07:31:00.000Z","session":"s10","peer":"192.0.2.10:1","ev')
    with (directory / "2026_11_30_05").open("a") as fh:
        fh.write("not a journal line\n")


def _zero() -> dict[str, int]:
    return dict.fromkeys(REASONS, 0)


# hour -> (connections, sessions, TLS sessions, accepted, refused, recipients refused)
EXPECTED: dict[str, tuple[int, int, int, int, dict[str, int], dict[str, int]]] = {
    "2026-11-30T04:00:00Z": (
        7,
        5,
        3,
        2,
        {**_zero(), "blocklisted": 1, "limits": 1, "other": 2, "bare_lf": 1, "spf": 1, "dmarc": 1},
        {**_zero(), "relay": 1, "unknown_user": 1},
    ),
    "2026-11-30T05:00:00Z": (
        2,
        2,
        0,
        2,
        {**_zero(), "policy": 3, "size": 1, "spam": 1, "other": 2},
        {**_zero(), "limits": 1, "unknown_user": 1, "relay": 1},
    ),
    "2026-11-30T06:00:00Z": (0, 0, 0, 0, _zero(), _zero()),
    "2026-11-30T07:00:00Z": (1, 1, 0, 1, _zero(), _zero()),
}


def test_counts_per_hour_and_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_journal(tmp_path, monkeypatch)
    stats = compute(tmp_path, SINCE, END)
    assert stats.files == 4
    got = {
        row["hour"]: (
            row["connections"],
            row["sessions"],
            row["tls_sessions"],
            row["accepted"],
            row["refused_by_reason"],
            row["recipients_refused_by_reason"],
        )
        for row in (hour.to_json() for hour in stats.hours)
    }
    assert got == EXPECTED
    total = stats.total()
    assert (total.connections, total.sessions, total.tls_sessions, total.accepted) == (
        10,
        8,
        3,
        5,
    )
    assert total.tls_share == 3 / 8
    assert sum(total.refused.values()) == 14
    assert sum(total.recipients_refused.values()) == 5


def test_top_lists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_journal(tmp_path, monkeypatch)
    stats = compute(tmp_path, SINCE, END)
    # Domains lower-cased; "<>" is the null sender; ties in name order.
    assert stats.top_sender_domains() == [
        ("example.com", 2),
        ("<>", 1),
        ("example.net", 1),
        ("example.org", 1),
    ]
    # Connections by address, without the port; the refused connection counts too.
    assert stats.top_peers() == [
        ("192.0.2.1", 4),
        ("192.0.2.2", 1),
        ("192.0.2.3", 1),
        ("192.0.2.4", 1),
        ("192.0.2.9", 1),
        ("2001:db8::5", 1),
        ("203.0.113.7", 1),
    ]
    assert stats.top_peers(2) == [("192.0.2.1", 4), ("192.0.2.2", 1)]


def test_the_span_starts_where_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_journal(tmp_path, monkeypatch)
    # From 04:00: s0's lines count too.
    early = compute(tmp_path, H04, END)
    assert early.hours[0].connections == 8
    assert ("before.test", 1) in early.top_sender_domains()
    # From 05:35: the 04 file is not read, and of 05 only what came from 05:35 on.
    late = compute(tmp_path, H04 + timedelta(hours=1, minutes=35), END)
    assert [h.start for h in late.hours] == [H04 + timedelta(hours=h) for h in (1, 2, 3)]
    assert late.files == 3
    first = late.hours[0]
    assert (first.connections, first.accepted, dict(first.refused)) == (0, 0, {"other": 1})
    assert dict(first.recipients_refused) == {"relay": 1}
    # At 05:30 exactly: the maildrop's lines of 05:30 count.
    first = compute(tmp_path, H04 + timedelta(hours=1, minutes=30), END).hours[0]
    assert (first.accepted, dict(first.refused)) == (1, {"other": 2})
    assert dict(first.recipients_refused) == {"relay": 1, "unknown_user": 1}


def test_hours_run_to_the_end_of_the_span(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_journal(tmp_path, monkeypatch)
    stats = compute(tmp_path, SINCE, END + timedelta(hours=2))
    assert [h.start for h in stats.hours][-3:] == [
        H04 + timedelta(hours=3),
        H04 + timedelta(hours=4),
        H04 + timedelta(hours=5),
    ]
    assert stats.hours[-1].to_json()["tls_share"] is None  # no session: no share


def test_no_hour_file_in_the_span(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_journal(tmp_path, monkeypatch)
    stats = compute(tmp_path, END + timedelta(hours=1), END + timedelta(hours=2))
    assert (stats.files, stats.hours, stats.lines) == (0, [], 0)
    assert compute(tmp_path / "missing", SINCE, END).files == 0


def test_json_document(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_journal(tmp_path, monkeypatch)
    doc = compute(tmp_path, SINCE, END).to_json()
    assert list(doc) == [
        "since",
        "until",
        "files",
        "lines",
        "reasons",
        "hours",
        "totals",
        "top_sender_domains",
        "top_peers",
    ]
    assert (doc["since"], doc["until"]) == ("2026-11-30T04:10:00Z", "2026-11-30T07:40:00Z")
    assert doc["reasons"] == list(REASONS)
    assert doc["hours"][0]["tls_share"] == 0.6
    assert doc["totals"]["refused"] == 14
    assert "hour" not in doc["totals"]
    assert doc["top_sender_domains"][0] == {"domain": "example.com", "messages": 2}
    assert doc["top_peers"][0] == {"address": "192.0.2.1", "connections": 4}


# --- the reasons -------------------------------------------------------------------------------
CATALOGUE = {
    name: value
    for name in replies.__all__
    if isinstance(value := getattr(replies, name), Reply) and value.code >= 400
}


def test_every_refusal_of_the_catalogue_has_a_reason() -> None:
    missing = sorted(name for name, reply in CATALOGUE.items() if reply not in REPLY_REASONS)
    assert missing == []
    assert set(REPLY_REASONS.values()) <= set(REASONS)
    assert all(reason in REASONS for _, reason in REPLY_BUILDERS)


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_a_reply_text_gives_its_reason(name: str) -> None:
    reply = CATALOGUE[name]
    assert reason_for_reply(str(reply)) == REPLY_REASONS[reply]


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (replies.RELAY_DENIED, "relay"),
        (replies.UNKNOWN_USER, "unknown_user"),
        (replies.MESSAGE_TOO_BIG, "size"),
        (replies.BARE_NEWLINE_IN_DATA, "bare_lf"),
        (replies.AUTH_REQUIRED, "policy"),
        (replies.SENDER_NOT_OWNED, "policy"),
        (replies.TOO_MANY_RECIPIENTS, "limits"),
        (replies.TOO_MANY_CONNECTIONS_FROM_IP, "limits"),
        (replies.SENDING_LIMIT, "limits"),
        (
            replies.blocklisted("192.0.2.1", "zen.spamhaus.org", "listed: see their site"),
            "blocklisted",
        ),
        (replies.blocklisted("2001:db8::1", "bl.example", None), "blocklisted"),
        (replies.spf_failed("a.example", "192.0.2.1"), "spf"),
        (replies.dmarc_rejected("b.example"), "dmarc"),
        (replies.spam_rejected(None), "spam"),
        (replies.scan_deferred(None), "spam"),
    ],
    ids=str,
)
def test_reasons_of_the_catalogue(reply: Reply, reason: str) -> None:
    assert reason_for_reply(str(reply)) == reason


def test_texts_the_catalogue_does_not_send() -> None:
    assert reason_for_reply(str(replies.spam_rejected("Gtube pattern"))) is None
    assert reason_for_reply("550 5.7.1 Relaying denied, sorry") is None
    assert reason_for_reply("") is None


@pytest.mark.parametrize(
    ("code", "text", "reason"),
    [
        (554, "554 5.7.1 <a@b.test>: Relay access denied", "relay"),
        (550, "550 5.7.1 relaying not permitted", "relay"),
        (550, "550 5.1.1 <x@ok.test>: Recipient address rejected: User unknown", "unknown_user"),
        (552, "552 Message too big", "size"),
        (554, "554 5.3.4 Message too big for system", "size"),
        (550, "550 5.7.23 SPF check failed", "spf"),
        (550, "550 5.7.1 Rejected by DMARC policy", "dmarc"),
        (554, "554 5.7.1 Spam message rejected", "spam"),
        (421, "421 4.7.0 Too many connections", "limits"),
        (452, "452 4.5.3 Too many recipients", "limits"),
        (450, "450 4.7.1 Rate limit exceeded", "limits"),
        (550, "550 5.6.0 Message refused: bare <LF> in data", "bare_lf"),
        (530, "530 5.7.0 Must authenticate", "policy"),
        (451, "451 4.3.0 Temporary lookup failure", "other"),
        (550, "", "other"),
    ],
)
def test_reasons_by_code(code: int, text: str, reason: str) -> None:
    assert reason_for_code(code, text) == reason


def _line(**fields: Any) -> dict[str, Any]:
    head = {"time": "2026-11-30T04:00:00.000Z", "session": "s", "peer": "-", "event": "rejected"}
    return head | fields


@pytest.mark.parametrize(
    ("fields", "text", "reason"),
    [
        ({"size": 5, "code": 550}, str(replies.BARE_NEWLINE_IN_DATA), "bare_lf"),
        ({"size": 5, "code": 550}, str(replies.DATA_LINE_TOO_LONG), "other"),
        ({"size": 5, "code": 550}, None, "bare_lf"),  # the text not written again
        ({"size": 5, "code": 552}, None, "size"),
        ({"code": 550, "auth": {"spf": "fail", "dmarc": "pass"}}, None, "spf"),
        ({"code": 550, "auth": {"spf": "fail", "dmarc": "fail"}}, None, "dmarc"),
        ({"code": 550, "auth": {"spf": "fail"}}, str(replies.dmarc_rejected("d.test")), "dmarc"),
        ({"code": 550, "auth": {}, "scan": "reject"}, "550 5.7.1 In its own words", "spam"),
        ({"code": 451, "scan": "soft reject"}, str(replies.scan_deferred("Try later")), "spam"),
        ({"code": 451, "scan": "failed: refused"}, str(replies.scan_deferred(None)), "other"),
        ({"code": 550, "authors": ["x@y.test"]}, None, "policy"),
        ({"file": "x", "error": "bad file"}, None, "other"),
    ],
)
def test_reasons_of_rejected_lines(fields: dict[str, Any], text: str | None, reason: str) -> None:
    assert reason_for_rejected(_line(**fields), text) == reason


def test_hour_adds_up() -> None:
    a, b = Hour(H04, 2, 2, 1, 1), Hour(H04, 3, 1, 1, 0)
    a.refused["spam"] += 1
    b.refused["spam"] += 2
    a.add(b)
    assert (a.connections, a.sessions, a.tls_sessions, a.accepted, a.refused["spam"]) == (
        5,
        3,
        2,
        1,
        3,
    )


# --- prune ---------------------------------------------------------------------------------------
NOW = datetime(2026, 11, 30, 8, 32, tzinfo=UTC)


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "journal"
    folder.mkdir()
    for name in (
        "2026_11_30_09",  # a later hour: a clock set wrong
        "2026_11_30_08",  # the current hour
        "2026_11_30_07",
        "2026_11_30_06",
        "2026_10_01_00",
        "2026_13_01_00",  # the shape of an hour file, but no hour
        "2026_11_30_05.gz",
        "notes",
    ):
        (folder / name).write_text(name)
    (folder / "2026_11_01_00").mkdir()  # a folder with an hour's name
    os.symlink(folder / "2026_10_01_00", folder / "2026_11_02_00")
    return folder


def test_expired_hour_files(tmp_path: Path) -> None:
    folder = _folder(tmp_path)

    def names(cutoff: datetime) -> list[str]:
        return [path.name for path, _ in expired(folder, cutoff, NOW)]

    # An hour counts once it has ended: 06 ended at 07:00, 07 only at 08:00.
    assert names(NOW - timedelta(hours=1)) == ["2026_10_01_00", "2026_11_30_06"]
    assert names(NOW.replace(minute=0)) == ["2026_10_01_00", "2026_11_30_06", "2026_11_30_07"]
    assert names(NOW - timedelta(days=30)) == ["2026_10_01_00"]
    # Never the current hour's file nor a later one, whatever the cut-off.
    assert names(NOW + timedelta(hours=5)) == ["2026_10_01_00", "2026_11_30_06", "2026_11_30_07"]
    assert expired(folder, NOW, NOW)[0] == (folder / "2026_10_01_00", len("2026_10_01_00"))
    assert expired(tmp_path / "missing", NOW, NOW) == []


@pytest.mark.parametrize(
    ("name", "start"),
    [
        ("2026_11_30_07", datetime(2026, 11, 30, 7, tzinfo=UTC)),
        ("2026_13_01_00", None),
        ("2026_11_30_24", None),
        ("2026_11_30_7", None),
        ("2026_11_30_07.gz", None),
        ("notes", None),
    ],
)
def test_hour_start(name: str, start: datetime | None) -> None:
    assert hour_start(name) == start
