"""smtpkit.maildrop: the file format, sendmail's input rules, dropping durably and safely,
reading hostile files, and the folder's permissions between local users."""

from __future__ import annotations

import errno
import io
import json
import os
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtpkit import maildrop
from smtpkit.maildrop import (
    MAX_ENVELOPE,
    DropEnvelope,
    DropFailed,
    MaildropError,
    MaildropUnreachable,
    MessageTooBig,
    SendmailInput,
    drop,
    encode_envelope,
    ensure_maildrop,
    leftovers,
    pending,
    read,
)
from tests.conftest import unavailable

NOBODY = 65534
SERVICE = 54320  # the data folder's owner: a uid with no user, as test_check does
STRANGER = 54321  # another ordinary local user

LIMIT = 1024 * 1024


def normalize(data: bytes, *, ignore_dots: bool = False, chunk: int = 65536) -> bytes:
    source = SendmailInput(io.BytesIO(data), ignore_dots=ignore_dots, chunk=chunk)
    pieces = []
    while piece := source.readline():
        pieces.append(piece)
    return b"".join(pieces)


@pytest.fixture
def box(tmp_path: Path) -> Path:
    return ensure_maildrop(tmp_path)


def dropped_message(path: Path) -> tuple[DropEnvelope, bytes]:
    with read(path, max_size=LIMIT) as found:
        return found.envelope, b"".join(found.chunks())


def everything_in(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


# --- sendmail's input -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "ignore_dots", "expected"),
    [
        (b"a\nb\n", False, b"a\r\nb\r\n"),  # bare LF, as sendmail's input has
        (b"a\r\nb\r\n", False, b"a\r\nb\r\n"),
        (b"a\rb\n", False, b"a\rb\r\n"),  # a lone CR is data: the server judges it
        (b"a\r\r\n", False, b"a\r\r\n"),
        (b"last line", False, b"last line\r\n"),
        (b"ends in CR\r", False, b"ends in CR\r\r\n"),
        (b"", False, b""),
        (b"a\n.\nafter\n", False, b"a\r\n"),  # a single dot ends the input
        (b"a\r\n.\r\nafter\r\n", False, b"a\r\n"),
        (b"a\n.", False, b"a\r\n"),
        (b"a\n.\nafter\n", True, b"a\r\n.\r\nafter\r\n"),  # -i: the dot is a line
        (b"a\n..\nb\n", False, b"a\r\n..\r\nb\r\n"),  # no dot-stuffing outside SMTP
        (b"a\n. \n.x\n", False, b"a\r\n. \r\n.x\r\n"),
    ],
)
def test_sendmail_input_rules(given: bytes, ignore_dots: bool, expected: bytes) -> None:
    assert normalize(given, ignore_dots=ignore_dots) == expected


@settings(max_examples=300, deadline=None)
@given(
    data=st.lists(st.sampled_from([b"a", b".", b"\r", b"\n", b"\r\n", b"xy"])).map(b"".join),
    ignore_dots=st.booleans(),
    chunk=st.integers(min_value=3, max_value=9),
)
def test_sendmail_input_is_split_proof_and_idempotent(
    data: bytes, ignore_dots: bool, chunk: int
) -> None:
    whole = normalize(data, ignore_dots=ignore_dots)
    assert normalize(data, ignore_dots=ignore_dots, chunk=chunk) == whole
    assert normalize(whole, ignore_dots=ignore_dots) == whole
    assert normalize(whole, ignore_dots=ignore_dots, chunk=chunk) == whole


def test_long_lines_come_in_pieces() -> None:
    source = SendmailInput(io.BytesIO(b"x" * 100 + b"\n"), ignore_dots=False, chunk=16)
    pieces = []
    while piece := source.readline():
        pieces.append(piece)
    assert max(len(p) for p in pieces) <= 16
    assert b"".join(pieces) == b"x" * 100 + b"\r\n"


# --- the format ---------------------------------------------------------------------------

HOSTILE = DropEnvelope(
    recipients=(
        'bob@example.org\nflags ["ignore-dots"]',
        'x"y@example.org',
        "a:b@example.org",
        'sender "root"\r\n\r\nSubject: injected',
        "jörg@bücher.example",
        "\U0001f600@example.org",
        "back\\slash@example.org",
    ),
    sender="evil\n\nsender@example.org",
    full_name='The "Boss", \\ ::',
    extract_recipients=True,
    ignore_dots=True,
)


def test_format_is_exact() -> None:
    envelope = DropEnvelope(recipients=("alice@example.org", "root"), full_name="Cron Daemon")
    assert encode_envelope(envelope) == (
        b"smtpkit-maildrop 1\n"
        b"sender null\n"
        b'full-name "Cron Daemon"\n'
        b'recipients ["alice@example.org", "root"]\n'
        b"flags []\n"
        b"\n"
    )


def test_format_with_dsn_requests_is_version_2() -> None:
    envelope = DropEnvelope(
        recipients=("alice@example.org",),
        notify=frozenset({"DELAY", "SUCCESS"}),
        ret="HDRS",
        envid="cron+job=1 \\x",
    )
    assert encode_envelope(envelope) == (
        b"smtpkit-maildrop 2\n"
        b"sender null\n"
        b"full-name null\n"
        b'recipients ["alice@example.org"]\n'
        b"flags []\n"
        b'dsn {"notify": ["SUCCESS", "DELAY"], "ret": "HDRS", "envid": "cron+job=1 \\\\x"}\n'
        b"\n"
    )
    # Only -V: the rest stays null (not given), as SMTP without NOTIFY and RET.
    assert encode_envelope(DropEnvelope(recipients=("a",), envid="e")).splitlines()[5] == (
        b'dsn {"notify": null, "ret": null, "envid": "e"}'
    )


@pytest.mark.parametrize(
    "envelope",
    [
        DropEnvelope(recipients=("a@example.org",), notify=frozenset({"NEVER"})),
        DropEnvelope(recipients=("a@example.org",), ret="FULL"),
        DropEnvelope(recipients=("a@example.org",), envid="x" * 100),
        DropEnvelope(
            recipients=("a@example.org", "root"),
            sender="",
            notify=frozenset({"SUCCESS", "FAILURE", "DELAY"}),
            ret="HDRS",
            envid="+=" * 16,
            ignore_dots=True,
        ),
    ],
)
def test_dsn_requests_round_trip(box: Path, envelope: DropEnvelope) -> None:
    path = drop(box, envelope, io.BytesIO(b"Subject: x\n\nhi\n"), max_size=LIMIT)
    assert dropped_message(path) == (envelope, b"Subject: x\r\n\r\nhi\r\n")


def test_a_version_1_file_still_reads_as_before(tmp_path: Path) -> None:
    # What smtpkit-sendmail of the last release left behind, still there after an upgrade.
    path = tmp_path / "old"
    path.write_bytes(
        b'smtpkit-maildrop 1\nsender "root@example.org"\nfull-name "Cron Daemon"\n'
        b'recipients ["alice@example.org", "root"]\nflags ["extract-recipients", "ignore-dots"]'
        b"\n\nSubject: old\r\n\r\nhi\r\n"
    )
    assert dropped_message(path) == (
        DropEnvelope(
            recipients=("alice@example.org", "root"),
            sender="root@example.org",
            full_name="Cron Daemon",
            extract_recipients=True,
            ignore_dots=True,
        ),
        b"Subject: old\r\n\r\nhi\r\n",
    )


@pytest.mark.parametrize(
    ("envelope", "reason"),
    [
        (DropEnvelope(recipients=("a",), notify=frozenset()), "NOTIFY: must be NEVER or"),
        (DropEnvelope(recipients=("a",), notify=frozenset({"success"})), "NOTIFY: must be"),
        (
            DropEnvelope(recipients=("a",), notify=frozenset({"NEVER", "DELAY"})),
            "NOTIFY: NEVER cannot be combined",
        ),
        (DropEnvelope(recipients=("a",), ret="hdrs"), "RET: must be FULL or HDRS"),  # type: ignore[arg-type]
        (DropEnvelope(recipients=("a",), envid=""), "ENVID: a value is required"),
        (DropEnvelope(recipients=("a",), envid="a\nb"), "ENVID: must be printable US-ASCII"),
        (DropEnvelope(recipients=("a",), envid="\u00e9"), "ENVID: must be printable US-ASCII"),
        (DropEnvelope(recipients=("a",), envid="+" * 34), "ENVID: longer than 100"),
    ],
)
def test_dsn_requests_smtp_would_refuse_are_not_written(
    box: Path, envelope: DropEnvelope, reason: str
) -> None:
    with pytest.raises(MaildropError, match=reason):
        drop(box, envelope, io.BytesIO(b"x"), max_size=LIMIT)
    assert everything_in(box) == []


def test_hostile_envelope_round_trips_without_injecting_fields(box: Path) -> None:
    path = drop(box, HOSTILE, io.BytesIO(b"Subject: x\n\nhi\n"), max_size=LIMIT)
    lines = path.read_bytes().split(b"\n")
    assert [line.split(b" ", 1)[0] for line in lines[:6]] == [
        b"smtpkit-maildrop",
        b"sender",
        b"full-name",
        b"recipients",
        b"flags",
        b"",
    ]
    assert all(0x20 <= byte <= 0x7E for line in lines[:5] for byte in line)
    envelope, message = dropped_message(path)
    assert envelope == HOSTILE
    assert message == b"Subject: x\r\n\r\nhi\r\n"


def test_null_sender_and_no_flags_round_trip(box: Path) -> None:
    envelope = DropEnvelope(recipients=("a@example.org",), sender="", full_name="")
    path = drop(box, envelope, io.BytesIO(b""), max_size=LIMIT)
    assert dropped_message(path) == (envelope, b"")


@pytest.mark.parametrize(
    ("envelope", "reason"),
    [
        (DropEnvelope(recipients=()), "no recipients"),
        (DropEnvelope(recipients=("",)), "an empty recipient"),
        (DropEnvelope(recipients=("a\0b",)), "a recipient holds a NUL character"),
        (DropEnvelope(recipients=("a",), sender="\0"), "the sender holds a NUL character"),
        (DropEnvelope(recipients=("\ud800",)), "a recipient is not valid Unicode"),
        (DropEnvelope(recipients=("x" * MAX_ENVELOPE,)), "envelope too big"),
    ],
)
def test_envelopes_read_would_refuse_are_not_written(
    box: Path, envelope: DropEnvelope, reason: str
) -> None:
    with pytest.raises(MaildropError, match=reason):
        drop(box, envelope, io.BytesIO(b"x"), max_size=LIMIT)
    assert everything_in(box) == []


@pytest.mark.parametrize(
    ("message", "ignore_dots", "stored"),
    [
        (b"Subject: x\n\na\rb\nc\n", False, b"Subject: x\r\n\r\na\rb\r\nc\r\n"),
        (b"Subject: x\n\nbefore\n.\nafter\n", False, b"Subject: x\r\n\r\nbefore\r\n"),
        (b"Subject: x\n\nbefore\n.\nafter\n", True, b"Subject: x\r\n\r\nbefore\r\n.\r\nafter\r\n"),
        (b"Subject: x\r\n\r\nno end", True, b"Subject: x\r\n\r\nno end\r\n"),
    ],
)
def test_message_is_stored_with_crlf(
    box: Path, message: bytes, ignore_dots: bool, stored: bytes
) -> None:
    envelope = DropEnvelope(recipients=("a@example.org",), ignore_dots=ignore_dots)
    path = drop(box, envelope, io.BytesIO(message), max_size=LIMIT)
    assert dropped_message(path) == (envelope, stored)


# --- dropping -----------------------------------------------------------------------------

ENVELOPE = DropEnvelope(recipients=("alice@example.org",))


def test_drop_leaves_one_readable_file_under_an_unguessable_name(box: Path) -> None:
    old = os.umask(0o077)  # a user's strict umask must not lock the server out
    try:
        path = drop(box, ENVELOPE, io.BytesIO(b"hi\n"), max_size=LIMIT)
    finally:
        os.umask(old)
    assert everything_in(box) == [path.name]
    assert not path.name.startswith(".")
    assert len(path.name.rsplit(".", 1)[1]) == 32  # 128 random bits
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert pending(box) == [path]


class Endless(io.RawIOBase):
    """An input that never ends: counts what was taken from it."""

    def __init__(self) -> None:
        self.taken = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        view[:] = b"y" * (len(view) - 1) + b"\n"
        self.taken += len(view)
        return len(view)


def test_too_big_stops_reading_and_leaves_nothing(box: Path) -> None:
    endless = Endless()
    with pytest.raises(MessageTooBig, match="over the limit of 100000 bytes"):
        drop(box, ENVELOPE, io.BufferedReader(endless), max_size=100_000)
    assert endless.taken < 300_000
    assert everything_in(box) == []


def test_exactly_the_limit_is_not_too_big(box: Path) -> None:
    message = b"x" * 98 + b"\n"  # 100 bytes once the line ends in CRLF
    path = drop(box, ENVELOPE, io.BytesIO(message), max_size=100)
    assert dropped_message(path)[1] == b"x" * 98 + b"\r\n"
    with pytest.raises(MessageTooBig):
        drop(box, ENVELOPE, io.BytesIO(message), max_size=99)


def test_missing_folder_or_a_link_is_unreachable(tmp_path: Path) -> None:
    with pytest.raises(MaildropUnreachable, match="No such file or directory"):
        drop(tmp_path / "maildrop", ENVELOPE, io.BytesIO(b""), max_size=LIMIT)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "maildrop").symlink_to("elsewhere")
    with pytest.raises(MaildropUnreachable, match="a symbolic link"):
        drop(tmp_path / "maildrop", ENVELOPE, io.BytesIO(b""), max_size=LIMIT)
    assert everything_in(tmp_path / "elsewhere") == []


def test_disk_full_is_temporary_and_leaves_nothing(
    box: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(fd: int, data: bytes) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(maildrop, "write_all", full)
    with pytest.raises(DropFailed, match="No space left on device") as caught:
        drop(box, ENVELOPE, io.BytesIO(b"hi\n"), max_size=LIMIT)
    assert caught.value.disk_full
    assert everything_in(box) == []


def test_pending_is_oldest_first_and_skips_hidden_files(box: Path) -> None:
    paths = [drop(box, ENVELOPE, io.BytesIO(b"%d\n" % n), max_size=LIMIT) for n in range(3)]
    for age, path in zip((10, 30, 20), paths, strict=True):
        os.utime(path, (time.time() - age, time.time() - age))
    (box / ".tmp.being-written").write_bytes(b"")
    assert pending(box) == [paths[1], paths[2], paths[0]]


def test_leftovers_are_old_hidden_files(box: Path) -> None:
    old, fresh = box / ".tmp.old", box / ".tmp.fresh"
    old.write_bytes(b"")
    fresh.write_bytes(b"")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    drop(box, ENVELOPE, io.BytesIO(b""), max_size=LIMIT)
    assert leftovers(box, older_than=3600) == [old]


# --- reading hostile files ----------------------------------------------------------------

GOOD_ENVELOPE = (
    b'smtpkit-maildrop 1\nsender null\nfull-name null\nrecipients ["a@example.org"]\nflags []\n\n'
)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "not a maildrop file"),
        (b"From alice Mon Nov 30\n", "not a maildrop file"),
        (b"smtpkit-maildrop 3\n", "unsupported maildrop version '3'"),
        (b"smtpkit-maildrop 02\n", "unsupported maildrop version '02'"),
        (b"smtpkit-maildrop 1", "not a maildrop file"),
        (b"smtpkit-maildrop 1\n", "envelope ends too early"),
        (b"smtpkit-maildrop 1\nfull-name null\n", "expected 'sender', found 'full-name'"),
        (b"smtpkit-maildrop 1\nsender\n", "expected 'sender', found 'sender'"),
        (b"smtpkit-maildrop 1\nsender nul\n", "sender: not valid JSON"),
        (b"smtpkit-maildrop 1\nsender 7\n", "sender: not a string"),
        (b'smtpkit-maildrop 1\nsender "a\\u0000b"\n', "sender holds a NUL character"),
        (b'smtpkit-maildrop 1\nsender "\\ud800"\n', "sender is not valid Unicode"),
        (b'smtpkit-maildrop 1\nsender "a\x00"\n', "not printable ASCII"),
        (b'smtpkit-maildrop 1\nsender "a\r"\n', "not printable ASCII"),
        (b'smtpkit-maildrop 1\nsender "\xc3\xa9"\n', "not printable ASCII"),
        (
            b"smtpkit-maildrop 1\nsender null\nfull-name null\nrecipients []\n",
            "no recipients",
        ),
        (
            b'smtpkit-maildrop 1\nsender null\nfull-name null\nrecipients [""]\n',
            "an empty recipient",
        ),
        (
            b'smtpkit-maildrop 1\nsender null\nfull-name null\nrecipients "a"\n',
            "recipients: not a list",
        ),
        (
            b'smtpkit-maildrop 1\nsender null\nfull-name null\nrecipients [["a"]]\n',
            "recipients: not a string",
        ),
        (
            b"smtpkit-maildrop 1\nsender null\nfull-name null\nrecipients "
            + b"[" * 100_000
            + b"\n",
            "recipients: not valid JSON",
        ),
        (
            b'smtpkit-maildrop 1\nsender null\nfull-name null\nrecipients ["a"]\n'
            b'flags ["sudo"]\n\n',
            "unknown flag 'sudo'",
        ),
        (
            b'smtpkit-maildrop 1\nsender null\nfull-name null\nrecipients ["a"]\n'
            b'flags ["ignore-dots", "ignore-dots"]\n\n',
            "a flag given twice",
        ),
        (
            b'smtpkit-maildrop 1\nsender null\nfull-name null\nrecipients ["a"]\n'
            b"flags []\nsender null\n\n",
            "no blank line after the envelope",
        ),
        (
            # Version 1 has no dsn line: one is not taken for it.
            b'smtpkit-maildrop 1\nsender null\nfull-name null\nrecipients ["a"]\n'
            b'flags []\ndsn {"notify": ["NEVER"], "ret": null, "envid": null}\n\n',
            "no blank line after the envelope",
        ),
        (
            b'smtpkit-maildrop 2\nsender null\nfull-name null\nrecipients ["a"]\nflags []\n\n',
            "expected 'dsn', found ''",
        ),
        (
            b'smtpkit-maildrop 2\nsender null\nfull-name null\nrecipients ["a"]\nflags []\n'
            b'dsn {"notify": null, "ret": null}\n\n',
            "dsn: not an object of notify, ret and envid",
        ),
        (
            b'smtpkit-maildrop 2\nsender null\nfull-name null\nrecipients ["a"]\nflags []\n'
            b'dsn {"notify": null, "ret": null, "envid": null, "orcpt": "x"}\n\n',
            "dsn: not an object of notify, ret and envid",
        ),
        (
            b'smtpkit-maildrop 2\nsender null\nfull-name null\nrecipients ["a"]\nflags []\n'
            b'dsn ["SUCCESS"]\n\n',
            "dsn: not an object of notify, ret and envid",
        ),
        (
            b'smtpkit-maildrop 2\nsender null\nfull-name null\nrecipients ["a"]\nflags []\n'
            b'dsn {"notify": ["NEVER", "SUCCESS"], "ret": null, "envid": null}\n\n',
            "dsn: NOTIFY: NEVER cannot be combined with other values",
        ),
        (
            b'smtpkit-maildrop 2\nsender null\nfull-name null\nrecipients ["a"]\nflags []\n'
            b'dsn {"notify": "SUCCESS", "ret": null, "envid": null}\n\n',
            "dsn: NOTIFY: must be NEVER or a comma list",
        ),
        (
            b'smtpkit-maildrop 2\nsender null\nfull-name null\nrecipients ["a"]\nflags []\n'
            b'dsn {"notify": null, "ret": "ALL", "envid": null}\n\n',
            "dsn: RET: must be FULL or HDRS",
        ),
        (
            b'smtpkit-maildrop 2\nsender null\nfull-name null\nrecipients ["a"]\nflags []\n'
            b'dsn {"notify": null, "ret": null, "envid": "a\\r\\nX-Evil: 1"}\n\n',
            "dsn: ENVID: must be printable US-ASCII",
        ),
        (
            b'smtpkit-maildrop 2\nsender null\nfull-name null\nrecipients ["a"]\nflags []\n'
            b'dsn {"notify": null, "ret": null, "envid": "' + b"x" * 101 + b'"}\n\n',
            "dsn: ENVID: longer than 100 characters",
        ),
        (
            b'smtpkit-maildrop 1\nsender null\nfull-name null\nrecipients ["'
            + b"a" * MAX_ENVELOPE
            + b'"]\n',
            "envelope too big",
        ),
    ],
)
def test_malformed_files_are_refused_in_one_line(
    tmp_path: Path, content: bytes, reason: str
) -> None:
    path = tmp_path / "1.M1P1Q1.host.0123"
    path.write_bytes(content)
    with pytest.raises(MaildropError) as caught:
        read(path, max_size=LIMIT)
    text = str(caught.value)
    assert text.startswith(f"{path.name}: ")
    assert reason in text
    assert "\n" not in text


def test_a_message_over_the_limit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big"
    path.write_bytes(GOOD_ENVELOPE + b"x" * 101)
    with pytest.raises(MessageTooBig):
        read(path, max_size=100)
    with read(path, max_size=101) as found:
        assert found.size == 101


def test_links_fifos_folders_and_hard_links_are_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.write_bytes(GOOD_ENVELOPE)
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(MaildropError, match="link: cannot open: a symbolic link"):
        read(tmp_path / "link", max_size=LIMIT)
    os.mkfifo(tmp_path / "fifo")  # nobody writes to it: open must not wait for a writer
    with pytest.raises(MaildropError, match="fifo: not a regular file"):
        read(tmp_path / "fifo", max_size=LIMIT)
    (tmp_path / "folder").mkdir()
    with pytest.raises(MaildropError, match="folder: not a regular file"):
        read(tmp_path / "folder", max_size=LIMIT)
    os.link(real, tmp_path / "second")
    with pytest.raises(MaildropError, match="second: has 2 links"):
        read(tmp_path / "second", max_size=LIMIT)


def test_reading_streams_exactly_the_message(tmp_path: Path) -> None:
    path = tmp_path / "m"
    path.write_bytes(GOOD_ENVELOPE + b"0123456789")
    with read(path, max_size=LIMIT) as found:
        assert (found.offset, found.size) == (len(GOOD_ENVELOPE), 10)
        assert (found.uid, found.gid) == (os.getuid(), os.getgid())
        assert found.message.read(3) == b"012"
        with path.open("ab") as grow:
            grow.write(b"appended later")
        assert list(found.chunks(4)) == [b"0123", b"4567", b"89"]
        os.truncate(path, len(GOOD_ENVELOPE) + 5)
        with pytest.raises(MaildropError, match="shorter than when it was opened"):
            list(found.chunks())
    assert found.message.closed


# --- the folder ---------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o000, 0o077])
def test_ensure_maildrop_makes_1733_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    tmp_path.chmod(0o750)
    old = os.umask(umask)
    try:
        path = ensure_maildrop(tmp_path)
    finally:
        os.umask(old)
    assert path == tmp_path / "maildrop"
    assert stat.S_IMODE(path.stat().st_mode) == 0o1733
    # Everyone may pass through the data folder to reach it; nobody may list it.
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o751


def test_ensure_maildrop_repairs_the_mode_and_keeps_what_is_there(tmp_path: Path) -> None:
    (tmp_path / "maildrop").mkdir(mode=0o755)
    (tmp_path / "maildrop" / "waiting").write_bytes(b"")
    ensure_maildrop(tmp_path)
    assert stat.S_IMODE((tmp_path / "maildrop").stat().st_mode) == 0o1733
    assert everything_in(tmp_path / "maildrop") == ["waiting"]


def test_ensure_maildrop_refuses_what_is_no_folder(tmp_path: Path) -> None:
    (tmp_path / "maildrop").symlink_to("/tmp")
    with pytest.raises(MaildropError, match="maildrop: not a folder"):
        ensure_maildrop(tmp_path)
    (tmp_path / "maildrop").unlink()
    (tmp_path / "maildrop").write_bytes(b"")
    with pytest.raises(MaildropError, match="maildrop: not a folder"):
        ensure_maildrop(tmp_path)


# --- between local users (root, as in CI) -------------------------------------------------


def as_user(uid: int, func: Callable[[], Any]) -> Any:
    """Run ``func`` in a child process that is only ``uid`` (no groups): its result, or
    ``{"error": errno}`` for an OSError, through a pipe as JSON."""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.close(reader)
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            try:
                answer: Any = func()
            except OSError as exc:
                answer = {"error": exc.errno}
            except MaildropError as exc:
                answer = {"maildrop_error": str(exc)}
            os.write(writer, json.dumps(answer).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(writer)
    with os.fdopen(reader, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return json.loads(data)


@pytest.fixture
def shared(open_tmp_path: Path) -> Iterator[Path]:
    """A data folder owned by SERVICE, mode 0750, with its maildrop made by its owner."""
    if os.geteuid() != 0:
        unavailable("acting as other users needs root (CI runs as root)")
    directory = open_tmp_path / "data"
    directory.mkdir(mode=0o750)
    os.chown(directory, SERVICE, SERVICE)
    assert as_user(SERVICE, lambda: str(ensure_maildrop(directory))) == str(directory / "maildrop")
    yield directory / "maildrop"


def test_a_users_drop_is_safe_from_other_users(shared: Path) -> None:
    info = shared.stat()
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (SERVICE, 0o1733)

    def nobody_drops() -> str:
        envelope = DropEnvelope(recipients=("alice@example.org",))
        return drop(shared, envelope, io.BytesIO(b"Subject: private\n\nhi\n"), max_size=LIMIT).name

    name = as_user(NOBODY, nobody_drops)
    path = shared / name
    assert (path.stat().st_uid, stat.S_IMODE(path.stat().st_mode)) == (NOBODY, 0o644)

    # Another user can neither find it, nor remove, rename, change or replace it.
    assert as_user(STRANGER, lambda: os.listdir(shared)) == {"error": errno.EACCES}
    assert as_user(STRANGER, lambda: os.unlink(path)) == {"error": errno.EPERM}
    assert as_user(STRANGER, lambda: os.rename(path, shared / "mine")) == {"error": errno.EPERM}
    assert as_user(STRANGER, lambda: os.open(path, os.O_WRONLY)) == {"error": errno.EACCES}
    assert as_user(STRANGER, lambda: os.chmod(path, 0o666)) == {"error": errno.EPERM}
    # ...nor the folder, whose mode stays 1733.
    assert as_user(STRANGER, lambda: os.chmod(shared, 0o1777)) == {"error": errno.EPERM}
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1733

    # The server, as the data folder's owner, lists, reads and removes it.
    def server_takes() -> list[Any]:
        [found] = pending(shared)
        with read(found, max_size=LIMIT) as dropped:
            message = b"".join(dropped.chunks()).decode()
            owner = dropped.uid
        found.unlink()
        return [found.name, owner, message]

    assert as_user(SERVICE, server_takes) == [name, NOBODY, "Subject: private\r\n\r\nhi\r\n"]
    assert everything_in(shared) == []


def test_a_folder_others_cannot_write_is_unreachable(shared: Path) -> None:
    shared.chmod(0o1755)

    def nobody_drops() -> Any:
        return drop(shared, ENVELOPE, io.BytesIO(b"hi\n"), max_size=LIMIT).name

    assert as_user(NOBODY, nobody_drops) == {
        "maildrop_error": f"cannot write the maildrop {shared}: Permission denied"
    }


def test_root_making_the_maildrop_gives_it_to_the_owner(open_tmp_path: Path) -> None:
    if os.geteuid() != 0:
        unavailable("giving a folder to another user needs root (CI runs as root)")
    directory = open_tmp_path / "data"
    directory.mkdir(mode=0o750)
    os.chown(directory, SERVICE, SERVICE)
    path = ensure_maildrop(directory)
    info = path.stat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (SERVICE, SERVICE, 0o1733)
    os.chown(path, 0, 0)  # one root made by other means is not the owner's: refused
    with pytest.raises(MaildropError, match="owned by uid 0, not by the data folder's owner"):
        ensure_maildrop(directory)
