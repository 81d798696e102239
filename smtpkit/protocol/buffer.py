"""The receive buffer: command lines and DATA content, in linear time and bounded memory.

Two readers share one ``ReceiveBuffer``:

* ``ReceiveBuffer.next_line()`` cuts command lines. It remembers how far it has already looked
  for a LF, so feeding a line one byte at a time costs linear time, not quadratic (the h11
  receive-buffer idea). A line over the cap is dropped as it arrives instead of being buffered.
* ``DataScanner`` reads message content after ``354``. It works on whole buffers with C-speed
  ``bytes`` methods (find, count, replace, one regex), never a Python loop per line, and
  returns large dot-unstuffed chunks.
* ``ChunkScanner`` checks the content of a message sent in BDAT chunks (RFC 3030): the
  reader hands it counted octets, so it looks for no end and unstuffs nothing, but applies
  DATA's line rules to the whole message across chunk boundaries, with the same C-speed
  calls.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Final

__all__ = [
    "END_OF_DATA",
    "ChunkScanner",
    "DataScanner",
    "EndOfDataMarker",
    "LineError",
    "ReceiveBuffer",
]

_CRLF: Final = b"\r\n"
# RFC 5321 4.1.1.4: the content ends with a line holding a single period. Since the content
# starts at the beginning of a line, the terminator is <CRLF>.<CRLF>, or ".<CRLF>" when it is
# the very first line (an empty message).
_TERMINATOR: Final = b"\r\n.\r\n"
_FIRST_LINE_TERMINATOR: Final = b".\r\n"
# How much of a refused over-long command line is kept for the journal.
_LOG_PREFIX: Final = 80


class LineError(Enum):
    """Why ``next_line()`` refused a command line."""

    #: Longer than the cap, CRLF included (RFC 5321 4.5.3.1.4).
    TOO_LONG = "too long"
    #: Ended by a LF without a CR before it (RFC 5321 2.3.8: lines end in CRLF only).
    BARE_LF = "bare LF"


class ReceiveBuffer:
    """Bytes received and not yet consumed, shared by the command and DATA readers."""

    __slots__ = ("_data", "_lf_scanned", "_skipping", "_skipped_prefix", "eof")

    def __init__(self) -> None:
        self._data = bytearray()
        # Bytes at the front of _data known to contain no LF: next_line() resumes there.
        self._lf_scanned = 0
        # True while dropping the rest of an over-long command line up to its LF.
        self._skipping = False
        self._skipped_prefix = b""
        #: The peer closed its side; no more bytes will be fed.
        self.eof = False

    def __len__(self) -> int:
        return len(self._data)

    def feed(self, data: bytes) -> None:
        self._data += data

    def clear(self) -> None:
        """Drop every buffered byte (after STARTTLS, after the connection closed)."""
        self._data.clear()
        self._lf_scanned = 0
        self._skipping = False
        self._skipped_prefix = b""

    # --- primitives for DataScanner ---------------------------------------------------------

    def find(self, sub: bytes, start: int) -> int:
        """Index of the first ``sub`` at or after ``start``, or -1."""
        return self._data.find(sub, start)

    def rfind(self, sub: bytes, start: int) -> int:
        """Index of the last ``sub`` at or after ``start``, or -1."""
        return self._data.rfind(sub, start)

    def startswith(self, prefix: bytes | tuple[bytes, ...]) -> bool:
        """Whether the buffered bytes begin with ``prefix`` (or one of them)."""
        return self._data.startswith(prefix)

    def take(self, n: int) -> bytes:
        """Remove and return the first ``n`` bytes."""
        with memoryview(self._data) as view, view[:n] as head:
            out = head.tobytes()
        self.discard(n)
        return out

    def discard(self, n: int) -> None:
        """Remove the first ``n`` bytes."""
        # CPython removes bytes from the front of a bytearray by advancing its start offset,
        # not by copying what follows, so consuming a big buffer piece by piece stays linear.
        del self._data[:n]
        self._lf_scanned = max(0, self._lf_scanned - n)

    # --- command lines ----------------------------------------------------------------------

    def next_line(self, max_length: int) -> tuple[bytes, LineError | None] | None:
        """Cut the next command line.

        Returns None when no complete line is buffered, ``(line, None)`` for a good line
        (without its CRLF), or ``(text, error)`` for a refused one, where ``text`` is what is
        worth logging. ``max_length`` counts the CRLF.
        """
        lf = self._data.find(b"\n", self._lf_scanned)
        if lf < 0:
            if self._skipping:
                # Still inside an over-long line: nothing here is worth keeping.
                self._data.clear()
                self._lf_scanned = 0
            elif len(self._data) >= max_length:
                # Even if the LF came next, the line would be over the cap. Drop it now so
                # that a megabyte without a LF never sits in memory, and answer once its LF
                # arrives.
                self._skipped_prefix = bytes(self._data[: min(_LOG_PREFIX, max_length)])
                self._skipping = True
                self._data.clear()
                self._lf_scanned = 0
            else:
                self._lf_scanned = len(self._data)
            return None
        line = self.take(lf + 1)
        self._lf_scanned = 0
        if self._skipping:
            self._skipping = False
            prefix, self._skipped_prefix = self._skipped_prefix, b""
            return prefix, LineError.TOO_LONG
        if len(line) > max_length:
            # The same prefix as when the line is dropped while it arrives, whatever the reads.
            return line[: min(_LOG_PREFIX, max_length)], LineError.TOO_LONG
        if len(line) < 2 or line[-2] != 0x0D:
            return line[:-1], LineError.BARE_LF
        return line[:-2], None


class EndOfDataMarker:
    """Type of ``END_OF_DATA``: ``DataScanner.step()`` consumed the final dot."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "END_OF_DATA"


END_OF_DATA: Final = EndOfDataMarker()


class DataScanner:
    """Reads one message's content out of a ``ReceiveBuffer`` (RFC 5321 4.1.1.4, 4.5.2).

    Content is cut into *regions* that start where a line starts and end with a CRLF. A CRLF
    is always a line end, so in a region every ``\\r\\n`` ends a line and every other CR or LF
    is bare; a line starts right after each CRLF. That makes every check a whole-region C
    call. The bytes after the last CRLF stay in the buffer until their line is complete; if
    that partial line grows past the text-line limit it is already an error, so it is counted
    and dropped, keeping only its last byte (a CR that may pair with the next LF).

    Errors are flags, all kept up to date until the end (the engine reports one of them by a
    fixed priority). That makes the outcome independent of how the bytes were split into
    reads; no chunk is returned once any flag is set.

    With ``normalize`` (``[server] bare_newline = "normalize"``) a bare LF ends its line like
    a CRLF, and is delivered as one: regions are then cut at any LF, and the lines in them
    unstuffed and measured in a form where every line end is one LF. Only the end marker
    does not change: a ``.`` line ends the content only when a real CRLF came before it, so
    ``<LF>.<LF>`` and ``<LF>.<CRLF>`` stay content, and a bare CR is still refused (it would
    otherwise split one header line into two).
    """

    __slots__ = (
        "_after_bare_lf",
        "_clean",
        "_line_so_far",
        "_long_line",
        "_long_lf_line",
        "_max_message_size",
        "_max_text_line",
        "_normalize",
        "bare_newline",
        "line_too_long",
        "size",
        "too_big",
    )

    def __init__(self, max_text_line: int, max_message_size: int, normalize: bool = False) -> None:
        self._max_text_line = max_text_line
        self._max_message_size = max_message_size
        self._normalize = normalize
        # A run of max_text_line non-LF bytes after a LF is a line of at least max_text_line-1
        # octets plus its CR, so at least max_text_line+1 with its CRLF: over the limit of
        # RFC 5321 4.5.3.1.6. Anchoring on the LF lets the regex engine jump between LFs
        # instead of trying every start position.
        self._long_line = re.compile(b"\n[^\n]{%d}" % max_text_line)
        # The same limit where every line end is one LF (normalize): max_text_line-1 octets
        # are a line of max_text_line+1 once it is stored with its CRLF.
        self._long_lf_line = re.compile(b"\n[^\n]{%d}" % (max_text_line - 1))
        # Octets of the current line already consumed; 0 means the buffer starts a line.
        self._line_so_far = 0
        # The line starting the buffer came after a bare LF (normalize only): a "." line
        # there is content, never the end.
        self._after_bare_lf = False
        # Bytes at the front of the buffer known to hold no CRLF (hence no terminator start
        # except at their last byte): searches resume near there, never from the start.
        self._clean = 0
        #: Unstuffed content octets so far (counted even after an error, for the journal).
        self.size = 0
        #: A CR or LF not part of a CRLF was seen (RFC 5321 2.3.8; SMTP smuggling).
        self.bare_newline = False
        #: A line longer than max_text_line octets with its CRLF was seen.
        self.line_too_long = False
        #: The content passed max_message_size (RFC 1870).
        self.too_big = False

    @property
    def failed(self) -> bool:
        """Some rule was broken: the message will be refused at the final dot."""
        return self.bare_newline or self.too_big or self.line_too_long

    def step(self, buf: ReceiveBuffer) -> bytes | EndOfDataMarker | None:
        """Consume what can be consumed now.

        Returns a non-empty chunk of content to deliver, ``END_OF_DATA`` once the final dot
        line was consumed, or None when more bytes are needed.
        """
        line_end = b"\n" if self._normalize else _CRLF
        while True:
            if (
                self._line_so_far == 0
                and not self._after_bare_lf
                and buf.startswith(_FIRST_LINE_TERMINATOR)
            ):
                buf.discard(len(_FIRST_LINE_TERMINATOR))
                self._clean = 0
                return END_OF_DATA
            start = max(0, self._clean - 1)
            end = buf.find(_TERMINATOR, start)
            if end >= 0:
                # Take the content up to and including the CRLF before the dot; the dot
                # line is then at the front and the check above ends the message.
                cut = end + len(_CRLF)
            else:
                last = buf.rfind(line_end, start)
                cut = last + len(line_end) if last >= 0 else 0
            if cut:
                region = buf.take(cut)
                chunk = self._region(region)
                self._line_so_far = 0
                self._after_bare_lf = not region.endswith(_CRLF)
                # After the last CRLF nothing holds a CRLF; after a found terminator the
                # buffer starts with the dot line, handled at the top of the loop.
                self._clean = len(buf) if end < 0 else 0
                if chunk is not None:
                    return chunk
                if end >= 0:
                    continue
            # What is left holds no CRLF: a line still being received.
            self._clean = len(buf)
            if self._clean > self._max_text_line:
                self._partial(buf.take(self._clean - 1))
                self._clean = 1
            return None

    def _region(self, region: bytes) -> bytes | None:
        """Account for ``region`` (ends with CRLF); return it unstuffed unless failed."""
        at_line_start = self._line_so_far == 0
        if self._normalize:
            return self._normalized_region(region, at_line_start)
        crlf = region.count(_CRLF)
        if region.count(b"\r") != crlf or region.count(b"\n") != crlf:
            self.bare_newline = True
        # The first line has no LF before it inside the region, so the regex below misses it;
        # if the region does not start a line, it continues one _partial() already flagged.
        if at_line_start and region.find(b"\n") >= self._max_text_line:
            self.line_too_long = True
        if self._long_line.search(region) is not None:
            self.line_too_long = True
        # RFC 5321 4.5.2: a line starting with a period loses that period.
        first_stuffed = at_line_start and region[:1] == b"."
        if self.failed:
            # Nothing is delivered any more, but the size is still wanted for the journal.
            self.size += len(region) - region.count(b"\r\n.") - first_stuffed
            self.too_big = self.too_big or self.size > self._max_message_size
            return None
        body = (region[1:] if first_stuffed else region).replace(b"\r\n.", _CRLF)
        self.size += len(body)
        if self.size > self._max_message_size:
            self.too_big = True
            return None
        return body

    def _normalized_region(self, region: bytes, at_line_start: bool) -> bytes | None:
        """``_region`` when a bare LF ends a line too (``region`` ends with a LF).

        The region is first written with one LF per line end; a CR left after that was
        followed by no LF, and is refused like in the strict mode.
        """
        text = region.replace(_CRLF, b"\n")
        if b"\r" in text:
            self.bare_newline = True
        if at_line_start and text.find(b"\n") >= self._max_text_line - 1:
            self.line_too_long = True
        if self._long_lf_line.search(text) is not None:
            self.line_too_long = True
        first_stuffed = at_line_start and text[:1] == b"."
        if self.failed:
            stored = len(text) + text.count(b"\n") - text.count(b"\n.") - first_stuffed
            self.size += stored
            self.too_big = self.too_big or self.size > self._max_message_size
            return None
        body = (text[1:] if first_stuffed else text).replace(b"\n.", b"\n")
        body = body.replace(b"\n", _CRLF)
        self.size += len(body)
        if self.size > self._max_message_size:
            self.too_big = True
            return None
        return body

    def _partial(self, part: bytes) -> None:
        """Count and drop the head of a line that is already over the limit.

        ``part`` holds no CRLF, and the byte after it (kept in the buffer) cannot be a LF
        following a CR at its end, so any CR or LF in it is bare.
        """
        if b"\r" in part or b"\n" in part:
            self.bare_newline = True
        self.line_too_long = True
        self.size += len(part) - (self._line_so_far == 0 and part[:1] == b".")
        if self.size > self._max_message_size:
            self.too_big = True
        self._line_so_far += len(part)


class ChunkScanner:
    """Checks the content of one message sent with BDAT (RFC 3030), piece by piece.

    The reader cuts each chunk by its octet count, so nothing here ends the message or is
    unstuffed (RFC 3030 2: chunks are not dot-stuffed). Unless the message is BINARYMIME
    (``binary``: octets, no lines), DATA's rules hold for the message as a whole, whatever
    its chunks: lines end in CRLF (RFC 5321 2.3.8; with ``normalize`` a bare LF is stored as
    CRLF, a bare CR is still refused), a line is at most ``max_text_line`` octets with its
    CRLF. The state of the current line carries over from one piece to the next, and so from
    chunk to chunk: a chunk may end between the CR and the LF of a line end.

    ``feed`` is C-speed ``bytes`` calls on the whole piece (count, find, one regex), never a
    loop per line. Errors are flags, kept up to date until the end; the reader reports one
    of them at the end of the chunk, by the same priority as for DATA.
    """

    __slots__ = (
        "_binary",
        "_cr",
        "_limit",
        "_long_line",
        "_max_message_size",
        "_normalize",
        "_run",
        "bare_newline",
        "line_too_long",
        "size",
        "too_big",
    )

    def __init__(
        self,
        max_text_line: int,
        max_message_size: int,
        *,
        binary: bool = False,
        normalize: bool = False,
    ) -> None:
        self._binary = binary
        self._normalize = normalize
        self._max_message_size = max_message_size
        # Octets of a line, its CRLF not counted, at which it is over max_text_line.
        self._limit = max_text_line - 1
        # A line in the middle of a piece: after its LF, that many octets that are neither
        # CR nor LF (a CR inside a line is refused anyway, and outranks the length).
        self._long_line = re.compile(b"\n[^\r\n]{%d}" % self._limit)
        # Octets (CRs not counted) of the line still open at the end of what was fed.
        self._run = 0
        # What was fed ended with a CR: whether it is bare depends on the next octet.
        self._cr = False
        #: Content octets so far, as stored (counted after an error too, for the journal).
        self.size = 0
        #: A CR or LF not part of a CRLF (a bare LF only when not normalizing).
        self.bare_newline = False
        #: A line longer than max_text_line octets with its CRLF.
        self.line_too_long = False
        #: The content passed max_message_size (RFC 1870).
        self.too_big = False

    @property
    def failed(self) -> bool:
        """Some rule was broken: the chunk that broke it is refused, and the message."""
        return self.bare_newline or self.too_big or self.line_too_long

    def feed(self, piece: bytes) -> bytes | None:
        """Account for the next octets of the content (not empty); return what to store,
        or None once a rule is broken."""
        joined = self._cr and piece[:1] == b"\n"  # the CR fed last, and this LF: a CRLF
        bare_lf = 0 if self._binary else self._check(piece, joined)
        out = piece
        if bare_lf and self._normalize and not self.failed:
            # Every bare LF written as CRLF (no bare CR is left: that failed). A LF at the
            # start that ends a CRLF whose CR was already stored stays as it is.
            head = piece[:joined]
            out = head + piece[joined:].replace(_CRLF, b"\n").replace(b"\n", _CRLF)
        self.size += len(piece) + (bare_lf if self._normalize else 0)
        if self.size > self._max_message_size:
            self.too_big = True
        return None if self.failed else out

    def end(self) -> None:
        """The last chunk is in: a CR still waiting for its LF never gets it."""
        if self._cr:
            self.bare_newline = True
            self._cr = False

    def _check(self, piece: bytes, joined: bool) -> int:
        """Update the flags and the line state for ``piece``; return its bare LF count.
        ``joined``: it starts with the LF of a CRLF whose CR was fed last."""
        crs = piece.count(b"\r")
        lfs = piece.count(b"\n")
        crlfs = piece.count(_CRLF) + joined
        waits = piece[-1:] == b"\r"  # undecided until the next octet
        bare_cr = crs - (crlfs - joined) - waits + (self._cr and not joined)
        bare_lf = lfs - crlfs
        if bare_cr or (bare_lf and not self._normalize):
            self.bare_newline = True
        first = piece.find(b"\n")
        if first < 0:
            self._run += len(piece) - crs
        else:
            # The line that was open ends at the first LF; whole lines follow; the last one
            # stays open.
            if self._run + first - piece.count(b"\r", 0, first) >= self._limit:
                self.line_too_long = True
            if self._long_line.search(piece, first) is not None:
                self.line_too_long = True
            last = piece.rfind(b"\n")
            self._run = len(piece) - last - 1 - piece.count(b"\r", last + 1)
        if self._run >= self._limit:
            # Already over, whatever ends the line.
            self.line_too_long = True
        self._cr = waits
        return bare_lf
