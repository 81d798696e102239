"""Fuzz the sans-I/O SMTP engine: arbitrary bytes into ``ServerConnection``, answered by a
trivial session, with the engine's invariants checked after every step.

    python fuzz/fuzz_protocol.py                      # 60 s; atheris if installed, else hypothesis
    python fuzz/fuzz_protocol.py --seconds 3600       # longer
    python fuzz/fuzz_protocol.py --engine hypothesis  # no atheris needed (pip install hypothesis)
    python fuzz/fuzz_protocol.py --seconds 600 -- fuzz/corpus -jobs=2   # libFuzzer arguments

atheris (``pip install atheris``) runs libFuzzer with coverage feedback from the instrumented
``smtpkit.protocol`` modules; ``-- ARGS`` are handed to libFuzzer (a corpus folder, -jobs, ...).
Without it, hypothesis generates inputs for the same check until the time is up. Either way
the exit status is 0 when no input broke an invariant, non-zero with the input shown when one
did. One input is: a header byte (which limits, whether to start inside DATA, how the session
answers), then cut points, then the byte stream, fed whole and in pieces.

Invariants (any other exception is a crash, hence a bug):

* every reply written is well-formed: ``ddd-text`` lines then one ``ddd text`` line, one code,
  CRLF endings, an enhanced code of the same class;
* message content reaches the session only inside DATA or an accepted BDAT chunk, never as an
  empty chunk, and a message accepted at its end holds CRLF lines only, within the line and
  size limits (sent in chunks, its last line may lack its CRLF; BINARYMIME: size only);
* after a reply that closes (421, 221) or EOF nothing more is parsed and nothing is buffered;
* after the engine asks for data the buffer is bounded by the line limits;
* the replies and the messages do not depend on how the stream was cut into reads.
"""

from __future__ import annotations

import random
import re
import sys
from typing import Any

from driver import instrumented, main

with instrumented():
    from smtpkit import protocol
    from smtpkit.limits import Limits
    from smtpkit.protocol import replies as r

HOST = "mx.fuzz.test"
_LINE = re.compile(rb"([2-5][0-5]\d)([ -])([^\r\n]*)\r\n")
_ENHANCED = re.compile(rb"([245])\.\d{1,3}\.\d{1,3}(?: |$)")
LIMIT_SETS = [
    Limits(),
    Limits(max_command_line=40, max_text_line=16, max_message_size=64),
    Limits(max_command_line=12, max_text_line=3, max_message_size=10),
    Limits(max_recipients=1, max_message_size=0),
]
DATA_START = b"EHLO f\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n"


class Broken(AssertionError):
    """An invariant did not hold."""


def check_reply(data: bytes) -> None:
    lines = list(_LINE.finditer(data))
    if not lines or b"".join(m.group(0) for m in lines) != data:
        raise Broken(f"malformed reply {data!r}")
    if len({m.group(1) for m in lines}) != 1:
        raise Broken(f"several codes in one reply {data!r}")
    if any(m.group(2) != b"-" for m in lines[:-1]) or lines[-1].group(2) != b" ":
        raise Broken(f"bad continuation marks {data!r}")
    for m in lines:
        enhanced = _ENHANCED.match(m.group(3))
        if enhanced is not None and enhanced.group(1) != m.group(1)[:1]:
            raise Broken(f"enhanced code of another class {data!r}")


def check_message(
    content: bytes, limits: Limits, *, chunked: bool = False, binary: bool = False
) -> None:
    lines = content.split(b"\r\n")
    if lines[-1] != b"" and not chunked:
        raise Broken(f"accepted message does not end in CRLF: {content[-40:]!r}")
    for line in [] if binary else lines:
        if b"\r" in line or b"\n" in line:
            raise Broken(f"accepted message with a bare CR or LF: {line[:80]!r}")
        if len(line) + 2 > limits.max_text_line:
            raise Broken(f"accepted message with a line of {len(line) + 2} octets")
    if len(content) > limits.max_message_size:
        raise Broken(f"accepted message of {len(content)} octets")


class Session:
    """Answers every event; whether it accepts is decided per event number by ``seed``, so
    the same stream cut differently gets the same answers."""

    def __init__(self, limits: Limits, seed: int, refuse_rate: int) -> None:
        self.limits = limits
        self.rng = random.Random(seed)
        self.refuse_rate = refuse_rate
        self.conn = protocol.ServerConnection(limits)
        self.replies: list[bytes] = []
        self.messages: list[bytes] = []
        self.content = bytearray()
        self.binary = False  # the transaction's MAIL said BODY=BINARYMIME
        self._send(r.greeting(HOST))

    def _send(self, reply: r.Reply) -> None:
        data = self.conn.send(reply)
        check_reply(data)
        self.replies.append(data)
        if (reply.closes or reply.code == 221) and self.conn.state is not protocol.State.CLOSED:
            raise Broken(f"{reply.code} did not close")

    def _refuse(self) -> bool:
        return self.rng.randrange(16) < self.refuse_rate

    def feed(self, data: bytes) -> None:
        self.conn.receive_data(data)
        self.drain()

    def drain(self) -> None:
        conn = self.conn
        while True:
            state = conn.state
            event = conn.next_event()
            if event is protocol.NEED_DATA:
                bound = max(self.limits.max_command_line, self.limits.max_text_line + 1)
                if conn.buffered > bound:
                    raise Broken(f"{conn.buffered} bytes buffered after NEED_DATA")
                return
            if event is protocol.PAUSED:
                return
            if isinstance(event, protocol.Bdat):
                continue  # answered at the end of its chunk
            if isinstance(event, protocol.DataChunk):
                chunk_states = (protocol.State.DATA, protocol.State.CHUNK)
                if state not in chunk_states or not event.data:
                    raise Broken(f"chunk {event.data[:40]!r} in state {state}")
                self.content += event.data
                continue
            if isinstance(event, protocol.ConnectionClosed):
                if conn.state is not protocol.State.CLOSED:
                    raise Broken("ConnectionClosed but not closed")
            else:
                if self.rng.randrange(64) == 0:
                    self._send(r.TIMEOUT)
                else:
                    self._send(self.answer(event))
            if conn.state is protocol.State.CLOSED:
                conn.receive_data(b"RSET\r\n")
                if conn.next_event() is not protocol.PAUSED or conn.buffered:
                    raise Broken("a closed connection parsed or kept bytes")
                return

    def answer(self, event: protocol.Event) -> r.Reply:
        if isinstance(event, protocol.Hello):
            if self._refuse():
                return r.SYNTAX_ERROR_ARGS
            if event.extended:
                return r.ehlo(HOST, event.name, ("PIPELINING", "SIZE 1000"))
            return r.helo(HOST, event.name)
        if isinstance(event, protocol.MailFrom):
            self.binary = event.body == "BINARYMIME"
            self.content = bytearray()
            return r.MESSAGE_TOO_BIG if self._refuse() else r.OK_SENDER
        if isinstance(event, protocol.RcptTo):
            return r.RELAY_DENIED if self._refuse() else r.OK_RECIPIENT
        if isinstance(event, protocol.Data):
            self.content = bytearray()
            return r.LOCAL_ERROR if self._refuse() else r.START_DATA
        if isinstance(event, protocol.EndOfData):
            content, self.content = bytes(self.content), bytearray()
            if event.error is not None:
                return event.error
            check_message(content, self.limits)
            self.messages.append(content)
            return r.stored(str(len(self.messages)))
        if isinstance(event, protocol.EndOfChunk):
            if event.error is not None:
                self.content = bytearray()
                return event.error
            if not event.last:
                return r.LOCAL_ERROR if self._refuse() else r.chunk_received(event.size)
            content, self.content = bytes(self.content), bytearray()
            check_message(content, self.limits, chunked=True, binary=self.binary)
            self.messages.append(content)
            return r.stored(str(len(self.messages)))
        if isinstance(event, protocol.RefusedChunk):
            return event.reply
        if isinstance(event, protocol.BadCommand):
            return event.reply
        if isinstance(event, protocol.Quit):
            return r.closing(HOST)
        if isinstance(event, protocol.StartTls):
            return r.TLS_NOT_AVAILABLE
        return r.OK


def play(stream: bytes, cuts: list[int], limits: Limits, seed: int, rate: int) -> Session:
    session = Session(limits, seed, rate)
    edges = [0, *sorted({c for c in cuts if 0 < c < len(stream)}), len(stream)]
    for a, b in zip(edges, edges[1:], strict=False):
        session.feed(stream[a:b])
    session.conn.receive_data(b"")
    session.drain()
    return session


def check(data: bytes) -> None:
    """One fuzz input: header byte, cut count, cut bytes, then the stream."""
    if len(data) < 2:
        return
    header, ncuts = data[0], data[1] % 16
    cut_bytes, stream = data[2 : 2 + ncuts], data[2 + ncuts :]
    limits = LIMIT_SETS[header & 3]
    if header & 4:
        stream = DATA_START + stream
    rate = (header >> 3) & 7  # 0: accept everything ... 7: refuse 7 times in 16
    seed = int.from_bytes(data[:8], "big")
    cuts = [b * len(stream) // 256 for b in cut_bytes]
    whole = play(stream, [], limits, seed, rate)
    pieces = play(stream, cuts, limits, seed, rate)
    if (whole.replies, whole.messages) != (pieces.replies, pieces.messages):
        raise Broken(f"cutting the stream at {sorted(set(cuts))} changed the outcome")


def inputs() -> Any:
    """Hypothesis's inputs: random bytes, and runs of fragments that reach deeper."""
    from hypothesis import strategies as st

    fragments = st.sampled_from(
        [
            b"EHLO c\r\n",
            b"HELO c\r\n",
            b"MAIL FROM:<a@b.example> SIZE=10\r\n",
            b"MAIL FROM:<>\r\n",
            b"RCPT TO:<b@c.example>\r\n",
            b"RCPT TO:<postmaster>\r\n",
            b"DATA\r\n",
            b"BDAT 5\r\n",
            b"BDAT 12 LAST\r\n",
            b"BDAT 0 LAST\r\n",
            b"MAIL FROM:<> BODY=BINARYMIME\r\n",
            b"RSET\r\n",
            b"QUIT\r\n",
            b"STARTTLS\r\n",
            b"\r\n.\r\n",
            b".\r\n",
            b"..\r\n",
            b"\r",
            b"\n",
            b"\x00",
            b"\xff",
            b".",
            b"text\r\n",
            b"x" * 50,
        ]
    )
    return st.tuples(
        st.binary(min_size=2, max_size=18),
        st.one_of(st.binary(max_size=600), st.lists(fragments, max_size=60).map(b"".join)),
    ).map(b"".join)


def run(argv: list[str] | None = None) -> int:
    return main(__doc__ or "", check, inputs, max_examples=500, argv=argv)


if __name__ == "__main__":
    sys.exit(run())
