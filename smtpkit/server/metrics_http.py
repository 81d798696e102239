"""The metrics endpoint: ``GET /metrics`` in Prometheus's text format, summed over workers.

``start_endpoint`` runs in ``serve()`` before any worker is forked. With ``[metrics]
listen`` set it empties ``DIR/.metrics`` (as the data folder's owner, whom the workers
become), points ``PROMETHEUS_MULTIPROC_DIR`` at it before prometheus_client is first
imported, binds the address and serves it from a thread of this process: the supervisor,
or with one worker and no supervisor, the worker itself. Never the event loop: a scrape
reads every process's files, which is file I/O. Each worker writes its own files
(``smtpkit.metrics``); when one dies, the supervisor removes its live gauges (open
connections, queue size) with ``mark_process_dead``, while its counters stay in the sums.
"""

from __future__ import annotations

import mmap
import os
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smtpkit import metrics
from smtpkit.config import Config
from smtpkit.errors import ConfigError, SmtpkitError
from smtpkit.fsutil import make_dirs
from smtpkit.owner import as_owner
from smtpkit.server.listener import BindError, bind_all

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

__all__ = ["ENVIRONMENT", "METRICS_FOLDER", "MetricsEndpoint", "start_endpoint"]

#: Under the data folder: prometheus_client's files, one set per worker process.
METRICS_FOLDER = ".metrics"
#: Where prometheus_client's multiprocess mode finds that folder.
ENVIRONMENT = "PROMETHEUS_MULTIPROC_DIR"
#: Seconds a scraper may take to send its request and read the answer.
REQUEST_TIMEOUT = 10.0
#: Scrapes served at once; more connections are closed unanswered.
MAX_REQUESTS = 8


class MetricsEndpoint:
    """The endpoint and the bookkeeping of workers for it. Without a folder (metrics off)
    every method does nothing."""

    def __init__(self, folder: Path | None = None, slots: int = 0) -> None:
        self.folder = folder
        # Which process serves each worker slot, in memory shared with the workers: the
        # supervisor learns of a death by slot, and prometheus_client files go by pid.
        self._pids = memoryview(mmap.mmap(-1, 4 * max(slots, 1))).cast("i")
        self._http: _Server | None = None

    def worker_started(self, slot: int) -> None:
        """In a worker, once it runs as the data folder's owner: count from now on."""
        if self.folder is None:
            return
        self._pids[slot] = os.getpid()
        metrics.enable()

    def worker_died(self, slot: int, then: Callable[[int], None]) -> None:
        """In the supervisor: the worker of ``slot`` is gone (``then(slot)`` first). Its
        live gauges go; its counters keep counting in the sums."""
        then(slot)
        if self.folder is None or not self._pids[slot]:
            return
        pid = self._pids[slot]
        self._pids[slot] = 0
        from prometheus_client.multiprocess import mark_process_dead

        try:
            with as_owner(self.folder.parent):
                mark_process_dead(pid, str(self.folder))  # type: ignore[no-untyped-call]
        except (OSError, SmtpkitError):
            pass  # a gauge shows too much until the next start; serving goes on

    def serve(self, sock: socket.socket) -> None:
        """Answer scrapes on ``sock`` (bound, listening) from a thread of this process."""
        from prometheus_client import values
        from prometheus_client.core import CollectorRegistry
        from prometheus_client.multiprocess import MultiProcessCollector

        if not getattr(values.ValueClass, "_multiprocess", False):
            sock.close()
            raise SmtpkitError(
                f"metrics: prometheus_client was imported before {ENVIRONMENT} was set: "
                "the workers' numbers would not reach the endpoint"
            )
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(self.folder))  # type: ignore[no-untyped-call]
        self._http = _Server(sock, registry)
        # A fork (the supervisor starting a worker) must not leave the worker holding the
        # endpoint's sockets: the port would stay open, a scrape's connection unclosed.
        http = self._http
        os.register_at_fork(
            before=http.guard.acquire,
            after_in_parent=http.guard.release,
            after_in_child=http.forget,
        )
        thread = threading.Thread(target=http.serve_forever, name="smtpkit-metrics", daemon=True)
        thread.start()


def start_endpoint(config: Config, slots: int) -> MetricsEndpoint:
    """Empty the metrics folder, set up prometheus_client's multiprocess mode and serve
    ``[metrics] listen``, before the workers (``slots`` of them at most) are forked; with
    metrics off, an endpoint that does nothing. Raises ``ConfigError`` naming the key
    when the address cannot be bound."""
    address = config.metrics.listen
    if address is None:
        return MetricsEndpoint()
    directory = config.server.directory
    folder = directory / METRICS_FOLDER
    # The workers write here as the owner; a previous run's files would count twice.
    with as_owner(directory):
        make_dirs(folder, 0o700)
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.endswith(".db") and not entry.is_dir(follow_symlinks=False):
                    os.unlink(entry.path)
    # Before the first import of prometheus_client, which picks its kind of values then.
    os.environ[ENVIRONMENT] = str(folder)
    try:
        [sock] = bind_all([address])
    except BindError as exc:
        raise ConfigError(str(exc), path=config.path, key="metrics -> listen") from None
    endpoint = MetricsEndpoint(folder, slots)
    endpoint.serve(sock)
    return endpoint


class _Handler(BaseHTTPRequestHandler):
    """``GET /metrics``; anything else is 404. HTTP/1.0: one scrape per connection."""

    server: _Server
    timeout = REQUEST_TIMEOUT

    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        if self.path.partition("?")[0] != "/metrics":
            self.send_error(404, "Only /metrics is served here")
            return
        from prometheus_client.exposition import choose_encoder

        encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
        try:
            body = encoder(self.server.registry)
        except Exception as exc:  # noqa: BLE001 - a file being rewritten: the scraper retries
            self.send_error(500, f"Cannot read the metrics: {type(exc).__name__}")
            return
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Say nothing: scrapes are routine, and a thread writing to stderr while the
        supervisor forks could leave the stream's lock held in the new worker."""


class _Server(ThreadingHTTPServer):
    """An HTTP server on a socket bound elsewhere, its connections known, so that a forked
    worker can close its copies of them (``forget``)."""

    daemon_threads = True

    def __init__(self, sock: socket.socket, registry: CollectorRegistry) -> None:
        super().__init__(sock.getsockname()[:2], _Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock  # non-blocking: an accept that finds nobody returns at once
        self.registry = registry
        self.guard = threading.Lock()
        self.open: set[socket.socket] = set()

    def get_request(self) -> tuple[socket.socket, Any]:
        with self.guard:
            conn, address = self.socket.accept()
            self.open.add(conn)
        return conn, address

    def verify_request(self, request: Any, client_address: Any) -> bool:
        return len(self.open) <= MAX_REQUESTS

    def shutdown_request(self, request: Any) -> None:
        with self.guard:
            self.open.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A scraper that went away mid-answer: nothing to report (see log_message)."""

    def forget(self) -> None:
        """In a newly forked process: close this process's copies of the sockets (the
        thread serving them stayed behind in the parent). Only ``close``: a ``shutdown``
        would end the parent's connections too."""
        self.guard.release()
        for conn in (self.socket, *self.open):
            try:
                conn.close()
            except OSError:
                pass
        self.open.clear()
