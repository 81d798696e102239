"""Input modes of the engine: one reader per state, in the manner of h11's readers.

What the bytes from the client mean depends on the state: in the dialogue they are command
lines; after ``354`` they are message content up to ``<CRLF>.<CRLF>``. Each mode is a reader
object with one method, ``read(buffer)``, that consumes what it can and returns a ``Step``
(an event, the verb to transition on when it is answered, and whether it needs an answer),
or None when it needs more bytes. ``READERS`` maps each state to the reader made on
entering it, so a new input mode (BDAT chunks, AUTH continuation lines) is a new reader
class and a row in that table: see ARCHITECTURE.md, "Adding an SMTP extension".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

from smtpkit.limits import Limits
from smtpkit.protocol.buffer import DataScanner, EndOfDataMarker, LineError, ReceiveBuffer
from smtpkit.protocol.events import AuthResponse, DataChunk, EndOfData, Event
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
    "CommandReader",
    "DataReader",
    "ParseLine",
    "Reader",
    "Step",
]


@dataclass(frozen=True, slots=True)
class Step:
    """One thing the client said: the event for the session, the verb whose transition
    applies when the reply is sent (None: none), and whether a reply is due at all."""

    event: Event
    verb: Verb | None
    needs_reply: bool = True


class Reader(Protocol):
    def read(self, buffer: ReceiveBuffer) -> Step | None:
        """Consume what can be consumed; a ``Step``, or None for "need more bytes"."""


#: Turns one command line (or a refused one, with why) into a step: the engine's own
#: sequence and syntax check, which knows the state.
ParseLine = Callable[[bytes, LineError | None], Step]


class CommandReader:
    """Command lines, each at most ``limits.max_command_line`` octets (RFC 5321 4.5.3.1.4)."""

    __slots__ = ("_max", "_parse")

    def __init__(self, limits: Limits, parse: ParseLine) -> None:
        self._max = limits.max_command_line
        self._parse = parse

    def read(self, buffer: ReceiveBuffer) -> Step | None:
        got = buffer.next_line(self._max)
        if got is None:
            return None
        return self._parse(got[0], got[1])


class DataReader:
    """Message content after ``354``, dot-unstuffed, up to the final dot (RFC 5321 4.1.1.4).

    Chunks need no reply; the end does, with at most one error found on the way, chosen by
    a fixed priority so that it never depends on how the bytes were split: smuggling first
    (RFC 5321 2.3.8), then size (RFC 1870), then line length (RFC 5321 4.5.3.1.6).
    """

    __slots__ = ("_scanner",)

    def __init__(self, limits: Limits, parse: ParseLine) -> None:
        self._scanner = DataScanner(limits.max_text_line, limits.max_message_size)

    def read(self, buffer: ReceiveBuffer) -> Step | None:
        scanner = self._scanner
        got = scanner.step(buffer)
        if got is None:
            return None
        if isinstance(got, EndOfDataMarker):
            return Step(EndOfData(error=self._error(), size=scanner.size), Verb.END_OF_DATA)
        return Step(DataChunk(got), None, needs_reply=False)

    def _error(self) -> Reply | None:
        scanner = self._scanner
        if scanner.bare_newline:
            return BARE_NEWLINE_IN_DATA
        if scanner.too_big:
            return MESSAGE_TOO_BIG
        if scanner.line_too_long:
            return DATA_LINE_TOO_LONG
        return None


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
    State.DATA: DataReader,
    State.AUTH: AuthResponseReader,
}
