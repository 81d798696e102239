"""Mail address and domain validation: the only way an address becomes a folder name.

A user's Maildir is ``users/<address>/``, so this module is the gate that keeps ``/``, ``..``,
NUL, control characters and anything else odd out of paths: only a dot-atom local part
(RFC 5322 3.2.3, restricted further to characters safe in a file name) at a domain of
letters, digits and hyphens passes.

International addresses (RFC 6530-6532) pass only where a caller says so (``utf8=True``): the
policy and router when the client's transaction said SMTPUTF8, and the ``smtpkit user``
commands. Every function keeps its ASCII rules as its default. What a UTF-8 address becomes:

- The local part is prepared with the PRECIS UsernameCasePreserved profile (RFC 8265 3.4),
  after a check that refuses, instead of mapping, every code point that normalization would
  replace: fullwidth and halfwidth forms, ligatures and other compatibility characters, and the
  singletons such as U+212A KELVIN SIGN, which NFC (and so the profile itself) would silently
  turn into "K". What is left is a local part whose code points are stable, so its prepared form
  is simply its NFC form: the NFC and NFD spellings of one name are one address.
- Case: a mailbox name is lower-cased, as ASCII ones always were, with Unicode toLowerCase
  (RFC 8264 5.2.3, the UsernameCaseMapped profile), not case folding: folding would make
  "straße" and "strasse" one mailbox, the mapping IDNA 2008 refused for "faß.example".
- The domain is written as U-labels or A-labels, up to case nothing that IDNA 2008 (UTS #46,
  non-transitional) would map (no fullwidth letter, no ideographic full stop), with its
  Bidi rule; it is kept as its lower-case A-label, the form every configured domain, alias and
  existing mailbox folder already has. ``müller@bücher.example``, its NFD spelling and
  ``Müller@xn--bcher-kva.example`` are all the mailbox ``müller@xn--bcher-kva.example``.
"""

from __future__ import annotations

# idna imports its mapping table, and the punycode codec, on first use; by then serve and
# smtpkit check may run as the service user, who cannot always read the install (and a
# codec that failed to load once is never looked for again): imported here, at start.
import encodings.punycode  # noqa: F401
import re
import unicodedata
from dataclasses import dataclass

import idna
import idna.uts46data  # noqa: F401
from precis_i18n import get_profile

from smtpkit.errors import UserError

__all__ = [
    "Address",
    "NonAsciiAddress",
    "host_port",
    "is_host_name",
    "is_valid_domain",
    "normalize_address",
    "normalize_domain",
    "normalize_hostname",
    "parse_address",
    "parse_domain",
    "split_address",
]

# RFC 5322 atext minus "/" (a path separator), "|", "`", "{", "}" (shell and quoting trouble in
# Maildir tooling) and "%", "!" (the percent hack and bang paths of old relays: a mailbox named
# like a route would invite relay confusion). RFC 5321 4.5.3.1.1 caps the local part at 64.
_ATOM = r"[A-Za-z0-9#$&'*+=?^_~-]+"
_LOCAL_RE = re.compile(rf"{_ATOM}(?:\.{_ATOM})*\Z")
_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f]")
# RFC 1035 2.3.1 / RFC 1123 2.1 / RFC 5321 4.1.2 Domain: LDH labels, each 1-63 octets, no
# leading or trailing hyphen. The one label rule of smtpkit (is_host_name). ASCII letters
# spelled out: with re.IGNORECASE, [a-z] would also match U+212A KELVIN SIGN and U+017F.
_LABEL_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")
# RFC 6531 3.3 widens atext with any non-ASCII character; which ones may stay is PRECIS's call
# below. The ASCII characters left out of _ATOM stay out.
_UTF8_ATOM = r"[A-Za-z0-9#$&'*+=?^_~\u0080-\U0010ffff-]+"
_UTF8_LOCAL_RE = re.compile(rf"{_UTF8_ATOM}(?:\.{_UTF8_ATOM})*\Z")
# RFC 5321 4.5.3.1.1 counts the local part in octets, so a UTF-8 one too (RFC 6531 3.3).
_MAX_LOCAL_OCTETS = 64
# The two forms of a UTF-8 local part: case kept (what the address is), and lower-cased (the
# mailbox it names). Both check the NFC form against the IdentifierClass; the code points as
# given are checked first by _unstable, since NFC would hide a Kelvin sign.
_CASE_PRESERVED = get_profile("UsernameCasePreserved")
_CASE_MAPPED = get_profile("UsernameCaseMapped")
# What a decomposition tag (Unicode's UnicodeData.txt) makes of a character, in a refusal.
_COMPAT_KINDS = {"<wide>": "a fullwidth form", "<narrow>": "a halfwidth form"}
# The reasons precis_i18n gives for a code point the IdentifierClass never allows; any other
# reason at one position names the context rule (RFC 5892 Appendix A) it failed.
_PRECIS_CLASSES = frozenset(
    {
        "controls",
        "has_compat",
        "old_hangul_jamo",
        "other",
        "precis_ignorable_properties",
        "punctuation",
        "spaces",
        "symbols",
        "unassigned",
    }
)


class NonAsciiAddress(UserError):
    """A non-ASCII address where only ASCII may be: a client that did not send SMTPUTF8
    (RFC 6531 3.3); the engine answers ``553 5.6.7``, not a syntax error."""


@dataclass(frozen=True, slots=True)
class Address:
    """An address that passed ``parse_address``.

    ``local`` is the local part as the client meant it (case kept; NFC for UTF-8), ``domain``
    the lower-case A-label form, and ``mailbox`` the canonical address that routing and mailbox
    folders use: ``normalize_address``'s answer.
    """

    local: str
    domain: str
    mailbox: str

    def __str__(self) -> str:
        return f"{self.local}@{self.domain}"

    @property
    def needs_smtputf8(self) -> bool:
        """True when the address cannot be sent without SMTPUTF8 (RFC 6531 3.3): its domain
        is always ASCII here, so when its local part is not."""
        return not self.local.isascii()


def is_host_name(name: str) -> bool:
    """True for a host name in LDH labels (RFC 1123 2.1): dot-separated labels of 1-63
    letters, digits and hyphens, no hyphen at either end, at most 253 octets in all, one
    label allowed, no final dot; either case. The label rule every name smtpkit checks
    keeps to: domains, host names, report hosts, DKIM selectors."""
    return 0 < len(name) <= 253 and all(_LABEL_RE.match(label) for label in name.split("."))


def is_valid_domain(domain: str) -> bool:
    """True for a lower-case LDH domain name of at least two labels, at most 253 octets."""
    return "." in domain and domain == domain.lower() and is_host_name(domain)


def normalize_domain(domain: str) -> str:
    """Lower-case a domain, turning an internationalised name into its IDNA ASCII form.

    Raises ``UserError`` for anything that is not a valid domain name.
    """
    text = domain.strip().lower()
    if not text.isascii():
        # IDNA 2008 with the UTS #46 non-transitional mapping (RFC 5891), as current mail
        # software does: "faß.example" is its own domain, where Python's built-in IDNA 2003
        # codec would turn it into "fass.example".
        try:
            text = idna.encode(text, uts46=True, transitional=False).decode("ascii")
        except UnicodeError as exc:  # idna.IDNAError is one
            raise UserError(f"{domain!r} is not a valid domain name") from exc
    if not is_valid_domain(text):
        raise UserError(f"{domain!r} is not a valid domain name")
    return text


def normalize_hostname(name: str) -> str:
    """Return the ASCII lower-case form of a host name, without a final dot.

    The one host-name rule of smtpkit (nameservers, certificate names, ``server.hostname``
    lookups): LDH labels of 1-63 octets, no hyphen at either end (RFC 1123 2.1), at most 253
    octets, one label allowed (``localhost``). An internationalised name is turned into its
    IDNA form with the same rule as ``normalize_domain`` (IDNA 2008, UTS #46 non-transitional):
    ``faß.example`` becomes ``xn--fa-hia.example``, never ``fass.example``. Raises ``UserError``
    for anything else.
    """
    text = name.strip()
    if text.endswith("."):
        text = text[:-1]
    text = text.lower()
    if not text.isascii():
        try:
            text = idna.encode(text, uts46=True, transitional=False).decode("ascii")
        except UnicodeError:  # idna.IDNAError is one
            raise UserError(f"{name!r} is not a valid host name") from None
    if not is_host_name(text):
        raise UserError(f"{name!r} is not a valid host name")
    return text


def split_address(address: str, *, utf8: bool = False) -> tuple[str, str]:
    """Split and validate ``local@domain``; returns (local part, lower-cased domain).

    With ``utf8`` the local part may be UTF-8 (returned in NFC, case kept) and the domain
    U-labels (see the module's rules). Raises ``UserError`` naming the address when it is not a
    plain dot-atom address.
    """
    parsed = _parse(address, utf8=utf8)
    return parsed.local, parsed.domain


def normalize_address(
    address: str, domains: tuple[str, ...] | None = None, *, utf8: bool = False
) -> str:
    """Return the canonical, lower-cased form of ``address``.

    With ``domains``, the address must also be in one of them (a local address). With
    ``utf8``, an international address is accepted too, and its canonical form is the
    mailbox name of the module's rules.
    """
    canonical = _parse(address, utf8=utf8).mailbox
    domain = canonical.rpartition("@")[2]
    if domains is not None and domain not in domains:
        raise UserError(
            f"{address!r} is not in a local domain (configured: {', '.join(domains) or 'none'})"
        )
    return canonical


def parse_address(address: str, *, utf8: bool = False) -> Address:
    """Check a mailbox a client named in MAIL or RCPT; ``utf8``: the client sent SMTPUTF8.

    Without ``utf8`` any non-ASCII character, in the local part or the domain, raises
    ``NonAsciiAddress`` (RFC 6531 3.3: a U-label needs SMTPUTF8 too). Anything else that is
    no address smtpkit can name a mailbox by raises ``UserError``, the syntax refusal. Whether
    the domain is one of ours is not asked here: that is routing.
    """
    if not utf8 and not address.isascii():
        raise NonAsciiAddress(f"{address!r} is not an ASCII address (it needs SMTPUTF8)")
    return _parse(address, utf8=utf8)


def parse_domain(domain: str, *, utf8: bool = False) -> str:
    """The lower-case A-label form of the domain a client named after an address's ``@``,
    under the rules of ``parse_address``: a domain of a relayed address is checked alone,
    its local part being the next hop's business. Raises ``NonAsciiAddress`` or
    ``UserError`` as ``parse_address`` does."""
    if not domain.isascii():
        if not utf8:
            raise NonAsciiAddress(f"{domain!r} is not an ASCII domain (it needs SMTPUTF8)")
        return _utf8_domain(domain, domain)
    return normalize_domain(domain)


def _parse(address: str, *, utf8: bool) -> Address:
    """The one parser behind the public functions; without ``utf8``, exactly the ASCII rules
    smtpkit always had (a U-label domain mapped through IDNA, as configs and commands give
    it)."""
    if _CONTROL_OR_SPACE.search(address):
        raise UserError(f"{address!r} is not a valid address: spaces or control characters")
    local, sep, domain = address.rpartition("@")
    if not sep or not local:
        raise UserError(f"{address!r} is not a valid address: expected local-part@domain")
    if utf8 and not local.isascii():
        local, mailbox_local = _prepare_local(address, local)
    elif len(local) > 64 or not _LOCAL_RE.match(local):
        raise UserError(f"{address!r} is not a valid address: bad local part {local!r}")
    else:
        mailbox_local = local.lower()
    if utf8 and not domain.isascii():
        domain = _utf8_domain(address, domain)
    else:
        try:
            domain = normalize_domain(domain)
        except UserError:
            raise UserError(f"{address!r} is not a valid address: bad domain {domain!r}") from None
    return Address(local, domain, f"{mailbox_local}@{domain}")


def _prepare_local(address: str, local: str) -> tuple[str, str]:
    """A UTF-8 local part: (its NFC form with case kept, its lower-cased mailbox form)."""

    def refuse(why: str) -> UserError:
        return UserError(f"{address!r} is not a valid address: bad local part {local!r}{why}")

    if not _UTF8_LOCAL_RE.match(local):
        raise refuse("")
    unstable = _unstable(local)
    if unstable is not None:
        raise refuse(f": {unstable}")
    try:
        prepared = _CASE_PRESERVED.enforce(local)
        mailbox = _CASE_MAPPED.enforce(prepared)
    except UnicodeEncodeError as exc:
        raise refuse(f": {_precis_refusal(exc)}") from None
    if max(len(prepared.encode()), len(mailbox.encode())) > _MAX_LOCAL_OCTETS:
        raise refuse(f": longer than {_MAX_LOCAL_OCTETS} octets")
    return prepared, mailbox


def _utf8_domain(address: str, domain: str) -> str:
    """A domain of U-labels (A-labels may be mixed in): its lower-case A-label form."""

    def refuse(why: str) -> UserError:
        return UserError(f"{address!r} is not a valid address: bad domain {domain!r}{why}")

    unstable = _unstable(domain)
    if unstable is not None:
        raise refuse(f": {unstable}")
    text = unicodedata.normalize("NFC", domain)
    try:
        ascii_form = idna.encode(text, uts46=True, transitional=False).decode("ascii")
    except UnicodeError as exc:  # idna.IDNAError is one
        raise refuse(f": {exc}") from None
    if not is_valid_domain(ascii_form):
        raise refuse("")
    # UTS #46 maps more than case (U+3002 IDEOGRAPHIC FULL STOP to "."): a label that is not,
    # up to case, its own U-label or A-label is a look-alike of one.
    given = text.lower().split(".")
    labels = ascii_form.split(".")
    if len(given) != len(labels) or any(
        mine != (label if mine.isascii() else idna.decode(label))
        for mine, label in zip(given, labels, strict=True)
    ):
        raise refuse(f": not written in IDNA 2008 labels (UTS #46 would map it to {ascii_form})")
    return ascii_form


def _unstable(text: str) -> str | None:
    """Why the first code point of ``text`` that Unicode normalization would replace must not
    be used (None: there is none). Such a character (PRECIS's HasCompat, RFC 8264 9.17) looks
    like another, or is another under NFC: it is refused, never mapped, so that no spelling
    of a name reaches the mailbox of a name it only resembles."""
    for char in text:
        same = unicodedata.normalize("NFKC", char)
        if same == char:
            continue
        name = f"U+{ord(char):04X} {unicodedata.name(char, '')}".rstrip()
        decomposition = unicodedata.decomposition(char)
        tag = decomposition.partition(" ")[0]
        if not tag.startswith("<"):
            if " " not in decomposition:
                return f"{name} is a duplicate of {same!r} (a singleton decomposition)"
            return f"{name} is not in normalized form (NFC writes it {same!r})"
        if tag == "<compat>" and "LIGATURE" in name:
            kind = "a ligature"
        else:
            kind = _COMPAT_KINDS.get(tag, "a compatibility form")
        return f"{name} is {kind} of {same!r}"
    return None


def _precis_refusal(exc: UnicodeEncodeError) -> str:
    """A PRECIS refusal in words: the character and the rule, or the rule alone."""
    rule = exc.reason.removeprefix("DISALLOWED/")
    if rule == "bidi_rule":
        return "right-to-left text that breaks the Bidi Rule (RFC 5893)"
    if exc.end - exc.start == 1:
        char = exc.object[exc.start]
        name = f"U+{ord(char):04X} {unicodedata.name(char, '')}".rstrip()
        if rule in _PRECIS_CLASSES:
            return f"{name} is not allowed (PRECIS: {rule.replace('_', ' ')})"
        return f"{name} is not allowed here (PRECIS context rule: {rule.replace('_', ' ')})"
    return f"refused by PRECIS ({rule.replace('_', ' ')})"


def host_port(host: str, port: int) -> str:
    """``host:port``, with an IPv6 address in brackets (``[::1]:25``) so the port stays
    unambiguous, as listen addresses, nameservers and peers are written everywhere."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
