"""A small event loop on ``selectors``: readiness callbacks, a timer heap on
``time.monotonic()``, callbacks from other threads, and signals, all woken by one pipe.

Signal handlers only record the signal and write a byte to the wake pipe; the handler the
program registered runs later, on the loop, like any other callback.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import selectors
import signal
import time
from collections import deque
from collections.abc import Callable
from types import FrameType
from typing import Any

__all__ = ["EventLoop", "Handler", "Timer"]

Handler = Callable[[int], None]
Callback = Callable[[], None]


class Timer:
    """A scheduled callback; ``cancel()`` stops it from running."""

    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callback) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class EventLoop:
    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self._timers: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self._ready: deque[Callback] = deque()
        self._threadsafe: deque[Callback] = deque()
        self._signals: deque[int] = deque()
        self._signal_handlers: dict[int, Callback] = {}
        self._running = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, self._drain_wake)

    # --- registration ---------------------------------------------------------------------
    def register(self, fileobj: Any, events: int, handler: Handler) -> None:
        self.selector.register(fileobj, events, handler)

    def modify(self, fileobj: Any, events: int, handler: Handler) -> None:
        self.selector.modify(fileobj, events, handler)

    def unregister(self, fileobj: Any) -> None:
        try:
            self.selector.unregister(fileobj)
        except (KeyError, ValueError):
            pass

    def call_soon(self, callback: Callback) -> None:
        """Run ``callback`` on this loop's thread, in this turn or the next."""
        self._ready.append(callback)

    def call_later(self, delay: float, callback: Callback) -> Timer:
        timer = Timer(time.monotonic() + delay, callback)
        heapq.heappush(self._timers, (timer.when, next(self._seq), timer))
        return timer

    def call_soon_threadsafe(self, callback: Callback) -> None:
        """From any thread: run ``callback`` on the loop and wake it up."""
        self._threadsafe.append(callback)
        self._wake()

    def add_signal_handler(self, signum: int, callback: Callback) -> None:
        self._signal_handlers[signum] = callback
        signal.signal(signum, self._on_signal)

    # --- running ----------------------------------------------------------------------------
    def stop(self) -> None:
        self._running = False
        self._wake()

    def run(self) -> None:
        self._running = True
        select = self.selector.select
        ready = self._ready
        while self._running:
            timeout: float | None = None
            if ready or self._threadsafe or self._signals:
                timeout = 0
            elif self._timers:
                timeout = max(0.0, self._timers[0][0] - time.monotonic())
            for key, mask in select(timeout):
                key.data(mask)
            self._run_signals()
            while self._threadsafe:
                ready.append(self._threadsafe.popleft())
            now = time.monotonic()
            while self._timers and self._timers[0][0] <= now:
                timer = heapq.heappop(self._timers)[2]
                if not timer.cancelled:
                    ready.append(timer.callback)
            # Callbacks scheduled by these callbacks run in the next turn: no starvation.
            for _ in range(len(ready)):
                ready.popleft()()

    def close(self) -> None:
        self.selector.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    # --- internals ---------------------------------------------------------------------------
    def _wake(self) -> None:
        # A full pipe (BlockingIOError) means the loop is going to wake anyway.
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"\0")

    def _drain_wake(self, mask: int) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals.append(signum)
        self._wake()

    def _run_signals(self) -> None:
        while self._signals:
            handler = self._signal_handlers.get(self._signals.popleft())
            if handler is not None:
                handler()
