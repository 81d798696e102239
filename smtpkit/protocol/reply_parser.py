"""Reading a server's replies (RFC 5321 4.2) out of the bytes an SMTP client receives.

``ReplyBuffer`` is the client's counterpart of ``buffer.ReceiveBuffer``: bytes in, whole
replies out, in linear time (it remembers how far it has looked for a LF, so a reply fed one
byte at a time costs no more than one fed whole) and in bounded memory (a line over the cap
is an error as soon as it is over, not when its LF finally comes). ``parse_extensions`` reads
the keywords of an EHLO or LHLO reply (RFC 5321 4.1.1.1).

A reply becomes the same ``Reply`` value the server side sends: code, RFC 3463 enhanced
status code when the server gave one, and the text of each line without either.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from smtpkit.protocol.replies import Reply

__all__ = [
    "MAX_REPLY_LINE",
    "MAX_REPLY_LINES",
    "Extensions",
    "Malformed",
    "ReplyBuffer",
    "parse_extensions",
]

# RFC 5321 4.5.3.1.5 limits a reply line to 512 octets with its CRLF, but real servers send
# longer ones (long refusals, banners); a line is tolerated up to 4096 octets (the tests' raw
# clients use the same bound) and anything longer means the server is out of step.
MAX_REPLY_LINE: Final = 4096
# RFC 5321 sets no limit on the lines of a reply; EHLO replies, the longest in practice, have
# a few dozen. More than 100 is a server that never ends its reply.
MAX_REPLY_LINES: Final = 100

# RFC 5321 4.2: Reply-code = %x32-35 %x30-35 %x30-39; then "-" (more lines follow), a space
# and text, or nothing at all on the last line. The second digit is not checked: a server
# inventing x6y codes is still understood.
_LINE: Final = re.compile(rb"([2-5][0-9]{2})(?:([ -])(.*))?", re.DOTALL)
# RFC 3463 2: class "." subject "." detail, 1-3 digits each, at the start of the text.
_ENHANCED: Final = re.compile(r"([245])\.[0-9]{1,3}\.[0-9]{1,3}(?= |\Z)")
# RFC 5321 4.1.1.1: ehlo-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-").
_KEYWORD: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
# RFC 4954 3 names mechanisms 1-20 characters of upper-case letters, digits, "-" and "_".
_MECHANISM: Final = re.compile(r"[A-Za-z0-9_-]{1,20}")


@dataclass(frozen=True, slots=True)
class Malformed:
    """Bytes that are not a reply: the server is out of step (or not an SMTP server)."""

    description: str


@dataclass(frozen=True, slots=True)
class Extensions:
    """What the server offered in its EHLO or LHLO reply (RFC 5321 4.1.1.1).

    ``keywords`` are upper-cased. ``size`` is the RFC 1870 SIZE limit: None when SIZE is not
    offered, 0 when it is offered without a (valid) number, meaning no fixed limit.
    ``auth`` holds the RFC 4954 mechanisms, upper-cased. ``parameters`` keeps each keyword's
    parameters as sent, for extensions the engine does not interpret.
    """

    keywords: frozenset[str] = frozenset()
    size: int | None = None
    auth: frozenset[str] = frozenset()
    parameters: tuple[tuple[str, str], ...] = ()

    def __contains__(self, keyword: object) -> bool:
        return isinstance(keyword, str) and keyword.upper() in self.keywords

    @property
    def pipelining(self) -> bool:
        """RFC 2920."""
        return "PIPELINING" in self.keywords

    @property
    def starttls(self) -> bool:
        """RFC 3207."""
        return "STARTTLS" in self.keywords

    @property
    def eight_bit_mime(self) -> bool:
        """RFC 6152."""
        return "8BITMIME" in self.keywords

    @property
    def smtputf8(self) -> bool:
        """RFC 6531."""
        return "SMTPUTF8" in self.keywords

    @property
    def dsn(self) -> bool:
        """RFC 3461."""
        return "DSN" in self.keywords

    @property
    def chunking(self) -> bool:
        """RFC 3030 (BDAT); offered or not, the engine sends DATA."""
        return "CHUNKING" in self.keywords

    @property
    def enhanced_status_codes(self) -> bool:
        """RFC 2034."""
        return "ENHANCEDSTATUSCODES" in self.keywords


def parse_extensions(reply: Reply) -> Extensions:
    """The extensions in a positive EHLO/LHLO reply: one keyword per line after the first,
    which greets. A line that is not a keyword is skipped, not an error: it offers nothing
    the engine could use."""
    keywords: set[str] = set()
    mechanisms: set[str] = set()
    parameters: list[tuple[str, str]] = []
    size: int | None = None
    for line in reply.lines[1:]:
        word, _, rest = line.strip().partition(" ")
        upper = word.upper()
        if upper.startswith("AUTH="):
            # An old form (before RFC 2554 was final) that some servers still send beside
            # the standard line: "AUTH=LOGIN PLAIN". The mechanisms count the same.
            upper, rest = "AUTH", f"{word[5:]} {rest}"
        elif not _KEYWORD.fullmatch(word):
            continue
        rest = rest.strip()
        keywords.add(upper)
        parameters.append((upper, rest))
        if upper == "AUTH":
            mechanisms.update(m.upper() for m in rest.split() if _MECHANISM.fullmatch(m))
        elif upper == "SIZE":
            # RFC 1870 4: "SIZE" [SP number]; 0 or nothing means no fixed maximum.
            size = int(rest) if rest.isascii() and rest.isdigit() and len(rest) <= 20 else 0
    return Extensions(frozenset(keywords), size, frozenset(mechanisms), tuple(parameters))


class ReplyBuffer:
    """Bytes received from the server and not yet read as replies."""

    __slots__ = ("_code", "_data", "_lf_scanned", "_lines", "_max_line", "_max_lines", "eof")

    def __init__(self, max_line: int = MAX_REPLY_LINE, max_lines: int = MAX_REPLY_LINES) -> None:
        self._max_line = max_line
        self._max_lines = max_lines
        self._data = bytearray()
        # Bytes at the front of _data known to hold no LF: the search resumes there.
        self._lf_scanned = 0
        # The lines of a reply still being received, and their code.
        self._lines: list[bytes] = []
        self._code = b""
        #: The server closed its side; no more bytes will be fed.
        self.eof = False

    def __len__(self) -> int:
        return len(self._data)

    @property
    def partial(self) -> bool:
        """Part of a reply was received: some lines, or the start of one."""
        return bool(self._lines or self._data)

    def feed(self, data: bytes) -> None:
        self._data += data

    def clear(self) -> None:
        self._data.clear()
        self._lf_scanned = 0
        self._lines = []
        self._code = b""

    def next_reply(self) -> Reply | Malformed | None:
        """The next whole reply, ``Malformed`` for bytes that cannot be one, or None when
        more bytes are needed."""
        while True:
            line = self._next_line()
            if line is None or isinstance(line, Malformed):
                return line
            match = _LINE.fullmatch(line)
            if match is None:
                return Malformed(f"not a reply line: {_show(line)}")
            code, separator, text = match.groups()
            if self._lines and code != self._code:
                # RFC 5321 4.2.1: every line of a multiline reply has the same code.
                return Malformed(f"reply line with code {_show(code)} in a {_show(self._code)}")
            if len(self._lines) == self._max_lines:
                return Malformed(f"reply longer than {self._max_lines} lines")
            self._code = code
            self._lines.append(text or b"")
            if separator == b"-":
                continue
            lines, self._lines, self._code = self._lines, [], b""
            return _reply(int(code), lines)

    def _next_line(self) -> bytes | Malformed | None:
        """One line without its end. CRLF ends a line; a bare LF is tolerated too, since
        a reply is never passed on and a lenient reading loses nothing."""
        data = self._data
        lf = data.find(b"\n", self._lf_scanned)
        if lf < 0:
            self._lf_scanned = len(data)
            if len(data) >= self._max_line:
                # Even if the LF came next the line would be too long: say so now, so that
                # a server sending endless bytes without one never fills memory.
                return Malformed(f"reply line longer than {self._max_line} octets")
            return None
        if lf + 1 > self._max_line:
            return Malformed(f"reply line longer than {self._max_line} octets")
        end = lf - 1 if lf > 0 and data[lf - 1] == 0x0D else lf
        line = bytes(data[:end])
        del data[: lf + 1]
        self._lf_scanned = 0
        if b"\r" in line:
            return Malformed(f"CR inside a reply line: {_show(line)}")
        return line


def _reply(code: int, raw_lines: list[bytes]) -> Reply:
    """A ``Reply`` from its lines' text: UTF-8 (RFC 6531 lets an SMTPUTF8 server send it),
    anything else replaced; the enhanced status code of the first line taken off every line
    that starts with it (RFC 2034 3 puts it on each line)."""
    texts = [raw.decode("utf-8", "replace") for raw in raw_lines]
    enhanced: str | None = None
    match = _ENHANCED.match(texts[0])
    # RFC 3463 2: the class repeats the first digit of the reply code.
    if match is not None and match.group(1) == str(code)[0]:
        enhanced = match.group(0)
        texts = [_without(text, enhanced) for text in texts]
    return Reply(code, enhanced, tuple(texts))


def _without(text: str, enhanced: str) -> str:
    if text == enhanced:
        return ""
    if text.startswith(enhanced + " "):
        return text[len(enhanced) + 1 :]
    return text


def _show(raw: bytes) -> str:
    """Bytes as a short printable text for a ProtocolError description."""
    text = raw[:60].decode("ascii", "backslashreplace")
    text = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)
    return f"'{text}{'...' if len(raw) > 60 else ''}'"
