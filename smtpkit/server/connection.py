"""One client socket, non-blocking, bridged to its ``Session``.

Reads feed the session; replies collect in an output buffer flushed once per loop turn (many
pipelined replies, one ``send``). A client that does not read its replies stops being read
(back-pressure), and every session has a deadline (RFC 5321 4.5.3.2) checked by the server's
sweep. STARTTLS upgrades the socket in place with a non-blocking handshake.
"""

from __future__ import annotations

import selectors
import socket
import ssl
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from smtpkit import metrics
from smtpkit.config import ListenerRole
from smtpkit.policy import TlsInfo
from smtpkit.protocol import proxy, replies
from smtpkit.protocol.replies import Reply
from smtpkit.session import ServerContext, Session

if TYPE_CHECKING:
    from smtpkit.server.loop import EventLoop

__all__ = ["Connection"]

READ_SIZE = 256 * 1024
# One read buffer for every connection of this loop's thread: recv() would allocate (and, at
# this size, mmap and munmap) a fresh 256 KB object per read; recv_into reuses this one.
_READ_VIEW = memoryview(bytearray(READ_SIZE))
# Stop answering (and reading) a client that has this much unsent output: it pipelines but
# never reads.
MAX_OUTPUT = 256 * 1024
# The kernel's send buffer per client socket, fixed: with autotuning a client that never
# reads could tie up to tcp_wmem's maximum (4 MB by default) of kernel memory each. Replies
# are small; this holds hundreds of them.
SEND_BUFFER = 64 * 1024
# Stop reading from a client whose unparsed input exceeds this (see _read_interest).
MAX_BUFFERED = 1024 * 1024

_READ = selectors.EVENT_READ
_WRITE = selectors.EVENT_WRITE


class Connection:
    __slots__ = (
        "_closing",
        "_discarding",
        "_events",
        "_expires",
        "_first",
        "_flush_scheduled",
        "_gone",
        "_handshaking",
        "_implicit",
        "_message_timed",
        "_on_closed",
        "_out",
        "_peer_closed",
        "_tls_context",
        "_want_tls",
        "deadline",
        "loop",
        "peer",
        "session",
        "sock",
    )

    def __init__(
        self,
        loop: EventLoop,
        sock: socket.socket,
        peer: tuple[str, int],
        ctx: ServerContext,
        tls_context: ssl.SSLContext | None,
        on_closed: Callable[[Connection], None],
        *,
        role: ListenerRole = ListenerRole.RECEIVE,
        listener: str = "",
    ) -> None:
        self.loop = loop
        self.sock = sock
        self.peer = peer
        self._tls_context = tls_context
        self._on_closed = on_closed  # the socket is closed: it stops counting against limits
        self._out = bytearray()
        self._closing = False
        self._discarding = False  # half-closed after a 421: reading only to drop it
        self._peer_closed = False
        self._gone = False
        self._flush_scheduled = False
        self._want_tls = False
        self._handshaking = False
        self._events = _READ
        #: The session's first bytes, until they show whether it began with a PROXY header
        #: (see _screen_first); None once they have.
        self._first: bytes | None = b""
        now = time.monotonic()
        self.deadline = now + ctx.limits.command_timeout
        #: The deadline is the data timeout's: set while the session was in a message.
        self._message_timed = False
        # The whole session's limit: no stream of cheap commands keeps a connection forever.
        self._expires = now + ctx.limits.max_session_time
        sock.setblocking(False)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        except OSError:
            pass  # not fatal: the output bound above still holds
        self.session = Session(ctx, self, (peer[0], peer[1]), role=role, listener=listener)
        metrics.record.connection_opened()
        self._implicit = role is ListenerRole.SUBMISSIONS and tls_context is not None

    def start(self) -> None:
        """Begin: greet, or (RFC 8314, an implicit-TLS listener) handshake first and greet
        under TLS. Apart from the constructor, so that the owner has the connection in
        hand even when it ends at once (a handshake that fails right away)."""
        self.loop.register(self.sock, _READ, self._on_event)
        if self._implicit:
            self._begin_tls()
        else:
            self.session.start()

    def refuse(self, reply: Reply, **fields: object) -> None:
        """Instead of ``start``: greet with ``reply`` (a 554) and close."""
        self.loop.register(self.sock, _READ, self._on_event)
        self.session.refuse_service(reply, **fields)

    # --- Transport --------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        self._out += data
        if not self._closing:
            # A reply means the client may go on: its next command gets a fresh deadline.
            limits = self.session.ctx.limits
            self._message_timed = self.session.in_data
            self.deadline = time.monotonic() + (
                limits.data_timeout if self._message_timed else limits.command_timeout
            )
        self._schedule_flush()

    def _time_message(self) -> None:
        """If the session began a message with no reply to time it, its content gets the
        data timeout from now. A BDAT command is answered only at its chunk's end (RFC 3030
        2), so the first chunk of a transaction would otherwise be read under the command
        deadline of the reply before it; DATA has its 354. Called after the session takes
        input (a read, a resume) and on every sweep, since it also reads on by itself when
        a recipient check or a message's commit ends."""
        if self.session.in_data and not self._message_timed and not self._closing:
            self._message_timed = True
            self.deadline = time.monotonic() + self.session.ctx.limits.data_timeout

    @property
    def congested(self) -> bool:
        """Replies are piling up unsent: the session stops answering until they drain."""
        return len(self._out) > MAX_OUTPUT

    def close(self) -> None:
        # The socket, and with it the connection's place under the limits, stays until the
        # last reply is sent or the linger runs out: a client that never reads cannot hold
        # sockets the limits no longer count.
        if self._closing:
            return
        self._closing = True
        self.deadline = time.monotonic() + self.session.ctx.limits.close_linger
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def start_tls(self) -> None:
        self._want_tls = True

    # --- events -----------------------------------------------------------------------------
    def _on_event(self, mask: int) -> None:
        if self._handshaking:
            self._handshake()
            return
        if self._discarding:
            self._discard()
            return
        if mask & _WRITE:
            self._flush()
        # Nothing is read between STARTTLS and the end of the handshake: plaintext sent after
        # STARTTLS must never count as coming over TLS (RFC 3207 4.2, CVE-2011-0411).
        if mask & _READ and not (self._gone or self._want_tls or self._handshaking):
            self._read()

    def _read(self) -> None:
        sock = self.sock
        try:
            data = _READ_VIEW[: sock.recv_into(_READ_VIEW)].tobytes()
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return
        except (OSError, ssl.SSLError) as exc:
            self._lost(f"read error: {exc}")
            return
        if self._first is None:
            self.session.receive(data)
        elif not self._screen_first(data):
            return
        # TLS may hold decrypted bytes the selector will not report; take them now.
        while data and isinstance(sock, ssl.SSLSocket) and sock.pending() and not self._gone:
            try:
                data = _READ_VIEW[: sock.recv_into(_READ_VIEW)].tobytes()
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                break
            except (OSError, ssl.SSLError) as exc:
                self._lost(f"read error: {exc}")
                return
            self.session.receive(data)
        self._time_message()
        if not data and not self._gone:
            # The peer closed its side: answer what it sent, then close.
            self._peer_closed = True
            self.close()
        elif self._events & _READ and not self._read_interest() and not self._gone:
            self._set_events(self._events & ~_READ)

    def _screen_first(self, data: bytes) -> bool:
        """Hand the session its first bytes, unless they are a PROXY header: this peer is
        not in ``server.proxy_protocol_from`` (a listed one has had its header read before
        the session began), and the session ends at once with ``PROXY_NOT_ALLOWED``.
        Bytes that may still become ``PROXY `` are held back: they hold no line end, so
        there is nothing to answer yet. Bytes that may still become the version 2
        signature are answered as they come (they are empty lines). False when nothing
        more is to be done with ``data``."""
        held = self._first or b""
        seen = held + data
        verdict = proxy.announces(seen[: len(proxy.V2_SIGNATURE)])
        if verdict:
            self._first = None
            self.session.force_close(replies.PROXY_NOT_ALLOWED)
            return False
        holding = seen[:1] == proxy.V1_PREFIX[:1]
        if verdict is None and data:
            self._first = seen
            if not holding:
                self.session.receive(data)
            return not holding
        self._first = None
        if holding and held:
            self.session.receive(held)
        self.session.receive(data)
        return True

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._gone:
            return
        if self._out:
            try:
                sent = self.sock.send(self._out)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                sent = 0
            except (OSError, ssl.SSLError) as exc:
                self._lost(f"write error: {exc}")
                return
            del self._out[:sent]
        if self._out:
            # Back-pressure: stop reading while the client is not taking our replies.
            # Not reading either while the reply to STARTTLS waits (see _on_event), nor
            # once the session is over.
            full = len(self._out) > MAX_OUTPUT or self._want_tls or self._closing
            self._set_events(_WRITE if full else self._read_interest() | _WRITE)
            if not full and self.session.stalled:
                self.session.resume()
                self._time_message()
            return
        if self._closing:
            self._close_notify()
            if not self._linger():
                self._lost("closed")
            return
        if self._want_tls:
            self._begin_tls()
            return
        if self._events != _READ:
            # Reading again, if it had stopped (only _read stops it for a full buffer).
            self._set_events(self._read_interest())
        if self.session.stalled:
            self.session.resume()
            self._time_message()

    def _set_events(self, events: int) -> None:
        if events == self._events:
            return
        if not events:
            self.loop.unregister(self.sock)  # a selector cannot watch for nothing
        elif not self._events:
            self.loop.register(self.sock, events, self._on_event)
        else:
            self.loop.modify(self.sock, events, self._on_event)
        self._events = events

    def _read_interest(self) -> int:
        """Read unless the session holds too much unparsed input: while it waits (for a
        message to become durable) the engine parses nothing, so a client pushing ahead must
        wait in the kernel's buffers rather than in our memory."""
        return 0 if self.session.conn.buffered > MAX_BUFFERED else _READ

    # --- TLS --------------------------------------------------------------------------------
    def _begin_tls(self) -> None:
        self._want_tls = False
        assert self._tls_context is not None
        self.loop.unregister(self.sock)
        try:
            self.sock = self._tls_context.wrap_socket(
                self.sock, server_side=True, do_handshake_on_connect=False
            )
        except (OSError, ssl.SSLError) as exc:
            self._lost(f"tls error: {exc}")
            return
        self._handshaking = True
        self._events = _READ
        self.loop.register(self.sock, _READ, self._on_event)
        self._handshake()

    def _handshake(self) -> None:
        sock = self.sock
        assert isinstance(sock, ssl.SSLSocket)
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            self._set_events(_READ)
            return
        except ssl.SSLWantWriteError:
            self._set_events(_WRITE)
            return
        except (OSError, ssl.SSLError) as exc:
            self._lost(f"tls handshake failed: {exc}")
            return
        self._handshaking = False
        self._set_events(_READ)
        cipher = sock.cipher()
        info = TlsInfo(version=sock.version() or "TLS", cipher=cipher[0] if cipher else "unknown")
        if self._implicit:
            self._implicit = False
            self.session.start(tls=info)
        else:
            self.session.tls_started(info)

    def _linger(self) -> bool:
        """After a 421, half-close and read (and drop) what the client still sends until it
        closes or the linger ends. Closing with its pipelined bytes unread would make the
        kernel reset the connection, and a reset can destroy the 421 before the client reads
        it. True when lingering."""
        if (
            self._peer_closed
            or isinstance(self.sock, ssl.SSLSocket)
            or not self.session.close_reason.startswith("421")
        ):
            return False
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            return False
        self._discarding = True
        self._set_events(_READ)
        return True

    def _discard(self) -> None:
        try:
            got = self.sock.recv_into(_READ_VIEW)
        except BlockingIOError:
            return
        except OSError:
            got = 0
        if not got:
            self._lost("closed")

    def _close_notify(self) -> None:
        # RFC 8446 6.1: a TLS peer MUST send close_notify before closing its side, or the
        # client cannot tell our end from a truncation (OpenSSL 3 reports "unexpected eof").
        # Only our alert is sent; waiting for the client's would gain nothing.
        sock = self.sock
        if isinstance(sock, ssl.SSLSocket) and not self._handshaking:
            try:
                sock.unwrap()
            except (OSError, ValueError):
                pass

    # --- ending -----------------------------------------------------------------------------
    def check_deadline(self, now: float) -> None:
        if self._closing:
            if now >= self.deadline:
                # Replies still unsent: they could not be delivered. Else it lingered.
                self._lost("close timeout" if self._out else "closed")
        elif self._handshaking:
            if now >= self.deadline or now >= self._expires:
                self._lost("tls handshake timeout")
        # While a message is being made durable the wait is ours, not the client's: the
        # limits apply once its reply is sent.
        elif self.session.waiting or self.session.closed:
            return
        elif now >= self._expires:
            self.session.expire()
        else:
            self._time_message()
            if now >= self.deadline:
                self.session.timeout()

    def shutdown(self) -> None:
        if self._handshaking:
            # No reply can reach a client in the middle of a handshake, and it has nothing in
            # flight: close now rather than wait for its deadline.
            self._lost("shutdown during tls handshake")
            return
        self.session.shutdown()

    def _lost(self, reason: str) -> None:
        if self._gone:
            return
        self._gone = True
        metrics.record.connection_closed()
        self.loop.unregister(self.sock)
        # Stop counting first, close second: a client that reconnects the moment it sees
        # the close must find the place free, in this worker or any other.
        self._on_closed(self)
        try:
            self.sock.close()
        except OSError:
            pass
        self.session.connection_lost(reason)
