"""The signals ``smtpkit serve`` acts on, and holding them back until it can.

A signal's default action for SIGHUP, SIGTERM and SIGINT ends the process. The server installs
handlers for them, but only once its event loop (or supervisor) exists; until then they are
blocked, so they stay pending and are handled, not fatal, once the handlers are in place: a
reload asked for during start-up happens right after it. Forked workers inherit the blocked
mask and release it the same way.
"""

from __future__ import annotations

import signal

__all__ = ["SERVER_SIGNALS", "defer_server_signals", "release_server_signals"]

SERVER_SIGNALS = frozenset({signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGCHLD})


def defer_server_signals() -> None:
    """Block the server's signals in this thread (and in threads and processes it starts)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, SERVER_SIGNALS)


def release_server_signals() -> None:
    """Unblock them: pending ones are delivered now, to the handlers installed by then."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, SERVER_SIGNALS)
