"""The ``smtpkit`` command (also ``python -m smtpkit``).

This module imports nothing heavy before it has protected ``smtpkit serve`` from early signals:
importing the command line takes a few hundred milliseconds, and a SIGHUP (a reload request)
arriving then would kill the server with its default action.
"""

from __future__ import annotations

import sys

from smtpkit.signals import defer_server_signals


def main() -> None:
    if "serve" in sys.argv[1:]:
        # Held until the server's own handlers are in place; the root command group lets
        # them go again if the command turns out to be another one.
        defer_server_signals()
    from smtpkit.commands import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
