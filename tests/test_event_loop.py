"""The event loop: a listening socket that several workers' loops watch."""

from __future__ import annotations

import re
import select
import socket
import threading
from pathlib import Path

from smtpkit.server.loop import EventLoop
from tests.conftest import unavailable


def watched_events(loop: EventLoop, sock: socket.socket) -> int:
    """The epoll event mask the kernel holds for ``sock`` in ``loop``'s epoll instance,
    without the error and hang-up events it always adds."""
    info = Path(f"/proc/self/fdinfo/{loop.selector.fileno()}").read_text()
    found = re.search(rf"^tfd:\s+{sock.fileno()}\s+events:\s+([0-9a-f]+)", info, re.M)
    assert found is not None, info
    return int(found.group(1), 16) & ~(select.EPOLLERR | select.EPOLLHUP)


def test_a_shared_listening_socket_wakes_one_loop_and_still_accepts() -> None:
    exclusive = getattr(select, "EPOLLEXCLUSIVE", 0)
    if not exclusive or not hasattr(select, "epoll"):
        unavailable("EPOLLEXCLUSIVE needs Linux 4.5 and epoll")
    listening = socket.create_server(("127.0.0.1", 0))
    listening.setblocking(False)
    loops = [EventLoop(), EventLoop()]
    accepted: list[tuple[int, socket.socket]] = []
    lock = threading.Lock()

    def on_ready(index: int) -> None:
        try:
            client, _ = listening.accept()
        except BlockingIOError:
            return
        with lock:
            accepted.append((index, client))
        for loop in loops:
            loop.stop()

    try:
        for index, loop in enumerate(loops):
            loop.register_shared(listening, lambda mask, index=index: on_ready(index))
            # Both loops watch it for reading, and each is woken alone.
            assert watched_events(loop, listening) == select.EPOLLIN | exclusive
        threads = [threading.Thread(target=loop.run) for loop in loops]
        for thread in threads:
            thread.start()
        with socket.create_connection(listening.getsockname(), timeout=10):
            for thread in threads:
                thread.join(timeout=30)
        assert not any(thread.is_alive() for thread in threads)
        assert len(accepted) == 1
        # Unregistered like any other socket, and registered again (as after a pause).
        loops[0].unregister(listening)
        loops[0].register_shared(listening, lambda mask: None)
        assert watched_events(loops[0], listening) == select.EPOLLIN | exclusive
    finally:
        for _, client in accepted:
            client.close()
        for loop in loops:
            loop.close()
        listening.close()
