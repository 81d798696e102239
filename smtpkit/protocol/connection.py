"""``ServerConnection``: the sans-I/O SMTP server engine (bytes in, events out; replies in,
bytes out), in the manner of h11's ``Connection``.

The engine checks syntax and sequence (DESIGN convention 6, the "check" step); every decision
about addresses, policy and storage belongs to the session, which answers each event with a
``Reply`` through ``send()``.

Pipelining (RFC 2920) falls out of one rule: after a command event the engine is *paused* and
parses nothing until the reply to that event is sent. Bytes that arrive meanwhile only wait in
the buffer, so the bytes after ``DATA`` are read as content once ``354`` was sent, and the bytes
after ``STARTTLS`` can be dropped when ``220`` is sent.

Command lines are decoded as strict UTF-8; a line that is not UTF-8 is refused with ``501``
(SMTPUTF8 is not offered, but UTF-8 addresses are still parsed so that policy can refuse them
with a clear reply).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final

from smtpkit.limits import Limits
from smtpkit.protocol.buffer import DataScanner, EndOfDataMarker, LineError, ReceiveBuffer
from smtpkit.protocol.events import (
    BadCommand,
    ConnectionClosed,
    Data,
    DataChunk,
    EndOfData,
    Event,
    Expn,
    Hello,
    Help,
    MailFrom,
    Noop,
    Quit,
    RcptTo,
    Rset,
    StartTls,
    Vrfy,
)
from smtpkit.protocol.replies import (
    BARE_NEWLINE_IN_COMMAND,
    BARE_NEWLINE_IN_DATA,
    COMMAND_TOO_LONG,
    DATA_LINE_TOO_LONG,
    MESSAGE_TOO_BIG,
    NON_ASCII_HELO,
    SYNTAX_ERROR_ARGS,
    SYNTAX_ERROR_PARAMS,
    UNKNOWN_COMMAND,
    UNKNOWN_PARAMETER,
    Reply,
)
from smtpkit.protocol.state import (
    ALWAYS_APPLIES,
    COMMAND_VERBS,
    TRANSITIONS,
    State,
    Verb,
    refusal,
)

__all__ = [
    "NEED_DATA",
    "PAUSED",
    "LocalProtocolError",
    "NeedData",
    "Paused",
    "ServerConnection",
]


class LocalProtocolError(Exception):
    """The *caller* broke the engine's rules (a programming error, not a client error):
    ``send()`` with no event awaiting a reply, ``send()`` after the connection closed, or
    ``receive_data()`` after EOF."""


class NeedData:
    """Type of ``NEED_DATA``: feed more bytes with ``receive_data()``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


class Paused:
    """Type of ``PAUSED``: nothing will be parsed until the session acts.

    Returned while an event awaits its reply (``send()``), before the greeting was sent, and
    for good once the connection is CLOSED.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "PAUSED"


NEED_DATA: Final = NeedData()
PAUSED: Final = Paused()


class ServerConnection:
    """One SMTP server connection's protocol state, fed with bytes and answered with replies.

    Usage by the session: ``send(greeting)`` first; then after each ``receive_data()`` call
    ``next_event()`` until it returns ``NEED_DATA`` or ``PAUSED``, answering every command
    event and ``EndOfData`` with exactly one ``send(reply)`` (``DataChunk`` and
    ``ConnectionClosed`` get no reply). A 421 may be sent at any moment and closes.
    """

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._buffer = ReceiveBuffer()
        self._state = State.INITIAL
        # An event awaits its reply; _pending is its verb (None for BadCommand, which never
        # moves the state).
        self._awaiting = False
        self._pending: Verb | None = None
        self._extended = False
        self._scanner: DataScanner | None = None

    # --- properties ----------------------------------------------------------------------------

    @property
    def state(self) -> State:
        """The current state; it changes only in ``send()`` and on EOF."""
        return self._state

    @property
    def extended(self) -> bool:
        """The last accepted HELO/EHLO was EHLO (reset by STARTTLS, RFC 3207 4.2)."""
        return self._extended

    @property
    def buffered(self) -> int:
        """Bytes received and not yet consumed.

        While the engine is paused nothing is consumed, so a session that keeps reading
        from the socket then should stop once this passes its own bound (backpressure).
        """
        return len(self._buffer)

    # --- bytes in ------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the peer; ``b""`` means the peer closed its side (EOF).

        Bytes arriving after the connection is CLOSED are ignored.
        """
        if self._state is State.CLOSED:
            return
        if not data:
            self._buffer.eof = True
            return
        if self._buffer.eof:
            raise LocalProtocolError("receive_data() called with bytes after EOF")
        self._buffer.feed(data)

    def next_event(self) -> Event | NeedData | Paused:
        """The next thing the client said, ``NEED_DATA`` or ``PAUSED``.

        ``ConnectionClosed`` comes once, after EOF, when every complete line buffered before
        it was returned (an incomplete last line is dropped); the state is then CLOSED. In
        DATA mode an EOF before the final dot also gives ``ConnectionClosed``: the message
        is incomplete and must be dropped.
        """
        if self._awaiting or self._state is State.INITIAL or self._state is State.CLOSED:
            return PAUSED
        if self._scanner is not None:
            return self._next_data_event(self._scanner)
        got = self._buffer.next_line(self._limits.max_command_line)
        if got is None:
            if self._buffer.eof:
                self._close()
                return ConnectionClosed()
            return NEED_DATA
        line, error = got
        verb, event = self._command(line, error)
        self._awaiting = True
        self._pending = verb
        return event

    def _next_data_event(self, scanner: DataScanner) -> Event | NeedData:
        got = scanner.step(self._buffer)
        if isinstance(got, EndOfDataMarker):
            self._awaiting = True
            self._pending = Verb.END_OF_DATA
            return EndOfData(error=_data_error(scanner), size=scanner.size)
        if got is None:
            if self._buffer.eof:
                self._close()
                return ConnectionClosed()
            return NEED_DATA
        return DataChunk(got)

    # --- replies out ---------------------------------------------------------------------------

    def send(self, reply: Reply) -> bytes:
        """Answer the event awaiting a reply (or send the greeting); return the bytes to write.

        The transition table applies when the reply is positive (2xx/3xx); the greeting and
        the reply to ``EndOfData`` move on whatever their code. A 421 is allowed in every
        state, with or without an event awaiting, and closes (RFC 5321 3.8).
        """
        out = reply.to_bytes()
        if reply.closes:
            self._close()
            return out
        if self._state is State.CLOSED:
            raise LocalProtocolError(f"send({reply.code}) on a closed connection")
        if self._state is State.INITIAL:
            verb: Verb | None = Verb.GREETING
        elif self._awaiting:
            verb = self._pending
        else:
            raise LocalProtocolError(f"send({reply.code}) with no event awaiting a reply")
        self._awaiting = False
        self._pending = None
        if verb is not None and (reply.is_positive or verb in ALWAYS_APPLIES):
            self._enter(TRANSITIONS[self._state, verb], verb)
        return out

    def _enter(self, new: State, verb: Verb) -> None:
        if verb is Verb.HELO or verb is Verb.EHLO:
            self._extended = verb is Verb.EHLO
        elif verb is Verb.STARTTLS:
            # RFC 3207 4.2 / CVE-2011-0411: bytes the client pipelined after STARTTLS were
            # sent in plaintext and must never be executed as if they came over TLS.
            self._buffer.clear()
            self._extended = False
        elif verb is Verb.DATA:
            self._scanner = DataScanner(self._limits.max_text_line, self._limits.max_message_size)
        elif verb is Verb.END_OF_DATA:
            self._scanner = None
        if new is State.CLOSED:
            self._close()
        else:
            self._state = new

    def _close(self) -> None:
        self._state = State.CLOSED
        self._awaiting = False
        self._pending = None
        self._scanner = None
        self._buffer.clear()

    # --- commands ------------------------------------------------------------------------------

    def _command(self, line: bytes, error: LineError | None) -> tuple[Verb | None, Event]:
        """Turn one command line into (verb to transition on, event)."""
        checked = self._check(line, error)
        if isinstance(checked, Reply):
            return None, BadCommand(checked, line.decode("utf-8", "backslashreplace"))
        return checked

    def _check(self, line: bytes, error: LineError | None) -> tuple[Verb, Event] | Reply:
        """Sequence, then syntax (DESIGN convention 6); a ``Reply`` means refused."""
        if error is LineError.TOO_LONG:
            return COMMAND_TOO_LONG
        if error is LineError.BARE_LF:
            return BARE_NEWLINE_IN_COMMAND
        if b"\r" in line:
            # RFC 5321 2.3.8: a CR may only appear as part of the CRLF line end.
            return SYNTAX_ERROR_ARGS
        word, _, raw_argument = line.partition(b" ")
        verb = COMMAND_VERBS.get(word.upper())
        if verb is None:
            return UNKNOWN_COMMAND
        if (self._state, verb) not in TRANSITIONS:
            return refusal(self._state, verb)
        if verb is Verb.NOOP:
            # RFC 5321 4.1.1.9: any argument of NOOP has no effect.
            return verb, Noop()
        try:
            argument = raw_argument.decode("utf-8")
        except UnicodeDecodeError:
            return SYNTAX_ERROR_ARGS
        if _CONTROL.search(argument):
            return SYNTAX_ERROR_ARGS
        result = self._parse(verb, argument.strip(" "))
        if isinstance(result, Reply):
            return result
        return verb, result

    def _parse(self, verb: Verb, argument: str) -> Event | Reply:
        """Syntax of one allowed command; a ``Reply`` means refused."""
        if verb is Verb.HELO or verb is Verb.EHLO:
            # RFC 5321 4.1.1.1: exactly one Domain or address-literal. The name is not checked
            # further: real clients send bare host names; the session may judge it.
            if not argument or " " in argument:
                return SYNTAX_ERROR_ARGS
            # RFC 5321 4.1.2 Domain is ASCII; U-labels need SMTPUTF8 (RFC 6531 3.3), which is
            # not offered. The name goes into Received: headers and the journal.
            if not argument.isascii():
                return NON_ASCII_HELO
            return Hello(argument, verb is Verb.EHLO)
        if verb is Verb.MAIL:
            return _parse_mail(argument, self._extended)
        if verb is Verb.RCPT:
            return _parse_rcpt(argument)
        if verb is Verb.VRFY:
            return Vrfy(argument)
        if verb is Verb.EXPN:
            return Expn(argument)
        if verb is Verb.HELP:
            return Help(argument)
        # DATA, RSET, QUIT, STARTTLS take no argument (RFC 5321 4.1.1.4-5, 4.1.1.10; RFC 3207
        # 4).
        if argument:
            return SYNTAX_ERROR_ARGS
        return _NO_ARGUMENT_EVENTS[verb]


_NO_ARGUMENT_EVENTS: Final[dict[Verb, Event]] = {
    Verb.DATA: Data(),
    Verb.RSET: Rset(),
    Verb.QUIT: Quit(),
    Verb.STARTTLS: StartTls(),
}


def _data_error(scanner: DataScanner) -> Reply | None:
    """The one error reported at the final dot, by fixed priority so that it never depends on
    how the bytes were split: smuggling first (RFC 5321 2.3.8), then size (RFC 1870), then
    line length (RFC 5321 4.5.3.1.6)."""
    if scanner.bare_newline:
        return BARE_NEWLINE_IN_DATA
    if scanner.too_big:
        return MESSAGE_TOO_BIG
    if scanner.line_too_long:
        return DATA_LINE_TOO_LONG
    return None


# --- path and parameter syntax (RFC 5321 4.1.2, RFC 6531 3.3 for UTF-8) ---------------------

# Control characters have no place in any command argument (RFC 5321 4.1.2 allows none), and
# keeping them out means nothing echoed into a reply or a journal line can break it.
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")

_NON_ASCII = "\u0080-\U0010ffff"
# RFC 5322 3.2.3 atext, widened with UTF-8 (RFC 6531 3.3) so that policy, not syntax, refuses
# internationalised addresses while SMTPUTF8 is not offered.
_ATEXT = rf"[A-Za-z0-9!#$%&'*+\-/=?^_`{{|}}~{_NON_ASCII}]"
_DOT_STRING = rf"{_ATEXT}+(?:\.{_ATEXT}+)*"
# RFC 5321 4.1.2 Quoted-string: qtextSMTP or a backslash pair.
_QUOTED_STRING = rf'"(?:[\x20\x21\x23-\x5b\x5d-\x7e{_NON_ASCII}]|\\[\x20-\x7e])*"'
_QUOTED_PAIR: Final = re.compile(r"\\([\x20-\x7e])")
_DOT_STRING_RE: Final = re.compile(_DOT_STRING)
_LET_DIG = rf"[A-Za-z0-9{_NON_ASCII}]"
_SUB_DOMAIN = rf"{_LET_DIG}(?:[A-Za-z0-9\-{_NON_ASCII}]*{_LET_DIG})?"
_DOMAIN = rf"{_SUB_DOMAIN}(?:\.{_SUB_DOMAIN})*"
# Brackets around dcontent (RFC 5321 4.1.3); what is inside is checked by _valid_literal().
_ADDRESS_LITERAL = r"\[[\x21-\x5a\x5e-\x7e]+\]"
# RFC 5321 4.1.2 Path = "<" [ A-d-l ":" ] Mailbox ">". A trailing dot on the domain is not
# RFC syntax but is accepted and kept so that policy can refuse it with a precise reply.
_PATH: Final = re.compile(
    rf"<(?:@{_DOMAIN}(?:,@{_DOMAIN})*:)?"
    rf"(?P<mailbox>(?P<local>{_DOT_STRING}|{_QUOTED_STRING})"
    rf"@(?P<domain>{_DOMAIN}\.?|{_ADDRESS_LITERAL}))>"
)
# RFC 5321 4.1.1.3: the bare postmaster recipient, without a domain, in any case.
_POSTMASTER: Final = re.compile(r"<(?P<mailbox>postmaster)>", re.IGNORECASE)
_FROM: Final = re.compile(r"FROM: *", re.IGNORECASE)
_TO: Final = re.compile(r"TO: *", re.IGNORECASE)
# RFC 5321 4.1.2 esmtp-param = esmtp-keyword ["=" esmtp-value].
_PARAM: Final = re.compile(
    r"(?P<key>[A-Za-z0-9][A-Za-z0-9\-]*)(?:=(?P<value>[\x21-\x3c\x3e-\x7e]+))?"
)
_IPV4: Final = re.compile(r"(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})")
_GENERAL_TAG: Final = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?")

# RFC 5321 4.5.3.1.1-3, counted in octets.
_MAX_LOCAL_PART: Final = 64
_MAX_DOMAIN: Final = 255
_MAX_PATH: Final = 256
# RFC 1870 SIZE is a decimal count of octets; 20 digits already exceed any 64-bit size.
_MAX_SIZE_DIGITS: Final = 20
_BODY_TYPES: Final = frozenset({"7BIT", "8BITMIME"})  # RFC 6152


def _octets(text: str) -> int:
    return len(text.encode("utf-8"))


def _valid_literal(literal: str) -> bool:
    """RFC 5321 4.1.3 address literal, the brackets removed."""
    ipv4 = _IPV4.fullmatch(literal)
    if ipv4 is not None:
        return all(int(part) <= 255 for part in ipv4.groups())
    tag, colon, rest = literal.partition(":")
    if not colon:
        return False
    if tag.upper() == "IPV6":
        if "%" in rest:  # zone identifiers are not part of RFC 5321 IPv6-addr
            return False
        try:
            ipaddress.IPv6Address(rest)
        except ValueError:
            return False
        return True
    # General-address-literal = Standardized-tag ":" 1*dcontent (dcontent checked by _PATH).
    return bool(rest) and _GENERAL_TAG.fullmatch(tag) is not None


def _parse_path(text: str, *, postmaster: bool) -> tuple[str, str] | Reply:
    """Parse the path at the start of ``text``; return (address, what follows) or a refusal.

    A source route is dropped (RFC 5321 Appendix C); the quotes of a quoted local part are
    kept.
    """
    match = _PATH.match(text)
    if match is None and postmaster:
        match = _POSTMASTER.match(text)
    if match is None:
        return SYNTAX_ERROR_ARGS
    if _octets(match.group(0)) > _MAX_PATH:
        return SYNTAX_ERROR_ARGS
    groups = match.groupdict()
    local, domain = groups.get("local"), groups.get("domain")
    mailbox = match.group("mailbox")
    if local is not None and domain is not None:
        if _octets(local) > _MAX_LOCAL_PART or _octets(domain) > _MAX_DOMAIN:
            return SYNTAX_ERROR_ARGS
        if domain.startswith("[") and not _valid_literal(domain[1:-1]):
            return SYNTAX_ERROR_ARGS
        if local.startswith('"'):
            # RFC 5321 4.1.2: a quoted local part that needs no quoting is the same mailbox
            # as its dot-string ("alice"@x is alice@x); give it in that one form.
            unquoted = _QUOTED_PAIR.sub(r"\1", local[1:-1])
            if _DOT_STRING_RE.fullmatch(unquoted):
                mailbox = f"{unquoted}@{domain}"
    return mailbox, text[match.end() :]


def _split_params(rest: str) -> list[str] | Reply:
    """The space-separated parameters after a path; the path must end before a space."""
    if not rest:
        return []
    if not rest.startswith(" "):
        return SYNTAX_ERROR_ARGS
    return [p for p in rest.split(" ") if p]


def _parse_mail(argument: str, extended: bool) -> MailFrom | Reply:
    """``MAIL FROM:<reverse-path> [params]`` (RFC 5321 4.1.1.2)."""
    prefix = _FROM.match(argument)
    if prefix is None:
        return SYNTAX_ERROR_ARGS
    text = argument[prefix.end() :]
    if text.startswith("<>"):
        address, rest = "", text[2:]
    else:
        parsed = _parse_path(text, postmaster=False)
        if isinstance(parsed, Reply):
            return parsed
        address, rest = parsed
    params = _split_params(rest)
    if isinstance(params, Reply):
        return params
    size: int | None = None
    body: str | None = None
    seen: set[str] = set()
    for param in params:
        match = _PARAM.fullmatch(param)
        if match is None:
            return SYNTAX_ERROR_PARAMS
        if not extended:
            # RFC 5321 4.1.1.2 / RFC 1869: parameters exist only in the EHLO dialogue.
            return UNKNOWN_PARAMETER
        key = match.group("key").upper()
        value = match.group("value")
        if key in seen:
            return SYNTAX_ERROR_PARAMS
        seen.add(key)
        if key == "SIZE":
            # RFC 1870 6: size-value = 1*20DIGIT.
            if value is None or not value.isascii() or not value.isdigit():
                return SYNTAX_ERROR_PARAMS
            if len(value) > _MAX_SIZE_DIGITS:
                return SYNTAX_ERROR_PARAMS
            size = int(value)
        elif key == "BODY":
            # RFC 6152 2: BODY=7BIT or BODY=8BITMIME.
            if value is None or value.upper() not in _BODY_TYPES:
                return SYNTAX_ERROR_PARAMS
            body = value.upper()
        else:
            return UNKNOWN_PARAMETER
    return MailFrom(address, size=size, body=body)


def _parse_rcpt(argument: str) -> RcptTo | Reply:
    """``RCPT TO:<forward-path>`` (RFC 5321 4.1.1.3); no parameter is supported."""
    prefix = _TO.match(argument)
    if prefix is None:
        return SYNTAX_ERROR_ARGS
    parsed = _parse_path(argument[prefix.end() :], postmaster=True)
    if isinstance(parsed, Reply):
        return parsed
    address, rest = parsed
    params = _split_params(rest)
    if isinstance(params, Reply):
        return params
    if params:
        return UNKNOWN_PARAMETER
    return RcptTo(address)
