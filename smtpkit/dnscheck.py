"""The DNS records a mail domain needs, checked against what DNS says now (``smtpkit dns check``).

For each configured domain: its MX (does mail reach this server, decided as ``smtpkit mx
--check`` decides it), SPF (evaluated for each of this server's addresses by pyspf, through
``mailauth.spf.check_host``, as this server evaluates the mail it receives), a DKIM record
for each of its keys, DMARC, and the optional MTA-STS and TLS-RPT records; for the server
itself, the PTR records of its addresses (forward-confirmed reverse DNS), and whether the
reports it writes (From: MAILER-DAEMON@server.hostname) are DKIM-signed. Every outcome is a
value, a finding: which check, why (a ``...Reason``, whose values are stable for scripts),
the records found, and the zone-file lines that would fix it. Nothing here prints;
``smtpkit.commands.dns`` words the findings.

What counts as "this server" is the caller's to say (``ThisServer``): the command takes it
from ``smtpkit mx --check`` or from ``--address``.
"""

from __future__ import annotations

import concurrent.futures
import enum
import ipaddress
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import ClassVar, assert_never

import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver
import dns.reversename
from dns.rdtypes.ANY.PTR import PTR
from dns.rdtypes.ANY.TXT import TXT

from smtpkit.dns import MailHost, MailResolver, MailRoute, Nameserver, RouteKind
from smtpkit.mailauth import dmarc
from smtpkit.mailauth.keys import DkimKey
from smtpkit.mailauth.results import Deadline
from smtpkit.mailauth.signing import signing_domain
from smtpkit.mailauth.spf import check_host

__all__ = [
    "DMARC_POLICIES",
    "BounceFinding",
    "BounceReason",
    "Check",
    "Checker",
    "DkimFinding",
    "DkimReason",
    "DmarcFinding",
    "DmarcReason",
    "DomainReport",
    "Failure",
    "Finding",
    "IPAddress",
    "MxFinding",
    "MxReason",
    "OptionalFinding",
    "OptionalReason",
    "PtrFinding",
    "PtrReason",
    "SpfFinding",
    "SpfReason",
    "SpfOutcome",
    "Status",
    "ThisServer",
    "amend_spf",
    "check_bounces",
    "check_mx",
    "dmarc_proposal",
    "parse_tags",
    "spf_proposal",
    "zone_txt",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# RFC 1035 3.3.14: a TXT record is a list of strings of at most 255 octets each; DKIM
# (RFC 6376 3.6.2.2) and SPF (RFC 7208 3.3) join them without a separator.
MAX_TXT_STRING = 255

# RFC 7489 6.3: the three policies a Domain Owner can ask for.
DMARC_POLICIES = dmarc.POLICIES


class Status(enum.Enum):
    """What a finding means for the admin; the values are stable (``--json``)."""

    OK = "ok"
    MISSING = "missing"  # nothing published: a record to add
    WRONG = "wrong"  # published, but wrong: a record to change
    DNS_FAILURE = "dns-failure"  # no answer (SERVFAIL, timeout): cannot tell, retry later
    WARNING = "warning"  # nothing wrong in DNS, but something worth doing
    INFO = "info"  # an optional record, not (usably) published
    SKIPPED = "skipped"  # cannot be checked; another finding says why

    @property
    def to_publish(self) -> bool:
        """True when DNS needs a change: a record to add or to replace."""
        return self in (Status.MISSING, Status.WRONG)


class Check(enum.Enum):
    """The records checked; the values are stable (``--json``)."""

    MX = "mx"
    SPF = "spf"
    DKIM = "dkim"
    DMARC = "dmarc"
    PTR = "ptr"
    MTA_STS = "mta-sts"
    TLS_RPT = "tls-rpt"


class Failure(enum.Enum):
    """Why a lookup got no answer."""

    TIMEOUT = "timeout"
    SERVFAIL = "servfail"  # SERVFAIL, REFUSED, an unreachable server, a malformed reply


@dataclass(frozen=True, slots=True)
class ThisServer:
    """This server as the checks see it.

    ``addresses`` are where other servers reach it and where its outgoing mail comes from:
    what SPF must authorize and what must have PTR records. ``hostname`` (ASCII) is its name
    in MX records and in HELO; ``hostname_lookup`` is what DNS says that name resolves to.
    ``listen_addresses`` are the specific addresses it was told to use (``server.listen`` or
    ``--address``): the ones to propose for ``hostname`` when that name leads elsewhere.
    ``wildcard`` is true when it listens on 0.0.0.0 or ::, so that ``addresses`` are those
    of ``hostname``.
    """

    hostname: str
    hostname_lookup: MailHost
    addresses: tuple[IPAddress, ...]
    listen_addresses: tuple[IPAddress, ...] = ()
    wildcard: bool = False

    def owns(self, address: str) -> bool:
        return ipaddress.ip_address(address) in self.addresses


# --- zone-file lines ---------------------------------------------------------------------


def _quoted(data: bytes) -> str:
    """One character-string in zone-file syntax (RFC 1035 5.1): printable ASCII as it is,
    quote and backslash escaped, anything else as \\DDD."""
    out = []
    for byte in data:
        char = chr(byte)
        if char in '"\\':
            out.append("\\" + char)
        elif 0x20 <= byte < 0x7F:
            out.append(char)
        else:
            out.append(f"\\{byte:03d}")
    return '"' + "".join(out) + '"'


def zone_txt(name: str, text: str) -> str:
    """A TXT record as one zone-file line an admin can paste: ``NAME. IN TXT "text"``, or,
    when the text is longer than one string can hold, ``NAME. IN TXT ( "..." "..." )``
    with strings of at most 255 bytes, which SPF and DKIM verifiers join again."""
    data = text.encode("utf-8")
    parts = [data[i : i + MAX_TXT_STRING] for i in range(0, len(data), MAX_TXT_STRING)] or [b""]
    strings = " ".join(_quoted(part) for part in parts)
    return f"{name}. IN TXT {strings if len(parts) == 1 else f'( {strings} )'}"


def _address_record(name: str, address: IPAddress) -> str:
    return f"{name}. IN {'A' if address.version == 4 else 'AAAA'} {address}"


def _ptr_record(address: IPAddress, hostname: str) -> str:
    return f"{dns.reversename.from_address(str(address)).to_text()} IN PTR {hostname}."


# --- tag lists -----------------------------------------------------------------------------


def parse_tags(text: str) -> list[tuple[str, str]] | None:
    """A ``tag=value; ...`` list (RFC 6376 3.2, which DMARC's RFC 7489 6.4 shares): each tag
    name and its value, white space around both removed; None when it is not one (a part
    without ``=``, an empty or repeated tag name). An empty part, as after a final ``;``, is
    allowed."""
    tags: list[tuple[str, str]] = []
    for part in text.split(";"):
        if not part.strip():
            continue
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or not name or any(name == seen for seen, _ in tags):
            return None
        tags.append((name, value.strip()))
    return tags


# --- findings ------------------------------------------------------------------------------


class MxReason(enum.Enum):
    """Where a domain's mail goes, as ``smtpkit mx --check`` tells it."""

    OURS = "ours"  # an MX host is this server
    IMPLICIT_OURS = "implicit-ours"  # no MX, but the domain's own address is this server
    ELSEWHERE = "elsewhere"  # MX hosts, none of them this server
    IMPLICIT_ELSEWHERE = "implicit-elsewhere"  # no MX; the domain's own address is another
    NO_USABLE_HOST = "no-usable-host"  # MX hosts, none with an address
    NULL = "null-mx"  # RFC 7505: no mail at all
    NXDOMAIN = "nxdomain"
    NODATA = "nodata"  # neither MX nor address
    TIMEOUT = "timeout"
    SERVFAIL = "servfail"
    HOSTNAME_FAILED = "hostname-lookup-failed"  # listening on a wildcard, the name's lookup failed
    HOSTS_FAILED = "host-lookups-failed"  # the address lookups of MX hosts failed


@dataclass(frozen=True, slots=True)
class MxFinding:
    """``host`` is the first MX host that is this server, ``addresses`` its addresses that
    are this server's, ``earlier`` the hosts senders try before it; ``failing`` the hosts
    whose lookups failed. ``records`` fix the route; ``needs_address`` says that the
    server's name also needs an address that only the admin knows."""

    check: ClassVar[Check] = Check.MX
    reason: MxReason
    route: MailRoute
    host: MailHost | None = None
    addresses: tuple[str, ...] = ()
    earlier: tuple[MailHost, ...] = ()
    failing: tuple[MailHost, ...] = ()
    records: tuple[str, ...] = ()
    needs_address: bool = False

    @property
    def name(self) -> str:
        return self.route.domain

    @property
    def status(self) -> Status:
        reason = self.reason
        match reason:
            case MxReason.OURS | MxReason.IMPLICIT_OURS:
                return Status.OK
            case MxReason.NXDOMAIN | MxReason.NODATA | MxReason.IMPLICIT_ELSEWHERE:
                return Status.MISSING
            case MxReason.ELSEWHERE | MxReason.NO_USABLE_HOST | MxReason.NULL:
                return Status.WRONG
            case (
                MxReason.TIMEOUT
                | MxReason.SERVFAIL
                | MxReason.HOSTNAME_FAILED
                | MxReason.HOSTS_FAILED
            ):
                return Status.DNS_FAILURE
            case _:
                assert_never(reason)


class SpfReason(enum.Enum):
    PASS = "pass"  # every address of this server gets "pass"
    NO_RECORD = "no-record"
    MULTIPLE = "multiple-records"  # RFC 7208 4.5: permerror
    INVALID = "invalid"  # pyspf says permerror
    NOT_AUTHORIZED = "not-authorized"  # some address gets fail, softfail, neutral or none
    LOOKUP_FAILED = "lookup-failed"  # the TXT lookup failed, or pyspf says temperror
    NO_SERVER_ADDRESS = "no-server-address"
    SERVER_LOOKUP_FAILED = "server-lookup-failed"


@dataclass(frozen=True, slots=True)
class SpfOutcome:
    """What SPF answers for mail from this server's ``address``: the result (``pass``,
    ``fail``, ``softfail``, ``neutral``, ``none``, ``permerror``, ``temperror``) and, for the
    errors, what went wrong (``mailauth.spf.check_host``'s reason)."""

    address: str
    result: str
    reason: str


@dataclass(frozen=True, slots=True)
class SpfFinding:
    check: ClassVar[Check] = Check.SPF
    reason: SpfReason
    domain: str
    found: tuple[str, ...] = ()  # the "v=spf1" records at the domain
    results: tuple[SpfOutcome, ...] = ()
    failure: Failure | None = None
    records: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.domain

    @property
    def status(self) -> Status:
        reason = self.reason
        match reason:
            case SpfReason.PASS:
                return Status.OK
            case SpfReason.NO_RECORD:
                return Status.MISSING
            case SpfReason.MULTIPLE | SpfReason.INVALID | SpfReason.NOT_AUTHORIZED:
                return Status.WRONG
            case SpfReason.LOOKUP_FAILED | SpfReason.SERVER_LOOKUP_FAILED:
                return Status.DNS_FAILURE
            case SpfReason.NO_SERVER_ADDRESS:
                return Status.SKIPPED
            case _:
                assert_never(reason)


class DkimReason(enum.Enum):
    MATCH = "match"
    NO_KEY = "no-key"  # the domain has no key: its mail is not signed
    NO_RECORD = "no-record"
    MULTIPLE = "multiple-records"
    NOT_A_KEY = "not-a-key-record"  # a TXT record without a usable p= (or a wrong v=)
    REVOKED = "revoked"  # an empty p=
    KEY_DIFFERS = "key-differs"
    ALGORITHM_DIFFERS = "algorithm-differs"
    LOOKUP_FAILED = "lookup-failed"


@dataclass(frozen=True, slots=True)
class DkimFinding:
    """One key's record (``key`` is None for ``NO_KEY``); ``found`` are the TXT records at
    the key's name, each record's strings joined."""

    check: ClassVar[Check] = Check.DKIM
    reason: DkimReason
    domain: str
    key: DkimKey | None = None
    found: tuple[str, ...] = ()
    failure: Failure | None = None
    records: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.key.record_name if self.key is not None else self.domain

    @property
    def status(self) -> Status:
        reason = self.reason
        match reason:
            case DkimReason.MATCH:
                return Status.OK
            case DkimReason.NO_KEY:
                return Status.WARNING
            case DkimReason.NO_RECORD:
                return Status.MISSING
            case (
                DkimReason.MULTIPLE
                | DkimReason.NOT_A_KEY
                | DkimReason.REVOKED
                | DkimReason.KEY_DIFFERS
                | DkimReason.ALGORITHM_DIFFERS
            ):
                return Status.WRONG
            case DkimReason.LOOKUP_FAILED:
                return Status.DNS_FAILURE
            case _:
                assert_never(reason)


class DmarcReason(enum.Enum):
    POLICY = "policy"
    NO_RECORD = "no-record"
    MULTIPLE = "multiple-records"  # RFC 7489 6.6.3: receivers then apply none
    NO_POLICY = "no-policy"
    BAD_POLICY = "bad-policy"
    LOOKUP_FAILED = "lookup-failed"


@dataclass(frozen=True, slots=True)
class DmarcFinding:
    """``found`` are the ``v=DMARC1`` records; ``policy`` is the p= value of the one there
    is (lower case when valid, as published when not)."""

    check: ClassVar[Check] = Check.DMARC
    reason: DmarcReason
    domain: str
    found: tuple[str, ...] = ()
    policy: str | None = None
    failure: Failure | None = None
    records: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"_dmarc.{self.domain}"

    @property
    def status(self) -> Status:
        reason = self.reason
        match reason:
            case DmarcReason.POLICY:
                return Status.OK
            case DmarcReason.NO_RECORD:
                return Status.MISSING
            case DmarcReason.MULTIPLE | DmarcReason.NO_POLICY | DmarcReason.BAD_POLICY:
                return Status.WRONG
            case DmarcReason.LOOKUP_FAILED:
                return Status.DNS_FAILURE
            case _:
                assert_never(reason)


class PtrReason(enum.Enum):
    FCRDNS = "fcrdns"  # the PTR names server.hostname, which resolves back to the address
    NO_PTR = "no-ptr"
    OTHER_NAME = "other-name"
    NOT_FORWARD = "not-forward-confirmed"  # the name does not resolve back to the address
    LOOKUP_FAILED = "lookup-failed"
    NO_SERVER_ADDRESS = "no-server-address"
    SERVER_LOOKUP_FAILED = "server-lookup-failed"


@dataclass(frozen=True, slots=True)
class PtrFinding:
    """The reverse DNS of one address (None when this server has no known address):
    ``names`` are what its PTR records name."""

    check: ClassVar[Check] = Check.PTR
    reason: PtrReason
    hostname: str
    address: IPAddress | None = None
    names: tuple[str, ...] = ()
    failure: Failure | None = None
    records: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        if self.address is None:
            return self.hostname
        return dns.reversename.from_address(str(self.address)).to_text(omit_final_dot=True)

    @property
    def status(self) -> Status:
        reason = self.reason
        match reason:
            case PtrReason.FCRDNS:
                return Status.OK
            case PtrReason.NO_PTR:
                return Status.MISSING
            case PtrReason.OTHER_NAME | PtrReason.NOT_FORWARD:
                return Status.WRONG
            case PtrReason.LOOKUP_FAILED | PtrReason.SERVER_LOOKUP_FAILED:
                return Status.DNS_FAILURE
            case PtrReason.NO_SERVER_ADDRESS:
                return Status.SKIPPED
            case _:
                assert_never(reason)


class OptionalReason(enum.Enum):
    PUBLISHED = "published"
    NOT_PUBLISHED = "not-published"
    MULTIPLE = "multiple-records"  # RFC 8461 3.1, RFC 8460 3: then none applies
    LOOKUP_FAILED = "lookup-failed"


@dataclass(frozen=True, slots=True)
class OptionalFinding:
    """MTA-STS (RFC 8461) or TLS-RPT (RFC 8460): worth having, never a failure. ``found``
    are the records of the right version."""

    check: Check
    reason: OptionalReason
    name: str
    found: tuple[str, ...] = ()
    failure: Failure | None = None
    records: tuple[str, ...] = ()

    @property
    def status(self) -> Status:
        return Status.OK if self.reason is OptionalReason.PUBLISHED else Status.INFO


class BounceReason(enum.Enum):
    SIGNED = "signed"  # a key of server.hostname's domain, or of a parent of it, signs them
    NO_KEY = "no-key"  # a configured domain could sign them, but has no key
    NO_DOMAIN = "no-domain"  # no configured domain can: server.hostname is within none


@dataclass(frozen=True, slots=True)
class BounceFinding:
    """Whether the reports this server writes, From: MAILER-DAEMON@``hostname``, are
    DKIM-signed (``mailauth/signing.signing_domain``): ``domain`` is the domain whose keys
    sign them (``SIGNED``), the configured domain to make a key for (``NO_KEY``), or, when
    no configured domain can sign them, one to name the server within (``NO_DOMAIN``: the
    first with keys, ``keyed``, else the first)."""

    check: ClassVar[Check] = Check.DKIM
    reason: BounceReason
    hostname: str
    domain: str | None = None
    keyed: bool = False
    records: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.hostname

    @property
    def status(self) -> Status:
        # Unsigned reports are worth fixing, but nothing in DNS is wrong.
        return Status.OK if self.reason is BounceReason.SIGNED else Status.WARNING


Finding = (
    MxFinding
    | SpfFinding
    | DkimFinding
    | DmarcFinding
    | PtrFinding
    | OptionalFinding
    | BounceFinding
)


@dataclass(frozen=True, slots=True)
class DomainReport:
    """The findings of one domain, in the order MX, SPF, DKIM (one per key), DMARC,
    MTA-STS, TLS-RPT; the server's PTR findings are the same for every domain and kept
    apart (``Checker.ptr``)."""

    domain: str
    findings: tuple[Finding, ...]


# --- MX ----------------------------------------------------------------------------------


def check_mx(route: MailRoute, server: ThisServer) -> MxFinding:
    """Whether ``route`` reaches this server: the same decision as ``smtpkit mx --check``
    (tests/test_dnscheck.py holds the two side by side), as a finding."""
    kind = route.kind
    match kind:
        case RouteKind.MX | RouteKind.IMPLICIT:
            return _check_hosts(route, server, implicit=kind is RouteKind.IMPLICIT)
        case RouteKind.TIMEOUT:
            return MxFinding(MxReason.TIMEOUT, route)
        case RouteKind.SERVFAIL:
            return MxFinding(MxReason.SERVFAIL, route)
        case RouteKind.NULL:
            reason = MxReason.NULL
        case RouteKind.NXDOMAIN:
            reason = MxReason.NXDOMAIN
        case RouteKind.NODATA:
            reason = MxReason.NODATA
        case _:
            assert_never(kind)
    records, needs_address = _mx_fixes(route, server)
    return MxFinding(reason, route, records=records, needs_address=needs_address)


def _check_hosts(route: MailRoute, server: ThisServer, *, implicit: bool) -> MxFinding:
    mine = [h for h in route.usable_hosts if any(server.owns(a) for a in h.addresses)]
    if mine:
        best = mine[0]
        addresses = tuple(a for a in best.addresses if server.owns(a))
        if implicit:
            return MxFinding(MxReason.IMPLICIT_OURS, route, host=best, addresses=addresses)
        earlier = tuple(h for h in route.usable_hosts if h.preference < best.preference)
        return MxFinding(MxReason.OURS, route, host=best, addresses=addresses, earlier=earlier)
    if server.wildcard and server.hostname_lookup.temporary and route.usable_hosts:
        # Listening on a wildcard address, this server's addresses are those of its name.
        return MxFinding(MxReason.HOSTNAME_FAILED, route)
    # An MX host whose lookup failed might be this server. (The host of an implicit MX has an
    # address, or the route would not be implicit.)
    failing = tuple(h for h in route.hosts if h.temporary)
    if failing and not implicit:
        return MxFinding(MxReason.HOSTS_FAILED, route, failing=failing)
    if implicit:
        reason = MxReason.IMPLICIT_ELSEWHERE
    elif route.usable_hosts:
        reason = MxReason.ELSEWHERE
    else:
        reason = MxReason.NO_USABLE_HOST
    records, needs_address = _mx_fixes(route, server)
    return MxFinding(reason, route, records=records, needs_address=needs_address)


def _mx_fixes(route: MailRoute, server: ThisServer) -> tuple[tuple[str, ...], bool]:
    """The records that make mail for ``route.domain`` reach this server: an MX naming it
    (unless one already does), and an address for its name when that leads elsewhere."""
    records: list[str] = []
    named = any(h.host == server.hostname for h in route.hosts)
    if route.kind is not RouteKind.MX or not named:
        records.append(f"{route.domain}. IN MX 10 {server.hostname}.")
    lookup = server.hostname_lookup
    needs_address = False
    if not lookup.temporary and not any(server.owns(a) for a in lookup.addresses):
        # server.hostname itself does not lead here, so an MX naming it would not either.
        records += [_address_record(server.hostname, ip) for ip in server.listen_addresses]
        needs_address = not server.listen_addresses
    return tuple(records), needs_address


# --- reports ------------------------------------------------------------------------------


def check_bounces(
    hostname: str, domains: Sequence[str], key_domains: Collection[str]
) -> BounceFinding:
    """Whether the reports of a server named ``hostname`` (ASCII) are signed by a key of
    ``key_domains``, as the signer chooses it; if not, which of the configured ``domains``
    (ASCII) would sign them once it has a key (``smtpkit dkim keygen`` makes keys for those
    only): the closest, as the signer would choose it."""
    signer = signing_domain(hostname, key_domains)
    if signer is not None:
        return BounceFinding(BounceReason.SIGNED, hostname, signer)
    candidate = signing_domain(hostname, {d.lower() for d in domains})
    if candidate is None:
        keyed = [d for d in domains if d.lower() in key_domains]
        named = keyed[0] if keyed else domains[0] if domains else None
        return BounceFinding(BounceReason.NO_DOMAIN, hostname, named, keyed=bool(keyed))
    return BounceFinding(BounceReason.NO_KEY, hostname, candidate)


# --- SPF -----------------------------------------------------------------------------------

# RFC 7208 4.5: an SPF record is a TXT record that starts with "v=spf1", then a space or the
# end (pyspf's RE_SPF).
_SPF_RECORD = re.compile(r"v=spf1(?: |\Z)", re.IGNORECASE)
_SPF_ALL = re.compile(r"[-+~?]?all\Z", re.IGNORECASE)
_SPF_MODIFIER = re.compile(r"[a-z][a-z0-9_.-]*=", re.IGNORECASE)


def _spf_term(address: IPAddress) -> str:
    return f"ip{address.version}:{address}"


def spf_proposal(route: MailRoute, server: ThisServer) -> str:
    """The SPF record to publish when there is none: ``v=spf1 mx -all`` when the domain's
    MX hosts are this server at every one of its addresses (the record then follows the MX
    when the server moves), else this server's addresses as ``ip4:``/``ip6:``. The ``mx``
    mechanism knows no implicit MX (RFC 7208 5.4), hence MX records only."""
    mx_addresses = {ipaddress.ip_address(a) for h in route.usable_hosts for a in h.addresses}
    if route.kind is RouteKind.MX and all(ip in mx_addresses for ip in server.addresses):
        return "v=spf1 mx -all"
    return " ".join(["v=spf1", *(_spf_term(ip) for ip in server.addresses), "-all"])


def amend_spf(record: str, addresses: Sequence[IPAddress]) -> str:
    """``record`` with ``ip4:``/``ip6:`` terms for ``addresses`` that it lacks, placed before
    its ``all`` mechanism (or its first modifier, such as ``redirect=``, which is evaluated
    after every mechanism), or at the end when it has neither."""
    terms = record.split()
    have = {t.lower() for t in terms}
    new = [t for t in (_spf_term(ip) for ip in addresses) if t.lower() not in have]
    at = next(
        (i for i, t in enumerate(terms[1:], 1) if _SPF_ALL.match(t) or _SPF_MODIFIER.match(t)),
        len(terms),
    )
    return " ".join([*terms[:at], *new, *terms[at:]])


# --- DMARC -------------------------------------------------------------------------------


def dmarc_proposal(domain: str) -> str:
    """The DMARC record to start with: monitoring only (p=none), its aggregate reports to
    the domain's postmaster, who exists on every smtpkit domain."""
    return f"v=DMARC1; p=none; rua=mailto:postmaster@{domain}"


def _is_dmarc(text: str) -> bool:
    """RFC 7489 6.6.3: a record that does not start with v=DMARC1 is not a DMARC record;
    judged as the checks of arriving mail judge it."""
    return dmarc.is_record(text)


def _with_policy(text: str, policy: str) -> str:
    """``text`` (a DMARC record) with its p= tag set to ``policy``, in place, or added
    after v= when it has none."""
    parts = [part.strip() for part in text.split(";") if part.strip()]
    for i, part in enumerate(parts):
        if part.partition("=")[0].strip() == "p":
            parts[i] = f"p={policy}"
            break
    else:
        parts.insert(1, f"p={policy}")
    return "; ".join(parts)


# --- DNS lookups ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Answer:
    """One lookup's records, sorted (TXT: each record's strings joined; PTR: the names),
    none for NXDOMAIN or no data, or why there was no answer."""

    texts: tuple[str, ...] = ()
    failure: Failure | None = None


def _text_of(rdata: object) -> str | None:
    if isinstance(rdata, TXT):
        return b"".join(rdata.strings).decode("utf-8", "replace")
    if isinstance(rdata, PTR):
        return rdata.target.to_text(omit_final_dot=True).lower()
    return None


# The checks of one domain run at once, each waiting on its own lookups: seven, at most, of
# which one (SPF) waits for another (the MX route).
_DOMAIN_THREADS = 8


class Checker:
    """Runs the checks through one nameserver (or list of them, or the system's), each query
    bounded by ``timeout`` seconds and the lookups of an MX route by ``deadline`` (see
    ``MailResolver``). A nameserver given by name is looked up here: ``NameserverError``."""

    def __init__(
        self,
        *,
        nameserver: Nameserver | str | Sequence[Nameserver | str] | None,
        timeout: float,
        deadline: float | None = None,
    ) -> None:
        self.mail = MailResolver(nameserver=nameserver, timeout=timeout, deadline=deadline)
        self.timeout = self.mail.timeout
        self.deadline = self.mail.deadline
        self._resolver = self.mail.resolver

    def domain(self, domain: str, server: ThisServer, keys: Sequence[DkimKey]) -> DomainReport:
        """Every check of ``domain`` (ASCII), with its DKIM ``keys``."""
        with concurrent.futures.ThreadPoolExecutor(
            max_workers=_DOMAIN_THREADS, thread_name_prefix="smtpkit-dnscheck"
        ) as pool:
            route = pool.submit(self.mail.resolve, domain)
            spf_finding = pool.submit(lambda: self.spf(domain, server, route.result()))
            dkim = pool.submit(self.dkim, domain, keys)
            dmarc = pool.submit(self.dmarc, domain)
            sts = pool.submit(self.optional, Check.MTA_STS, domain)
            rpt = pool.submit(self.optional, Check.TLS_RPT, domain)
            findings: list[Finding] = [check_mx(route.result(), server), spf_finding.result()]
            findings += dkim.result()
            findings += [dmarc.result(), sts.result(), rpt.result()]
        return DomainReport(domain, tuple(findings))

    def _query(self, name: str | dns.name.Name, rdtype: dns.rdatatype.RdataType) -> _Answer:
        qname = name if isinstance(name, dns.name.Name) else dns.name.from_text(name)
        try:
            answer = self._resolver.resolve(qname, rdtype, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            return _Answer()
        except dns.exception.Timeout:
            return _Answer(failure=Failure.TIMEOUT)
        except (dns.exception.DNSException, OSError):
            return _Answer(failure=Failure.SERVFAIL)
        rrset = answer.rrset if answer.rrset is not None else ()
        # An RRset has no order (RFC 2181 5): sorted, what is shown stays the same.
        return _Answer(tuple(sorted(t for t in (_text_of(r) for r in rrset) if t is not None)))

    # --- SPF

    def spf(self, domain: str, server: ThisServer, route: MailRoute) -> SpfFinding:
        """The SPF record of ``domain``, evaluated by pyspf for mail from each address of
        this server (MAIL FROM postmaster@domain, HELO server.hostname)."""
        answer = self._query(domain, dns.rdatatype.TXT)
        if answer.failure is not None:
            return SpfFinding(SpfReason.LOOKUP_FAILED, domain, failure=answer.failure)
        found = tuple(t for t in answer.texts if _SPF_RECORD.match(t))
        if not server.addresses:
            if server.hostname_lookup.temporary:
                return SpfFinding(SpfReason.SERVER_LOOKUP_FAILED, domain, found)
            return SpfFinding(SpfReason.NO_SERVER_ADDRESS, domain, found)
        fresh = (zone_txt(domain, spf_proposal(route, server)),)
        if not found:
            return SpfFinding(SpfReason.NO_RECORD, domain, records=fresh)
        if len(found) > 1:
            return SpfFinding(SpfReason.MULTIPLE, domain, found, records=fresh)
        results = self._evaluate(domain, server)
        outcomes = {r.result for r in results}
        if "temperror" in outcomes:
            return SpfFinding(SpfReason.LOOKUP_FAILED, domain, found, results)
        if "permerror" in outcomes:
            return SpfFinding(SpfReason.INVALID, domain, found, results, records=fresh)
        if outcomes == {"pass"}:
            return SpfFinding(SpfReason.PASS, domain, found, results)
        refused = [ipaddress.ip_address(r.address) for r in results if r.result != "pass"]
        amended = zone_txt(domain, amend_spf(found[0], refused))
        return SpfFinding(SpfReason.NOT_AUTHORIZED, domain, found, results, records=(amended,))

    def _evaluate(self, domain: str, server: ThisServer) -> tuple[SpfOutcome, ...]:
        """pyspf's answer for each address, through ``check_host``: as this server evaluates
        the SPF of mail it receives, each evaluation bounded as an MX route is."""
        outcomes = []
        for ip in server.addresses:
            result, reason = check_host(
                client_ip=str(ip),
                domain=domain,
                sender=f"postmaster@{domain}",
                helo=server.hostname,
                resolver=self._resolver,
                deadline=Deadline.after(self.deadline),
            )
            outcomes.append(SpfOutcome(str(ip), result, reason))
        return tuple(outcomes)

    # --- DKIM

    def dkim(self, domain: str, keys: Sequence[DkimKey]) -> list[DkimFinding]:
        """One finding per key: is its public key published at SELECTOR._domainkey.DOMAIN?"""
        if not keys:
            return [DkimFinding(DkimReason.NO_KEY, domain)]
        return [self._dkim_key(domain, key) for key in keys]

    def _dkim_key(self, domain: str, key: DkimKey) -> DkimFinding:
        answer = self._query(key.record_name, dns.rdatatype.TXT)
        if answer.failure is not None:
            return DkimFinding(DkimReason.LOOKUP_FAILED, domain, key, failure=answer.failure)
        record = (zone_txt(key.record_name, key.txt_record()),)
        found = answer.texts
        if not found:
            return DkimFinding(DkimReason.NO_RECORD, domain, key, records=record)
        if len(found) > 1:
            # RFC 6376 3.6.2.2: with several TXT records, which one a verifier uses is undefined.
            return DkimFinding(DkimReason.MULTIPLE, domain, key, found, records=record)
        reason = _dkim_verdict(found[0], key)
        return DkimFinding(
            reason, domain, key, found, records=() if reason is DkimReason.MATCH else record
        )

    # --- DMARC

    def dmarc(self, domain: str) -> DmarcFinding:
        """The record at _dmarc.DOMAIN: one, v=DMARC1 first, a p= of none|quarantine|reject."""
        answer = self._query(f"_dmarc.{domain}", dns.rdatatype.TXT)
        if answer.failure is not None:
            return DmarcFinding(DmarcReason.LOOKUP_FAILED, domain, failure=answer.failure)
        found = tuple(t for t in answer.texts if _is_dmarc(t))
        name = f"_dmarc.{domain}"
        if not found:
            return DmarcFinding(
                DmarcReason.NO_RECORD, domain, records=(zone_txt(name, dmarc_proposal(domain)),)
            )
        if len(found) > 1:
            record = zone_txt(name, dmarc_proposal(domain))
            return DmarcFinding(DmarcReason.MULTIPLE, domain, found, records=(record,))
        tags = dict(parse_tags(found[0]) or ())
        policy = tags.get("p")
        fixed = (zone_txt(name, _with_policy(found[0], "none")),)
        if policy is None:
            return DmarcFinding(DmarcReason.NO_POLICY, domain, found, records=fixed)
        # ABNF literals are case-insensitive (RFC 5234 2.3): p=Reject is a policy.
        if policy.lower() not in DMARC_POLICIES:
            return DmarcFinding(DmarcReason.BAD_POLICY, domain, found, policy, records=fixed)
        return DmarcFinding(DmarcReason.POLICY, domain, found, policy.lower())

    # --- MTA-STS, TLS-RPT

    def optional(self, check: Check, domain: str) -> OptionalFinding:
        """The MTA-STS (``_mta-sts``, v=STSv1) or TLS-RPT (``_smtp._tls``, v=TLSRPTv1) record."""
        prefix, version = _OPTIONAL[check]
        name = f"{prefix}.{domain}"
        answer = self._query(name, dns.rdatatype.TXT)
        if answer.failure is not None:
            return OptionalFinding(
                check, OptionalReason.LOOKUP_FAILED, name, failure=answer.failure
            )
        found = tuple(t for t in answer.texts if _starts_with_version(t, version))
        if not found:
            return OptionalFinding(check, OptionalReason.NOT_PUBLISHED, name)
        if len(found) > 1:
            return OptionalFinding(check, OptionalReason.MULTIPLE, name, found)
        return OptionalFinding(check, OptionalReason.PUBLISHED, name, found)

    # --- PTR

    def ptr(self, server: ThisServer) -> tuple[PtrFinding, ...]:
        """For each address of this server: its PTR names server.hostname, and that name
        resolves back to the address (forward-confirmed reverse DNS), as receivers check."""
        host = server.hostname
        if not server.addresses:
            if server.hostname_lookup.temporary:
                return (PtrFinding(PtrReason.SERVER_LOOKUP_FAILED, host),)
            return (PtrFinding(PtrReason.NO_SERVER_ADDRESS, host),)
        return tuple(self._ptr(server, ip) for ip in server.addresses)

    def _ptr(self, server: ThisServer, ip: IPAddress) -> PtrFinding:
        host = server.hostname
        answer = self._query(dns.reversename.from_address(str(ip)), dns.rdatatype.PTR)
        if answer.failure is not None:
            return PtrFinding(PtrReason.LOOKUP_FAILED, host, ip, failure=answer.failure)
        names = answer.texts
        if not names:
            return PtrFinding(PtrReason.NO_PTR, host, ip, records=(_ptr_record(ip, host),))
        if host not in names:
            return PtrFinding(
                PtrReason.OTHER_NAME, host, ip, names, records=(_ptr_record(ip, host),)
            )
        lookup = server.hostname_lookup
        if ip in {ipaddress.ip_address(a) for a in lookup.addresses}:
            return PtrFinding(PtrReason.FCRDNS, host, ip, names)
        if lookup.temporary:
            return PtrFinding(PtrReason.SERVER_LOOKUP_FAILED, host, ip, names)
        return PtrFinding(
            PtrReason.NOT_FORWARD, host, ip, names, records=(_address_record(host, ip),)
        )


_OPTIONAL = {Check.MTA_STS: ("_mta-sts", "STSv1"), Check.TLS_RPT: ("_smtp._tls", "TLSRPTv1")}


def _starts_with_version(text: str, version: str) -> bool:
    """The record's first tag is v= with this version: how DMARC (RFC 7489 6.6.3), MTA-STS
    (RFC 8461 3.1) and TLS-RPT (RFC 8460 3) tell their records from other TXT records."""
    tags = parse_tags(text)
    if not tags:
        return False
    return tags[0] == ("v", version)


def _dkim_verdict(text: str, key: DkimKey) -> DkimReason:
    """Whether the TXT record ``text`` publishes ``key`` (RFC 6376 3.6.1): v=, when present,
    is first and DKIM1; p= is the key's public data, white space removed; k= (rsa when
    absent) is its algorithm."""
    tags = parse_tags(text)
    if not tags:
        return DkimReason.NOT_A_KEY
    values = dict(tags)
    if "v" in values and tags[0] != ("v", "DKIM1"):
        return DkimReason.NOT_A_KEY
    if "p" not in values:
        return DkimReason.NOT_A_KEY
    public = "".join(values["p"].split())
    if not public:
        return DkimReason.REVOKED
    if public != key.public_data:
        return DkimReason.KEY_DIFFERS
    if values.get("k", "rsa").lower() != key.algorithm:
        return DkimReason.ALGORITHM_DIFFERS
    return DkimReason.MATCH
