"""Which targets a recipient address reaches: aliases, postmaster, then the user store."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from smtpkit.addresses import parse_domain
from smtpkit.delivery.targets import Mailbox, Remote, Target
from smtpkit.errors import UserError
from smtpkit.users import UserStore

__all__ = ["Router"]

_CACHE_SIZE = 4096


class Router:
    """Resolves local recipients to Maildir folders.

    ``resolve`` returns the mailboxes of an address (possibly several through an alias), or
    an empty tuple when nothing local exists for it. It never builds a path from an address
    that ``UserStore.normalize`` has not validated.

    With ``delimiters`` (``server.recipient_delimiter``), an address that names no user and
    no alias is tried once more without its subaddress (RFC 5233): ``alice+lists@`` reaches
    ``alice@`` from the first delimiter on. An exact user or alias always wins, so a real
    ``alice+lists@`` mailbox is never bypassed.
    """

    def __init__(
        self,
        users: UserStore,
        aliases: Mapping[str, tuple[str, ...]],
        domains: tuple[str, ...],
        lmtp_queue: Path | None = None,
        delimiters: str = "",
    ) -> None:
        self.users = users
        self.aliases = aliases
        self.domains = domains
        #: With ``[delivery] lmtp``: local mail is queued here, for the queue runner to hand
        #: to the LMTP server, instead of going into the Maildirs (which still say who the
        #: users are).
        self.lmtp_queue = lmtp_queue
        self.delimiters = delimiters
        self._cache: dict[str, tuple[Mailbox, ...]] = {}

    def canonical(self, address: str, *, utf8: bool = False) -> str:
        """The lower-cased local address, with bare ``postmaster`` (RFC 5321 4.1.1.3) taken as
        postmaster of the first domain. Raises ``UserError`` for anything non-local.

        ``utf8``: the client's transaction said SMTPUTF8, so a UTF-8 address is its mailbox
        name under the rules of addresses.py (NFC, lower case, A-label domain; look-alikes
        refused, never mapped)."""
        _check_ascii(address, utf8)
        if address.lower() == "postmaster":
            return f"postmaster@{self.domains[0]}"
        return self.users.normalize(address)

    def resolve(
        self, address: str, *, utf8: bool = False, rcpt: str | None = None
    ) -> tuple[Target, ...]:
        """The targets a local address reaches; empty when it reaches none. ``utf8`` as for
        ``canonical``; ``rcpt``: the address as given at RCPT, when ``address`` is derived
        from it."""
        rcpt = address if rcpt is None else rcpt
        try:
            targets = self._targets(address, utf8)
        except UserError:
            return ()
        # The one check per recipient that must see the disk now: a user added or removed
        # while the server runs is found or refused at once.
        found = tuple(box for box in targets if os.path.isdir(box.path))
        if not found and self.delimiters:
            base = self.base_address(address, utf8=utf8)
            return self.resolve(base, utf8=utf8, rcpt=rcpt) if base is not None else ()
        if self.lmtp_queue is not None:
            # Durable in the queue before the 250, like mail for other domains; the folder's
            # name is the user's canonical address, which the LMTP server is given.
            return tuple(Remote(box.path.name, self.lmtp_queue, rcpt) for box in found)
        return found

    def base_address(self, address: str, *, utf8: bool = False) -> str | None:
        """The address without its subaddress (``alice@example.org`` for
        ``alice+lists@example.org``) when it has one and is not an alias itself; None
        otherwise. The local part is cut at its first delimiter, as Postfix and Dovecot cut
        it, so ``alice+a+b@`` is alice's too; one that begins with a delimiter has no base."""
        try:
            canonical = self.canonical(address, utf8=utf8)
        except UserError:
            return None
        local, _, domain = canonical.rpartition("@")
        cut = min((i for i in map(local.find, self.delimiters) if i >= 0), default=-1)
        if cut <= 0 or canonical in self.aliases:
            return None
        return f"{local[:cut]}@{domain}"

    def _targets(self, address: str, utf8: bool) -> tuple[Mailbox, ...]:
        """The mailboxes an address routes to, validated once and remembered: address checks
        and path building cost more than the stat. The ASCII check comes before the cache,
        which holds UTF-8 addresses once an SMTPUTF8 transaction named them."""
        _check_ascii(address, utf8)
        found = self._cache.get(address)
        if found is None:
            canonical = self.canonical(address, utf8=utf8)
            targets = self.aliases.get(canonical, (canonical,))
            boxes = (Mailbox(self.users.mailbox(t)) for t in targets)
            found = tuple(dict.fromkeys(boxes))
            if len(self._cache) >= _CACHE_SIZE:
                self._cache.clear()  # bounded: a prober's random names cannot fill memory
            self._cache[address] = found
        return found

    def is_local_domain(self, address: str, *, utf8: bool = False) -> bool:
        """True when the address's domain (after the last ``@``) is one of ours; with
        ``utf8``, a domain of U-labels is ours when its A-label form is."""
        if address.lower() == "postmaster":
            return True
        _, sep, domain = address.rpartition("@")
        if utf8 and not domain.isascii():
            try:
                return parse_domain(domain, utf8=True) in self.domains
            except UserError:
                return False
        # ASCII first: str.lower() maps some non-ASCII letters to ASCII ones (see canonical).
        return bool(sep) and domain.isascii() and domain.lower() in self.domains

    def sends_as(self, user: str, address: str, *, utf8: bool = False) -> bool:
        """Whether the local user ``user`` may send as ``address``: it is theirs, or an
        alias that delivers to them. ``utf8`` as for ``canonical``."""
        try:
            canonical = self.canonical(address, utf8=utf8)
        except UserError:
            return False
        return canonical == user or user in self.aliases.get(canonical, ())


def _check_ascii(address: str, utf8: bool) -> None:
    """Without SMTPUTF8 a recipient is ASCII (RFC 6531 3.1). Lower-casing and IDNA mapping
    turn look-alikes into our names (U+212A KELVIN SIGN -> "k", fullwidth letters -> ASCII):
    such an address is refused before either can happen. With it, addresses.py refuses them."""
    if not utf8 and not address.isascii():
        raise UserError(f"{address!r} is not an ASCII address")
