"""Prometheus metrics (``[metrics] listen``): what the server counts, named in one place.

The places that journal an event also count it, through ``record``: one call of a method
of the ``Recorder`` this module holds. With metrics off (the default) that recorder is the
base class, whose methods do nothing, and importing this module imports nothing else: the
journal, the session and the connections pay one empty call each.

With metrics on, ``smtpkit serve`` points ``PROMETHEUS_MULTIPROC_DIR`` at
``DIR/.metrics`` before anything imports prometheus_client (``server/metrics_http.py``),
and each worker calls ``enable()`` once it runs as the data folder's owner: from then on
``record`` writes prometheus_client's values, which in multiprocess mode live in files of
that folder mapped into memory, one set per process. The endpoint adds up every process's
files when scraped (ARCHITECTURE.md, "Processes").
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from smtpkit.protocol.replies import Reply

__all__ = [
    "CONNECTION_OUTCOMES",
    "OUTBOUND_OUTCOMES",
    "REFUSAL_REASONS",
    "Recorder",
    "enable",
    "record",
]

#: How a connection was answered: greeted (``accepted``), turned away at a connection
#: limit (``refused_limit``), by a DNS blocklist (``blocklisted``), or because the server
#: was stopping while the blocklists were asked (``shutdown``).
CONNECTION_OUTCOMES = ("accepted", "refused_limit", "blocklisted", "shutdown")
#: Why a message, or one of its recipients, was refused: too big (``size``), no such user
#: (``unknown_user``), another domain for a client that may not relay (``relay``), the
#: checks (SPF, DMARC, rspamd: ``checks``), our own failure to store it (``error``), and
#: every other rule (``policy``). A small closed set, so that no client can add series.
REFUSAL_REASONS = ("size", "unknown_user", "relay", "policy", "checks", "error")
#: What became of a queued recipient at an attempt: ``delivered`` (or relayed),
#: ``deferred`` (tried again later), ``bounced`` (failed for good).
OUTBOUND_OUTCOMES = ("delivered", "deferred", "bounced")

#: Seconds from a message's final dot to its being durable: a commit takes milliseconds,
#: checks (SPF, DKIM, rspamd) may take up to their time limit.
DELIVERY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Recorder:
    """What the server counts. This class counts nothing: metrics are off."""

    __slots__ = ()

    def connection_opened(self) -> None:
        """A client's socket was accepted (it counts as open until it is closed)."""

    def connection_closed(self) -> None:
        """A client's socket was closed."""

    def connection(self, outcome: str) -> None:
        """How a connection was answered, one of ``CONNECTION_OUTCOMES``."""

    def refused(self, reply: Reply) -> None:
        """A message or recipient refused with ``reply`` (its reason told by the reply)."""

    def refused_for(self, reason: str) -> None:
        """A message refused for one of ``REFUSAL_REASONS`` that its reply does not tell
        (the checks' replies vary; a storage failure)."""

    def stored(self, size: int, recipients: int, dot: float) -> None:
        """A message is durable and its 250 is on its way; ``dot``: when its final dot came
        (``time.monotonic()``)."""

    def tls(self, version: str) -> None:
        """A TLS session began (STARTTLS or implicit TLS)."""

    def auth_failed(self) -> None:
        """AUTH with a wrong user name or password."""

    def queue_size(self, messages: int) -> None:
        """The queue runner holds this many messages."""

    def outbound(self, outcome: str, count: int = 1) -> None:
        """Queued recipients settled at an attempt, one of ``OUTBOUND_OUTCOMES``."""

    def journal_error(self) -> None:
        """Writing the journal failed (the disk is full, the folder went away)."""


#: The recorder in use in this process; ``enable()`` replaces it.
record: Recorder = Recorder()


def enable() -> None:
    """Count from now on, in this process. Only where ``PROMETHEUS_MULTIPROC_DIR`` was set
    before prometheus_client was first imported, by whoever will serve the files."""
    global record
    if type(record) is Recorder:
        record = _Prometheus()


class _Prometheus(Recorder):
    """Counts into prometheus_client's metrics, their children bound once: a hook is one
    or two mmap writes."""

    __slots__ = (
        "_accepted",
        "_auth_failures",
        "_bytes",
        "_connections",
        "_delivery",
        "_journal_errors",
        "_open",
        "_outbound",
        "_queue",
        "_reasons",
        "_recipients",
        "_refused",
        "_tls",
        "_tls_versions",
    )

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        from smtpkit.protocol import replies

        # Registered nowhere: in multiprocess mode the endpoint reads the files, never a
        # registry of this process.
        self._open = Gauge(
            "smtpkit_connections_open",
            "Client connections open now, in every worker.",
            multiprocess_mode="livesum",
            registry=None,
        )
        connections = Counter(
            "smtpkit_connections",
            "Client connections by how they were answered.",
            ["outcome"],
            registry=None,
        )
        self._connections = {o: connections.labels(o) for o in CONNECTION_OUTCOMES}
        self._accepted = Counter(
            "smtpkit_messages_accepted", "Messages stored (a 250 at the final dot).", registry=None
        )
        refused = Counter(
            "smtpkit_messages_refused",
            "Messages, or single recipients, refused, by reason.",
            ["reason"],
            registry=None,
        )
        self._refused = {r: refused.labels(r) for r in REFUSAL_REASONS}
        self._reasons: dict[Reply, str] = {
            replies.MESSAGE_TOO_BIG: "size",
            replies.UNKNOWN_USER: "unknown_user",
            replies.RELAY_DENIED: "relay",
            replies.LOCAL_ERROR: "error",
            replies.STORAGE_FULL: "error",
        }
        self._bytes = Counter(
            "smtpkit_accepted_bytes", "Bytes of the messages stored.", registry=None
        )
        self._recipients = Counter(
            "smtpkit_recipients_accepted", "Recipients of the messages stored.", registry=None
        )
        self._delivery = Histogram(
            "smtpkit_delivery_seconds",
            "Seconds from a message's final dot to its being durable (checks included).",
            buckets=DELIVERY_BUCKETS,
            registry=None,
        )
        self._tls = Counter(
            "smtpkit_tls_sessions", "TLS sessions begun, by protocol version.", ["version"],
            registry=None,
        )  # fmt: skip
        # The versions the server can negotiate (TLS 1.2 and newer) show from the start.
        self._tls_versions = {v: self._tls.labels(v) for v in ("TLSv1.2", "TLSv1.3")}
        self._auth_failures = Counter(
            "smtpkit_auth_failures", "AUTH attempts with a wrong user or password.", registry=None
        )
        self._queue = Gauge(
            "smtpkit_queue_messages",
            "Messages in the queue for other domains (while a queue runner runs).",
            multiprocess_mode="livesum",
            registry=None,
        )
        outbound = Counter(
            "smtpkit_outbound_deliveries",
            "Queued recipients settled at an attempt, by outcome.",
            ["outcome"],
            registry=None,
        )
        self._outbound = {o: outbound.labels(o) for o in OUTBOUND_OUTCOMES}
        self._journal_errors = Counter(
            "smtpkit_journal_write_errors", "Failed writes of the journal.", registry=None
        )

    def connection_opened(self) -> None:
        self._open.inc()

    def connection_closed(self) -> None:
        self._open.dec()

    def connection(self, outcome: str) -> None:
        self._connections[outcome].inc()

    def refused(self, reply: Reply) -> None:
        self._refused[self._reasons.get(reply, "policy")].inc()

    def refused_for(self, reason: str) -> None:
        self._refused[reason].inc()

    def stored(self, size: int, recipients: int, dot: float) -> None:
        self._accepted.inc()
        self._bytes.inc(size)
        self._recipients.inc(recipients)
        self._delivery.observe(time.monotonic() - dot)

    def tls(self, version: str) -> None:
        child = self._tls_versions.get(version)
        if child is None:
            # The ssl module's own names, a handful at most.
            child = self._tls_versions[version] = self._tls.labels(version)
        child.inc()

    def auth_failed(self) -> None:
        self._auth_failures.inc()

    def queue_size(self, messages: int) -> None:
        self._queue.set(messages)

    def outbound(self, outcome: str, count: int = 1) -> None:
        self._outbound[outcome].inc(count)

    def journal_error(self) -> None:
        self._journal_errors.inc()
