"""Listening sockets: bind with clear errors, accept with connection limits (accept gating)."""

from __future__ import annotations

import errno
import selectors
import socket
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from smtpkit.config import ListenAddress
from smtpkit.errors import SmtpkitError
from smtpkit.protocol import replies

if TYPE_CHECKING:
    from smtpkit.server.loop import EventLoop

__all__ = ["BindError", "Listener", "bind_all", "refuse"]

BACKLOG = 1024
PAUSE_WHEN_FULL = 0.1  # seconds without accepting after running out of descriptors


class BindError(SmtpkitError):
    """A listen address could not be bound."""


def bind_all(addresses: Sequence[ListenAddress]) -> list[socket.socket]:
    """Bind every listen address or none: raises ``BindError`` naming the address."""
    socks: list[socket.socket] = []
    try:
        for address in addresses:
            socks.append(_bind(address))
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


def _bind(address: ListenAddress) -> socket.socket:
    try:
        sock = socket.socket(address.family, socket.SOCK_STREAM)
    except OSError as exc:
        raise BindError(f"cannot listen on {address}: {exc.strerror}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if address.family == socket.AF_INET6:
            # "[::]:25" and "0.0.0.0:25" may both be configured: keep the families apart.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((address.host, address.port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            why = "address already in use (is another mail server running?)"
        elif exc.errno == errno.EACCES:
            why = "permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
        elif exc.errno == errno.EADDRNOTAVAIL:
            why = "address not available on this machine"
        else:
            why = exc.strerror or str(exc)
        raise BindError(f"cannot listen on {address}: {why}") from None
    return sock


def refuse(client: socket.socket, reply: bytes) -> None:
    """Send a 421 to a client not admitted, as far as it fits without waiting, and close."""
    try:
        client.setblocking(False)
        client.send(reply)
    except OSError:
        pass
    client.close()


class Listener:
    """Accepts on one listening socket; hands accepted sockets to ``on_accept`` unless a limit
    is reached, in which case the client gets ``421 4.7.0`` and is closed at once."""

    def __init__(
        self,
        loop: EventLoop,
        sock: socket.socket,
        admit: Callable[[str], bytes | None],
        on_accept: Callable[[socket.socket, tuple[str, int]], None],
    ) -> None:
        self.loop = loop
        self.sock = sock
        self._admit = admit
        self._on_accept = on_accept
        loop.register(sock, selectors.EVENT_READ, self._on_ready)

    def _on_ready(self, mask: int) -> None:
        # Accept a bounded batch per turn so a flood cannot starve established sessions.
        for _ in range(64):
            try:
                client, addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Out of descriptors: the backlog keeps the clients, and the socket stays
                    # readable, so pause accepting briefly instead of spinning on it.
                    self.loop.unregister(self.sock)
                    self.loop.call_later(PAUSE_WHEN_FULL, self._resume)
                    return
                continue  # ECONNABORTED and friends: that client is gone
            peer = (addr[0], addr[1])
            refusal = self._admit(peer[0])
            if refusal is not None:
                refuse(client, refusal)
                continue
            self._on_accept(client, peer)

    def _resume(self) -> None:
        if self.sock.fileno() >= 0:
            self.loop.register(self.sock, selectors.EVENT_READ, self._on_ready)

    def close(self) -> None:
        self.loop.unregister(self.sock)
        self.sock.close()


TOO_MANY = replies.TOO_MANY_CONNECTIONS.to_bytes()
TOO_MANY_FROM_IP = replies.TOO_MANY_CONNECTIONS_FROM_IP.to_bytes()
