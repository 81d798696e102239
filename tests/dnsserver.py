"""A real authoritative DNS server (NSD, Debian package ``nsd``) for the DNS tests.

Import the fixtures into a test module::

    from tests.dnsserver import dns_server, silent_nameserver  # noqa: F401

``dns_server`` starts ``nsd`` on a free loopback port, serving the zones below from a temporary
folder, waits until it answers, and stops it at teardown. ``silent_nameserver`` is a UDP socket
that reads queries and never answers, for timeouts. When ``nsd`` is not installed the tests are
skipped, except under ``CI=true`` where that is a failure: CI must install it.

Zones (TEST-NET and documentation addresses only; ``.test`` is reserved by RFC 6761):

=========================  ===============================================================
name                       records
=========================  ===============================================================
multi.mx.test              MX 5 mx-d, 10 mx-b, 10 mx-a, 20 mx-c, 30 mail.other.test
null.mx.test               MX 0 .  (null MX, RFC 7505)
mixednull.mx.test          MX 0 ., 10 mx-b  (not a valid null MX)
aonly.mx.test              A 192.0.2.10  (implicit MX)
aaaaonly.mx.test           AAAA 2001:db8::10  (implicit MX)
cname.mx.test              MX 10 alias; alias CNAME real; real A/AAAA
literal.mx.test            MX 10 192.0.2.1.  (an IP address as MX target)
dangling.mx.test           MX 10 nowhere  (target does not exist)
failing.mx.test            MX 10 mail.broken.test  (target's lookups SERVFAIL)
nodata.mx.test             TXT only
xn--bcher-kva.mx.test      MX 10 mx-a  (bücher.mx.test)
www.mx.test                CNAME multi  (the domain itself is an alias)
ours.mx.test               MX 10 mail; mail A 127.0.0.1  (reaches a local smtpkit)
selfhosted.mx.test         A 127.0.0.1  (implicit MX to a local smtpkit)
theirs.mx.test             MX 10 mx-b, 20 mx-c  (elsewhere)
nosuch.mx.test             (NXDOMAIN)
*.broken.test              SERVFAIL: NSD is configured for the zone but its file is broken
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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest

from tests.conftest import unavailable

__all__ = ["DnsServer", "dns_server", "require_nsd", "run_nsd", "silent_nameserver"]

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

aonly           IN A     192.0.2.10
aaaaonly        IN AAAA  2001:db8::10

cname           IN MX    10 alias
alias           IN CNAME real
real            IN A     192.0.2.30
real            IN AAAA  2001:db8::30

literal         IN MX    10 192.0.2.1.
dangling        IN MX    10 nowhere
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

ZONES = {"mx.test": MX_TEST_ZONE, "other.test": OTHER_TEST_ZONE, "broken.test": BROKEN_TEST_ZONE}


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


def _answers(host: str, port: int) -> bool:
    query = dns.message.make_query("mx.test.", "SOA")
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
                if _answers(host, port):
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
