"""A trivial session for protocol tests: feeds bytes, answers every event with a fixed reply.

``run(chunks)`` plays a whole byte transcript (already split into reads) and returns what a
client would have seen (the replies) and what a mailbox would have received (the messages).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from smtpkit.limits import BareNewline, Limits
from smtpkit.protocol import (
    NEED_DATA,
    PAUSED,
    BadCommand,
    Bdat,
    ConnectionClosed,
    Data,
    DataChunk,
    EndOfChunk,
    EndOfData,
    Event,
    Expn,
    Hello,
    Help,
    MailFrom,
    NeedData,
    Noop,
    Paused,
    Quit,
    RcptTo,
    RefusedChunk,
    Reply,
    Rset,
    ServerConnection,
    StartTls,
    State,
    Vrfy,
)
from smtpkit.protocol import replies as r

HOST = "mx.test"

#: One well-formed reply: zero or more ``ddd-text`` lines, then one ``ddd text`` line.
REPLY_BYTES = re.compile(rb"(?:[2-5]\d\d-[^\r\n]*\r\n)*[2-5]\d\d [^\r\n]*\r\n")

#: Small limits that short transcripts (and hypothesis) can actually reach.
SMALL = Limits(max_command_line=40, max_text_line=16, max_message_size=64)


@dataclass
class Outcome:
    """What one transcript produced."""

    replies: list[Reply] = field(default_factory=list)
    wire: list[bytes] = field(default_factory=list)
    #: Every event except DataChunk (whose boundaries depend on how bytes were split).
    events: list[Event] = field(default_factory=list)
    #: Content of each accepted message (DataChunks joined).
    messages: list[bytes] = field(default_factory=list)
    #: Content delivered as DataChunks for every message, accepted or not.
    chunked: list[bytes] = field(default_factory=list)
    #: Largest ``buffered`` seen right after a feed, and after draining the events.
    peak_fed: int = 0
    peak_drained: int = 0

    @property
    def codes(self) -> list[int]:
        """Reply codes after the greeting."""
        return [reply.code for reply in self.replies[1:]]

    def comparable(self) -> tuple[object, ...]:
        """What must not depend on how the transcript was split into reads."""
        return (self.replies, self.wire, self.events, self.messages)


class Script:
    """The trivial session. ``tls`` decides how STARTTLS is answered (220 or 454)."""

    def __init__(self, limits: Limits | None = None, *, tls: bool = False) -> None:
        self.conn = ServerConnection(limits or Limits())
        self.tls = tls
        self.tls_active = False
        self.out = Outcome()
        self._chunks: list[bytes] = []
        self._reply(r.greeting(HOST))

    def _reply(self, reply: Reply) -> None:
        data = self.conn.send(reply)
        assert REPLY_BYTES.fullmatch(data), data
        self.out.replies.append(reply)
        self.out.wire.append(data)

    def feed(self, data: bytes) -> None:
        self.conn.receive_data(data)
        self.out.peak_fed = max(self.out.peak_fed, self.conn.buffered)
        self.drain()
        self.out.peak_drained = max(self.out.peak_drained, self.conn.buffered)

    def close(self) -> None:
        self.conn.receive_data(b"")
        self.drain()

    def drain(self) -> None:
        while True:
            event = self.conn.next_event()
            if isinstance(event, (NeedData, Paused)):
                assert event is NEED_DATA or event is PAUSED
                return
            if isinstance(event, DataChunk):
                assert event.data, "empty DataChunk"
                self._chunks.append(event.data)
                continue
            self.out.events.append(event)
            if isinstance(event, ConnectionClosed):
                assert self.conn.state is State.CLOSED
                continue
            if isinstance(event, Bdat):
                assert self.conn.state is State.CHUNK  # answered at the chunk's end
                continue
            self._reply(self.answer(event))

    def answer(self, event: Event) -> Reply:
        if isinstance(event, Hello):
            if event.extended:
                ext = ("PIPELINING", "SIZE 1000", "8BITMIME", "BINARYMIME", "CHUNKING")
                return r.ehlo(HOST, event.name, ext)
            return r.helo(HOST, event.name)
        if isinstance(event, MailFrom):
            self._chunks = []  # a new transaction: chunks of one dropped earlier are gone
            return r.OK_SENDER
        if isinstance(event, RcptTo):
            return r.UNKNOWN_USER if "unknown" in event.address else r.OK_RECIPIENT
        if isinstance(event, Data):
            return r.START_DATA
        if isinstance(event, EndOfData):
            content = b"".join(self._chunks)
            self._chunks = []
            self.out.chunked.append(content)
            if event.error is not None:
                return event.error
            self.out.messages.append(content)
            return r.stored(f"Q{len(self.out.messages)}")
        if isinstance(event, EndOfChunk):
            if event.error is not None or event.last:
                content = b"".join(self._chunks)
                self._chunks = []
                self.out.chunked.append(content)
                if event.error is not None:
                    return event.error
                self.out.messages.append(content)
                return r.stored(f"Q{len(self.out.messages)}")
            return r.chunk_received(event.size)
        if isinstance(event, RefusedChunk):
            return event.reply
        if isinstance(event, (Rset, Noop)):
            return r.OK
        if isinstance(event, Quit):
            return r.closing(HOST)
        if isinstance(event, Vrfy):
            return r.CANNOT_VRFY
        if isinstance(event, Expn):
            return r.EXPN_DISABLED
        if isinstance(event, Help):
            return r.help_text()
        if isinstance(event, StartTls):
            if not self.tls:
                return r.TLS_NOT_AVAILABLE
            if self.tls_active:
                return r.TLS_ALREADY_ACTIVE
            self.tls_active = True
            return r.TLS_READY
        if isinstance(event, BadCommand):
            return event.reply
        raise AssertionError(f"unexpected event {event!r}")


def run(
    chunks: Iterable[bytes], limits: Limits | None = None, *, tls: bool = False, eof: bool = True
) -> Outcome:
    """Feed ``chunks`` one read at a time (then EOF unless ``eof`` is false)."""
    script = Script(limits, tls=tls)
    for chunk in chunks:
        script.feed(chunk)
    if eof:
        script.close()
    return script.out


def codes(transcript: bytes, limits: Limits | None = None, **kw: bool) -> list[int]:
    """Reply codes (after the greeting) for a transcript sent in one read."""
    return run([transcript], limits, **kw).codes


def split_at(data: bytes, positions: Iterable[int]) -> list[bytes]:
    """Cut ``data`` at the given positions."""
    cuts = sorted(set(positions))
    edges = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:], strict=False) if b > a]


def reference_data(stream: bytes, limits: Limits) -> tuple[bytes, Reply | None, int, bytes] | None:
    """An obviously correct, line-by-line model of reading DATA content.

    Returns (unstuffed content, error, size, bytes after the final dot), or None when the
    stream holds no final dot line. With ``bare_newline = "normalize"`` a bare LF ends a line
    too, stored as CRLF; the final dot line still needs a real CRLF before and after it.
    """
    normalize = limits.bare_newline is BareNewline.NORMALIZE
    content = bytearray()
    bare = long = False
    pos = 0
    after_crlf = True  # the content starts a line as if after a CRLF
    while True:
        if normalize:
            end = stream.find(b"\n", pos)
            if end < 0:
                return None
            crlf = end > pos and stream[end - 1] == 0x0D
            line = stream[pos : end - 1] if crlf else stream[pos:end]
            pos = end + 1
        else:
            end = stream.find(b"\r\n", pos)
            if end < 0:
                return None
            crlf = True
            line = stream[pos:end]
            pos = end + 2
        if line == b"." and crlf and after_crlf:
            break
        after_crlf = crlf
        bare = bare or b"\r" in line or b"\n" in line
        long = long or len(line) + 2 > limits.max_text_line
        content += (line[1:] if line.startswith(b".") else line) + b"\r\n"
    size = len(content)
    error: Reply | None = None
    if bare:
        error = r.BARE_NEWLINE_IN_DATA
    elif size > limits.max_message_size:
        error = r.MESSAGE_TOO_BIG
    elif long:
        error = r.DATA_LINE_TOO_LONG
    return bytes(content), error, size, stream[pos:]
