"""The journal: one JSON object per line, one file per hour, ``JOURNAL_DIR/YYYY_MM_DD_HH`` (UTC).

Lines are buffered in memory and appended with a single ``write`` on an ``O_APPEND``
descriptor at ``flush()``, which the server calls every 20 ms and at shutdown, so lines from
several worker processes never interleave inside a line. Every line carries the session id
(``-`` for the server's own events), so the steps of one connection can be picked out.

Every line is printable ASCII: anything else a client sent (control characters, Unicode spaces
and line separators, non-ASCII letters) is a JSON ``\\uXXXX`` escape, so showing an hour file
(``cat``, ``journal tail``) never passes a client's control sequences to a terminal.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import sys
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, TextIO

from smtpkit import metrics
from smtpkit.fsutil import make_dirs

__all__ = [
    "Journal",
    "Position",
    "escape_unprintable",
    "follow",
    "hour_name",
    "lines_since",
    "position",
    "render",
    "tail",
]


MAX_CARRY = 1024 * 1024  # unwritten journal bytes kept while the disk is full
BLOCK = 64 * 1024  # bytes read at a time when reading hour files


def hour_name(when: datetime) -> str:
    return when.strftime("%Y_%m_%d_%H")


def _is_hour_file(name: str) -> bool:
    parts = name.split("_")
    return len(parts) == 4 and all(p.isdigit() for p in parts) and len(name) == 13


def _line_encoder() -> Callable[[Mapping[str, Any]], str]:
    """JSON for one line, compact. ensure_ascii makes every character outside printable
    ASCII (DEL included) a \\uXXXX escape: no client byte reaches a terminal showing the
    file. It costs nothing: the C encoder is as fast with it as without, and faster than
    scanning the output. ``JSONEncoder.encode`` builds that C encoder anew for every call,
    which costs as much as the encoding of a short line: here it is built once."""
    fallback = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"))
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # an interpreter without the C accelerator
        return fallback.encode
    # The arguments of JSONEncoder.iterencode's own call, without its cycle check: a line
    # is a flat dict of strings, numbers and lists of strings.
    encode = make(
        None, fallback.default, json.encoder.encode_basestring_ascii, None, ":", ",",
        False, False, True,
    )  # fmt: skip
    return lambda record: "".join(encode(record, 0))


class Journal:
    """Appends events to the hour files under ``directory``; optionally echoes them readably."""

    def __init__(self, directory: Path, echo: TextIO | None = None) -> None:
        self.directory = directory
        self.echo = echo
        self._pending: list[str] = []
        self._fd = -1
        self._hour = ""
        self._failed = False
        self._carry = b""  # whole lines a failed write left unwritten (see flush)
        # Formatting a date costs more than the rest of an event: do it once per second.
        self._second = -1
        self._stamp = ""
        self._encode = _line_encoder()

    def _now(self) -> str:
        now = time.time()
        second = int(now)
        if second != self._second:
            when = datetime.fromtimestamp(second, UTC)
            self._second = second
            self._stamp = when.strftime("%Y-%m-%dT%H:%M:%S")
            hour = hour_name(when)
            if hour != self._hour:
                self.flush()
                self._open(hour)
        return f"{self._stamp}.{int((now - second) * 1000):03d}Z"

    def write(self, event: str, session: str, peer: str, **fields: Any) -> None:
        record = {"time": self._now(), "session": session, "peer": peer, "event": event}
        record.update(fields)
        line = self._encode(record)
        self._pending.append(line)
        if self.echo is not None:
            print(render(record), file=self.echo)

    def _open(self, hour: str) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._hour = hour
        try:
            make_dirs(self.directory, 0o750)
            self._fd = os.open(
                self.directory / hour,
                os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                0o640,
            )
        except OSError as exc:
            self._report(exc)

    def flush(self) -> None:
        if not self._pending and not self._carry:
            return
        data = self._carry
        if self._pending:
            data += ("\n".join(self._pending) + "\n").encode("ascii")
            self._pending.clear()
        self._carry = b""
        if self._fd < 0:
            if self._hour:
                self._open(self._hour)
            if self._fd < 0:
                return
        # Worker processes append to the same hour file. The lock makes each flush whole: a
        # short write (the disk filled up) is cut back off under it, so no other worker's
        # lines can follow half a line, and the data is kept to be written again next time.
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        written = 0
        try:
            view = memoryview(data)
            while written < len(data):
                written += os.write(self._fd, view[written:])
        except OSError as exc:
            # A full disk must not stop mail service; say so once on stderr.
            self._report(exc)
        try:
            if 0 < written < len(data):
                os.ftruncate(self._fd, os.fstat(self._fd).st_size - written)
        except OSError as exc:
            self._report(exc)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        if written == len(data):
            self._failed = False
            return
        if len(data) > MAX_CARRY:
            # Bounded: keep the oldest whole lines that fit; later events are lost (the
            # stderr echo still shows them).
            data = data[: data.rfind(b"\n", 0, MAX_CARRY) + 1]
        self._carry = data

    def _report(self, exc: OSError) -> None:
        metrics.record.journal_error()
        if not self._failed:
            print(f"smtpkit: journal write failed: {exc}", file=sys.stderr)
            self._failed = True

    def close(self) -> None:
        self.flush()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


# --- showing lines ----------------------------------------------------------------------------
_HEAD_KEYS = frozenset(("time", "session", "peer", "event"))
_json_string = json.JSONEncoder(ensure_ascii=False).encode  # a str goes straight to C


def render(record: Mapping[str, Any]) -> str:
    """One readable line: ``2026-11-26T07:12:00.000Z a1b2c3 127.0.0.1:5012 rcpt to=a@b.c code=250``.

    ``None`` and an empty list show as ``-``, booleans as ``yes`` and ``no``, lists joined by
    commas. A value (or list element) that is empty, or holds a space, ``=``, ``"``, ``\\``
    (a comma too, in a list) or any character that is not printable (controls, Unicode
    spaces, line separators) is shown as a JSON string with those characters escaped, such as
    ``"\\u001b[31m"``: no value can reach the terminal raw or pass for another ``key=value``.
    """
    # The server echoes every event through here: plain values take the short paths.
    line = (
        f"{_atom(record.get('time', '?'))} {_atom(record.get('session', '-'))} "
        f"{_atom(record.get('peer', '-'))} {_atom(record.get('event', '?'))}"
    )
    for key, value in record.items():
        if key not in _HEAD_KEYS:
            line += f" {_atom(key)}={_value(value)}"
    return line


def _value(value: Any) -> str:
    if type(value) is list:
        return ",".join(_atom(item, True) for item in value) if value else "-"
    return _atom(value)


def _atom(value: Any, in_list: bool = False) -> str:
    if type(value) is str:
        text = value
    elif value is None:
        return "-"
    elif value is True:
        return "yes"
    elif value is False:
        return "no"
    elif type(value) is int or isinstance(value, int | float):
        return str(value)
    else:
        text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    if (
        text
        and text.isprintable()
        and " " not in text
        and "=" not in text
        and '"' not in text
        and "\\" not in text
        and not (in_list and "," in text)  # a comma inside an element would split it
    ):
        return text
    return escape_unprintable(_json_string(text))


def escape_unprintable(text: str) -> str:
    """``text`` with every character ``str.isprintable()`` rejects written as a JSON escape.

    That covers the C0 and C1 controls, DEL, Unicode spaces other than the ASCII space, line and
    paragraph separators, format characters such as bidirectional overrides, and unassigned
    code points; printable non-ASCII is kept. A JSON line stays valid JSON: where a line the
    journal wrote can hold such a character, it is inside a string.
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _json_escape(c) for c in text)


def _json_escape(char: str) -> str:
    code = ord(char)
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000  # beyond the BMP JSON needs a UTF-16 surrogate pair
    return f"\\u{0xD800 | code >> 10:04x}\\u{0xDC00 | code & 0x3FF:04x}"


# --- reading hour files ---------------------------------------------------------------------


def _hour_files(directory: Path) -> list[Path]:
    try:
        names = sorted(n for n in os.listdir(directory) if _is_hour_file(n))
    except FileNotFoundError:
        return []
    return [directory / n for n in names]


def _open(path: Path) -> IO[bytes] | None:
    try:
        return path.open("rb")
    except FileNotFoundError:
        return None


Position = tuple[Path | None, int]


def position(directory: Path) -> Position:
    """The current end of the journal: the newest hour file and its size."""
    files = _hour_files(directory)
    if not files:
        return (None, 0)
    return (files[-1], files[-1].stat().st_size)


def tail(
    directory: Path, count: int, at: Position | None = None, *, since: datetime | None = None
) -> list[str]:
    """The last ``count`` complete lines up to ``at`` (default: now), oldest first.

    Hour files are read backwards from their end, a block at a time, and older hour files only
    while more lines are needed: memory grows with ``count``, not with the journal. With
    ``since``, only events at or after that time count (hour files before its hour are not
    read).
    """
    if count <= 0:
        return []
    newest, end = at if at is not None else position(directory)
    if newest is None:
        return []
    first = hour_name(since.astimezone(UTC)) if since is not None else ""
    lines: list[str] = []
    for path in reversed(_hour_files(directory)):
        if path.name > newest.name:
            continue
        if path.name < first:
            break
        fh = _open(path)
        if fh is None:
            continue
        keep = _keep_since(since) if since is not None and path.name == first else None
        with fh, closing(_backward(fh, end if path.name == newest.name else None)) as raws:
            for raw in raws:
                line = raw.decode("utf-8", "replace")
                if keep is not None and not keep(line):
                    continue
                lines.append(line)
                if len(lines) == count:
                    return lines[::-1]
    return lines[::-1]


def lines_since(directory: Path, start: datetime, at: Position | None = None) -> Iterator[str]:
    """Every complete line of an event at or after ``start``, up to ``at`` (default: now).

    Only the hour files from ``start``'s hour on are read, forwards, a block at a time.
    """
    newest, end = at if at is not None else position(directory)
    if newest is None:
        return
    first = hour_name(start.astimezone(UTC))
    keep = _keep_since(start)
    for path in _hour_files(directory):
        if path.name < first or path.name > newest.name:
            continue
        fh = _open(path)
        if fh is None:
            continue
        with fh:
            for raw in _forward(fh, end if path.name == newest.name else None):
                line = raw.decode("utf-8", "replace")
                # Only the first hour can hold earlier events; the file name vouches for later ones.
                if path.name != first or keep(line):
                    yield line


_TIME = re.compile(r'\{"time":"([^"]*)"')


def _keep_since(start: datetime) -> Callable[[str], bool]:
    """Whether a line's event happened at or after ``start``. Lines are in write order, which
    is not quite time order across worker processes, so every line is looked at."""
    stamp = start.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"

    def keep(line: str) -> bool:
        found = _TIME.match(line)  # the journal writes time first; anything else is parsed
        if found is not None:
            return found.group(1) >= stamp
        try:
            when = json.loads(line).get("time")
        except (ValueError, AttributeError):
            return False
        return isinstance(when, str) and when >= stamp

    return keep


def _backward(fh: IO[bytes], end: int | None) -> Generator[bytes, None, None]:
    """The complete lines of ``fh`` before offset ``end`` (default: its size), last first."""
    size = os.fstat(fh.fileno()).st_size
    stop = _last_newline(fh, size if end is None else min(end, size))
    if stop < 0:
        return
    # Everything before ``stop`` (the last newline) is whole lines.
    pending = b""  # the end of a line whose start lies in an earlier block
    pos = stop
    while pos > 0:
        step = min(BLOCK, pos)
        pos -= step
        fh.seek(pos)
        pieces = (fh.read(step) + pending).split(b"\n")
        pending = pieces[0]
        yield from reversed(pieces[1:])
    yield pending


def _last_newline(fh: IO[bytes], end: int) -> int:
    """The offset of the last newline before ``end``, or -1: what follows it is a line still
    being written."""
    pos = end
    while pos > 0:
        step = min(BLOCK, pos)
        pos -= step
        fh.seek(pos)
        found = fh.read(step).rfind(b"\n")
        if found >= 0:
            return pos + found
    return -1


def _forward(fh: IO[bytes], end: int | None) -> Iterator[bytes]:
    """The complete lines of ``fh`` before offset ``end`` (default: all), first first."""
    left = end
    pending = b""
    while left is None or left > 0:
        chunk = fh.read(BLOCK if left is None else min(BLOCK, left))
        if not chunk:
            break
        if left is not None:
            left -= len(chunk)
        *complete, pending = (pending + chunk).split(b"\n")
        yield from complete
    # ``pending`` is a line still being written: not shown.


def follow(
    directory: Path,
    start: Position | None = None,
    *,
    interval: float = 0.25,
    sleep: Callable[[float], None] = time.sleep,
    stop: Callable[[], bool] = lambda: False,
) -> Iterator[str]:
    """Yield lines appended after ``start`` (default: now), across hour files, until
    ``stop()`` is true.

    When a newer hour file appears, the rest of the current one is read first, then the new
    one from its start: the hour's rollover loses nothing.
    """
    current, offset = start if start is not None else position(directory)
    partial = b""
    while not stop():
        got = False
        chunk = b""
        if current is not None:
            try:
                with current.open("rb") as fh:
                    fh.seek(offset)
                    chunk = fh.read()
            except FileNotFoundError:
                chunk = b""
            if chunk:
                offset += len(chunk)
                partial += chunk
                *complete, partial = partial.split(b"\n")
                for raw in complete:
                    got = True
                    yield raw.decode("utf-8", "replace")
        files = _hour_files(directory)
        newer = [f for f in files if current is None or f.name > current.name]
        # Switch only after a read found nothing more: a late line of the old hour is kept.
        if newer and not chunk and not partial:
            current, offset = newer[0], 0
            continue
        if not got:
            sleep(interval)
