"""``smtpkit-sendmail`` (and ``smtpkit sendmail``): mail from cron, scripts and PHP's mail().

It speaks sendmail's command line, which is not click's (``-FCronDaemon``, ``-oem``,
``-f sender`` and ``-fsender``, options after the recipients), reads the message from
standard input and leaves it in the maildrop (``smtpkit.maildrop``); it never talks to the
network, so it works for every local user and while the server is stopped.

This module is the entry point of the second console script and the one implementation
both commands run (``commands/sendmail.py`` hands its arguments here). It imports neither
click nor the rest of the command line, so cron and PHP pay little for each message; being
an entry point, it is where sendmail's errors become one line on standard error and an exit
status from sysexits.h.
"""

from __future__ import annotations

import io
import os
import pwd
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from email import errors as email_errors
from email import policy
from email.parser import BytesHeaderParser
from email.utils import formataddr, formatdate, make_msgid
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TextIO

from smtpkit.config import CONFIG_ENV, Config, load_config
from smtpkit.errors import ConfigError, SmtpkitError
from smtpkit.maildrop import (
    DropEnvelope,
    DropFailed,
    MaildropError,
    MaildropUnreachable,
    MessageTooBig,
    SendmailInput,
    drop,
    maildrop_path,
)

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

    from smtpkit.protocol.dsn import Ret

__all__ = [
    "DEFAULT_CONFIG",
    "BadMessage",
    "Head",
    "Invocation",
    "UsageError",
    "main",
    "parse_arguments",
    "read_head",
    "run",
]

#: Where ``smtpkit-sendmail`` looks without ``$SMTPKIT_CONFIG``: cron runs it with almost
#: no environment, so the service layout's path is the default.
DEFAULT_CONFIG = Path("/etc/smtpkit/smtpkit.toml")

# sysexits.h: what sendmail's callers (cron, PHP, mailx, git) understand.
EX_OK = 0
EX_USAGE = 64
EX_DATAERR = 65
EX_CANTCREAT = 73
EX_TEMPFAIL = 75
EX_CONFIG = 78

#: The longest -F name: a name, not a paragraph (and a From: line stays well under 998).
MAX_FULL_NAME = 256
#: The longest -V envelope ID, as xtext (RFC 3461 4.4; ``smtpkit.protocol.dsn.MAX_ENVID``,
#: which checks it: that package is only imported when -V is given).
MAX_ENVID = 100


class UsageError(SmtpkitError):
    """The command line is wrong (exit 64)."""


class BadMessage(SmtpkitError):
    """The message cannot be sent as it is (exit 65)."""


@dataclass(frozen=True, slots=True)
class Invocation:
    """What the command line asks for."""

    recipients: tuple[str, ...] = ()
    extract_recipients: bool = False
    ignore_dots: bool = False
    sender: str | None = None
    full_name: str | None = None
    config: Path | None = None
    help: bool = False
    #: The DSN requests (RFC 3461) of -N, -R and -V: NOTIFY for every recipient (upper
    #: case, as SMTP writes it), RET, and the ENVID as given.
    notify: frozenset[str] | None = None
    ret: Ret | None = None
    envid: str | None = None


# --- the command line ---------------------------------------------------------------------

# Option letters as sendmail's own getopt knows them, so that clusters and values split the
# same way ("-ti", "-fsender", "-f sender", "-oem", "-B 8BITMIME").
_FLAGS = frozenset("tivmnUG")
_WITH_VALUE = frozenset("frFoBbCceNRVLhO")
#: Accepted and ignored, as other sendmail programs do: options that change nothing here
#: (verbosity, aliasing, error and delivery modes, body type, labels).
_IGNORED = frozenset("vmnUGBeLhO")
#: -N: NOTIFY's words as Postfix's sendmail takes them (any case, commas or white space
#: between them).
_NOTIFY_SEPARATORS = re.compile(r"[,\s]+")
_NOTIFY_WORDS = frozenset({"NEVER", "SUCCESS", "FAILURE", "DELAY"})


def _no_controls(text: str) -> bool:
    return not any(ord(c) < 0x20 or ord(c) == 0x7F for c in text)


def parse_arguments(argv: Sequence[str]) -> Invocation:
    """sendmail's command line -> ``Invocation``; raises ``UsageError``."""
    values: dict[str, Any] = {}
    raw_recipients: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            raw_recipients.extend(args[i:])
            break
        if arg == "--help":
            values["help"] = True
            continue
        if arg == "--config" or arg.startswith("--config="):
            if "=" in arg:
                values["config"] = Path(arg.partition("=")[2])
            elif i < len(args):
                values["config"] = Path(args[i])
                i += 1
            else:
                raise UsageError("option --config needs a value")
            continue
        if arg.startswith("--"):
            raise UsageError(f"unknown option {arg}")
        if not arg.startswith("-") or arg == "-":
            raw_recipients.append(arg)
            continue
        j = 1
        while j < len(arg):
            letter = arg[j]
            j += 1
            if letter in _FLAGS:
                if letter == "t":
                    values["extract_recipients"] = True
                elif letter == "i":
                    values["ignore_dots"] = True
                continue
            if letter not in _WITH_VALUE:
                raise UsageError(f"unknown option -{letter}")
            value = arg[j:]
            if not value:
                if i >= len(args):
                    raise UsageError(f"option -{letter} needs a value")
                value = args[i]
                i += 1
            _option(letter, value, values)
            break
    values["recipients"] = tuple(
        dict.fromkeys(r for raw in raw_recipients for r in _command_line_recipients(raw))
    )
    return Invocation(**values)


def _option(letter: str, value: str, values: dict[str, Any]) -> None:
    if letter in ("f", "r"):  # -r: the old name of -f
        if not _no_controls(value):
            raise UsageError(f"-{letter}: the sender holds a control character")
        sender = value.strip()
        if sender.startswith("<") and sender.endswith(">"):
            sender = sender[1:-1].strip()
        values["sender"] = sender
    elif letter == "F":
        if not _no_controls(value):
            raise UsageError("-F: the name holds a control character")
        if len(value) > MAX_FULL_NAME:
            raise UsageError(f"-F: the name is longer than {MAX_FULL_NAME} characters")
        values["full_name"] = value
    elif letter == "o":
        if value == "i":
            values["ignore_dots"] = True
        # every other -o option (-oem, -odb, -oQ...) is ignored
    elif letter == "b":
        if value != "m":
            raise UsageError(
                f"-b{value} is not supported: this sendmail only reads a message from "
                "standard input (-bm)"
            )
    elif letter in ("C", "c"):
        values["config"] = Path(value)
    elif letter == "N":
        values["notify"] = _notify(value)
    elif letter == "R":
        ret = value.upper()
        if ret not in ("FULL", "HDRS"):
            raise UsageError(f"-R {value!r}: the return type must be full or hdrs")
        values["ret"] = ret
    elif letter == "V":
        values["envid"] = _envid(value)
    elif letter not in _IGNORED:  # pragma: no cover - every letter with a value is handled
        raise UsageError(f"unknown option -{letter}")


def _notify(value: str) -> frozenset[str]:
    """-N: ``never``, or some of ``success``, ``failure`` and ``delay``."""
    words = frozenset(w.upper() for w in _NOTIFY_SEPARATORS.split(value) if w)
    if not words or not words <= _NOTIFY_WORDS or ("NEVER" in words and len(words) > 1):
        raise UsageError(
            f"-N {value!r}: notify must be never, or a comma-separated list of success, "
            "failure and delay"
        )
    return words


def _envid(value: str) -> str:
    """-V: the envelope ID, under the rules of SMTP's ENVID (RFC 3461 4.4)."""
    from smtpkit.protocol.dsn import MailDsn

    try:
        MailDsn(envid=value)
    except ValueError:
        if not value:
            raise UsageError("-V: the envelope ID is empty") from None
        if not _no_controls(value) or not value.isascii():
            raise UsageError(
                "-V: the envelope ID must be printable ASCII (no control characters)"
            ) from None
        raise UsageError(
            f"-V: the envelope ID is longer than {MAX_ENVID} characters as xtext"
        ) from None
    return value


# --- addresses ----------------------------------------------------------------------------

#: The one defect a sendmail recipient may have: a bare local name ("root"), which the
#: server qualifies.
_NO_DOMAIN = "local part with no domain"


def _addresses(header: Any) -> list[str]:
    """The addresses of a parsed address header; raises ``ValueError`` with the reason."""
    # The email package's RFC 5322 parser rather than email.utils.getaddresses: on Python
    # before 3.11.10 that one silently turns "a@b c@d" into "@d" and "foo bar" into "foo",
    # where this one reports a defect.
    try:
        found = header.addresses
        defects = list(header.defects)
    except Exception as exc:  # the parser raises on some malformed values
        raise ValueError(str(exc) or type(exc).__name__) from None
    for defect in defects:
        if isinstance(defect, email_errors.InvalidHeaderDefect) and _NO_DOMAIN not in str(defect):
            raise ValueError(str(defect))
    result: list[str] = []
    for address in found:
        spec = str(address.addr_spec)
        try:
            # Undecodable bytes come as surrogates: a UTF-8 address is a real one (the
            # server judges it), anything else is no address at all.
            spec = spec.encode("utf-8", "surrogateescape").decode("utf-8")
        except UnicodeError:
            raise ValueError(f"{spec.encode('utf-8', 'replace')!r} is not UTF-8") from None
        if not spec or spec == "<>" or not _no_controls(spec):
            raise ValueError(f"{spec!r} is no address")
        result.append(spec)
    return result


def _command_line_recipients(text: str) -> list[str]:
    """One recipient argument: an address, "Name <address>", or several with commas."""
    if not _no_controls(text):
        raise UsageError(f"bad recipient {text!r}: it holds a control character")
    try:
        found = _addresses(policy.default.header_factory("To", text))
    except ValueError as exc:
        raise UsageError(f"bad recipient {text!r}: {exc}") from None
    if not found:
        raise UsageError(f"bad recipient {text!r}: no address")
    return found


# --- the message's head -------------------------------------------------------------------

_HEADER_NAME = re.compile(rb"([\x21-\x39\x3b-\x7e]+):")
#: Never sent on: the point of a blind copy is that no recipient sees it.
_REMOVED = frozenset({"bcc", "resent-bcc"})
_RECIPIENT_FIELDS = ("to", "cc", "bcc")


@dataclass(slots=True)
class Head:
    """The header fields of a message as read, and where its body starts."""

    #: (lower-case name, the field's lines as read, CRLF ends), in order.
    fields: list[tuple[str, bytes]] = field(default_factory=list)
    #: The first piece of the body when it started without a blank line (a message with
    #: no header at all, or a line that is no header field); b"" otherwise.
    body_start: bytes = b""

    def has(self, name: str) -> bool:
        return any(found == name for found, _ in self.fields)

    def recipients(self) -> list[str]:
        """The addresses in To:, Cc: and Bcc:, as -t takes them; raises ``BadMessage``."""
        if not any(name in _RECIPIENT_FIELDS for name, _ in self.fields):
            return []
        block = b"".join(raw for _, raw in self.fields) + b"\r\n"
        message = BytesHeaderParser(policy=policy.default).parsebytes(block)
        result: list[str] = []
        for name in _RECIPIENT_FIELDS:
            for header in message.get_all(name, []):
                try:
                    result.extend(_addresses(header))
                except ValueError as exc:
                    raise BadMessage(f"cannot parse the {name.title()}: header: {exc}") from None
        return result

    def render(self, added: Sequence[bytes]) -> bytes:
        """The head as it is dropped: without Bcc:, with ``added`` fields, the blank line
        and the start of the body."""
        kept = b"".join(raw for name, raw in self.fields if name not in _REMOVED)
        return kept + b"".join(added) + b"\r\n" + self.body_start


def read_head(source: SendmailInput, limit: int) -> Head:
    """Read the header fields (as RFC 5322 and Python's email parser tell a field from the
    body); raises ``MessageTooBig`` past ``limit`` bytes."""
    head = Head()
    size = 0
    continuing = False  # the last piece did not end its line
    while True:
        piece = source.readline()
        if not piece:
            return head
        size += len(piece)
        if size > limit:
            raise MessageTooBig(limit)
        if continuing or (piece[0] in (0x20, 0x09) and head.fields):
            name, raw = head.fields[-1]
            head.fields[-1] = (name, raw + piece)
        elif piece == b"\r\n":
            return head
        elif match := _HEADER_NAME.match(piece):
            head.fields.append((match.group(1).decode("ascii").lower(), piece))
        else:
            head.body_start = piece
            return head
        continuing = not piece.endswith(b"\r\n")


class _Joined(io.RawIOBase):
    """The rewritten head, then the rest of the input."""

    def __init__(self, first: bytes, rest: SendmailInput) -> None:
        super().__init__()
        self._pending = memoryview(first)
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        while not self._pending:
            piece = self._rest.readline()
            if not piece:
                return 0
            self._pending = memoryview(piece)
        target = memoryview(buffer).cast("B")
        n = min(len(target), len(self._pending))
        target[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


# --- who is sending -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _User:
    login: str
    name: str  # from the GECOS field


def _invoking_user() -> _User:
    uid = os.getuid()
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        return _User(str(uid), "")
    # The GECOS field: "Full Name,room,phone,...", where "&" stands for the login name.
    name = entry.pw_gecos.split(",", 1)[0].replace("&", entry.pw_name.capitalize())
    name = "".join(c for c in name if _no_controls(c))[:MAX_FULL_NAME]
    return _User(entry.pw_name, name)


def _sender_domain(config: Config) -> str:
    submission = getattr(config, "submission", None)
    domain = getattr(submission, "local_sender_domain", "")
    return domain if isinstance(domain, str) and domain else config.server.hostname


def _may_choose_sender(config: Config) -> bool:
    """Whether the server will take -f from this user: root and the data folder's owner
    (the From: added says what the envelope will say)."""
    uid = os.getuid()
    try:
        return uid == 0 or uid == os.stat(config.server.directory).st_uid
    except OSError:
        return False


def _added_fields(head: Head, invocation: Invocation, config: Config) -> list[bytes]:
    """From:, Date: and Message-ID: for a message without them (RFC 5322 3.6 requires the
    first two; every mail reader expects the third)."""
    added: list[bytes] = []
    if not head.has("from"):
        user = _invoking_user()
        address = f"{user.login}@{_sender_domain(config)}"
        if invocation.sender and _may_choose_sender(config):
            address = invocation.sender
        name = invocation.full_name if invocation.full_name is not None else user.name
        line = policy.SMTP.fold("From", formataddr((name, address)))
        added.append(line.encode("utf-8", "surrogateescape"))
    if not head.has("date"):
        added.append(f"Date: {formatdate(localtime=True)}\r\n".encode("ascii"))
    if not head.has("message-id"):
        msgid = make_msgid(domain=config.server.hostname)
        added.append(f"Message-ID: {msgid}\r\n".encode("ascii", "replace"))
    return added


# --- running it ---------------------------------------------------------------------------


def _usage(prog: str) -> str:
    return (
        f"{prog} [-t] [-i] [-f SENDER] [-F NAME] [-N DSN] [-R RET] [-V ENVID] [-C CONFIG] "
        "[--] [RECIPIENT...]"
    )


def _help(prog: str, config_default: str) -> str:
    return f"""usage: {_usage(prog)}

Send a message read from standard input. It is left in the maildrop of smtpkit's data
folder, where `smtpkit serve` picks it up, so this works for any local user and while the
server is stopped. A message without From:, Date: or Message-ID: gets them.

  -t          also send to the addresses in the To:, Cc: and Bcc: headers
  -i, -oi     a line holding a single dot does not end the message
  -f SENDER   the envelope sender (taken from root and the data folder's owner only:
              everyone else sends as their own user)
  -F NAME     the full name in the From: header added to a message without one
  -N DSN      delivery status notifications (RFC 3461 NOTIFY) for every recipient:
              never, or a comma-separated list of success, failure and delay
              [default: failure and delay]
  -R RET      what a failure notice returns of the message: full (all of it) or hdrs
              (its headers) [default: all of a small message]
  -V ENVID    an envelope ID that notifications quote (printable ASCII, at most
              {MAX_ENVID} characters as xtext)
  -C CONFIG   the smtpkit config [default: {config_default}]
  --help      this text

A Bcc: header is never sent on. Accepted and ignored, as other sendmail programs do:
-oOPTION, -B TYPE, -bm, -eMODE, -v, -m, -n, -U, -G, -L LABEL, -h HOPS, -O OPTION=VALUE.

Exit status (sysexits.h): 0 the message is in the maildrop, 64 usage error, 65 a
message that cannot be sent (too big, unreadable headers with -t), 73 the maildrop
cannot be written, 75 a temporary failure (disk full), 78 no config or a bad one.
"""


def run(
    argv: Sequence[str],
    *,
    prog: str,
    default_config: Path,
    stdin: BinaryIO,
    stdout: TextIO,
    stderr: TextIO,
    config_default: str = f"${CONFIG_ENV}, else {DEFAULT_CONFIG}",
) -> int:
    """Run sendmail with ``argv`` (no program name) and return its exit status; errors are
    written to ``stderr`` as one line, ``PROG: reason``."""

    def fail(status: int, reason: str) -> int:
        print(f"{prog}: {reason}", file=stderr)
        return status

    try:
        invocation = parse_arguments(argv)
    except UsageError as exc:
        return fail(EX_USAGE, f"{exc} (usage: {_usage(prog)})")
    if invocation.help:
        stdout.write(_help(prog, config_default))
        return EX_OK
    if not invocation.recipients and not invocation.extract_recipients:
        return fail(
            EX_USAGE,
            "no recipients: name them as arguments, or use -t to take them from the "
            "To:, Cc: and Bcc: headers",
        )
    try:
        config = load_config(invocation.config or default_config)
    except ConfigError as exc:
        return fail(EX_CONFIG, str(exc))
    maildrop = maildrop_path(config.server.directory)
    limit = config.limits.max_message_size
    source = SendmailInput(stdin, ignore_dots=invocation.ignore_dots)
    try:
        head = read_head(source, limit)
        recipients = list(invocation.recipients)
        if invocation.extract_recipients:
            recipients.extend(head.recipients())
        if not recipients:
            return fail(
                EX_USAGE,
                "no recipients: none on the command line, and no address in a To:, Cc: "
                "or Bcc: header",
            )
        envelope = DropEnvelope(
            recipients=tuple(dict.fromkeys(recipients)),
            sender=invocation.sender,
            full_name=invocation.full_name,
            extract_recipients=invocation.extract_recipients,
            ignore_dots=invocation.ignore_dots,
            notify=invocation.notify,
            ret=invocation.ret,
            envid=invocation.envid,
        )
        first = head.render(_added_fields(head, invocation, config))
        with io.BufferedReader(_Joined(first, source)) as message:
            drop(maildrop, envelope, message, max_size=limit)
    except MessageTooBig as exc:
        return fail(EX_DATAERR, f"{exc} (limits.max_message_size in {config.path})")
    except BadMessage as exc:
        return fail(EX_DATAERR, str(exc))
    except MaildropUnreachable as exc:
        return fail(
            EX_CANTCREAT,
            f"{exc} (`smtpkit serve` and `smtpkit init` create it, with mode 1733, in a data "
            "folder every user may pass through)",
        )
    except DropFailed as exc:
        return fail(EX_TEMPFAIL, f"{exc}; try again later")
    except MaildropError as exc:
        return fail(EX_DATAERR, str(exc))
    return EX_OK


def main() -> None:
    """The ``smtpkit-sendmail`` console script."""
    default = Path(os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG)
    try:
        status = run(
            sys.argv[1:],
            prog="smtpkit-sendmail",
            default_config=default,
            # A closed standard input (`sendmail x <&-`) is an empty message.
            stdin=sys.stdin.buffer if sys.stdin is not None else io.BytesIO(),
            stdout=sys.stdout,
            stderr=sys.stderr,
        )
    except KeyboardInterrupt:
        status = 130  # nothing was left behind: drop() removes its file on any exit
    sys.exit(status)


if __name__ == "__main__":
    main()
