"""DKIM signing: what is signed, as whom, with which keys, and that dkimpy's verifier accepts
the result (its DNS lookup answered from the keys themselves)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import dkim
import pytest

from smtpkit.errors import ConfigError, SmtpkitError
from smtpkit.mailauth.keys import DkimKey, generate
from smtpkit.mailauth.signing import Signer, SigningError, from_domain

MESSAGE = (
    b"Received: from client by mx.example.org\r\n"
    b"From: Ann <ann@example.org>\r\n"
    b"To: bob@example.net\r\n"
    b"Cc: carol@example.net\r\n"
    b"Subject: Tuesday\r\n"
    b"Date: Tue, 03 Nov 2026 10:00:00 +0000\r\n"
    b"Message-ID: <1@example.org>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"X-Mailer: test\r\n"
    b"\r\n"
    b"See you on Tuesday.\r\n"
)

DnsFunc = Callable[..., bytes | None]


def dns_for(*keys: DkimKey) -> DnsFunc:
    """dkimpy's TXT lookup, answered with each key's record at its name (dkimpy asks for
    the absolute name, with the final dot)."""
    records = {f"{key.record_name}.".encode(): key.txt_record().encode() for key in keys}

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return records.get(name)

    return lookup


def tags(field: bytes) -> dict[str, str]:
    """The tags of one DKIM-Signature field, white space removed (folding)."""
    assert field.startswith(b"DKIM-Signature: ")
    value = re.sub(r"\s+", "", field.decode("ascii").split(":", 1)[1])
    return dict(item.split("=", 1) for item in value.split(";") if item)


def fields(signature: bytes) -> list[bytes]:
    """The DKIM-Signature fields of ``sign()``'s result, one each, folding kept."""
    assert signature.endswith(b"\r\n")
    return [b"DKIM-Signature:" + part for part in signature.split(b"DKIM-Signature:")[1:]]


def verifies(signed: bytes, dnsfunc: DnsFunc, index: int = 0) -> bool:
    """Whether the signature at ``index`` (0: topmost) verifies. dkimpy raises for a body
    that does not match, returns False for header fields that do not; any other of its
    errors (a record it cannot parse) is a failure of the test, not a verdict."""
    try:
        result: bool = dkim.DKIM(signed).verify(idx=index, dnsfunc=dnsfunc)
    except dkim.ValidationError:
        return False
    return result


@pytest.fixture
def rsa_key(tmp_path: Path) -> DkimKey:
    return generate(tmp_path, "example.org", "s202611", "rsa")


@pytest.fixture
def ed_key(tmp_path: Path) -> DkimKey:
    return generate(tmp_path, "example.org", "ed202611", "ed25519")


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
def test_each_algorithm_signs_and_verifies(tmp_path: Path, algorithm: str) -> None:
    key = generate(tmp_path, "example.org", "sel", algorithm)
    signature = Signer.from_directory(tmp_path).sign(MESSAGE)
    [field] = fields(signature)
    found = tags(field)
    assert {k: found[k] for k in ("v", "a", "c", "d", "s", "i", "q")} == {
        "v": "1",
        "a": {"rsa": "rsa-sha256", "ed25519": "ed25519-sha256"}[algorithm],
        "c": "relaxed/relaxed",
        "d": "example.org",
        "s": "sel",
        "i": "@example.org",
        "q": "dns/txt",
    }
    assert "l" not in found  # the whole body is signed: nothing may be appended
    # Present fields of common practice, in message order, From once more; never Received
    # (relays add it) nor fields of no meaning to the reader (X-Mailer).
    assert found["h"].split(":") == [
        "from",
        "to",
        "cc",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
        "from",
    ]
    assert verifies(signature + MESSAGE, dns_for(key))


def test_both_keys_sign_rsa_first(tmp_path: Path, rsa_key: DkimKey, ed_key: DkimKey) -> None:
    # RFC 8463: sign with both while not every verifier knows Ed25519. RSA goes on top,
    # where verifiers that check only one signature look, although "ed..." sorts first.
    signature = Signer.from_directory(tmp_path).sign(MESSAGE)
    found = [tags(field) for field in fields(signature)]
    assert [(t["a"], t["s"], t["d"]) for t in found] == [
        ("rsa-sha256", "s202611", "example.org"),
        ("ed25519-sha256", "ed202611", "example.org"),
    ]
    signed = signature + MESSAGE
    dnsfunc = dns_for(rsa_key, ed_key)
    assert verifies(signed, dnsfunc, 0) and verifies(signed, dnsfunc, 1)
    # Each signature stands on its own key: with one record missing, the other still holds.
    assert not verifies(signed, dns_for(ed_key), 0) and verifies(signed, dns_for(ed_key), 1)


def test_a_changed_body_or_header_fails(rsa_key: DkimKey, ed_key: DkimKey) -> None:
    signer = Signer({"example.org": [rsa_key, ed_key]})
    signature = signer.sign(MESSAGE)
    dnsfunc = dns_for(rsa_key, ed_key)
    changed_body = signature + MESSAGE.replace(b"Tuesday.", b"Wednesday.")
    changed_subject = signature + MESSAGE.replace(b"Subject: Tuesday", b"Subject: Friday")
    for signed in (changed_body, changed_subject):
        assert not verifies(signed, dnsfunc, 0) and not verifies(signed, dnsfunc, 1)


def test_relaxed_canonicalization_survives_refolding(rsa_key: DkimKey) -> None:
    # What relays do to a message in transit (RFC 6376 3.4.2, 3.4.4): header case and
    # folding, runs of white space, trailing white space, empty lines at the end.
    signature = Signer({"example.org": [rsa_key]}).sign(MESSAGE)
    moved = (
        MESSAGE.replace(b"Subject: Tuesday", b"SUBJECT:   Tuesday")
        .replace(b"To: bob@example.net", b"To:\r\n\tbob@example.net")
        .replace(b"See you on Tuesday.", b"See  you on Tuesday. ")
        + b"\r\n\r\n"
    )
    assert verifies(signature + moved, dns_for(rsa_key))


def test_from_another_domain_is_not_signed(rsa_key: DkimKey) -> None:
    # A subdomain is signed with its parent's key (tests/test_mailauth_signing.py).
    signer = Signer({"example.org": [rsa_key]})
    for author in (b"ann@example.net", b"ann@example.org.evil.test"):
        assert signer.sign(MESSAGE.replace(b"ann@example.org", author)) == b""


def test_the_from_domain_decides_whatever_its_case(rsa_key: DkimKey) -> None:
    signer = Signer({"example.org": [rsa_key]})
    signature = signer.sign(MESSAGE.replace(b"ann@example.org", b"Ann@EXAMPLE.Org"))
    [field] = fields(signature)
    assert tags(field)["d"] == "example.org"


def test_an_international_domain_signs_as_its_a_label(tmp_path: Path) -> None:
    # RFC 8616 4: d= holds the A-label form, which is also how the config and the key
    # folder name the domain.
    key = generate(tmp_path, "xn--bcher-kva.example", "s1")
    message = MESSAGE.replace(b"ann@example.org", "ann@Bücher.example".encode())
    signature = Signer.from_directory(tmp_path).sign(message)
    [field] = fields(signature)
    assert tags(field)["d"] == "xn--bcher-kva.example"
    assert verifies(signature + message, dns_for(key))


def test_from_is_oversigned(rsa_key: DkimKey) -> None:
    signature = Signer({"example.org": [rsa_key]}).sign(MESSAGE)
    [field] = fields(signature)
    assert tags(field)["h"].split(":").count("from") == 2
    dnsfunc = dns_for(rsa_key)
    on_top = signature + b"From: Mallory <ceo@example.org>\r\n" + MESSAGE
    at_the_end = signature + MESSAGE.replace(
        b"\r\n\r\n", b"\r\nFrom: Mallory <ceo@example.org>\r\n\r\n", 1
    )
    assert verifies(signature + MESSAGE, dnsfunc)
    assert not verifies(on_top, dnsfunc) and not verifies(at_the_end, dnsfunc)


class _HAsWritten(list[bytes]):
    """h= as written: dkimpy's verifier adds a "from" of its own to the list it checks, to
    guard signers that do not oversign; this list ignores that addition."""

    def append(self, item: bytes) -> None:
        pass


def _verify_h_as_written(signed: bytes, dnsfunc: DnsFunc) -> bool:
    verifier = dkim.DKIM(signed)
    sig, include, sigheaders = verifier.verify_headerprep(0)
    result: bool = verifier.verify_sig(sig, _HAsWritten(include), sigheaders[0], dnsfunc)
    return result


def test_oversigning_protects_with_any_verifier(rsa_key: DkimKey) -> None:
    # The protection is the signature's own, not dkimpy's verifier's: a verifier that hashes
    # exactly the fields h= names refuses an added From: as well.
    dnsfunc = dns_for(rsa_key)
    added = b"From: Mallory <ceo@example.org>\r\n"
    signature = Signer({"example.org": [rsa_key]}).sign(MESSAGE)
    assert _verify_h_as_written(signature + MESSAGE, dnsfunc)
    assert not _verify_h_as_written(signature + added + MESSAGE, dnsfunc)
    # The same check would let the added From: through a signature that names From once.
    once = dkim.sign(
        MESSAGE,
        b"s202611",
        b"example.org",
        rsa_key.signing_key(),
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=[b"from", b"subject"],
    )
    assert _verify_h_as_written(once + added + MESSAGE, dnsfunc)


@pytest.mark.parametrize(
    "header",
    [
        b"To: bob@example.net\r\n",  # no From: at all
        b"From: ann@example.org\r\nFrom: bob@example.org\r\n",  # two From: fields
        b"From: ann@example.org, bob@example.org\r\n",  # two authors
        b"From: ann@example.org <ceo@example.org>\r\n",  # read two ways
        b"From: undisclosed:;\r\n",  # a group without addresses
        b"From: <>\r\n",
        b"From: ann@[192.0.2.1]\r\n",
        b"From: ann@\xff.example.org\r\n",  # not UTF-8
    ],
)
def test_no_single_author_domain_is_not_signed(rsa_key: DkimKey, header: bytes) -> None:
    message = header + b"Subject: x\r\n\r\nbody\r\n"
    assert from_domain(message) is None
    assert Signer({"example.org": [rsa_key]}).sign(message) == b""


@pytest.mark.parametrize(
    ("message", "domain"),
    [
        (MESSAGE, "example.org"),
        (b'FROM:\r\n "Ann, A."\r\n\t<ann@Example.ORG>\r\n\r\n', "example.org"),  # folded
        (b"from: ann@example.org (Ann)\nTo: b@example.net\n\nbody\n", "example.org"),  # LF
        (b"Subject: x\r\nFrom: ann@example.org", "example.org"),  # no body
        ("From: Ann <ann@bücher.example>\r\n\r\n".encode(), "xn--bcher-kva.example"),
        (b"From: ann@example.org,\r\n\r\n", "example.org"),  # an empty list item
        # A From: in the body is not the author.
        (b"Subject: x\r\n\r\nFrom: ann@example.org\r\n", None),
        (b"\r\nFrom: ann@example.org\r\n", None),
    ],
)
def test_from_domain(message: bytes, domain: str | None) -> None:
    assert from_domain(message) == domain


def test_a_message_dkimpy_cannot_parse_is_an_error(rsa_key: DkimKey) -> None:
    signer = Signer({"example.org": [rsa_key]})
    with pytest.raises(SigningError) as info:
        signer.sign(b"From: ann@example.org\r\nnot a header field\r\n\r\nbody\r\n")
    assert str(info.value) == (
        "cannot DKIM-sign mail from example.org: "
        "Unexpected characters in RFC822 header: b'not a header field'"
    )
    assert isinstance(info.value, SmtpkitError)
    with pytest.raises(SigningError) as info:
        signer.sign(b" folded\r\nFrom: ann@example.org\r\n\r\nbody\r\n")
    assert str(info.value) == (
        "cannot DKIM-sign mail from example.org: the header section starts with a continuation line"
    )


def test_a_message_without_a_key_is_not_even_parsed(rsa_key: DkimKey) -> None:
    # Mail from other domains goes on whatever its form: not signing it needs no parse.
    signer = Signer({"example.org": [rsa_key]})
    assert signer.sign(b"From: ann@example.net\r\nnot a header field\r\n\r\n") == b""


def test_no_keys(tmp_path: Path) -> None:
    signer = Signer.from_directory(tmp_path)
    assert not signer
    assert signer.sign(MESSAGE) == b""
    assert not Signer({"example.org": []})


def test_keys_of_any_domain_make_a_signer(rsa_key: DkimKey) -> None:
    assert Signer({"example.org": [rsa_key]})


def test_a_bad_key_file_is_a_config_error(tmp_path: Path) -> None:
    folder = tmp_path / "dkim" / "example.org"
    folder.mkdir(parents=True)
    (folder / "s1.key").write_text("not a key\n")
    with pytest.raises(ConfigError, match="s1.key: not a DKIM private key"):
        Signer.from_directory(tmp_path)
