"""A real authoritative DNS server (NSD, Debian package ``nsd``) for the DNS tests.

Import the fixtures into a test module::

    from tests.dnsserver import dns_server, silent_nameserver  # noqa: F401

``dns_server`` starts ``nsd`` on a free loopback port, serving the zones below from a temporary
folder, waits until it answers, and stops it at teardown. ``silent_nameserver`` is a UDP socket
that reads queries and never answers, for timeouts. ``filtering_nameserver(upstream, drop)``
stands between a client and NSD on another loopback port (UDP and TCP): it records every query
and passes it on, except those ``drop`` picks, which it never answers (lookups that time out
while the rest of the zone answers). The ``filtered_dns_server`` fixture is one in front of
``dns_server`` that drops the address queries for the hosts of ``slow.test``. When ``nsd`` is
not installed the tests are skipped, except under ``CI=true`` where that is a failure: CI must
install it.

Zones (TEST-NET and documentation addresses only; ``.test`` is reserved by RFC 6761):

=========================  ===============================================================
name                       records
=========================  ===============================================================
multi.mx.test              MX 5 mx-d, 10 mx-b, 10 mx-a, 20 mx-c, 30 mail.other.test
null.mx.test               MX 0 .  (null MX, RFC 7505)
mixednull.mx.test          MX 0 ., 10 mx-b  (not a valid null MX)
lonedot.mx.test            MX 10 .  (not a valid null MX either: preference not 0)
aonly.mx.test              A 192.0.2.10  (implicit MX)
aaaaonly.mx.test           AAAA 2001:db8::10  (implicit MX)
cname.mx.test              MX 10 alias; alias CNAME real; real A/AAAA
literal.mx.test            MX 10 192.0.2.1.  (an IP address as MX target)
dangling.mx.test           MX 10 nowhere  (target does not exist)
noaddr.mx.test             MX 10 nodata  (target exists without an address)
failing.mx.test            MX 10 mail.broken.test  (target's lookups SERVFAIL)
nodata.mx.test             TXT only
xn--bcher-kva.mx.test      MX 10 mx-a  (bücher.mx.test)
www.mx.test                CNAME multi  (the domain itself is an alias)
ours.mx.test               MX 10 mail; mail A 127.0.0.1  (reaches a local smtpkit)
selfhosted.mx.test         A 127.0.0.1  (implicit MX to a local smtpkit)
theirs.mx.test             MX 10 mx-b, 20 mx-c  (elsewhere)
nosuch.mx.test             (NXDOMAIN)
*.broken.test              SERVFAIL: NSD is configured for the zone but its file is broken
slow.test                  MX 10 h01 ... MX 49 h40: 40 hosts without records (a filter drops
                           their address queries to make them time out)
many.test                  MX 1 1 ... MX 3000 3000 (3,000 hosts); ``* A 192.0.2.99``
=========================  ===============================================================
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from tests.conftest import unavailable

__all__ = [
    "DnsServer",
    "FilteringNameserver",
    "dns_server",
    "filtered_dns_server",
    "filtering_nameserver",
    "require_nsd",
    "run_nsd",
    "silent_nameserver",
]

INSTALL_HINT = "nsd (authoritative DNS server) is not installed: apt-get install -y nsd"
STARTUP_TIMEOUT = 10.0

MX_TEST_ZONE = """\
$ORIGIN mx.test.
$TTL 60
@               IN SOA   ns hostmaster 1 3600 600 86400 60
@               IN NS    ns
ns              IN A     127.0.0.1

multi           IN MX    10 mx-b
multi           IN MX    10 mx-a
multi           IN MX    20 mx-c
multi           IN MX    5 mx-d
multi           IN MX    30 mail.other.test.
mx-a            IN A     192.0.2.1
mx-a            IN AAAA  2001:db8::1
mx-b            IN A     192.0.2.2
mx-c            IN AAAA  2001:db8::3
mx-d            IN A     192.0.2.14
mx-d            IN A     192.0.2.4

null            IN MX    0 .
mixednull       IN MX    0 .
mixednull       IN MX    10 mx-b
lonedot         IN MX    10 .

aonly           IN A     192.0.2.10
aaaaonly        IN AAAA  2001:db8::10

cname           IN MX    10 alias
alias           IN CNAME real
real            IN A     192.0.2.30
real            IN AAAA  2001:db8::30

literal         IN MX    10 192.0.2.1.
dangling        IN MX    10 nowhere
noaddr          IN MX    10 nodata
failing         IN MX    10 mail.broken.test.
nodata          IN TXT   "no mail here"
xn--bcher-kva   IN MX    10 mx-a
www             IN CNAME multi

ours            IN MX    10 mail
mail            IN A     127.0.0.1
selfhosted      IN A     127.0.0.1
theirs          IN MX    10 mx-b
theirs          IN MX    20 mx-c
"""

OTHER_TEST_ZONE = """\
$ORIGIN other.test.
$TTL 60
@               IN SOA   ns.mx.test. hostmaster.mx.test. 1 3600 600 86400 60
@               IN NS    ns.mx.test.
mail            IN A     198.51.100.7
"""

# Deliberately unparsable: NSD keeps the zone configured but not loaded, and answers every
# query in it with SERVFAIL, which is how a real broken zone looks to a resolver.
BROKEN_TEST_ZONE = """\
$ORIGIN broken.test.
@ IN SOA this is not a valid soa record
"""

SLOW_HOSTS = 40
SLOW_TEST_ZONE = (
    "$ORIGIN slow.test.\n$TTL 60\n"
    "@ IN SOA ns.mx.test. hostmaster.mx.test. 1 3600 600 86400 60\n"
    "@ IN NS ns.mx.test.\n"
    + "".join(f"@ IN MX {9 + i} h{i:02d}\n" for i in range(1, SLOW_HOSTS + 1))
)

# 3,000 MX records with one-to-four-character names: about 63 KB, which still fits in one DNS
# message over TCP (65,535 octets), where the resolver goes after a truncated UDP reply.
MANY_HOSTS = 3000
MANY_TEST_ZONE = (
    "$ORIGIN many.test.\n$TTL 60\n"
    "@ IN SOA ns.mx.test. hostmaster.mx.test. 1 3600 600 86400 60\n"
    "@ IN NS ns.mx.test.\n"
    + "".join(f"@ IN MX {i} {i}\n" for i in range(1, MANY_HOSTS + 1))
    + "* IN A 192.0.2.99\n"
)

ZONES = {
    "mx.test": MX_TEST_ZONE,
    "other.test": OTHER_TEST_ZONE,
    "broken.test": BROKEN_TEST_ZONE,
    "slow.test": SLOW_TEST_ZONE,
    "many.test": MANY_TEST_ZONE,
}


@dataclass(frozen=True)
class DnsServer:
    """A running DNS server: where to send queries."""

    host: str
    port: int
    folder: Path

    @property
    def nameserver(self) -> str:
        """The ``HOST:PORT`` form that ``smtpkit mx --nameserver`` takes."""
        return f"{self.host}:{self.port}"


def require_nsd() -> str:
    """Path of the ``nsd`` binary; skips the test without it (fails under ``CI=true``)."""
    found = shutil.which("nsd") or next(
        (p for p in ("/usr/sbin/nsd", "/usr/local/sbin/nsd") if os.access(p, os.X_OK)), None
    )
    if found is None:
        unavailable(INSTALL_HINT)
    return found


def _free_port(host: str) -> int:
    """A port free for both UDP and TCP on ``host`` (NSD serves both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((host, 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((host, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port for the DNS server")


def _run_as() -> tuple[str, int | None]:
    """NSD's ``username`` setting and the uid that must own its folder.

    As root, NSD binds its sockets and reads the zones, then drops to the ``nsd`` user that the
    Debian package creates, so the server itself does not run privileged.
    """
    if os.geteuid() != 0:
        return "", None
    try:
        return "nsd", pwd.getpwnam("nsd").pw_uid
    except KeyError:
        return "", None


def _config(folder: Path, host: str, port: int, username: str, zones: dict[str, str]) -> str:
    lines = [
        "server:",
        f"    ip-address: {host}@{port}",
        f"    port: {port}",
        f'    username: "{username}"',
        '    chroot: ""',
        f'    zonesdir: "{folder}"',
        '    database: ""',
        f'    pidfile: "{folder}/nsd.pid"',
        f'    xfrdfile: "{folder}/xfrd.state"',
        f'    zonelistfile: "{folder}/zone.list"',
        f'    logfile: "{folder}/nsd.log"',
        "    server-count: 1",
        "    do-ip6: no",
        "    hide-version: yes",
        "    verbosity: 1",
        "remote-control:",
        "    control-enable: no",
    ]
    for name in zones:
        lines += ["zone:", f"    name: {name}", f'    zonefile: "{name}.zone"']
    return "\n".join(lines) + "\n"


def _answers(host: str, port: int, zone: str = "mx.test") -> bool:
    query = dns.message.make_query(f"{zone}.", "SOA")
    try:
        reply = dns.query.udp(query, host, port=port, timeout=0.2)
    except (OSError, dns.exception.DNSException):
        return False
    return reply.rcode() == dns.rcode.NOERROR


def _stop(proc: subprocess.Popen[bytes]) -> None:
    # NSD forks a main and a server process in its own session (start_new_session below):
    # signal that process group, which holds only the processes this fixture started.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


@contextlib.contextmanager
def run_nsd(zones: dict[str, str] | None = None, host: str = "127.0.0.1") -> Iterator[DnsServer]:
    """Run ``nsd`` in the foreground on a free port of ``host`` with ``zones`` (name -> text)."""
    binary = require_nsd()
    zones = ZONES if zones is None else zones
    username, uid = _run_as()
    folder = Path(tempfile.mkdtemp(prefix="smtpkit-nsd-"))
    try:
        folder.chmod(0o755)
        if uid is not None:
            os.chown(folder, uid, -1)
        for name, text in zones.items():
            (folder / f"{name}.zone").write_text(text)
        log = folder / "nsd.log"
        for _attempt in range(3):  # another process may take the port between probe and bind
            port = _free_port(host)
            conf = folder / "nsd.conf"
            conf.write_text(_config(folder, host, port, username, zones))
            proc = subprocess.Popen(
                [binary, "-d", "-c", str(conf)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            deadline = time.monotonic() + STARTUP_TIMEOUT
            while proc.poll() is None and time.monotonic() < deadline:
                if _answers(host, port, next(iter(zones))):
                    break
                time.sleep(0.05)
            else:
                _stop(proc)
                continue
            try:
                yield DnsServer(host, port, folder)
            finally:
                _stop(proc)
            return
        text = log.read_text(errors="replace") if log.exists() else "(no log)"
        pytest.fail(f"nsd did not start within {STARTUP_TIMEOUT}s:\n{text}", pytrace=False)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def dns_server() -> Iterator[DnsServer]:
    """NSD on 127.0.0.1 with the zones in this module's docstring."""
    with run_nsd() as server:
        yield server


@pytest.fixture(scope="session")
def silent_nameserver() -> Iterator[str]:
    """``HOST:PORT`` of a UDP socket that reads every query and never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.1)
    stop = threading.Event()

    def swallow() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                sock.recvfrom(4096)

    thread = threading.Thread(target=swallow, name="silent-nameserver", daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{sock.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=2)
        sock.close()


# --- a filter in front of NSD -----------------------------------------------------------------

Drop = Callable[[str, str], bool]
"""``drop(name, rdtype)``: True to leave a query unanswered (name without final dot, lower
case; rdtype as text, ``"A"``)."""

FORWARD_TIMEOUT = 2.0


@dataclass
class FilteringNameserver:
    """A running filter: where to send queries, and the queries it has seen."""

    host: str
    port: int
    queries: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def nameserver(self) -> str:
        """The ``HOST:PORT`` form that ``smtpkit mx --nameserver`` takes."""
        return f"{self.host}:{self.port}"

    def seen(self) -> list[tuple[str, str]]:
        """``(name, rdtype)`` of every query so far, in arrival order (UDP and TCP)."""
        with self.lock:
            return list(self.queries)


def _recv_exact(sock: socket.socket, size: int, stop: threading.Event) -> bytes | None:
    """``size`` bytes from a socket with a short timeout set; None at EOF or when stopping."""
    data = b""
    while len(data) < size:
        if stop.is_set():
            return None
        try:
            chunk = sock.recv(size - len(data))
        except TimeoutError:
            continue
        except OSError:
            return None
        if not chunk:
            return None
        data += chunk
    return data


class _Filter:
    """Forwards queries to ``upstream`` over the transport they came in on, except dropped ones."""

    def __init__(self, upstream: DnsServer, drop: Drop, record: FilteringNameserver) -> None:
        self.upstream = (upstream.host, upstream.port)
        self.drop = drop
        self.record = record
        self.stop = threading.Event()

    def passes(self, wire: bytes) -> bool:
        try:
            question = dns.message.from_wire(wire).question[0]
        except (dns.exception.DNSException, IndexError):
            return True  # let NSD answer what it makes of it
        name = question.name.to_text(omit_final_dot=True).lower()
        rdtype = dns.rdatatype.to_text(question.rdtype)
        with self.record.lock:
            self.record.queries.append((name, rdtype))
        return not self.drop(name, rdtype)

    def serve_udp(self, sock: socket.socket) -> None:
        # One query at a time: NSD answers within a millisecond, and a dropped query costs
        # nothing, so a burst of concurrent queries is not held up here.
        while not self.stop.is_set():
            try:
                wire, peer = sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            if not self.passes(wire):
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as up:
                up.settimeout(FORWARD_TIMEOUT)
                try:
                    up.sendto(wire, self.upstream)
                    reply = up.recv(65535)
                except OSError:
                    continue
            with contextlib.suppress(OSError):
                sock.sendto(reply, peer)

    def serve_tcp(self, listener: socket.socket, workers: list[threading.Thread]) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            worker = threading.Thread(target=self.tcp_connection, args=(conn,), daemon=True)
            workers.append(worker)
            worker.start()

    def tcp_connection(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(0.1)
            while True:
                head = _recv_exact(conn, 2, self.stop)
                wire = _recv_exact(conn, int.from_bytes(head), self.stop) if head else None
                if wire is None:
                    return
                if not self.passes(wire):
                    continue  # never answered: the client's own timeout ends it
                try:
                    with socket.create_connection(self.upstream, timeout=FORWARD_TIMEOUT) as up:
                        up.sendall(len(wire).to_bytes(2) + wire)
                        size = _recv_exact(up, 2, self.stop)
                        reply = _recv_exact(up, int.from_bytes(size), self.stop) if size else None
                    if reply is None:
                        return
                    conn.sendall(len(reply).to_bytes(2) + reply)
                except OSError:
                    return


def _bind_pair(host: str) -> tuple[socket.socket, socket.socket]:
    """A UDP and a listening TCP socket on the same free port of ``host``."""
    for _ in range(20):
        port = _free_port(host)
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            udp.bind((host, port))
            tcp.bind((host, port))
        except OSError:
            udp.close()
            tcp.close()
            continue
        tcp.listen(16)
        return udp, tcp
    raise RuntimeError("no free port for the filtering nameserver")


@contextlib.contextmanager
def filtering_nameserver(
    upstream: DnsServer, drop: Drop, host: str = "127.0.0.1"
) -> Iterator[FilteringNameserver]:
    """Run a filter in front of ``upstream`` on a free port of ``host`` (UDP and TCP)."""
    udp, tcp = _bind_pair(host)
    record = FilteringNameserver(host, int(udp.getsockname()[1]))
    relay = _Filter(upstream, drop, record)
    udp.settimeout(0.1)
    tcp.settimeout(0.1)
    workers: list[threading.Thread] = []
    threads = [
        threading.Thread(target=relay.serve_udp, args=(udp,), daemon=True),
        threading.Thread(target=relay.serve_tcp, args=(tcp, workers), daemon=True),
    ]
    for thread in threads:
        thread.start()
    try:
        yield record
    finally:
        relay.stop.set()
        for thread in threads:
            thread.join(timeout=FORWARD_TIMEOUT + 1)
        for worker in workers:  # complete now that the accepting thread has stopped
            worker.join(timeout=FORWARD_TIMEOUT + 1)
        udp.close()
        tcp.close()


def drop_slow_hosts(name: str, rdtype: str) -> bool:
    """The address queries for the MX hosts of ``slow.test``: never answered."""
    return rdtype in ("A", "AAAA") and name.endswith(".slow.test")


@pytest.fixture
def filtered_dns_server(dns_server: DnsServer) -> Iterator[FilteringNameserver]:
    """``dns_server`` behind a filter that never answers the address queries of ``slow.test``'s
    hosts; ``seen()`` lists the queries of this test only."""
    with filtering_nameserver(dns_server, drop_slow_hosts) as server:
        yield server
