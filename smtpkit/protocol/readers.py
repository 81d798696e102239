"""Input modes of the engine: one reader per state, in the manner of h11's readers.

What the bytes from the client mean depends on the state: in the dialogue they are command
lines; after ``354`` they are message content up to ``<CRLF>.<CRLF>``; after ``BDAT n`` they
are exactly ``n`` octets of content. Each mode is a reader object with one method,
``read(buffer)``, that consumes what it can and returns a ``Step`` (an event, the verb to
transition on when it is answered, and whether it needs an answer), or None when it needs
more bytes. ``READERS`` maps each state to the reader made on entering it, so a new input
mode (BDAT chunks, AUTH continuation lines) is a new reader class and a row in that table:
see ARCHITECTURE.md, "Adding an SMTP extension".
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Final, Protocol

from smtpkit.limits import BareNewline, Limits
from smtpkit.protocol.buffer import (
    ChunkScanner,
    DataScanner,
    EndOfDataMarker,
    LineError,
    ReceiveBuffer,
)
from smtpkit.protocol.events import AuthResponse, DataChunk, EndOfChunk, EndOfData, Event
from smtpkit.protocol.replies import (
    AUTH_BAD_RESPONSE,
    BARE_NEWLINE_IN_COMMAND,
    BARE_NEWLINE_IN_DATA,
    COMMAND_TOO_LONG,
    DATA_LINE_TOO_LONG,
    MESSAGE_TOO_BIG,
    Reply,
)
from smtpkit.protocol.state import State, Verb

__all__ = [
    "READERS",
    "AuthResponseReader",
    "ChunkReader",
    "CommandReader",
    "DataReader",
    "DropChunk",
    "ParseLine",
    "Reader",
    "Step",
    "content_error",
]


@dataclass(frozen=True, slots=True)
class Step:
    """One thing the client said: the event for the session, the verb whose transition
    applies when the reply is sent (None: none), and whether a reply is due at all. A step
    that needs no reply but names a verb transitions at once (BDAT: its reply answers its
    chunk). ``drop``: octets to read and drop before the event is due (the chunk of a
    refused BDAT, RFC 3030 2)."""

    event: Event
    verb: Verb | None
    needs_reply: bool = True
    drop: int = 0


class Reader(Protocol):
    def read(self, buffer: ReceiveBuffer) -> Step | None:
        """Consume what can be consumed; a ``Step``, or None for "need more bytes"."""


#: Turns one command line (or a refused one, with why) into a step: the engine's own
#: sequence and syntax check, which knows the state.
ParseLine = Callable[[bytes, LineError | None], Step]


class CommandReader:
    """Command lines, each at most ``limits.max_command_line`` octets (RFC 5321 4.5.3.1.4),
    except an AUTH command, which may be ``limits.max_auth_line`` (RFC 4954 4: its initial
    response is base64, and longer than a command line for a long password).

    The limit is chosen from the line's first octets, before it is complete: a line is an
    AUTH command when its verb is, exactly as the engine reads verbs (``AUTH`` in any case,
    then a space). Fewer octets than that tell nothing yet, and never get a line dropped:
    the command limit is larger than them.
    """

    __slots__ = ("_auth_max", "_max", "_parse")

    def __init__(self, limits: Limits, parse: ParseLine) -> None:
        self._max = limits.max_command_line
        self._auth_max = max(limits.max_auth_line, limits.max_command_line)
        self._parse = parse

    def read(self, buffer: ReceiveBuffer) -> Step | None:
        limit = self._auth_max if _auth_command(buffer) else self._max
        got = buffer.next_line(limit)
        if got is None:
            return None
        return self._parse(got[0], got[1])


#: ``AUTH `` in every mix of cases: the verb that may have a longer line.
_AUTH_PREFIXES: Final = tuple(
    bytes(spelling) + b" " for spelling in itertools.product(*((c, c + 32) for c in b"AUTH"))
)


def _auth_command(buffer: ReceiveBuffer) -> bool:
    return buffer.startswith(_AUTH_PREFIXES)  # one call for all of them, on every command


class DataReader:
    """Message content after ``354``, dot-unstuffed, up to the final dot (RFC 5321 4.1.1.4).

    Chunks need no reply; the end does, with at most one error found on the way, chosen by
    a fixed priority so that it never depends on how the bytes were split: smuggling first
    (RFC 5321 2.3.8), then size (RFC 1870), then line length (RFC 5321 4.5.3.1.6).
    """

    __slots__ = ("_scanner",)

    def __init__(self, limits: Limits, parse: ParseLine) -> None:
        normalize = limits.bare_newline is BareNewline.NORMALIZE
        self._scanner = DataScanner(limits.max_text_line, limits.max_message_size, normalize)

    def read(self, buffer: ReceiveBuffer) -> Step | None:
        scanner = self._scanner
        got = scanner.step(buffer)
        if got is None:
            return None
        if isinstance(got, EndOfDataMarker):
            event = EndOfData(error=content_error(scanner), size=scanner.size)
            return Step(event, Verb.END_OF_DATA)
        return Step(DataChunk(got), None, needs_reply=False)


class _Flags(Protocol):
    bare_newline: bool
    too_big: bool
    line_too_long: bool


def content_error(scanner: _Flags) -> Reply | None:
    """The one error a message's content earned, by a fixed priority (the same for DATA and
    BDAT): smuggling first (RFC 5321 2.3.8), then size (RFC 1870), then line length (RFC
    5321 4.5.3.1.6)."""
    if scanner.bare_newline:
        return BARE_NEWLINE_IN_DATA
    if scanner.too_big:
        return MESSAGE_TOO_BIG
    if scanner.line_too_long:
        return DATA_LINE_TOO_LONG
    return None


class ChunkReader:
    """The chunk of an accepted ``BDAT <size> [LAST]`` (RFC 3030 2): exactly ``size`` octets,
    whatever they hold. None of them is ever read as a command or as an end marker: the
    count alone ends the chunk, so no content can smuggle a command in.

    The octets go to the session as ``DataChunk`` events as they arrive (a chunk of any
    size streams), checked by the message's ``ChunkScanner``, which the engine keeps from
    chunk to chunk; none once a rule is broken. At the end comes ``EndOfChunk``, whose reply
    answers the BDAT command. Made idle on entering the state; ``start`` gives it the chunk.
    """

    __slots__ = ("_last", "_left", "_scanner", "_size")

    def __init__(self, limits: Limits, parse: ParseLine) -> None:
        self._scanner: ChunkScanner | None = None
        self._size = 0
        self._left = 0
        self._last = False

    def start(self, scanner: ChunkScanner, size: int, last: bool) -> None:
        self._scanner = scanner
        self._size = self._left = size
        self._last = last

    def read(self, buffer: ReceiveBuffer) -> Step | None:
        scanner = self._scanner
        assert scanner is not None, "ChunkReader.start() was not called"
        while self._left and len(buffer):
            piece = buffer.take(min(self._left, len(buffer)))
            self._left -= len(piece)
            out = scanner.feed(piece)
            if out:
                return Step(DataChunk(out), None, needs_reply=False)
            # After an error the rest of the chunk is read and dropped.
        if self._left:
            return None
        if self._last:
            scanner.end()
        event = EndOfChunk(
            size=self._size, total=scanner.size, last=self._last, error=content_error(scanner)
        )
        return Step(event, Verb.END_OF_LAST_CHUNK if self._last else Verb.END_OF_CHUNK)


class DropChunk:
    """The chunk of a BDAT command the engine refused (out of sequence): RFC 3030 2 has it
    read and dropped, then answered. The octets are never commands either. Not a state's
    reader: the engine puts it in front of its reader until ``step`` is due."""

    __slots__ = ("_left", "_step")

    def __init__(self, step: Step) -> None:
        self._left = step.drop
        self._step = replace(step, drop=0)

    def read(self, buffer: ReceiveBuffer) -> Step | None:
        n = min(self._left, len(buffer))
        buffer.discard(n)
        self._left -= n
        return None if self._left else self._step


class AuthResponseReader:
    """One response line in an AUTH exchange (RFC 4954 4), at most ``max_auth_line``
    octets. A line that breaks a rule still ends the exchange, with its refusal."""

    __slots__ = ("_max",)

    def __init__(self, limits: Limits, parse: ParseLine) -> None:
        self._max = limits.max_auth_line

    def read(self, buffer: ReceiveBuffer) -> Step | None:
        got = buffer.next_line(self._max)
        if got is None:
            return None
        line, error = got
        refusal = _LINE_REFUSALS.get(error) if error is not None else None
        text = line.decode("ascii", "replace")
        if refusal is None and (b"\r" in line or not line.isascii()):
            refusal = AUTH_BAD_RESPONSE
        return Step(AuthResponse(text, refusal), Verb.AUTH_RESPONSE)


_LINE_REFUSALS: Final[dict[LineError, Reply]] = {
    LineError.TOO_LONG: COMMAND_TOO_LONG,
    LineError.BARE_LF: BARE_NEWLINE_IN_COMMAND,
}

ReaderFactory = Callable[[Limits, ParseLine], Reader]

#: The reader made on entering each state in which the client's bytes are read. INITIAL and
#: CLOSED have none: nothing is read before the greeting or after the end.
READERS: Final[dict[State, ReaderFactory]] = {
    State.GREETED: CommandReader,
    State.READY: CommandReader,
    State.MAIL: CommandReader,
    State.RCPT: CommandReader,
    State.BDAT: CommandReader,
    State.DATA: DataReader,
    State.CHUNK: ChunkReader,
    State.AUTH: AuthResponseReader,
}
