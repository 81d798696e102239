"""Reading a load balancer's PROXY header off a new connection, before its session starts.

A peer in ``server.proxy_protocol_from`` connects on behalf of a client and must first say
which client (``protocol/proxy.py``). ``HeaderReader`` owns the socket until it has: it
reads exactly the header and not one byte more (the client's first bytes, perhaps a TLS
ClientHello, stay in the kernel for the connection that takes over), within
``limits.proxy_header_timeout`` and ``proxy.MAX_HEADER`` octets. It answers once through
``done``: the header, or why there is none; on failure the socket is already closed and
nothing was sent, not even a greeting (the peer is a balancer, not an SMTP client).

Reading exactly: each time the socket is readable, the reader peeks at what is there,
asks the parser, then takes from the socket only the octets that belong to the header.
Octets peeked and not taken would keep the socket readable and the loop spinning, so when
the header is not whole yet everything peeked is taken (it is all header) and kept.
"""

from __future__ import annotations

import selectors
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

from smtpkit.protocol import proxy

if TYPE_CHECKING:
    from smtpkit.server.loop import EventLoop, Timer

__all__ = ["HeaderReader"]


class HeaderReader:
    """Waits for the PROXY header of one connection; ``done(reader, header, error)``."""

    def __init__(
        self,
        loop: EventLoop,
        sock: socket.socket,
        peer: tuple[str, int],
        timeout: float,
        done: Callable[[HeaderReader, proxy.Header | None, str], None],
    ) -> None:
        self.loop = loop
        self.sock = sock
        self.peer = peer
        self.timeout = timeout
        self._done = done
        self._taken = bytearray()
        self._finished = False
        sock.setblocking(False)
        loop.register(sock, selectors.EVENT_READ, self._on_ready)
        self._timer: Timer = loop.call_later(timeout, self._expire)

    def _on_ready(self, mask: int) -> None:
        taken = self._taken
        try:
            peeked = self.sock.recv(proxy.MAX_HEADER - len(taken), socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fail(f"read error: {exc.strerror or exc}")
            return
        if not peeked:
            where = "in the middle of" if taken else "before"
            self._fail(f"closed {where} its PROXY header")
            return
        got = proxy.parse(bytes(taken) + peeked)
        if isinstance(got, proxy.ProxyError):
            # Taken too, so that the close is an orderly one (FIN) rather than the reset
            # the kernel sends for a socket closed with unread bytes.
            self._take(len(peeked))
            self._fail(got.reason)
            return
        wanted = got.length - len(taken) if isinstance(got, proxy.Header) else len(peeked)
        try:
            part = self.sock.recv(wanted)
        except OSError as exc:
            self._fail(f"read error: {exc.strerror or exc}")
            return
        if len(part) != wanted:  # pragma: no cover - peeked octets are in the kernel's buffer
            self._fail("read error: the socket gave back less than it showed")
            return
        if isinstance(got, proxy.Header):
            self._finish(got, "")
            return
        taken += part

    def _take(self, count: int) -> None:
        try:
            self.sock.recv(count)
        except OSError:
            pass

    def _expire(self) -> None:
        where = "an incomplete" if self._taken else "no"
        self._fail(f"{where} PROXY header after {self.timeout:g} s")

    def abort(self, reason: str) -> None:
        """Close without a header (the server is stopping)."""
        self._fail(reason)

    def _fail(self, reason: str) -> None:
        if self._finished:
            return
        self._finish(None, reason)
        try:
            self.sock.close()
        except OSError:
            pass

    def _finish(self, header: proxy.Header | None, error: str) -> None:
        if self._finished:
            return
        self._finished = True
        self._timer.cancel()
        # The connection that takes the socket over registers it anew.
        self.loop.unregister(self.sock)
        self._done(self, header, error)
