"""The ``[checks]`` of mail arriving on port 25, and DKIM signing of mail that leaves, off the
event loop (ARCHITECTURE.md, "Mail authentication").

At connect, a client is looked up in the DNS blocklists (``screen``). At the final dot, a
message is inspected before its commit (``inspect``, the session's ``Inspector``): from a
client on the internet, SPF, DKIM and DMARC (``mailauth.verify``) and the content scanner
(``mailauth.rspamd``) decide whether it is refused, delivered into the Junk folder or just
tagged with an ``Authentication-Results`` field; from an authenticated user or a trusted
network, it is signed with the DKIM keys of its From: domain. Both run on a small thread
pool, each bounded in time; the answer comes back to the loop through
``call_soon_threadsafe``. Until it does, the session waits and nothing else touches the
spool, which the inspection may rewrite (header fields added in front, forged
``Authentication-Results`` removed).

Mail from trusted networks and authenticated users is not checked: it is ours. Nor is mail
from loopback addresses (programs on this machine), unless ``check_loopback``.
"""

from __future__ import annotations

import concurrent.futures
import functools
import ipaddress
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from smtpkit.config import Config, ListenerRole
from smtpkit.dns import make_resolver
from smtpkit.owner import as_owner
from smtpkit.policy import Defer, Reject
from smtpkit.protocol import replies
from smtpkit.session import Deliver, Inspected, Inspection

if TYPE_CHECKING:
    import dns.resolver

    from smtpkit.delivery.spool import Spool
    from smtpkit.mailauth.dnsbl import Listing
    from smtpkit.mailauth.signing import Signer

__all__ = ["Checks", "insert_fields", "load_mailauth", "sign_spool", "signature"]

#: Threads for lookups, signature checks and scans: each waits mostly on the network.
THREADS = 8
#: How long the blocklist lookups of one client may take, in all.
DNSBL_TIME = 5.0

CallSoon = Callable[[Callable[[], None]], None]

#: DMARC's findings for a From: that names no single author domain (mailauth/dmarc.py).
_AMBIGUOUS = frozenset({"several From: fields", "several domains in From:"})


def load_mailauth(config: Config) -> Signer | None:
    """Before the workers start (as the user who started ``serve``): import what the checks
    and signing use, so no worker has to read Python's files once it is the data folder's
    owner, and load the DKIM keys (as that owner: the files are its own, mode 0600).
    None when there is no key. A key file that cannot be used is a ConfigError naming it."""
    import cryptography.hazmat.backends.openssl.backend  # noqa: F401

    from smtpkit.mailauth import dnsbl, rspamd, verify  # noqa: F401
    from smtpkit.mailauth.signing import Signer

    verify.preload()
    directory = config.server.directory
    with as_owner(directory):
        signer = Signer.from_directory(directory)
    return signer if signer else None


def signature(signer: Signer, message: bytes) -> bytes:
    """The DKIM-Signature fields for ``message``, or b"" when there is no key for its From:
    domain or signing fails: unsigned mail still goes out (a receiver may then judge it by
    SPF alone)."""
    from smtpkit.mailauth.signing import SigningError

    try:
        return signer.sign(message)
    except SigningError:
        return b""


def sign_spool(signer: Signer, spool: Spool, message: bytes | None = None) -> str:
    """Sign the message in ``spool`` (its content, when already read, in ``message``),
    adding the DKIM-Signature fields in front. Returns what the journal says: "signed", ""
    (no key for its From: domain) or why it stays unsigned."""
    from smtpkit.mailauth.signing import SigningError

    try:
        if message is None:
            with open(spool.path, "rb") as fh:
                message = fh.read()
        fields = signer.sign(message)
        if fields:
            spool.rewrite(insert_fields(message, fields))
    except (SigningError, OSError) as exc:
        return f"failed: {exc}"
    return "signed" if fields else ""


def insert_fields(message: bytes, fields: bytes) -> bytes:
    """``fields`` put at the top of ``message``, after our ``Return-Path:`` line (which
    stays first, where mail readers and Dovecot expect it)."""
    if message[:12].lower() == b"return-path:":
        end = message.find(b"\r\n")
        if end >= 0:
            return message[: end + 2] + fields + message[end + 2 :]
    return fields + message


@functools.lru_cache(maxsize=4096)
def _is_ours(
    peer: str,
    trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...],
    check_loopback: bool,
) -> bool:
    """``Checks._ours``, remembered for the most recent clients: parsing an address costs
    more than the rest of a connection's checks."""
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if any(address in network for network in trusted):
        return True
    return address.is_loopback and not check_loopback


class Checks:
    """One per worker process; ``close()`` at the end."""

    def __init__(self, config: Config, call_soon_threadsafe: CallSoon, signer: Signer | None):
        self.config = config
        self.checks = config.checks
        self.authserv_id = self.checks.authserv_id or config.server.hostname
        self.trusted = config.submission.trusted_networks
        self.signer = signer if signer else None
        self._call_soon = call_soon_threadsafe
        self._pool = concurrent.futures.ThreadPoolExecutor(THREADS, "smtpkit-checks")
        self._resolver: dns.resolver.Resolver | None = None
        checks = self.checks
        self.verifying = "tag" in (checks.spf, checks.dkim, checks.dmarc) or (
            checks.spf == "reject" or checks.dmarc == "enforce"
        )

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def resolver(self) -> dns.resolver.Resolver:
        if self._resolver is None:
            servers = self.config.delivery.nameservers
            self._resolver = make_resolver(list(servers) or None, self.checks.time_limit)
        return self._resolver

    # --- who is checked ---------------------------------------------------------------------
    def _ours(self, peer: str) -> bool:
        """A client whose mail is ours: a trusted network, or (unless check_loopback) this
        machine itself."""
        return _is_ours(peer, self.trusted, self.checks.check_loopback)

    def screens(self, role: ListenerRole, peer: str) -> bool:
        """Whether a new client of this listener is looked up in the blocklists."""
        return bool(self.checks.dnsbl) and role is ListenerRole.RECEIVE and not self._ours(peer)

    def wanted(self, role: ListenerRole, peer: str, user: str | None) -> bool:
        if user is not None or (role is ListenerRole.RECEIVE and self._ours(peer)):
            return self.signer is not None
        if role is not ListenerRole.RECEIVE:
            return False
        return self.verifying or bool(self.checks.rspamd)

    # --- at connect -------------------------------------------------------------------------
    def screen(self, peer: str, done: Callable[[Listing | None, list[str]], None]) -> None:
        """Look ``peer`` up in the blocklists; ``done(listing, problems)`` on the loop."""
        from smtpkit.mailauth.dnsbl import check_blocklists

        def work() -> tuple[Listing | None, list[str]]:
            return check_blocklists(self.resolver(), peer, self.checks.dnsbl, deadline=DNSBL_TIME)

        def finished(future: concurrent.futures.Future[tuple[Listing | None, list[str]]]) -> None:
            try:
                listing, problems = future.result()
            except Exception as exc:  # noqa: BLE001 - a list that cannot be asked lists nobody
                listing, problems = None, [f"blocklist lookup failed: {exc}"]
            self._call_soon(lambda: done(listing, problems))

        self._submit(work, finished)

    # --- at the final dot -------------------------------------------------------------------
    def inspect(self, inspection: Inspection, done: Callable[[Inspected], None]) -> None:
        def finished(future: concurrent.futures.Future[Inspected]) -> None:
            try:
                result = future.result()
            except Exception as exc:  # noqa: BLE001 - never a 250 on a check that broke
                fields = {"error": f"checks: {exc}"}
                result = Inspected(Defer(replies.LOCAL_ERROR), fields=fields)
            self._call_soon(lambda: done(result))

        self._submit(lambda: self._inspect(inspection), finished)

    def _submit(self, work: Callable[[], Any], finished: Callable[[Any], None]) -> None:
        try:
            future = self._pool.submit(work)
        except RuntimeError:  # shutting down
            future = concurrent.futures.Future()
            future.set_exception(RuntimeError("the server is stopping"))
        future.add_done_callback(finished)

    def _inspect(self, inspection: Inspection) -> Inspected:
        """On a pool thread."""
        spool = inspection.spool
        with open(spool.path, "rb") as fh:
            message = fh.read()
        if inspection.user is not None or self._ours(inspection.peer):
            return self._sign(inspection, message)
        return self._verify(inspection, message)

    def _sign(self, inspection: Inspection, message: bytes) -> Inspected:
        assert self.signer is not None
        outcome = sign_spool(self.signer, inspection.spool, message)
        return Inspected(fields={"dkim_sign": outcome} if outcome else {})

    def _verify(self, inspection: Inspection, message: bytes) -> Inspected:
        checks = self.checks
        fields: dict[str, Any] = {}
        added = b""
        if self.verifying:
            from smtpkit.mailauth.verify import check_message, strip_authentication_results

            verdict = check_message(
                message,
                client_ip=inspection.peer,
                helo=inspection.helo,
                mail_from=inspection.sender,
                resolver=self.resolver(),
                spf=checks.spf != "off",
                dkim=checks.dkim != "off",
                dmarc=checks.dmarc != "off",
                time_limit=checks.time_limit,
            )
            fields["auth"] = verdict.journal()
            spf = verdict.spf
            if checks.spf == "reject" and spf is not None and spf.result == "fail":
                reply = replies.spf_failed(spf.domain, inspection.peer)
                return Inspected(Reject(reply), fields=fields)
            junk = False
            dmarc = verdict.dmarc
            if checks.dmarc == "enforce" and dmarc is not None and dmarc.reason in _AMBIGUOUS:
                # RFC 7489 6.6.1: with several authors no policy can be applied, which is how
                # a p=reject domain would be forged; such a message is refused instead.
                return Inspected(Reject(replies.SEVERAL_AUTHORS), fields=fields)
            if checks.dmarc == "enforce" and verdict.dmarc is not None:
                action = verdict.dmarc_action()
                if action == "reject":
                    reply = replies.dmarc_rejected(verdict.dmarc.from_domain)
                    return Inspected(Reject(reply), fields=fields)
                if action == "quarantine":
                    fields["quarantined"] = "dmarc"
                    junk = True
            message, removed = strip_authentication_results(message, self.authserv_id)
            if removed:
                fields["removed_authentication_results"] = removed
            added = verdict.header(self.authserv_id)
        else:
            junk = False
        if checks.rspamd:
            refusal, header = self._scan(inspection, fields)
            if refusal is not None:
                return Inspected(refusal, fields=fields)
            added += header
        if added:
            inspection.spool.rewrite(insert_fields(message, added))
        return Inspected(Deliver(junk), fields=fields)

    def _scan(
        self, inspection: Inspection, fields: dict[str, Any]
    ) -> tuple[Reject | Defer | None, bytes]:
        """Ask rspamd: a refusal, or the header field to add."""
        from smtpkit.mailauth.rspamd import ScanAction, ScanFailed, scan

        checks = self.checks
        try:
            verdict = scan(
                checks.rspamd,
                str(inspection.spool.path),
                ip=inspection.peer,
                helo=inspection.helo or None,
                sender=inspection.sender,
                recipients=inspection.recipients,
                user=None,
                timeout=checks.rspamd_timeout,
            )
        except ScanFailed as exc:
            fields["scan"] = f"failed: {exc}"
            if checks.rspamd_fail == "closed":
                return Defer(replies.scan_deferred(None)), b""
            return None, b""
        fields["scan"] = verdict.rspamd_action
        fields["score"] = round(verdict.score, 2)
        if verdict.action is ScanAction.REJECT:
            return Reject(replies.spam_rejected(verdict.smtp_message)), b""
        if verdict.action is ScanAction.DEFER:
            return Defer(replies.scan_deferred(verdict.smtp_message)), b""
        return None, verdict.header()
