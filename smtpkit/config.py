"""THE configuration loader: ``smtpkit.toml`` -> frozen dataclasses. Every default lives here.

Errors say where: ``server -> max_recipients: must be a positive integer (smtpkit.toml)``.
Unknown keys are errors, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

import tomli_w

from smtpkit.addresses import host_port, normalize_address, normalize_domain
from smtpkit.errors import ConfigError, UserError
from smtpkit.fsutil import atomic_write
from smtpkit.limits import BareNewline, Limits

__all__ = [
    "CONFIG_ENV",
    "CONFIG_NAME",
    "ChecksConfig",
    "Config",
    "DeliveryConfig",
    "ListenAddress",
    "ListenerRole",
    "LmtpServer",
    "MetricsConfig",
    "NextHop",
    "QueueConfig",
    "RelayConfig",
    "RelayTls",
    "ServerConfig",
    "SubmissionConfig",
    "TlsConfig",
    "default_config_path",
    "load_config",
    "parse_listen",
    "update_config",
    "write_config",
]

CONFIG_NAME = "smtpkit.toml"
CONFIG_ENV = "SMTPKIT_CONFIG"

DEFAULT_LISTEN = ("0.0.0.0:25",)

T = TypeVar("T")


class ListenerRole(StrEnum):
    """What a listener is for; every rule that differs between listeners keys on this,
    never on a port number."""

    #: Mail from the world for the local domains (port 25): no relaying, no AUTH.
    RECEIVE = "receive"
    #: Mail from users (RFC 6409, port 587): STARTTLS, then AUTH, before MAIL.
    SUBMISSION = "submission"
    #: The same with TLS from the first byte (RFC 8314, port 465).
    SUBMISSIONS = "submissions"


@dataclass(frozen=True, slots=True)
class ListenAddress:
    host: str
    port: int
    role: ListenerRole = ListenerRole.RECEIVE

    @property
    def family(self) -> socket.AddressFamily:
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET

    def __str__(self) -> str:
        return host_port(self.host, self.port)


@dataclass(frozen=True, slots=True)
class ServerConfig:
    hostname: str
    listen: tuple[ListenAddress, ...]
    directory: Path
    domains: tuple[str, ...]
    workers: int = 1
    #: With several workers, while the server is busy, each worker's threads run on one CPU
    #: of their own (server/placement.py): its event loop and delivery thread hand the
    #: interpreter lock to each other all the time, and on one CPU that wakes no other CPU.
    pin_workers: bool = True
    #: Offer DSN (RFC 3461) on the receive listeners too; off by default: success notices
    #: asked for by an unauthenticated client would mail whatever it sends to whomever it
    #: names as the sender (backscatter).
    dsn_on_receive: bool = False
    #: Peers that connect on behalf of clients (TCP load balancers) and must begin every
    #: connection with a PROXY header naming the client; nobody else may send one.
    proxy_protocol_from: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    #: The characters that separate a local part from its tag (RFC 5233 subaddresses,
    #: ``alice+lists@``); each one is a delimiter, and "" turns subaddresses off.
    recipient_delimiter: str = "+"
    #: What a bare LF in message content does: refused (RFC 5321 2.3.8), or stored as CRLF
    #: for old clients. Passed to the engine in ``Limits``.
    bare_newline: BareNewline = BareNewline.REJECT

    @property
    def users_dir(self) -> Path:
        return self.directory / "users"

    @property
    def journal_dir(self) -> Path:
        return self.directory / "journal"


@dataclass(frozen=True, slots=True)
class SubmissionConfig:
    """``[submission]``: how users and local programs send mail."""

    #: Networks whose clients may relay on the receive listeners without AUTH (Postfix's
    #: mynetworks): an application server on the same host or network.
    trusted_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    #: The domain of the default sender of `smtpkit sendmail` (user@this); empty:
    #: server.hostname.
    local_sender_domain: str = ""


@dataclass(frozen=True, slots=True)
class NextHop:
    """Where a route or the smarthost points: a host name (its A/AAAA addresses are used,
    never its MX records) or an IP address, and a port."""

    host: str
    port: int

    def __str__(self) -> str:
        return host_port(self.host, self.port)


@dataclass(frozen=True, slots=True)
class LmtpServer:
    """``[delivery] lmtp``: the LMTP server (RFC 2033) that local mail is handed to, such as
    Dovecot's: a next hop over TCP, or a Unix socket (``socket``, an absolute path)."""

    hop: NextHop | None = None
    socket: Path | None = None

    def __str__(self) -> str:
        return f"unix:{self.socket}" if self.socket is not None else str(self.hop)


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    """``[delivery]`` and ``[dns]``: how the queue runner reaches other servers."""

    max_connections: int = 100
    max_per_domain: int = 10
    connect_timeout: float = 30.0
    #: Caps the wait for every reply (RFC 5321 4.5.3.2 gives 2 to 10 minutes a step); None:
    #: the RFC's times.
    reply_timeout: float | None = None
    #: Nameservers for delivery and ``mx --check`` ("HOST[:PORT]"); empty: the system's.
    nameservers: tuple[str, ...] = ()
    #: Static next hops by domain (``[routes]``): no MX lookup for these domains.
    routes: Mapping[str, NextHop] = field(default_factory=dict)
    #: Where local mail goes instead of the Maildirs: queued, then handed to this LMTP
    #: server by the queue runner (None: the Maildirs under users/).
    lmtp: LmtpServer | None = None
    #: Ask the LMTP server about each local recipient during the SMTP session (RCPT).
    lmtp_verify: bool = False
    #: Connections to the LMTP server at most, each reused for message after message.
    lmtp_max_connections: int = 10


class RelayTls(StrEnum):
    STARTTLS = "starttls"
    IMPLICIT = "implicit"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class RelayConfig:
    """``[relay]``: a smarthost for all mail that no route names."""

    hop: NextHop
    tls: RelayTls = RelayTls.STARTTLS
    username: str = ""
    password_file: Path | None = None
    ca_file: Path | None = None


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """``[queue]``: retries and their end, in seconds."""

    min_retry: float = 300.0
    max_retry: float = 3600.0
    max_age: float = 432000.0
    #: When to tell a sender that mail is still waiting; 0: never.
    delay_warning: float = 14400.0
    #: Keep everything queued and send nothing (maintenance; `smtpkit queue` still works).
    hold: bool = False


@dataclass(frozen=True, slots=True)
class ChecksConfig:
    """``[checks]``: what mail arriving on port 25 is checked for, and what follows."""

    #: The authserv-id of Authentication-Results (RFC 8601); empty: server.hostname.
    authserv_id: str = ""
    spf: str = "tag"  # "tag" | "reject" | "off"
    dkim: str = "tag"  # "tag" | "off"
    dmarc: str = "tag"  # "tag" | "enforce" | "off"
    #: Seconds for all the checks of one message; what is not done by then is temperror.
    time_limit: float = 10.0
    #: DNS blocklists asked about each client at connect (RFC 5782), e.g. zen.spamhaus.org.
    dnsbl: tuple[str, ...] = ()
    #: rspamd's HTTP address ("http://127.0.0.1:11333"); empty: no content scanner.
    rspamd: str = ""
    rspamd_timeout: float = 10.0
    #: When rspamd cannot be asked: "open" accepts the message, "closed" defers it (451).
    rspamd_fail: str = "open"
    #: Check clients on loopback addresses too. Off: mail from the machine itself (a local
    #: program speaking SMTP) is local mail, like mail from trusted_networks.
    check_loopback: bool = False

    @property
    def any(self) -> bool:
        """Whether anything is checked at all."""
        return bool(
            self.spf != "off" or self.dkim != "off" or self.dmarc != "off" or self.dnsbl
            or self.rspamd
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """``[metrics]``: the Prometheus endpoint (``/metrics``, plain HTTP, no password)."""

    #: Where it listens; None: nowhere, metrics are off. Any address may be named, but what
    #: it shows (traffic, refusals, the queue) is for the operator's eyes: loopback, or a
    #: management network behind a firewall.
    listen: ListenAddress | None = None


@dataclass(frozen=True, slots=True)
class TlsConfig:
    certificate: Path
    key: Path


@dataclass(frozen=True, slots=True)
class Config:
    """The whole loaded configuration; ``path`` is the file it came from."""

    path: Path
    server: ServerConfig
    limits: Limits
    aliases: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    tls: TlsConfig | None = None
    submission: SubmissionConfig = field(default_factory=SubmissionConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    relay: RelayConfig | None = None
    queue: QueueConfig = field(default_factory=QueueConfig)
    checks: ChecksConfig = field(default_factory=ChecksConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    #: Things in the file that still work but should change (deprecated keys), one line
    #: each; ``serve`` and ``check`` show them.
    notes: tuple[str, ...] = ()


def default_config_path() -> Path:
    """``$SMTPKIT_CONFIG`` when set, else ``./smtpkit.toml``."""
    return Path(os.environ.get(CONFIG_ENV) or CONFIG_NAME)


def parse_listen(text: str) -> ListenAddress:
    """Parse ``HOST:PORT`` or ``[IPv6]:PORT``; raises ``ValueError`` with the reason."""
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise ValueError(f"{text!r} is not [IPv6]:PORT")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv6 address") from None
    else:
        host, sep, port = text.rpartition(":")
        if not sep or not host or ":" in host:
            raise ValueError(f"{text!r} is not HOST:PORT (write IPv6 as [::1]:25)")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r}: port must be 1-65535")
    return ListenAddress(host, int(port))


def _default_hostname() -> str:
    return socket.getfqdn() or "localhost"


class _Section:
    """Typed access to one TOML table, reporting errors as ``section -> key: ...``."""

    def __init__(self, data: Mapping[str, Any], name: str, path: Path) -> None:
        self.data = data
        self.name = name
        self.path = path
        self.seen: set[str] = set()

    def error(self, key: str | None, message: str) -> ConfigError:
        where = f"{self.name} -> {key}" if key else self.name
        return ConfigError(message, path=self.path, key=where)

    def get(self, key: str, kind: Callable[[Any], T | None], what: str, default: T) -> T:
        self.seen.add(key)
        if key not in self.data:
            return default
        value = kind(self.data[key])
        if value is None:
            raise self.error(key, f"must be {what}, got {self.data[key]!r}")
        return value

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            raise self.error(unknown[0], "unknown key")


def _positive_int(value: Any) -> int | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
    return value if ok else None


def _positive_number(value: Any) -> float | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value > 0
    return float(value) if ok else None


def _bare_newline(sec: _Section) -> BareNewline:
    what = " or ".join(f'"{choice}"' for choice in BareNewline)
    text = sec.get("bare_newline", _string, what, BareNewline.REJECT.value)
    try:
        return BareNewline(text)
    except ValueError:
        raise sec.error("bare_newline", f"must be {what}, got {text!r}") from None


def _non_negative_number(value: Any) -> float | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
    return float(value) if ok else None


def _boolean(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _port(value: Any) -> int | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536
    return value if ok else None


def _string(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _string_list(value: Any) -> list[str] | None:
    if isinstance(value, str) and value:
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return list(value)
    return None


def _table(data: Mapping[str, Any], name: str, path: Path) -> Mapping[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError("must be a table", path=path, key=name)
    return value


#: The configurable fields of ``Limits`` under ``[limits]``: how each is checked and worded.
_LIMIT_KEYS: dict[str, tuple[Callable[[Any], Any], str]] = {
    "max_message_size": (_positive_int, "a positive integer"),
    "max_recipients": (_positive_int, "a positive integer"),
    "max_connections": (_positive_int, "a positive integer"),
    "max_connections_per_ip": (_positive_int, "a positive integer"),
    "command_timeout": (_positive_number, "a positive number of seconds"),
    "data_timeout": (_positive_number, "a positive number of seconds"),
    "max_errors": (_positive_int, "a positive integer"),
    "max_junk_commands": (_positive_int, "a positive integer"),
    "max_session_time": (_positive_number, "a positive number of seconds"),
    "max_messages_per_user_per_hour": (_positive_int, "a positive integer"),
    "proxy_header_timeout": (_positive_number, "a positive number of seconds"),
}
#: Limits that used to live under [server]: still accepted there, with a note.
_MOVED_TO_LIMITS = ("max_message_size", "max_recipients")


_SECTIONS = {
    "server", "limits", "aliases", "tls", "submission", "delivery", "dns", "routes", "relay",
    "queue", "checks", "metrics",
}  # fmt: skip


def parse_next_hop(text: str, default_port: int = 25) -> NextHop:
    """``host``, ``host:port``, ``[address]`` or ``[address]:port`` (an IPv6 address only in
    brackets); raises ``ValueError`` with the reason."""
    usage = f"{text!r} is not HOST[:PORT] or [ADDRESS][:PORT]"
    port_text = ""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(usage)
        port_text = rest[1:] if rest else "-"
        try:
            host = str(ipaddress.ip_address(host))
        except ValueError:
            raise ValueError(f"{text!r}: {host!r} in brackets is not an IP address") from None
    else:
        host, sep, port_text = text.partition(":")
        port_text = port_text if sep else "-"
        try:
            host = str(ipaddress.ip_address(host))
        except ValueError:
            try:
                host = normalize_domain(host)
            except UserError:
                raise ValueError(usage) from None
    if port_text == "-":
        return NextHop(host, default_port)
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{text!r}: the port must be 1-65535")
    return NextHop(host, int(port_text))


def load_config(path: Path | str | None = None) -> Config:
    """Read and check ``path`` (default: ``default_config_path()``).

    Raises ``ConfigError`` naming the file and key for every problem.
    """
    path = Path(path) if path is not None else default_config_path()
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(
            "config file not found (create one with `smtpkit init DIR --domain example.org`, "
            f"or point -c/--config or ${CONFIG_ENV} at it)",
            path=path,
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", path=path) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", path=path) from None
    return parse_config(data, path)


def parse_config(data: Mapping[str, Any], path: Path) -> Config:
    """Check an already-parsed TOML document; ``path`` locates errors and relative paths."""
    unknown = sorted(set(data) - _SECTIONS)
    if unknown:
        raise ConfigError("unknown section", path=path, key=unknown[0])
    base = path.resolve().parent

    srv = _Section(_table(data, "server", path), "server", path)
    no_domains: list[str] = []
    raw_domains = srv.get("domains", _string_list, "a list of domain names", no_domains)
    if not raw_domains:
        raise srv.error("domains", "is required: the list of domains this server receives for")
    domains: list[str] = []
    for d in raw_domains:
        try:
            domains.append(normalize_domain(d))
        except UserError as exc:
            raise srv.error("domains", str(exc)) from None
    listen_texts = srv.get("listen", _string_list, 'a list of "HOST:PORT"', list(DEFAULT_LISTEN))
    listen: list[ListenAddress] = []
    for text in listen_texts:
        try:
            listen.append(parse_listen(text))
        except ValueError as exc:
            raise srv.error("listen", str(exc)) from None
    hostname = srv.get("hostname", _string, "a host name", "") or _default_hostname()
    directory = Path(srv.get("directory", _string, "a folder path", "."))
    directory = directory if directory.is_absolute() else base / directory
    server = ServerConfig(
        hostname=hostname,
        listen=tuple(listen),
        directory=directory,
        domains=tuple(dict.fromkeys(domains)),
        workers=srv.get("workers", _positive_int, "a positive integer", os.cpu_count() or 1),
        pin_workers=srv.get("pin_workers", _boolean, "true or false", True),
        dsn_on_receive=srv.get("dsn_on_receive", _boolean, "true or false", False),
        proxy_protocol_from=_networks(srv, "proxy_protocol_from"),
        recipient_delimiter=_recipient_delimiter(srv),
        bare_newline=_bare_newline(srv),
    )
    # Deprecated home of two limits: still read, but only from one place.
    moved = {key: srv.data[key] for key in _MOVED_TO_LIMITS if key in srv.data}
    srv.seen.update(moved)
    srv.finish()

    lim = _Section(_table(data, "limits", path), "limits", path)
    notes: list[str] = []
    for key, value in moved.items():
        if key in lim.data:
            raise srv.error(key, f"set it in one place: [limits] {key} (this one is deprecated)")
        if _positive_int(value) is None:
            raise srv.error(key, f"must be a positive integer, got {value!r}")
        notes.append(f"server -> {key} is deprecated: move it to [limits] ({path})")
    values: dict[str, Any] = {}
    for key, (kind, what) in _LIMIT_KEYS.items():
        given = moved[key] if key in moved else lim.get(key, kind, what, None)
        if given is not None:
            values[key] = given
    limits = Limits(**values, bare_newline=server.bare_newline)
    lim.finish()

    aliases: dict[str, tuple[str, ...]] = {}
    for key, value in _table(data, "aliases", path).items():
        where = f"aliases -> {key}"
        targets = _string_list(value)
        if targets is None:
            raise ConfigError("must be an address or a list of addresses", path=path, key=where)
        try:
            source = normalize_address(key, server.domains)
            aliases[source] = tuple(
                dict.fromkeys(normalize_address(t, server.domains) for t in targets)
            )
        except UserError as exc:
            raise ConfigError(str(exc), path=path, key=where) from None

    tls: TlsConfig | None = None
    if "tls" in data:
        sec = _Section(_table(data, "tls", path), "tls", path)
        cert = sec.get("certificate", _string, "a PEM file path", "")
        key = sec.get("key", _string, "a PEM file path", "")
        sec.finish()
        if bool(cert) != bool(key):
            raise sec.error("key" if cert else "certificate", "both certificate and key are needed")
        if cert:
            tls = TlsConfig(
                certificate=base / cert if not Path(cert).is_absolute() else Path(cert),
                key=base / key if not Path(key).is_absolute() else Path(key),
            )
    submission, extra_listen = _parse_submission(data, path)
    _bound_once([*server.listen, *extra_listen], path)
    if extra_listen:
        if tls is None:
            key = (
                "listen"
                if any(a.role is ListenerRole.SUBMISSION for a in extra_listen)
                else ("implicit_tls")
            )
            raise ConfigError(
                "needs [tls]: passwords are only ever sent under TLS (smtpkit tls self-signed, "
                "or a certificate and key)",
                path=path,
                key=f"submission -> {key}",
            )
        server = replace(server, listen=server.listen + tuple(extra_listen))
    return Config(
        path=path,
        server=server,
        limits=limits,
        aliases=aliases,
        tls=tls,
        submission=submission,
        delivery=_parse_delivery(data, path, server),
        relay=_parse_relay(data, path, base),
        queue=_parse_queue(data, path),
        checks=_parse_checks(data, path),
        metrics=_parse_metrics(data, path, server),
        notes=tuple(notes),
    )


def _networks(sec: _Section, key: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """A list of networks (CIDR); an address alone is its own network (/32, /128)."""
    texts: list[str] = sec.get(key, _string_list_or_none, "a list of networks (CIDR)", [])
    networks = []
    for text in texts:
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise sec.error(key, f"{text!r} is not a network (CIDR)") from None
    return tuple(networks)


def _string_list_or_none(value: Any) -> list[str] | None:
    return [] if value == [] else _string_list(value)


#: Characters that may separate a subaddress: those a local part may hold
#: (``addresses.py``) other than letters, digits and the dot, which already structure it.
SUBADDRESS_DELIMITERS = "+-_=#~^&$'*?"


def _recipient_delimiter(sec: _Section) -> str:
    key = "recipient_delimiter"
    sec.seen.add(key)
    value = sec.data.get(key, "+")
    if not isinstance(value, str):
        raise sec.error(
            key, f'must be a string of delimiter characters ("+", "+-", or ""), got {value!r}'
        )
    wrong = sorted(set(value) - set(SUBADDRESS_DELIMITERS))
    if wrong:
        raise sec.error(
            key,
            f"{wrong[0]!r} cannot separate a subaddress: use characters of "
            f'{SUBADDRESS_DELIMITERS!r} ("" turns subaddresses off)',
        )
    if len(set(value)) != len(value):
        raise sec.error(key, f"{value!r} names a character twice")
    return value


def _parse_delivery(data: Mapping[str, Any], path: Path, server: ServerConfig) -> DeliveryConfig:
    sec = _Section(_table(data, "delivery", path), "delivery", path)
    default = DeliveryConfig()
    max_connections = sec.get(
        "max_connections", _positive_int, "a positive integer", default.max_connections
    )
    max_per_domain = sec.get(
        "max_per_domain", _positive_int, "a positive integer", default.max_per_domain
    )
    connect_timeout = sec.get(
        "connect_timeout", _positive_number, "a positive number of seconds",
        default.connect_timeout,
    )  # fmt: skip
    reply_timeout = sec.get("reply_timeout", _positive_number, "a positive number of seconds", 0.0)
    lmtp_text = sec.get("lmtp", _string, '"HOST:PORT" or "unix:/PATH"', "")
    lmtp = None
    if lmtp_text:
        try:
            lmtp = parse_lmtp(lmtp_text)
        except ValueError as exc:
            raise sec.error("lmtp", str(exc)) from None
    lmtp_verify = sec.get("lmtp_verify", _boolean, "true or false", False)
    if lmtp_verify and lmtp is None:
        raise sec.error("lmtp_verify", "needs lmtp: the server to ask about recipients")
    lmtp_max_connections = sec.get(
        "lmtp_max_connections", _positive_int, "a positive integer",
        default.lmtp_max_connections,
    )  # fmt: skip
    sec.finish()
    dns_sec = _Section(_table(data, "dns", path), "dns", path)
    none: list[str] = []
    nameservers = dns_sec.get("nameservers", _string_list, 'a list of "HOST[:PORT]"', none)
    from smtpkit.dns import DnsError, parse_nameserver  # dnspython only when configured

    for text in nameservers:
        try:
            parse_nameserver(text)
        except DnsError as exc:
            raise dns_sec.error("nameservers", str(exc)) from None
    dns_sec.finish()
    routes: dict[str, NextHop] = {}
    for key, value in _table(data, "routes", path).items():
        where = f"routes -> {key}"
        if not isinstance(value, str) or not value:
            raise ConfigError('must be "HOST[:PORT]" or "[ADDRESS][:PORT]"', path=path, key=where)
        try:
            domain = normalize_domain(key)
        except UserError as exc:
            raise ConfigError(str(exc), path=path, key=where) from None
        if domain in server.domains:
            raise ConfigError(
                "is a local domain (server.domains): its mail is delivered here",
                path=path,
                key=where,
            )
        try:
            routes[domain] = parse_next_hop(value)
        except ValueError as exc:
            raise ConfigError(str(exc), path=path, key=where) from None
    return DeliveryConfig(
        max_connections=max_connections,
        max_per_domain=max_per_domain,
        connect_timeout=connect_timeout,
        reply_timeout=reply_timeout or None,
        nameservers=tuple(nameservers),
        routes=routes,
        lmtp=lmtp,
        lmtp_verify=lmtp_verify,
        lmtp_max_connections=lmtp_max_connections,
    )


def parse_lmtp(text: str) -> LmtpServer:
    """``unix:/PATH`` (a Unix socket, such as Dovecot's ``/run/dovecot/lmtp``), or a next hop
    ``HOST[:PORT]`` / ``[ADDRESS][:PORT]``, port 24 by default (RFC 2033 forbids 25: an SMTP
    server there would take LMTP's replies for SMTP's); raises ``ValueError`` with the
    reason."""
    if text.startswith("unix:"):
        path = Path(text[len("unix:") :])
        if not path.is_absolute():
            raise ValueError(f"{text!r}: the socket must be an absolute path (unix:/run/...)")
        return LmtpServer(socket=path)
    hop = parse_next_hop(text, default_port=24)
    if hop.port == 25:
        raise ValueError(f"{text!r}: port 25 is SMTP's; LMTP must be on another (RFC 2033)")
    return LmtpServer(hop=hop)


_RELAY_PORTS = {RelayTls.STARTTLS: 587, RelayTls.IMPLICIT: 465, RelayTls.NONE: 25}


def _parse_relay(data: Mapping[str, Any], path: Path, base: Path) -> RelayConfig | None:
    if "relay" not in data:
        return None
    sec = _Section(_table(data, "relay", path), "relay", path)
    host = sec.get("host", _string, '"HOST[:PORT]"', "")
    if not host:
        raise sec.error("host", 'is required: the smarthost, "HOST[:PORT]"')
    tls_text = sec.get("tls", _string, '"starttls", "implicit" or "none"', "starttls")
    try:
        tls = RelayTls(tls_text)
    except ValueError:
        raise sec.error(
            "tls", f'must be "starttls", "implicit" or "none", got {tls_text!r}'
        ) from None
    try:
        hop = parse_next_hop(host, _RELAY_PORTS[tls])
    except ValueError as exc:
        raise sec.error("host", str(exc)) from None
    username = sec.get("username", _string, "a user name", "")
    password_text = sec.get("password_file", _string, "a file path", "")
    ca_text = sec.get("ca_file", _string, "a PEM file path", "")
    sec.finish()
    if bool(username) != bool(password_text):
        raise sec.error(
            "password_file" if username else "username", "username and password_file go together"
        )
    if username and tls is RelayTls.NONE:
        raise sec.error("tls", 'cannot be "none" with a username: passwords only go under TLS')

    def where(text: str) -> Path | None:
        return (base / text if not Path(text).is_absolute() else Path(text)) if text else None

    return RelayConfig(hop, tls, username, where(password_text), where(ca_text))


def _choice(*allowed: str) -> Callable[[Any], str | None]:
    return lambda value: value if value in allowed else None


def _parse_checks(data: Mapping[str, Any], path: Path) -> ChecksConfig:
    sec = _Section(_table(data, "checks", path), "checks", path)
    default = ChecksConfig()
    authserv_id = sec.get("authserv_id", _string, "a host name", "")
    if authserv_id:
        try:
            authserv_id = normalize_domain(authserv_id)
        except UserError as exc:
            raise sec.error("authserv_id", str(exc)) from None
    spf = sec.get("spf", _choice("tag", "reject", "off"), '"tag", "reject" or "off"', "tag")
    dkim = sec.get("dkim", _choice("tag", "off"), '"tag" or "off"', "tag")
    dmarc = sec.get("dmarc", _choice("tag", "enforce", "off"), '"tag", "enforce" or "off"', "tag")
    seconds = "a positive number of seconds"
    time_limit = sec.get("time_limit", _positive_number, seconds, default.time_limit)
    none: list[str] = []
    zones = []
    for zone in sec.get("dnsbl", _string_list, "a list of DNS zones", none):
        try:
            zones.append(normalize_domain(zone.rstrip(".")))
        except UserError as exc:
            raise sec.error("dnsbl", str(exc)) from None
    rspamd = sec.get("rspamd", _string, 'an "http://HOST:PORT" address', "")
    if rspamd:
        from smtpkit.mailauth.rspamd import parse_url

        try:
            parse_url(rspamd)
        except ValueError as exc:
            raise sec.error("rspamd", str(exc)) from None
    rspamd_timeout = sec.get("rspamd_timeout", _positive_number, seconds, default.rspamd_timeout)
    rspamd_fail = sec.get("rspamd_fail", _choice("open", "closed"), '"open" or "closed"', "open")
    check_loopback = sec.get("check_loopback", _boolean, "true or false", False)
    sec.finish()
    return ChecksConfig(
        authserv_id, spf, dkim, dmarc, time_limit, tuple(zones), rspamd, rspamd_timeout,
        rspamd_fail, check_loopback,
    )  # fmt: skip


def _parse_queue(data: Mapping[str, Any], path: Path) -> QueueConfig:
    sec = _Section(_table(data, "queue", path), "queue", path)
    default = QueueConfig()
    seconds = "a positive number of seconds"
    min_retry = sec.get("min_retry", _positive_number, seconds, default.min_retry)
    max_retry = sec.get("max_retry", _positive_number, seconds, default.max_retry)
    max_age = sec.get("max_age", _positive_number, seconds, default.max_age)
    delay_warning = sec.get(
        "delay_warning", _non_negative_number, "a number of seconds (0: never)",
        default.delay_warning,
    )  # fmt: skip
    hold = sec.get("hold", _boolean, "true or false", False)
    sec.finish()
    if max_retry < min_retry:
        raise sec.error("max_retry", f"must not be less than min_retry ({min_retry:g})")
    return QueueConfig(min_retry, max_retry, max_age, delay_warning, hold)


def _parse_metrics(data: Mapping[str, Any], path: Path, server: ServerConfig) -> MetricsConfig:
    sec = _Section(_table(data, "metrics", path), "metrics", path)
    text = sec.get("listen", _string, '"HOST:PORT"', "")
    sec.finish()
    if not text:
        return MetricsConfig()
    try:
        address = parse_listen(text)
    except ValueError as exc:
        raise sec.error("listen", str(exc)) from None
    if any((a.host, a.port) == (address.host, address.port) for a in server.listen):
        raise sec.error("listen", f"{address} is an SMTP listener (server.listen)")
    return MetricsConfig(address)


_LISTEN_KEYS = {
    ListenerRole.RECEIVE: "server -> listen",
    ListenerRole.SUBMISSION: "submission -> listen",
    ListenerRole.SUBMISSIONS: "submission -> implicit_tls",
}


def _bound_once(addresses: Sequence[ListenAddress], path: Path) -> None:
    """Every listen address, of every role, can be bound next to the others: none twice
    (also spelt another way, or under another key: a listener has one role), and no
    address next to the wildcard of its family on the same port. Either would fail at
    bind time with "address already in use", which reads as another server's fault.
    Addresses given as names are compared as written (``smtpkit check`` warns of them)."""
    seen: list[tuple[ListenAddress, ipaddress.IPv4Address | ipaddress.IPv6Address | None]] = []
    for address in addresses:
        ip = _ip_or_none(address.host)
        for other, other_ip in seen:
            if other.port != address.port:
                continue
            also = "" if other.role is address.role else f" in {_LISTEN_KEYS[other.role]}"
            one_role = " (a listener has one role)" if also else ""
            if ip is None or other_ip is None:
                if ip is not None or other_ip is not None:
                    continue
                if address.host.lower() != other.host.lower():
                    continue
                why = f"is listed twice{also}{one_role}"
            elif ip == other_ip:
                twice = (
                    "is listed twice"
                    if str(address) == str(other)
                    else f"is the same address as {other}"
                )
                why = f"{twice}{also}{one_role}"
            elif ip.version == other_ip.version and (ip.is_unspecified or other_ip.is_unspecified):
                wildcard = ip if ip.is_unspecified else other_ip
                why = (
                    f"cannot be bound next to {other}{also}: {wildcard} takes port "
                    f"{address.port} on every IPv{ip.version} address (keep one)"
                )
            else:
                continue
            raise ConfigError(f"{address} {why}", path=path, key=_LISTEN_KEYS[address.role])
        seen.append((address, ip))


def _ip_or_none(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _parse_submission(
    data: Mapping[str, Any], path: Path
) -> tuple[SubmissionConfig, list[ListenAddress]]:
    sec = _Section(_table(data, "submission", path), "submission", path)
    none: list[str] = []
    listen: list[ListenAddress] = []
    for key, role in (
        ("listen", ListenerRole.SUBMISSION),
        ("implicit_tls", ListenerRole.SUBMISSIONS),
    ):
        for text in sec.get(key, _string_list, 'a list of "HOST:PORT"', none):
            try:
                address = parse_listen(text)
            except ValueError as exc:
                raise sec.error(key, str(exc)) from None
            listen.append(replace(address, role=role))
    networks = []
    for text in sec.get("trusted_networks", _string_list, "a list of networks (CIDR)", none):
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise sec.error("trusted_networks", f"{text!r} is not a network (CIDR)") from None
    domain = sec.get("local_sender_domain", _string, "a domain name", "")
    if domain:
        try:
            domain = normalize_domain(domain)
        except UserError as exc:
            raise sec.error("local_sender_domain", str(exc)) from None
    sec.finish()
    return SubmissionConfig(tuple(networks), domain), listen


def update_config(path: Path, change: Callable[[dict[str, Any]], None]) -> bool:
    """Apply ``change`` to the config document and write it back, checked and atomically.

    Returns False, writing nothing, when the file holds comments: a person wrote them, and a
    rewrite would drop them. The caller then tells what to add by hand.
    """
    text = path.read_text(encoding="utf-8")
    if any(line.lstrip().startswith("#") for line in text.splitlines()):
        return False
    data: dict[str, Any] = tomllib.loads(text)
    change(data)
    parse_config(data, path)  # never write a config that would not load
    write_config(path, data)
    return True


def write_config(path: Path, data: Mapping[str, Any]) -> None:
    """Write a config document with tomli-w, atomically (never a half-written file)."""
    atomic_write(path, tomli_w.dumps(data).encode("utf-8"), mode=0o644)
