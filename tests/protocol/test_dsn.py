"""smtpkit.protocol.dsn: the RFC 3461 parameters, their exact refusals, xtext both ways, the JSON
kept in the queue envelope and the parameters passed on to a next hop."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtpkit.protocol.dsn import (
    MailDsn,
    RcptDsn,
    mail_params,
    parse_mail_dsn,
    parse_rcpt_dsn,
    rcpt_params,
    utf8_addr_xtext_decode,
    utf8_addr_xtext_encode,
    xtext_decode,
    xtext_encode,
)

XTEXT = re.compile(r"(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})*")  # RFC 3461 4
UTF8_ADDR_XTEXT = re.compile(r"(?:[\x21-\x2a\x2c-\x3c\x3e-\x5b\x5d-\x7e]|\\x\{[0-9A-F]{2,6}\})*")


# xtext (RFC 3461 4)


@pytest.mark.parametrize(
    ("text", "decoded"),
    [
        ("", ""),
        ("abc", "abc"),
        ("a+2Bb", "a+b"),
        ("+3D", "="),
        ("+20", " "),
        ("~!<>", "~!<>"),
        ("+C3+A9t+C3+A9", "été"),
    ],
)
def test_xtext_decode(text: str, decoded: str) -> None:
    assert xtext_decode(text) == decoded


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a+2b", "'+' must be followed by two upper-case hex digits"),
        ("a+2", "'+' must be followed by two upper-case hex digits"),
        ("+", "'+' must be followed by two upper-case hex digits"),
        ("+G0", "'+' must be followed by two upper-case hex digits"),
        ("a=b", "'=' is not allowed in xtext"),
        ("a b", "' ' is not allowed in xtext"),
        ("a\x7fb", "'\\x7f' is not allowed in xtext"),
        ("a\r\nb", "'\\r' is not allowed in xtext"),
        ("é", "'é' is not allowed in xtext"),
        ("+FF", "the decoded xtext is not UTF-8"),
    ],
)
def test_xtext_decode_refuses(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        xtext_decode(text)
    assert str(caught.value) == message


def test_xtext_encode_is_shortest() -> None:
    assert xtext_encode("a+b=c d\té") == "a+2Bb+3Dc+20d+09+C3+A9"
    assert xtext_encode("user@example.com") == "user@example.com"


@given(st.text())
def test_xtext_round_trip(text: str) -> None:
    encoded = xtext_encode(text)
    assert XTEXT.fullmatch(encoded)
    assert xtext_decode(encoded) == text


@given(st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126)))
def test_xtext_keeps_plain_characters(text: str) -> None:
    encoded = xtext_encode(text)
    assert len(encoded) == len(text) + 2 * (text.count("+") + text.count("="))


# utf-8-addr-xtext (RFC 6533 3)


def test_utf8_addr_xtext() -> None:
    assert utf8_addr_xtext_encode("jérôme+x=y\\z@exämple.com") == (
        "j\\x{E9}r\\x{F4}me\\x{2B}x\\x{3D}y\\x{5C}z@ex\\x{E4}mple.com"
    )
    assert utf8_addr_xtext_decode("j\\x{e9}r\\x{F4}me@x") == "jérôme@x"
    # utf-8-addr-unitext: raw non-ASCII characters are accepted as well.
    assert utf8_addr_xtext_decode("jérôme@x") == "jérôme@x"
    assert utf8_addr_xtext_encode("\U0001f600@x") == "\\x{1F600}@x"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a\\b", "'\\' must start a \\x{HEX} escape"),
        ("a\\x{}", "'\\' must start a \\x{HEX} escape"),
        ("a\\x{1234567}", "'\\' must start a \\x{HEX} escape"),
        ("a\\x{D800}", "\\x{HEX} must be a Unicode scalar value"),
        ("a\\x{110000}", "\\x{HEX} must be a Unicode scalar value"),
        ("a+b", "'+' is not allowed in utf-8-addr-xtext"),
        ("a=b", "'=' is not allowed in utf-8-addr-xtext"),
        ("a b", "' ' is not allowed in utf-8-addr-xtext"),
        ("a\x85b", "'\\x85' is not allowed in utf-8-addr-xtext"),
    ],
)
def test_utf8_addr_xtext_refuses(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        utf8_addr_xtext_decode(text)
    assert str(caught.value) == message


@given(st.text())
def test_utf8_addr_xtext_round_trip(text: str) -> None:
    encoded = utf8_addr_xtext_encode(text)
    assert UTF8_ADDR_XTEXT.fullmatch(encoded)
    assert utf8_addr_xtext_decode(encoded) == text


# MAIL: RET and ENVID (RFC 3461 4.3, 4.4)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, MailDsn()),
        ({"RET": "FULL"}, MailDsn(ret="FULL")),
        ({"RET": "hdrs"}, MailDsn(ret="HDRS")),
        ({"ENVID": "QQ314159"}, MailDsn(envid="QQ314159")),
        ({"ENVID": "a+2Bb+20c"}, MailDsn(envid="a+b c")),
        ({"ENVID": "x" * 100}, MailDsn(envid="x" * 100)),
        ({"RET": "FULL", "ENVID": "id1", "SIZE": "1000"}, MailDsn("FULL", "id1")),
    ],
)
def test_parse_mail_dsn(params: dict[str, str | None], expected: MailDsn) -> None:
    assert parse_mail_dsn(params) == expected


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"RET": None}, "RET: a value is required"),
        ({"RET": ""}, "RET: a value is required"),
        ({"RET": "BOTH"}, "RET: must be FULL or HDRS"),
        ({"RET": "FULL,HDRS"}, "RET: must be FULL or HDRS"),
        ({"ENVID": None}, "ENVID: a value is required"),
        ({"ENVID": "x" * 101}, "ENVID: longer than 100 characters"),
        ({"ENVID": "a+2b"}, "ENVID: '+' must be followed by two upper-case hex digits"),
        ({"ENVID": "a=b"}, "ENVID: '=' is not allowed in xtext"),
        ({"ENVID": "+FF"}, "ENVID: the decoded xtext is not UTF-8"),
        ({"ENVID": "a+0D+0Ab"}, "ENVID: must be printable US-ASCII"),
        ({"ENVID": "+C3+A9"}, "ENVID: must be printable US-ASCII"),
    ],
)
def test_parse_mail_dsn_refuses(params: dict[str, str | None], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_mail_dsn(params)
    assert str(caught.value) == message


# RCPT: NOTIFY and ORCPT (RFC 3461 4.1, 4.2)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, RcptDsn()),
        ({"NOTIFY": "NEVER"}, RcptDsn(notify=frozenset({"NEVER"}))),
        ({"NOTIFY": "never"}, RcptDsn(notify=frozenset({"NEVER"}))),
        ({"NOTIFY": "SUCCESS"}, RcptDsn(notify=frozenset({"SUCCESS"}))),
        (
            {"NOTIFY": "DELAY,FAILURE,SUCCESS"},
            RcptDsn(notify=frozenset({"SUCCESS", "FAILURE", "DELAY"})),
        ),
        ({"NOTIFY": "FAILURE,FAILURE"}, RcptDsn(notify=frozenset({"FAILURE"}))),
        ({"ORCPT": "rfc822;bob@example.com"}, RcptDsn(orcpt=("rfc822", "bob@example.com"))),
        ({"ORCPT": "RFC822;a+2Bb@example.com"}, RcptDsn(orcpt=("rfc822", "a+b@example.com"))),
        ({"ORCPT": 'rfc822;"a+20b"@x'}, RcptDsn(orcpt=("rfc822", '"a b"@x'))),
        ({"ORCPT": "utf-8;j\\x{E9}r\\x{F4}me@x"}, RcptDsn(orcpt=("utf-8", "jérôme@x"))),
        ({"ORCPT": "rfc822;" + "x" * 493}, RcptDsn(orcpt=("rfc822", "x" * 493))),
        (
            {"NOTIFY": "FAILURE", "ORCPT": "rfc822;a@b", "X-OTHER": None},
            RcptDsn(frozenset({"FAILURE"}), ("rfc822", "a@b")),
        ),
    ],
)
def test_parse_rcpt_dsn(params: dict[str, str | None], expected: RcptDsn) -> None:
    assert parse_rcpt_dsn(params) == expected


ACTIONS = {"failed", "delayed", "delivered", "relayed", "expanded"}
NOTIFY_SYNTAX = "NOTIFY: must be NEVER or a comma list of SUCCESS, FAILURE and DELAY"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"NOTIFY": None}, "NOTIFY: a value is required"),
        ({"NOTIFY": ""}, "NOTIFY: a value is required"),
        ({"NOTIFY": "ALWAYS"}, NOTIFY_SYNTAX),
        ({"NOTIFY": "SUCCESS,"}, NOTIFY_SYNTAX),
        ({"NOTIFY": "SUCCESS,,DELAY"}, NOTIFY_SYNTAX),
        ({"NOTIFY": "SUCCESS;DELAY"}, NOTIFY_SYNTAX),
        ({"NOTIFY": "NEVER,FAILURE"}, "NOTIFY: NEVER cannot be combined with other values"),
        ({"NOTIFY": "NEVER,NEVER"}, "NOTIFY: NEVER cannot be combined with other values"),
        ({"ORCPT": None}, "ORCPT: a value is required"),
        ({"ORCPT": "bob@example.com"}, "ORCPT: must be address-type;address"),
        ({"ORCPT": "x400;bob"}, "ORCPT: the address type must be rfc822 or utf-8"),
        ({"ORCPT": ";bob@example.com"}, "ORCPT: the address type must be rfc822 or utf-8"),
        ({"ORCPT": "rfc822;"}, "ORCPT: the address is empty"),
        ({"ORCPT": "rfc822;a+2b@x"}, "ORCPT: '+' must be followed by two upper-case hex digits"),
        ({"ORCPT": "rfc822;a=b@x"}, "ORCPT: '=' is not allowed in xtext"),
        ({"ORCPT": "rfc822;a+0Ab@x"}, "ORCPT: an rfc822 address must be printable US-ASCII"),
        ({"ORCPT": "rfc822;+C3+A9@x"}, "ORCPT: an rfc822 address must be printable US-ASCII"),
        ({"ORCPT": "utf-8;a+b@x"}, "ORCPT: '+' is not allowed in utf-8-addr-xtext"),
        ({"ORCPT": "utf-8;a\\x{0A}b@x"}, "ORCPT: the address has control characters"),
        ({"ORCPT": "rfc822;" + "x" * 494}, "ORCPT: longer than 500 characters"),
        # Within 500 as given, but over it once written the only way a next hop takes it.
        ({"ORCPT": "utf-8;" + "é" * 90}, "ORCPT: longer than 500 characters"),
    ],
)
def test_parse_rcpt_dsn_refuses(params: dict[str, str | None], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_rcpt_dsn(params)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("notify", "wanted"),
    [
        (None, {"failed", "delayed"}),
        ({"NEVER"}, set()),
        ({"SUCCESS"}, {"delivered", "relayed", "expanded"}),
        ({"FAILURE", "DELAY"}, {"failed", "delayed"}),
        ({"SUCCESS", "FAILURE", "DELAY"}, ACTIONS),
    ],
)
def test_wants(notify: set[str] | None, wanted: set[str]) -> None:
    dsn = RcptDsn(notify=None if notify is None else frozenset(notify))
    assert {action for action in ACTIONS if dsn.wants(action)} == wanted


def test_wants_refuses_an_unknown_action() -> None:
    with pytest.raises(ValueError) as caught:
        RcptDsn().wants("bounced")
    assert str(caught.value) == "unknown action 'bounced'"


# Passed on to a next hop (RFC 3461 5.2)


@pytest.mark.parametrize(
    ("dsn", "params"),
    [
        (MailDsn(), []),
        (MailDsn(ret="HDRS"), ["RET=HDRS"]),
        (MailDsn(ret="FULL", envid="a+b=c d"), ["RET=FULL", "ENVID=a+2Bb+3Dc+20d"]),
    ],
)
def test_mail_params(dsn: MailDsn, params: list[str]) -> None:
    assert mail_params(dsn) == params


@pytest.mark.parametrize(
    ("dsn", "params"),
    [
        (RcptDsn(), []),
        (RcptDsn(notify=frozenset({"NEVER"})), ["NOTIFY=NEVER"]),
        (
            RcptDsn(notify=frozenset({"DELAY", "SUCCESS", "FAILURE"})),
            ["NOTIFY=SUCCESS,FAILURE,DELAY"],
        ),
        (
            RcptDsn(notify=frozenset({"FAILURE"}), orcpt=("rfc822", "a+b@x")),
            ["NOTIFY=FAILURE", "ORCPT=rfc822;a+2Bb@x"],
        ),
        (RcptDsn(orcpt=("utf-8", "jérôme@x")), ["ORCPT=utf-8;j\\x{E9}r\\x{F4}me@x"]),
    ],
)
def test_rcpt_params(dsn: RcptDsn, params: list[str]) -> None:
    assert rcpt_params(dsn) == params


def test_params_parse_back_to_the_same_values() -> None:
    """What goes to the next hop is what a DSN-aware server, this one included, reads."""
    mail = parse_mail_dsn({"RET": "hdrs", "ENVID": "+41bc+2B1"})
    assert mail_params(mail) == ["RET=HDRS", "ENVID=Abc+2B1"]
    again = dict(p.split("=", 1) for p in mail_params(mail))
    assert parse_mail_dsn(again) == mail
    rcpt = parse_rcpt_dsn({"NOTIFY": "delay,success", "ORCPT": "UTF-8;j\\x{e9}@x"})
    again = dict(p.split("=", 1) for p in rcpt_params(rcpt))
    assert parse_rcpt_dsn(again) == rcpt


_ENVIDS = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), min_size=1)


@given(
    ret=st.sampled_from([None, "FULL", "HDRS"]),
    envid=st.none() | _ENVIDS.filter(lambda e: len(xtext_encode(e)) <= 100),
)
def test_mail_dsn_round_trips(ret: str | None, envid: str | None) -> None:
    dsn = MailDsn(ret=ret, envid=envid)  # type: ignore[arg-type]
    assert MailDsn.from_dict(json.loads(json.dumps(dsn.to_dict()))) == dsn
    assert parse_mail_dsn(dict(p.split("=", 1) for p in mail_params(dsn))) == dsn


@given(
    notify=st.none()
    | st.just(frozenset({"NEVER"}))
    | st.frozensets(st.sampled_from(["SUCCESS", "FAILURE", "DELAY"]), min_size=1),
    orcpt=st.none()
    | st.tuples(st.just("rfc822"), _ENVIDS.filter(lambda a: len(xtext_encode(a)) <= 400))
    | st.tuples(
        st.just("utf-8"),
        st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=40),
    ),
)
def test_rcpt_dsn_round_trips(notify: frozenset[str] | None, orcpt: tuple[str, str] | None) -> None:
    dsn = RcptDsn(notify=notify, orcpt=orcpt)
    assert RcptDsn.from_dict(json.loads(json.dumps(dsn.to_dict()))) == dsn
    assert parse_rcpt_dsn(dict(p.split("=", 1) for p in rcpt_params(dsn))) == dsn


# The JSON form in the queue envelope


def test_to_dict() -> None:
    assert MailDsn().to_dict() == {"ret": None, "envid": None}
    assert MailDsn("FULL", "id 1").to_dict() == {"ret": "FULL", "envid": "id 1"}
    assert RcptDsn().to_dict() == {"notify": None, "orcpt": None}
    dsn = RcptDsn(frozenset({"DELAY", "FAILURE"}), ("rfc822", "a@b"))
    assert dsn.to_dict() == {"notify": ["FAILURE", "DELAY"], "orcpt": ["rfc822", "a@b"]}


def test_from_dict_takes_missing_keys_as_not_given() -> None:
    assert MailDsn.from_dict({}) == MailDsn()
    assert RcptDsn.from_dict({}) == RcptDsn()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"ret": "ALL"}, "RET: must be FULL or HDRS"),
        ({"ret": ["FULL"]}, "RET: must be FULL or HDRS"),
        ({"envid": 5}, "ENVID: must be a string"),
        ({"envid": ""}, "ENVID: a value is required"),
        ({"envid": "a\nb"}, "ENVID: must be printable US-ASCII"),
        ({"ret": "FULL", "size": 5}, "MailDsn: unknown keys ['size']"),
    ],
)
def test_mail_dsn_from_dict_refuses(data: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        MailDsn.from_dict(data)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"notify": "FAILURE"}, NOTIFY_SYNTAX),
        ({"notify": []}, NOTIFY_SYNTAX),
        ({"notify": ["FAILURE", 1]}, NOTIFY_SYNTAX),
        ({"notify": ["NEVER", "DELAY"]}, "NOTIFY: NEVER cannot be combined with other values"),
        ({"orcpt": "rfc822;a@b"}, "ORCPT: must be [address type, address]"),
        ({"orcpt": ["rfc822"]}, "ORCPT: must be [address type, address]"),
        ({"orcpt": ["RFC822", "a@b"]}, "ORCPT: the address type must be rfc822 or utf-8"),
        ({"orcpt": ["rfc822", "a\r\nb"]}, "ORCPT: an rfc822 address must be printable US-ASCII"),
        ({"notify": None, "extra": 1}, "RcptDsn: unknown keys ['extra']"),
    ],
)
def test_rcpt_dsn_from_dict_refuses(data: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        RcptDsn.from_dict(data)
    assert str(caught.value) == message
