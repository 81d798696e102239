"""What the server accepts: rules that see the session's facts and return decisions.

Each SMTP step (HELO, MAIL, RCPT) has a table of rules, tried in order; the first rule with
an opinion decides, and a step whose rules all pass is accepted. A rule is a function of the
policy's environment (``Rules``: the router, the limits), the session's facts (peer address,
listener role, TLS, HELO name, authenticated user) and the event, returning a ``Decision`` or
None ("no opinion"). The session acts on the decision's type, never on a reply code. A new
rule is a function and a row in its table: see ARCHITECTURE.md, "Adding a policy rule".

The default rules receive mail for local mailboxes only: no relaying for anyone, recipients
must resolve to a local target, declared sizes must fit, addresses must be ASCII unless the
transaction's MAIL said SMTPUTF8 (RFC 6531), and then they must pass addresses.py's rules.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_address
from pathlib import Path
from typing import Any, Protocol, TypeVar

from smtpkit.addresses import parse_address, parse_domain
from smtpkit.config import ListenerRole
from smtpkit.delivery.router import Router
from smtpkit.delivery.targets import Remote, Target
from smtpkit.errors import UserError
from smtpkit.limits import Limits
from smtpkit.protocol import replies
from smtpkit.protocol.events import Hello, MailFrom, RcptTo
from smtpkit.protocol.replies import Reply

__all__ = [
    "HELO_RULES",
    "MAIL_RULES",
    "RCPT_RULES",
    "Accept",
    "Decision",
    "Defer",
    "LocalPolicy",
    "Policy",
    "Reject",
    "Rules",
    "SessionFacts",
    "TlsInfo",
]


@dataclass(frozen=True, slots=True)
class Accept:
    """Go ahead; for RCPT, ``targets`` are where the recipient's copy goes."""

    targets: tuple[Target, ...] = ()


@dataclass(frozen=True, slots=True)
class Reject:
    """Refused for good (a 5xx reply)."""

    reply: Reply


@dataclass(frozen=True, slots=True)
class Defer:
    """Refused for now; the client should try again later (a 4xx reply)."""

    reply: Reply


Decision = Accept | Reject | Defer


@dataclass(frozen=True, slots=True)
class TlsInfo:
    version: str
    cipher: str


@dataclass(frozen=True, slots=True)
class SessionFacts:
    """What a rule may know about the session asking."""

    peer: str  # the client's IP address
    role: ListenerRole  # what the listener it came in on is for
    tls: TlsInfo | None = None
    helo: str = ""
    user: str | None = None  # the authenticated user, once there is authentication
    smtputf8: bool = False  # the transaction's MAIL said SMTPUTF8 (RFC 6531 3.4)
    listener: str = ""  # that listener's address as configured ("0.0.0.0:587")


class Policy(Protocol):
    def check_helo(self, facts: SessionFacts, event: Hello) -> Decision: ...

    def check_mail(self, facts: SessionFacts, event: MailFrom) -> Decision: ...

    def check_rcpt(self, facts: SessionFacts, event: RcptTo) -> Decision: ...

    def sends_as(self, user: str, address: str, *, utf8: bool = False) -> bool:
        """Whether the authenticated ``user`` may use ``address`` as a sender (envelope or
        From: header); ``utf8``: the transaction said SMTPUTF8, so ``address`` may be a
        UTF-8 one."""


def _never_sent(user: str) -> int:
    return 0


@dataclass(frozen=True, slots=True)
class Rules:
    """What rules may consult besides the session."""

    router: Router
    limits: Limits
    #: Where mail for other domains waits (``DIR/queue``); None: nobody may relay.
    queue: Path | None = None
    #: Networks whose clients may relay on the receive listeners without AUTH.
    trusted: tuple[IPv4Network | IPv6Network, ...] = ()
    #: Messages an authenticated user had accepted in the last hour.
    sent_this_hour: Callable[[str], int] = _never_sent

    def is_trusted(self, peer: str) -> bool:
        try:
            address = ip_address(peer)
        except ValueError:
            return False
        return any(address in network for network in self.trusted)


E = TypeVar("E")
Rule = Callable[[Rules, SessionFacts, E], Decision | None]


# --- the default rules ---------------------------------------------------------------------


def ascii_sender(rules: Rules, facts: SessionFacts, event: MailFrom) -> Decision | None:
    # RFC 6531 3.5 / RFC 6533: a UTF-8 address needs SMTPUTF8. With it, the sender must be an
    # address smtpkit could name a mailbox by (no look-alike characters): it is the address
    # reports go back to, and an authenticated user's own address is checked by that form.
    if event.address.isascii():
        return None
    if not event.smtputf8:
        return Reject(replies.NON_ASCII_ADDRESS)
    try:
        parse_address(event.address, utf8=True)
    except UserError:
        return Reject(replies.SYNTAX_ERROR_ARGS)
    return None


def declared_size(rules: Rules, facts: SessionFacts, event: MailFrom) -> Decision | None:
    # RFC 1870 6: a declared size over our maximum is refused at once, 552 5.3.4.
    if event.size is not None and event.size > rules.limits.max_message_size:
        return Reject(replies.MESSAGE_TOO_BIG)
    return None


def submission_needs_auth(rules: Rules, facts: SessionFacts, event: MailFrom) -> Decision | None:
    # RFC 6409 4.3 / RFC 8314: on the submission listeners a message needs an authenticated
    # user, and AUTH needs TLS first.
    if facts.role is ListenerRole.RECEIVE:
        return None
    if facts.tls is None:
        return Reject(replies.TLS_REQUIRED)
    return Reject(replies.AUTH_REQUIRED) if facts.user is None else None


def own_sender(rules: Rules, facts: SessionFacts, event: MailFrom) -> Decision | None:
    # An authenticated user sends as themselves (or an address aliased to them), so that
    # no user can pose as another; the null sender (bounces) is anyone's.
    if facts.user is None or not event.address:
        return None
    if rules.router.sends_as(facts.user, event.address, utf8=event.smtputf8):
        return None
    return Reject(replies.SENDER_NOT_OWNED)


def sending_limit(rules: Rules, facts: SessionFacts, event: MailFrom) -> Decision | None:
    if facts.user is None:
        return None
    if rules.sent_this_hour(facts.user) >= rules.limits.max_messages_per_user_per_hour:
        return Defer(replies.SENDING_LIMIT)
    return None


def utf8_recipient(rules: Rules, facts: SessionFacts, event: RcptTo) -> Decision | None:
    # RFC 6531 3.3 / 3.5: without SMTPUTF8 on the transaction's MAIL a UTF-8 address is
    # refused with 553 5.6.7, as a sender is, on every listener and whoever the client is;
    # it is refused before any rule asks whose domain it is, so relaying stays closed. In a
    # transaction whose MAIL said SMTPUTF8 (RFC 6531 3.4), a UTF-8 address must have its
    # domain written in IDNA 2008 labels, and a local one must be a mailbox name under
    # addresses.py's rules: look-alikes (fullwidth forms, U+212A KELVIN SIGN) are refused as
    # bad syntax, never mapped onto a user. The local part of a remote address is the next
    # hop's to judge; relay_for_users decides whether it may go there at all.
    if event.address.isascii():
        return None
    if not facts.smtputf8:
        return Reject(replies.NON_ASCII_ADDRESS)
    try:
        parse_domain(event.address.rpartition("@")[2], utf8=True)
        if rules.router.is_local_domain(event.address, utf8=True):
            parse_address(event.address, utf8=True)
    except UserError:
        return Reject(replies.BAD_DESTINATION)
    return None


def relay_for_users(rules: Rules, facts: SessionFacts, event: RcptTo) -> Decision | None:
    # Mail for other domains is queued for an authenticated user, and on the receive
    # listeners for a client of a trusted network; everyone else meets no_relay. The
    # address is queued as the client gave it: its local part is the next hop's to read.
    utf8 = facts.smtputf8
    if rules.queue is None or rules.router.is_local_domain(event.address, utf8=utf8):
        return None
    trusted = facts.role is ListenerRole.RECEIVE and rules.is_trusted(facts.peer)
    if facts.user is None and not trusted:
        return None
    if not (utf8 or event.address.isascii()):
        # utf8_recipient refuses it first in RCPT_RULES; this holds in a table without it.
        return Reject(replies.NON_ASCII_ADDRESS)
    _, _, domain = event.address.rpartition("@")
    try:
        parse_domain(domain, utf8=utf8)
    except UserError:
        # An address literal or a malformed domain: no mail host to find for it.
        return Reject(replies.BAD_DESTINATION)
    return Accept((Remote(event.address, rules.queue),))


def no_relay(rules: Rules, facts: SessionFacts, event: RcptTo) -> Decision | None:
    # Anything not in one of our domains would be relaying: refused for everyone, whatever
    # the form (percent hack, source route already stripped, IP literal, trailing dot).
    local = rules.router.is_local_domain(event.address, utf8=facts.smtputf8)
    return None if local else Reject(replies.RELAY_DENIED)


def local_recipient(rules: Rules, facts: SessionFacts, event: RcptTo) -> Decision | None:
    targets = rules.router.resolve(event.address, utf8=facts.smtputf8)
    return Accept(targets) if targets else Reject(replies.UNKNOWN_USER)


HELO_RULES: tuple[Rule[Hello], ...] = ()
MAIL_RULES: tuple[Rule[MailFrom], ...] = (
    ascii_sender,
    declared_size,
    submission_needs_auth,
    own_sender,
    sending_limit,
)
#: The last rule routes the recipient to its targets (or refuses it).
RCPT_RULES: tuple[Rule[RcptTo], ...] = (
    utf8_recipient,
    relay_for_users,
    no_relay,
    local_recipient,
)


def _decide(rules: Rules, table: tuple[Rule[E], ...], facts: SessionFacts, event: E) -> Decision:
    for rule in table:
        decision = rule(rules, facts, event)
        if decision is not None:
            return decision
    return Accept()


class LocalPolicy:
    """The rule tables above, for a server's router and limits."""

    def __init__(self, router: Router, limits: Limits, **more: Any) -> None:
        self.rules = Rules(router, limits, **more)

    def check_helo(self, facts: SessionFacts, event: Hello) -> Decision:
        return _decide(self.rules, HELO_RULES, facts, event)

    def check_mail(self, facts: SessionFacts, event: MailFrom) -> Decision:
        return _decide(self.rules, MAIL_RULES, facts, event)

    def check_rcpt(self, facts: SessionFacts, event: RcptTo) -> Decision:
        return _decide(self.rules, RCPT_RULES, facts, event)

    def sends_as(self, user: str, address: str, *, utf8: bool = False) -> bool:
        return self.rules.router.sends_as(user, address, utf8=utf8)
