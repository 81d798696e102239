"""``smtpkit reload``: ask the running ``smtpkit serve`` of this data folder to reload.

It sends SIGHUP, and only to a process verified as ``smtpkit serve`` of this data folder: the
holder of the pid file's lock, with that command line (``smtpkit.pidfile.signal_server``).
The pid file belongs to the service user while ``reload`` may run as root, so a number
written in it is never enough. What the server does on SIGHUP is the server's business
(ARCHITECTURE.md, "Processes", its Reload item); this command returns once the signal is
sent, and the journal says how the reload went.

Under systemd, ``systemctl reload smtpkit`` does the same with ``kill -HUP $MAINPID``:
systemd knows the server's pid without a pid file.

Exit status:

====  ===================================================================================
0     SIGHUP sent
1     error: no or a bad config file; smtpkit serve is not running (no pid file, or a stale
      one); a pid file that cannot be read or trusted; not allowed to signal the server (run
      as root or as the user it runs as). Not running is an error here, unlike in
      ``smtpkit status`` (3): the reload that was asked for cannot happen.
2     usage error
====  ===================================================================================
"""

from __future__ import annotations

import signal

import click

from smtpkit.commands import App, pass_app, reports_errors
from smtpkit.pidfile import signal_server

__all__ = ["command"]


@click.command("reload")
@pass_app
@reports_errors
def command(app: App) -> None:
    """Send SIGHUP to the running smtpkit serve, which reloads without a restart (the journal
    says how it went)."""
    pid = signal_server(app.config.server.directory, signal.SIGHUP)
    click.echo(f"Sent SIGHUP to smtpkit serve (pid {pid})")
