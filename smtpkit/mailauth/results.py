"""What the checks of arriving mail found, and the Authentication-Results field that says so.

The result words are the registered ones: SPF's of RFC 7208 2.6, DKIM's of RFC 8601 2.7.1,
DMARC's of RFC 7489 11.2. A ``Verdict`` holds the results of one message and writes them as one
Authentication-Results field (RFC 8601 2.2), as a compact dict for the journal, and as the
action enforcing DMARC would take.

``Deadline`` is here too because every check shares it: one time limit for all the DNS queries
of one message.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import dns.resolver

__all__ = [
    "DKIM_RESULTS",
    "DMARC_RESULTS",
    "SPF_RESULTS",
    "Deadline",
    "DkimResult",
    "DmarcResult",
    "SpfResult",
    "Verdict",
]

SPF_RESULTS = ("pass", "fail", "softfail", "neutral", "none", "permerror", "temperror")
DKIM_RESULTS = ("pass", "fail", "neutral", "temperror", "permerror", "policy", "none")
DMARC_RESULTS = ("pass", "fail", "none", "temperror", "permerror")
DMARC_POLICIES = ("none", "quarantine", "reject")

# RFC 5322 2.1.1: lines SHOULD be no more than 78 characters, without the CRLF.
LINE_WIDTH = 78

# A reason is for a person reading the header: one line, printable ASCII, short.
_MAX_REASON = 200


@dataclass(frozen=True, slots=True)
class Deadline:
    """The moment, on the monotonic clock, by which a set of checks must be done.

    Every DNS query is given what is left (at most the resolver's own lifetime), so a
    nameserver that never answers costs the time limit once, not once per query.
    """

    at: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + max(0.0, float(seconds)))

    def left(self) -> float:
        """Seconds left; 0 once the deadline has passed."""
        return max(0.0, self.at - time.monotonic())

    def lifetime(self, resolver: dns.resolver.Resolver) -> float:
        """What the next query may take: the time left, at most the resolver's lifetime."""
        return min(self.left(), float(resolver.lifetime))


@dataclass(frozen=True, slots=True)
class SpfResult:
    """The SPF result for one identity (RFC 7208 2.6).

    ``domain`` is the domain checked: MAIL FROM's, or the HELO name for the null sender
    (RFC 7208 2.4), which ``scope`` says ("mailfrom" or "helo"). ``helo`` is the result of
    the separate check of the HELO identity (RFC 7208 2.3), when one was made. ``sender`` is
    the MAIL FROM address as given, which the Authentication-Results field reports; empty, it
    reports ``domain``.
    """

    result: str
    domain: str
    scope: str
    helo: str | None = None
    reason: str = ""
    sender: str = ""

    def __post_init__(self) -> None:
        _check_word("SPF", self.result, SPF_RESULTS)
        _check_word("SPF scope", self.scope, ("mailfrom", "helo"))
        if self.helo is not None:
            _check_word("SPF HELO", self.helo, SPF_RESULTS)


@dataclass(frozen=True, slots=True)
class DkimResult:
    """The result of one DKIM-Signature field (RFC 8601 2.7.1), with its ``d=``, ``s=`` and
    ``a=`` (empty when the signature is too broken to tell)."""

    result: str
    domain: str
    selector: str
    algorithm: str
    reason: str = ""

    def __post_init__(self) -> None:
        _check_word("DKIM", self.result, DKIM_RESULTS)


@dataclass(frozen=True, slots=True)
class DmarcResult:
    """The DMARC result for the message's From: domain (RFC 7489).

    ``policy`` is what the domain asks for failing mail: ``p=``, or ``sp=`` when the record
    was found at the organizational domain of a subdomain (RFC 7489 6.6.3); "none" when there
    is no usable record. ``pct`` is the record's ``pct=`` (``Verdict.dmarc_action`` says how
    it counts).
    """

    result: str
    from_domain: str
    policy: str
    reason: str = ""
    pct: int = 100

    def __post_init__(self) -> None:
        _check_word("DMARC", self.result, DMARC_RESULTS)
        _check_word("DMARC policy", self.policy, DMARC_POLICIES)


@dataclass(frozen=True, slots=True)
class Verdict:
    """Everything checked about one message. ``None`` (for DKIM: an empty ``dkim`` with
    ``dkim_checked`` false) is a method that was not checked and is left out everywhere.

    ``dkim`` holds one result per DKIM-Signature field; empty with ``dkim_checked`` true, the
    message was unsigned, which the header reports as ``dkim=none``.
    """

    spf: SpfResult | None = None
    dkim: tuple[DkimResult, ...] = ()
    dmarc: DmarcResult | None = None
    dkim_checked: bool = False

    def header(self, authserv_id: str) -> bytes:
        """The whole Authentication-Results field (RFC 8601 2.2) with its CRLF, in ASCII.

        The authserv-id stands on the first line, each result on a line of its own (CRLF and a
        TAB), longer ones folded between their parts to stay within 78 columns where a part
        allows it. A reason, when there is one, precedes the properties as the grammar wants
        (``resinfo``: method, reason, properties). Nothing checked at all: ``id; none``.
        """
        results: list[list[list[str]]] = []
        if self.spf is not None:
            results.append(_spf_parts(self.spf))
        results.extend(_dkim_parts(r) for r in self.dkim)
        if not self.dkim and self.dkim_checked:
            results.append([["dkim=none"]])
        if self.dmarc is not None:
            results.append(_dmarc_parts(self.dmarc))
        first = f"Authentication-Results: {_value(_printable(authserv_id))};"
        if not results:
            return (first + " none\r\n").encode("ascii")
        lines = [first]
        for index, parts in enumerate(results):
            if index < len(results) - 1:
                parts[-1][-1] += ";"
            lines.extend(_fold(parts))
        return ("\r\n".join(lines) + "\r\n").encode("ascii")

    def journal(self) -> dict[str, object]:
        """The results in short, for a journal line: ``{"spf": "pass", "dkim": ["pass
        a.test"], "dmarc": "pass"}``, only the methods checked; ``spf_helo`` when the HELO
        identity was checked on its own."""
        found: dict[str, object] = {}
        if self.spf is not None:
            found["spf"] = self.spf.result
            if self.spf.helo is not None:
                found["spf_helo"] = self.spf.helo
        if self.dkim or self.dkim_checked:
            found["dkim"] = [f"{r.result} {r.domain}" if r.domain else r.result for r in self.dkim]
        if self.dmarc is not None:
            found["dmarc"] = self.dmarc.result
        return found

    def dmarc_action(self) -> str:
        """What enforcing DMARC would do with this message: "reject", "quarantine" or "none".

        Only a DMARC ``fail`` is acted on, with the policy of the From: domain. ``pct=`` below
        100 is honoured without chance: every message counts as outside the sample, so the
        next milder policy applies (reject -> quarantine -> none), as RFC 7489 6.6.4 asks for
        the messages a sample leaves out. A domain still rolling out its policy is thus never
        held to it fully, and the same message always gets the same answer.
        """
        if self.dmarc is None or self.dmarc.result != "fail":
            return "none"
        policy = self.dmarc.policy
        if self.dmarc.pct < 100:
            policy = {"reject": "quarantine"}.get(policy, "none")
        return policy


def _check_word(what: str, word: str, allowed: tuple[str, ...]) -> None:
    if word not in allowed:
        raise ValueError(f"{what} result {word!r} is not one of {', '.join(allowed)}")


# --- the parts of one resinfo -----------------------------------------------------------------
#
# A result is a list of parts (method=result, reason="...", ptype.property=value), each part a
# list of words: a part is folded before it; a quoted reason may also fold between its words.


def _spf_parts(spf: SpfResult) -> list[list[str]]:
    parts = [[f"spf={spf.result}"], *_reason(spf.reason)]
    if spf.scope == "helo":
        parts.append([f"smtp.helo={_value(_printable(spf.domain))}"])
    else:
        parts.append([f"smtp.mailfrom={_mailbox(spf.sender, spf.domain)}"])
    return parts


def _dkim_parts(dkim: DkimResult) -> list[list[str]]:
    parts = [[f"dkim={dkim.result}"], *_reason(dkim.reason)]
    for name, value in (("d", dkim.domain), ("s", dkim.selector), ("a", dkim.algorithm)):
        if value:
            parts.append([f"header.{name}={_value(_printable(value))}"])
    return parts


def _dmarc_parts(dmarc: DmarcResult) -> list[list[str]]:
    parts = [[f"dmarc={dmarc.result}"], *_reason(dmarc.reason)]
    if dmarc.from_domain:
        parts.append([f"header.from={_value(_printable(dmarc.from_domain))}"])
    return parts


def _reason(reason: str) -> list[list[str]]:
    text = _printable(reason)
    return [f"reason={_quoted(text)}".split(" ")] if text else []


def _fold(parts: list[list[str]]) -> list[str]:
    """The lines of one result, each starting with a TAB, within ``LINE_WIDTH`` where the
    words allow. Between parts the fold is CRLF TAB; inside a quoted reason the fold goes
    before a space of the text, which unfolding (removing the CRLF) gives back unchanged."""
    lines: list[str] = []
    line = ""
    for part in parts:
        for index, word in enumerate(part):
            if not line:
                line = "\t" + word
            elif len(line) + 1 + len(word) <= LINE_WIDTH:
                line += " " + word
            else:
                lines.append(line)
                line = ("\t" if index == 0 else " ") + word
    lines.append(line)
    return lines


# RFC 2045 5.1: a token is printable ASCII but SPACE and the tspecials.
_TOKEN = re.compile(r'[^\x00-\x20\x7f-\U0010ffff()<>@,;:\\"/\[\]?=]+\Z')
# RFC 5322 3.2.3: a dot-atom, for the local part of an address written bare.
_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*\Z")


def _value(text: str) -> str:
    """A property value: a token as it is, anything else as a quoted-string (RFC 8601 2.2)."""
    return text if _TOKEN.match(text) else _quoted(text)


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _mailbox(sender: str, domain: str) -> str:
    """``smtp.mailfrom``'s value: the address when it can stand bare (``local@domain``, RFC
    8601 2.2's pvalue), else just the domain: a quoted or non-ASCII local part is not worth
    breaking the field's ASCII for."""
    local, at, sender_domain = sender.rpartition("@")
    if at and _DOT_ATOM.match(local) and _TOKEN.match(sender_domain):
        return sender
    return _value(_printable(domain))


def _printable(text: str) -> str:
    """One line of printable ASCII: runs of white space become one space, anything else
    outside ASCII a ``?``; at most ``_MAX_REASON`` characters."""
    words = "".join(c if " " <= c <= "~" else (" " if c.isspace() else "?") for c in text)
    return " ".join(words.split())[:_MAX_REASON]
