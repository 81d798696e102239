"""International addresses (RFC 6530-6532) in ``smtpkit.addresses``: one canonical mailbox for
every spelling of a name, look-alikes refused with the reason, and the ASCII rules untouched
(every function keeps them by default, and ``utf8=True`` changes nothing for ASCII)."""

from __future__ import annotations

import sys
import unicodedata
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtpkit.addresses import (
    Address,
    NonAsciiAddress,
    normalize_address,
    parse_address,
    split_address,
)
from smtpkit.errors import UserError


def nfd(text: str) -> str:
    return unicodedata.normalize("NFD", text)


def outcome(call: Callable[..., object], *args: object, **kwargs: object) -> object:
    """What a call gives: its value, or its error's type and words."""
    try:
        return call(*args, **kwargs)
    except UserError as exc:
        return type(exc), str(exc)


# --- ASCII stays as it was -------------------------------------------------------------------

ASCII = [
    "alice@example.org",
    "Alice.Smith@Example.ORG",
    "o'neil+tag@example.org",
    "a#$&'*+=?^_~-b@example.org",
    "x" * 64 + "@example.org",
    "x" * 65 + "@example.org",
    "../../etc@example.org",
    "a/b@example.org",
    "user%other.test@example.org",
    "a!b@example.org",
    ".dot@example.org",
    "a..b@example.org",
    "a b@example.org",
    "a\x00b@example.org",
    "alice@example.org.",
    "alice@-example.org",
    "alice@localhost",
    "alice@xn--bcher-kva.example",
    "noat",
    "@example.org",
    "alice@",
    '"quoted"@example.org',
]


@pytest.mark.parametrize("address", ASCII)
def test_utf8_changes_nothing_for_an_ascii_address(address: str) -> None:
    domains = ("example.org",)
    assert outcome(normalize_address, address, utf8=True) == outcome(normalize_address, address)
    assert outcome(normalize_address, address, domains, utf8=True) == outcome(
        normalize_address, address, domains
    )
    assert outcome(split_address, address, utf8=True) == outcome(split_address, address)


def test_ascii_results_are_those_of_before() -> None:
    assert normalize_address("Alice.Smith@Example.ORG") == "alice.smith@example.org"
    assert split_address("Alice.Smith@Example.ORG") == ("Alice.Smith", "example.org")
    assert normalize_address("Alice@bücher.example") == "alice@xn--bcher-kva.example"
    with pytest.raises(UserError) as caught:
        normalize_address("a/b@example.org", utf8=True)
    assert str(caught.value) == "'a/b@example.org' is not a valid address: bad local part 'a/b'"


def test_without_utf8_a_utf8_local_part_is_refused_as_before() -> None:
    with pytest.raises(UserError) as caught:
        normalize_address("müller@example.org")
    assert type(caught.value) is UserError
    assert str(caught.value) == (
        "'müller@example.org' is not a valid address: bad local part 'müller'"
    )


# --- parse_address: what the engine calls ---------------------------------------------------


@pytest.mark.parametrize(
    "address", ["müller@example.org", "alice@bücher.example", "mu\u0308ller@xn--bcher-kva.example"]
)
def test_without_smtputf8_any_non_ascii_is_its_own_error(address: str) -> None:
    with pytest.raises(NonAsciiAddress) as caught:
        parse_address(address)
    assert isinstance(caught.value, UserError)
    assert str(caught.value) == f"{address!r} is not an ASCII address (it needs SMTPUTF8)"


def test_without_smtputf8_a_bad_ascii_address_is_a_syntax_error() -> None:
    with pytest.raises(UserError) as caught:
        parse_address("a..b@example.org")
    assert type(caught.value) is UserError


def test_parse_address_gives_the_address_and_its_mailbox() -> None:
    parsed = parse_address("Müller@Bücher.example", utf8=True)
    assert parsed == Address("Müller", "xn--bcher-kva.example", "müller@xn--bcher-kva.example")
    assert str(parsed) == "Müller@xn--bcher-kva.example"
    assert parsed.needs_smtputf8
    ascii_local = parse_address("Alice@Bücher.example", utf8=True)
    assert ascii_local == Address("Alice", "xn--bcher-kva.example", "alice@xn--bcher-kva.example")
    assert not ascii_local.needs_smtputf8
    assert parse_address("Alice@Example.org") == Address(
        "Alice", "example.org", "alice@example.org"
    )


# --- one mailbox for every spelling ----------------------------------------------------------


@pytest.mark.parametrize(
    ("spellings", "canonical"),
    [
        (
            [
                "müller@bücher.example",
                nfd("müller@bücher.example"),
                "Müller@BÜCHER.example",
                nfd("MÜLLER@xn--bcher-kva.example"),
                "müller@XN--BCHER-KVA.EXAMPLE",
            ],
            "müller@xn--bcher-kva.example",
        ),
        # Hangul: the NFD spelling is conjoining jamo, which NFC composes into the syllable.
        (["각@example.org", "\u1100\u1161\u11a8@example.org"], "\uac01@example.org"),
        (["nguy\u1ec5n@example.org", "nguye\u0302\u0303n@example.org"], "nguy\u1ec5n@example.org"),
        # Two marks of different classes on one letter, in either order: canonical ordering
        # makes them one.
        (["Nguy\u1ec7n@example.org", "Nguye\u0302\u0323n@example.org"], "nguy\u1ec7n@example.org"),
        (
            ["δοκιμή@παράδειγμα.δοκιμή", "ΔΟΚΙΜΉ@ΠΑΡΆΔΕΙΓΜΑ.ΔΟΚΙΜΉ"],
            "δοκιμή@xn--hxajbheg2az3al.xn--jxalpdlp",
        ),
        (["用户@例子.广告"], "用户@xn--fsqu00a.xn--4rr70v"),
        (["jörg.o'neil+news@example.org"], "jörg.o'neil+news@example.org"),
    ],
)
def test_every_spelling_is_one_mailbox(spellings: list[str], canonical: str) -> None:
    assert {normalize_address(s, utf8=True) for s in spellings} == {canonical}
    assert unicodedata.is_normalized("NFC", canonical)
    assert normalize_address(canonical, utf8=True) == canonical


def test_marks_of_one_class_in_another_order_are_another_name() -> None:
    # U+0302 and U+0303 both sit above: their order is part of the letter, not a spelling.
    assert normalize_address("nguye\u0303\u0302n@example.org", utf8=True) == (
        "nguy\u1ebd\u0302n@example.org"
    )


def test_the_domain_is_kept_as_its_a_label_as_configured_domains_are() -> None:
    domains = ("xn--bcher-kva.example",)
    assert normalize_address("jörg@bücher.example", domains, utf8=True) == (
        "jörg@xn--bcher-kva.example"
    )
    with pytest.raises(UserError) as caught:
        normalize_address("jörg@other.example", domains, utf8=True)
    assert str(caught.value) == (
        "'jörg@other.example' is not in a local domain (configured: xn--bcher-kva.example)"
    )


def test_case_is_lowered_not_folded() -> None:
    # toLowerCase, as ASCII was always lower-cased: ß stays ß, so "straße" is not "strasse".
    assert normalize_address("Straße@example.org", utf8=True) == "straße@example.org"
    assert normalize_address("STRAẞE@example.org", utf8=True) == "straße@example.org"
    assert normalize_address("strasse@example.org", utf8=True) == "strasse@example.org"
    assert split_address("Straße@example.org", utf8=True) == ("Straße", "example.org")


def test_the_local_part_is_at_most_64_octets() -> None:
    assert normalize_address("é" * 32 + "@example.org", utf8=True) == "é" * 32 + "@example.org"
    with pytest.raises(UserError) as caught:
        normalize_address("é" * 33 + "@example.org", utf8=True)
    assert str(caught.value).endswith(": longer than 64 octets")


# --- refused, never mapped -------------------------------------------------------------------


def refusal(address: str) -> str:
    with pytest.raises(UserError) as caught:
        normalize_address(address, utf8=True)
    assert type(caught.value) is UserError
    return str(caught.value)


@pytest.mark.parametrize(
    ("local", "why"),
    [
        ("\u212aelvin", "U+212A KELVIN SIGN is a duplicate of 'K' (a singleton decomposition)"),
        ("\u212bngström", "U+212B ANGSTROM SIGN is a duplicate of 'Å' (a singleton decomposition)"),
        ("\u2126mega", "U+2126 OHM SIGN is a duplicate of 'Ω' (a singleton decomposition)"),
        ("é\u037e", "U+037E GREEK QUESTION MARK is a duplicate of ';' (a singleton decomposition)"),
        ("\uff4düller", "U+FF4D FULLWIDTH LATIN SMALL LETTER M is a fullwidth form of 'm'"),
        ("\uff76ナ", "U+FF76 HALFWIDTH KATAKANA LETTER KA is a halfwidth form of 'カ'"),
        ("\ufb01shé", "U+FB01 LATIN SMALL LIGATURE FI is a ligature of 'fi'"),
        ("café\u00b2", "U+00B2 SUPERSCRIPT TWO is a compatibility form of '2'"),
        ("\U0001d400é", "U+1D400 MATHEMATICAL BOLD CAPITAL A is a compatibility form of 'A'"),
        ("é\u00a0x", "U+00A0 NO-BREAK SPACE is a compatibility form of ' '"),
        ("é\u3000x", "U+3000 IDEOGRAPHIC SPACE is a fullwidth form of ' '"),
        ("\u0958", "U+0958 DEVANAGARI LETTER QA is not in normalized form (NFC writes it 'क़')"),
        ("é\u2215x", "U+2215 DIVISION SLASH is not allowed (PRECIS: symbols)"),
        ("é\u2019x", "U+2019 RIGHT SINGLE QUOTATION MARK is not allowed (PRECIS: punctuation)"),
        (
            "é\u200bx",
            "U+200B ZERO WIDTH SPACE is not allowed (PRECIS: precis ignorable properties)",
        ),
        ("é\u0378", "U+0378 is not allowed (PRECIS: unassigned)"),
        ("é\x85", "U+0085 is not allowed (PRECIS: controls)"),
        ("é\udcff", "U+DCFF is not allowed (PRECIS: other)"),
        ("x\u00b7é", "U+00B7 MIDDLE DOT is not allowed here (PRECIS context rule: middle dot)"),
        (
            "é\u200dx",
            "U+200D ZERO WIDTH JOINER is not allowed here (PRECIS context rule: zero width joiner)",
        ),
        ("אa", "right-to-left text that breaks the Bidi Rule (RFC 5893)"),
    ],
)
def test_look_alikes_and_disallowed_characters_are_refused(local: str, why: str) -> None:
    address = f"{local}@example.org"
    assert refusal(address) == (
        f"{address!r} is not a valid address: bad local part {local!r}: {why}"
    )


@pytest.mark.parametrize("local", ["é/x", "é..x", ".é", "é.", "é%x", "é!x", "é|x", "é`x", "é{x}"])
def test_utf8_keeps_the_folder_safe_ascii_rules(local: str) -> None:
    address = f"{local}@example.org"
    assert refusal(address) == f"{address!r} is not a valid address: bad local part {local!r}"


@pytest.mark.parametrize(
    ("domain", "why"),
    [
        (
            "\u212aelvin.example",
            ": U+212A KELVIN SIGN is a duplicate of 'K' (a singleton decomposition)",
        ),
        ("ｂücher.example", ": U+FF42 FULLWIDTH LATIN SMALL LETTER B is a fullwidth form of 'b'"),
        ("bücher\uff0eexample", ": U+FF0E FULLWIDTH FULL STOP is a fullwidth form of '.'"),
        (
            "bücher\u3002example",
            ": not written in IDNA 2008 labels (UTS #46 would map it to xn--bcher-kva.example)",
        ),
        ("aא.example", ": Invalid direction for codepoint at position 2 in a left-to-right label"),
        ("١٢.example", ": First codepoint in label '١٢' must be directionality L, R or AL"),
        ("-bücher.example", ": Label must not start or end with a hyphen"),
        ("xn--zz.bücher.example", ": Invalid A-label"),
        ("bücher.example.", ""),
        ("bücher", ""),
    ],
)
def test_bad_utf8_domains_are_refused(domain: str, why: str) -> None:
    address = f"jörg@{domain}"
    assert refusal(address) == f"{address!r} is not a valid address: bad domain {domain!r}{why}"


def test_no_allowed_character_lowers_to_ascii_and_each_mailbox_is_stable() -> None:
    """Every code point that may stand alone in a local part (all of Unicode, tried one by
    one): its mailbox name is not ASCII, so no UTF-8 name reaches an ASCII mailbox, and it is
    its own canonical form, so the folder is listed under it."""
    taken = 0
    for code in range(0x80, sys.maxunicode + 1):
        char = chr(code)
        if unicodedata.category(char) not in {"Ll", "Lu", "Lo", "Lt", "Lm", "Nd", "Mn", "Mc"}:
            continue
        try:
            mailbox = normalize_address(f"{char}@example.org", utf8=True)
        except UserError:
            continue
        taken += 1
        assert not mailbox.isascii(), hex(code)
        assert normalize_address(mailbox, utf8=True) == mailbox, hex(code)
    assert taken > 100_000


# Letters with and without marks, from a few scripts, in any case and order.
NAMES = st.text(
    alphabet=st.sampled_from(
        "aeoukAEOUKßẞéÉüÜ\u0301\u0308\u0302\u0323ñçαβγΣσςДджЖ가각\u1100\u1161\u11a8日本"
    ),
    min_size=1,
    max_size=12,
)


@given(NAMES)
def test_nfc_and_nfd_spellings_are_one_canonical_address(name: str) -> None:
    address = f"{name}@bücher.example"
    try:
        canonical = normalize_address(address, utf8=True)
    except UserError:
        for form in ("NFC", "NFD"):
            with pytest.raises(UserError):
                normalize_address(unicodedata.normalize(form, address), utf8=True)
        return
    for form in ("NFC", "NFD"):
        assert normalize_address(unicodedata.normalize(form, address), utf8=True) == canonical
    assert normalize_address(canonical, utf8=True) == canonical
    assert canonical.endswith("@xn--bcher-kva.example")
