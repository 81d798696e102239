"""The SMTP service extension for delivery status notifications (RFC 3461): its parameters.

``RET`` and ``ENVID`` come with ``MAIL``, ``NOTIFY`` and ``ORCPT`` with ``RCPT``. This module
checks their values, keeps them decoded in two frozen values (``MailDsn``, ``RcptDsn``) that
the queue envelope stores as JSON, and encodes them again for a next hop that offers DSN.
Pure functions: no I/O, no clock. Every refusal is a ``ValueError`` whose text starts with
the parameter's name, for the session to answer ``501 5.5.4``.

Encodings:

- xtext (RFC 3461 4): printable US-ASCII but ``+`` and ``=`` stands for itself, any other
  octet is ``+`` and two upper-case hex digits. The decoded octets are read as UTF-8.
- utf-8-addr-xtext (RFC 6533 3), the 7-bit form of an ``ORCPT=utf-8;...`` address: ``+``,
  ``=``, ``\\``, space, controls and every non-ASCII character are ``\\x{HEX}``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, cast

__all__ = [
    "ADDRESS_TYPES",
    "MAX_ENVID",
    "MAX_ORCPT",
    "NOTIFY_VALUES",
    "MailDsn",
    "RcptDsn",
    "Ret",
    "mail_params",
    "parse_mail_dsn",
    "parse_rcpt_dsn",
    "rcpt_params",
    "utf8_addr_xtext_decode",
    "utf8_addr_xtext_encode",
    "xtext_decode",
    "xtext_encode",
]

Ret = Literal["FULL", "HDRS"]

#: RFC 3461 4.4: an ENVID parameter value is at most 100 characters.
MAX_ENVID: Final = 100
#: RFC 3461 4.2: an ORCPT parameter value is at most 500 characters.
MAX_ORCPT: Final = 500
#: RFC 3461 4.1, in the order they are written for a next hop.
NOTIFY_VALUES: Final = ("SUCCESS", "FAILURE", "DELAY")
_NEVER: Final = "NEVER"
_RET_VALUES: Final = frozenset({"FULL", "HDRS"})
#: The address types of ORCPT we accept: RFC 3461 4.2 (rfc822) and RFC 6533 3 (utf-8).
ADDRESS_TYPES: Final = frozenset({"rfc822", "utf-8"})

# RFC 3461 4: xchar = any ASCII from "!" (33) to "~" (126) except "+" and "=".
_XCHAR: Final = frozenset(chr(c) for c in range(33, 127)) - {"+", "="}
_HEX: Final = frozenset("0123456789ABCDEF")
# RFC 6533 3: QCHAR = %x21-2a / %x2c-3c / %x3e-5b / %x5d-7e (printable but "+", "=", "\").
_QCHAR: Final = _XCHAR - {"\\"}
_EMBEDDED: Final = re.compile(r"\\x\{([0-9A-Fa-f]{1,6})\}")
# RFC 3461 4.2 and 4.4: ENVID and an rfc822 ORCPT, decoded, are printable US-ASCII ("graphic
# and white space"), because the DSN (RFC 3464) carries them as header text.
_PRINTABLE: Final = re.compile(r"[\x20-\x7e]*")
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def xtext_decode(text: str) -> str:
    """Decode RFC 3461 xtext; ``ValueError`` on bad syntax or octets that are not UTF-8."""
    out = bytearray()
    i = 0
    while i < len(text):
        char = text[i]
        if char == "+":
            digits = text[i + 1 : i + 3]
            # RFC 3461 4: hexchar = "+" 2(%x30-39 / %x41-46): upper case only.
            if len(digits) != 2 or not set(digits) <= _HEX:
                raise ValueError("'+' must be followed by two upper-case hex digits")
            out.append(int(digits, 16))
            i += 3
            continue
        if char not in _XCHAR:
            raise ValueError(f"{char!r} is not allowed in xtext")
        out.append(ord(char))
        i += 1
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("the decoded xtext is not UTF-8") from None


def xtext_encode(text: str) -> str:
    """Encode ``text`` (as UTF-8) in RFC 3461 xtext, in its shortest form."""
    return "".join(
        chr(octet) if chr(octet) in _XCHAR else f"+{octet:02X}" for octet in text.encode("utf-8")
    )


def utf8_addr_xtext_decode(text: str) -> str:
    """Decode RFC 6533 utf-8-addr-xtext, or utf-8-addr-unitext (the same with raw non-ASCII
    characters); ``ValueError`` on bad syntax."""
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\":
            match = _EMBEDDED.match(text, i)
            if match is None:
                raise ValueError("'\\' must start a \\x{HEX} escape")
            point = int(match.group(1), 16)
            if point > 0x10FFFF or 0xD800 <= point <= 0xDFFF:
                raise ValueError("\\x{HEX} must be a Unicode scalar value")
            out.append(chr(point))
            i = match.end()
            continue
        if char not in _QCHAR and (char.isascii() or _CONTROL.match(char)):
            raise ValueError(f"{char!r} is not allowed in utf-8-addr-xtext")
        out.append(char)
        i += 1
    return "".join(out)


def utf8_addr_xtext_encode(text: str) -> str:
    """Encode ``text`` in RFC 6533 utf-8-addr-xtext: 7-bit, safe in ORCPT whatever the next
    hop offers, and in a ``message/delivery-status`` address field."""
    return "".join(char if char in _QCHAR else f"\\x{{{ord(char):02X}}}" for char in text)


def _required(name: str, value: str | None) -> str:
    if not value:
        raise ValueError(f"{name}: a value is required")
    return value


@dataclass(frozen=True, slots=True)
class MailDsn:
    """The DSN parameters of MAIL: RET (None: not given) and the ENVID, decoded."""

    ret: Ret | None = None
    envid: str | None = None

    def __post_init__(self) -> None:
        if self.ret is not None and self.ret not in _RET_VALUES:
            raise ValueError("RET: must be FULL or HDRS")
        if self.envid is not None:
            if not isinstance(self.envid, str) or not self.envid:
                raise ValueError("ENVID: a value is required")
            if not _PRINTABLE.fullmatch(self.envid):
                raise ValueError("ENVID: must be printable US-ASCII")
            # Checked on the shortest encoding, so a next hop never gets a longer one.
            if len(xtext_encode(self.envid)) > MAX_ENVID:
                raise ValueError(f"ENVID: longer than {MAX_ENVID} characters")

    def to_dict(self) -> dict[str, str | None]:
        """JSON-friendly form for the queue envelope."""
        return {"ret": self.ret, "envid": self.envid}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MailDsn:
        """The inverse of ``to_dict``; ``ValueError`` for anything it would not write."""
        _known_keys(data, {"ret", "envid"}, "MailDsn")
        ret, envid = data.get("ret"), data.get("envid")
        if ret is not None and (not isinstance(ret, str) or ret not in _RET_VALUES):
            raise ValueError("RET: must be FULL or HDRS")
        if envid is not None and not isinstance(envid, str):
            raise ValueError("ENVID: must be a string")
        return cls(ret=cast("Ret | None", ret), envid=envid)


@dataclass(frozen=True, slots=True)
class RcptDsn:
    """The DSN parameters of one RCPT: NOTIFY (None: not given; else NEVER alone or some of
    SUCCESS, FAILURE, DELAY) and ORCPT as (address type in lower case, address decoded)."""

    notify: frozenset[str] | None = None
    orcpt: tuple[str, str] | None = None

    def __post_init__(self) -> None:
        if self.notify is not None:
            if not self.notify or not self.notify <= {_NEVER, *NOTIFY_VALUES}:
                raise ValueError(_NOTIFY_SYNTAX)
            if _NEVER in self.notify and len(self.notify) > 1:
                raise ValueError("NOTIFY: NEVER cannot be combined with other values")
        if self.orcpt is not None:
            addr_type, address = self.orcpt
            if addr_type not in ADDRESS_TYPES:
                raise ValueError("ORCPT: the address type must be rfc822 or utf-8")
            if not address:
                raise ValueError("ORCPT: the address is empty")
            if addr_type == "rfc822" and not _PRINTABLE.fullmatch(address):
                raise ValueError("ORCPT: an rfc822 address must be printable US-ASCII")
            if _CONTROL.search(address):
                raise ValueError("ORCPT: the address has control characters")
            if len(_encode_orcpt(addr_type, address)) > MAX_ORCPT:
                raise ValueError(f"ORCPT: longer than {MAX_ORCPT} characters")

    def wants(self, action: str) -> bool:
        """Whether the sender wants a DSN with this RFC 3464 action for this recipient.

        Without NOTIFY, RFC 3461 4.1 means FAILURE (and DELAY at the MTA's discretion, so
        a delay notice is allowed): never SUCCESS.
        """
        if action not in _ACTION_NOTIFY:
            raise ValueError(f"unknown action {action!r}")
        wanted = _ACTION_NOTIFY[action]
        if self.notify is None:
            return wanted != "SUCCESS"
        return wanted in self.notify

    def to_dict(self) -> dict[str, list[str] | None]:
        """JSON-friendly form for the queue envelope (NOTIFY values in RFC order)."""
        notify = None if self.notify is None else _notify_list(self.notify)
        orcpt = None if self.orcpt is None else list(self.orcpt)
        return {"notify": notify, "orcpt": orcpt}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RcptDsn:
        """The inverse of ``to_dict``; ``ValueError`` for anything it would not write."""
        _known_keys(data, {"notify", "orcpt"}, "RcptDsn")
        notify, orcpt = data.get("notify"), data.get("orcpt")
        if notify is not None and not (
            isinstance(notify, list) and all(isinstance(v, str) for v in notify)
        ):
            raise ValueError(_NOTIFY_SYNTAX)
        if orcpt is not None and not (
            isinstance(orcpt, list) and len(orcpt) == 2 and all(isinstance(v, str) for v in orcpt)
        ):
            raise ValueError("ORCPT: must be [address type, address]")
        return cls(
            notify=None if notify is None else frozenset(notify),
            orcpt=None if orcpt is None else (orcpt[0], orcpt[1]),
        )


_NOTIFY_SYNTAX: Final = "NOTIFY: must be NEVER or a comma list of SUCCESS, FAILURE and DELAY"
# RFC 3461 4.1 and RFC 3464 2.3.3: which NOTIFY value asks for a DSN with each action.
_ACTION_NOTIFY: Final = {
    "failed": "FAILURE",
    "delayed": "DELAY",
    "delivered": "SUCCESS",
    "relayed": "SUCCESS",
    "expanded": "SUCCESS",
}


def _known_keys(data: Mapping[str, Any], keys: set[str], what: str) -> None:
    if not isinstance(data, Mapping):
        raise ValueError(f"{what}: not a mapping")
    unknown = set(data) - keys
    if unknown:
        raise ValueError(f"{what}: unknown keys {sorted(map(str, unknown))}")


def _notify_list(notify: frozenset[str]) -> list[str]:
    return [_NEVER] if _NEVER in notify else [v for v in NOTIFY_VALUES if v in notify]


def _encode_orcpt(addr_type: str, address: str) -> str:
    if addr_type == "utf-8":
        return f"utf-8;{utf8_addr_xtext_encode(address)}"
    return f"{addr_type};{xtext_encode(address)}"


def parse_mail_dsn(params: Mapping[str, str | None]) -> MailDsn:
    """The DSN parameters of MAIL from its ``{KEYWORD: value}`` parameters (keywords in upper
    case, as the grammar gives them; ``None`` for a keyword without ``=value``). Keywords
    other than RET and ENVID are not this module's and are ignored."""
    ret: Ret | None = None
    envid: str | None = None
    if "RET" in params:
        # RFC 3461 4.3: ret-value = "FULL" / "HDRS"; taken in any case, as keywords are.
        value = _required("RET", params["RET"]).upper()
        if value not in _RET_VALUES:
            raise ValueError("RET: must be FULL or HDRS")
        ret = cast("Ret", value)
    if "ENVID" in params:
        value = _required("ENVID", params["ENVID"])
        if len(value) > MAX_ENVID:
            raise ValueError(f"ENVID: longer than {MAX_ENVID} characters")
        try:
            envid = xtext_decode(value)
        except ValueError as exc:
            raise ValueError(f"ENVID: {exc}") from None
    return MailDsn(ret=ret, envid=envid)


def parse_rcpt_dsn(params: Mapping[str, str | None]) -> RcptDsn:
    """The DSN parameters of RCPT from its ``{KEYWORD: value}`` parameters, as
    ``parse_mail_dsn``; keywords other than NOTIFY and ORCPT are ignored."""
    notify: frozenset[str] | None = None
    orcpt: tuple[str, str] | None = None
    if "NOTIFY" in params:
        # RFC 3461 4.1: "NEVER" / 1#( "SUCCESS" / "FAILURE" / "DELAY" ).
        items = _required("NOTIFY", params["NOTIFY"]).upper().split(",")
        if not set(items) <= {_NEVER, *NOTIFY_VALUES}:
            raise ValueError(_NOTIFY_SYNTAX)
        if _NEVER in items and len(items) > 1:
            raise ValueError("NOTIFY: NEVER cannot be combined with other values")
        notify = frozenset(items)
    if "ORCPT" in params:
        # RFC 3461 4.2: orcpt-parameter = "ORCPT=" addr-type ";" xtext.
        value = _required("ORCPT", params["ORCPT"])
        if len(value) > MAX_ORCPT:
            raise ValueError(f"ORCPT: longer than {MAX_ORCPT} characters")
        addr_type, semicolon, encoded = value.partition(";")
        if not semicolon:
            raise ValueError("ORCPT: must be address-type;address")
        addr_type = addr_type.lower()
        if addr_type not in ADDRESS_TYPES:
            raise ValueError("ORCPT: the address type must be rfc822 or utf-8")
        try:
            if addr_type == "utf-8":
                address = utf8_addr_xtext_decode(encoded)
            else:
                address = xtext_decode(encoded)
        except ValueError as exc:
            raise ValueError(f"ORCPT: {exc}") from None
        orcpt = (addr_type, address)
    return RcptDsn(notify=notify, orcpt=orcpt)


def mail_params(dsn: MailDsn) -> list[str]:
    """The MAIL parameters that pass ``dsn`` on to a next hop offering DSN (RFC 3461 5.2)."""
    params = []
    if dsn.ret is not None:
        params.append(f"RET={dsn.ret}")
    if dsn.envid is not None:
        params.append(f"ENVID={xtext_encode(dsn.envid)}")
    return params


def rcpt_params(dsn: RcptDsn) -> list[str]:
    """The RCPT parameters that pass ``dsn`` on to a next hop offering DSN (RFC 3461 5.2)."""
    params = []
    if dsn.notify is not None:
        params.append("NOTIFY=" + ",".join(_notify_list(dsn.notify)))
    if dsn.orcpt is not None:
        params.append("ORCPT=" + _encode_orcpt(*dsn.orcpt))
    return params
