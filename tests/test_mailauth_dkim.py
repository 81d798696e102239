"""DKIM verification (mailauth/dkimverify.py): messages signed here with dkimpy, keys made here
with cryptography and published in a zone served by the real DNS server NSD.

``Key``, ``sign``, ``txt`` and ``MESSAGE`` serve the DMARC and verify tests too.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from smtpkit.dns import make_resolver
from smtpkit.mailauth.dkimverify import MAX_SIGNATURES, verify_dkim
from smtpkit.mailauth.results import Deadline, DkimResult
from tests.dnsserver import DnsServer, filtering_nameserver, run_nsd

MESSAGE = (
    b"From: Alice <alice@dkim.test>\r\n"
    b"To: Bob <bob@example.org>\r\n"
    b"Subject: Hello\r\n"
    b"Date: Mon, 30 Nov 2026 08:00:00 +0000\r\n"
    b"Message-ID: <1@dkim.test>\r\n"
    b"\r\n"
    b"Hello Bob,\r\n"
    b"\r\n"
    b"this is signed.\r\n"
)

# What our server puts on top when it stores a message (after the signature was made).
STORED_ON_TOP = (
    b"Return-Path: <alice@dkim.test>\r\n"
    b"Received: from mail.dkim.test (mail.dkim.test [127.0.0.2])\r\n"
    b"\tby mx.example.org with ESMTP; Mon, 30 Nov 2026 08:00:01 +0000\r\n"
)


@dataclass(frozen=True)
class Key:
    """A DKIM key pair: the TXT record to publish and the private key as dkimpy signs with."""

    private: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

    @classmethod
    def rsa(cls, bits: int = 2048) -> Key:
        return cls(rsa.generate_private_key(public_exponent=65537, key_size=bits))

    @classmethod
    def ed25519(cls) -> Key:
        return cls(ed25519.Ed25519PrivateKey.generate())

    @property
    def algorithm(self) -> bytes:
        if isinstance(self.private, ed25519.Ed25519PrivateKey):
            return b"ed25519-sha256"
        return b"rsa-sha256"

    def record(self) -> str:
        public = self.private.public_key()
        if isinstance(public, ed25519.Ed25519PublicKey):
            raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            kind = "ed25519"
        else:
            raw = public.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            kind = "rsa"
        return f"v=DKIM1; k={kind}; p={base64.b64encode(raw).decode('ascii')}"

    def signing_key(self) -> bytes:
        if isinstance(self.private, ed25519.Ed25519PrivateKey):
            raw = self.private.private_bytes(
                serialization.Encoding.Raw,
                serialization.PrivateFormat.Raw,
                serialization.NoEncryption(),
            )
            return base64.b64encode(raw)
        return self.private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )


def sign(
    message: bytes, key: Key, domain: str, selector: str, algorithm: bytes | None = None
) -> bytes:
    """``message`` with a DKIM-Signature (relaxed/relaxed) on top."""
    field = dkim.sign(
        message,
        selector.encode("ascii"),
        domain.encode("ascii"),
        key.signing_key(),
        canonicalize=(b"relaxed", b"relaxed"),
        signature_algorithm=algorithm or key.algorithm,
        include_headers=[b"from", b"to", b"subject", b"date", b"message-id"],
    )
    assert isinstance(field, bytes)
    return field + message


def txt(name: str, text: str) -> str:
    """A zone-file TXT line; long text split into strings of at most 255 octets (RFC 1035
    3.3.14), which make one record again when joined."""
    chunks = [text[i : i + 255] for i in range(0, len(text), 255)] or [""]
    return f"{name} IN TXT " + " ".join(f'"{c}"' for c in chunks)


HEAD = """\
$TTL 60
@          IN SOA   ns hostmaster 1 3600 600 86400 60
@          IN NS    ns
ns         IN A     127.0.0.1
"""


@pytest.fixture(scope="module")
def keys() -> dict[str, Key]:
    return {"rsa": Key.rsa(), "ed": Key.ed25519(), "other": Key.rsa()}


@pytest.fixture(scope="module")
def nameserver(keys: dict[str, Key]) -> Iterator[DnsServer]:
    zone = "\n".join(
        [
            "$ORIGIN dkim.test.",
            HEAD,
            txt("rsa._domainkey", keys["rsa"].record()),
            txt("ed._domainkey", keys["ed"].record()),
            txt("slow._domainkey", keys["rsa"].record()),
            txt("revoked._domainkey", "v=DKIM1; k=rsa; p="),
            txt("garbage._domainkey", "v=DKIM1; k=rsa; p=bm90IGEga2V5"),
            txt("wrongversion._domainkey", "v=DKIM2; " + keys["rsa"].record()[9:]),
            "nodata._domainkey IN A 127.0.0.1",
            "",
        ]
    )
    with run_nsd({"dkim.test": zone}) as server:
        yield server


def verify(
    server: DnsServer | str, message: bytes, time_limit: float = 5
) -> tuple[DkimResult, ...]:
    nameserver = server if isinstance(server, str) else server.nameserver
    return verify_dkim(message, make_resolver(nameserver, 2), Deadline.after(time_limit))


def test_zone_text_splits_long_records() -> None:
    line = txt("k", "a" * 300)
    assert line == 'k IN TXT "' + "a" * 255 + '" "' + "a" * 45 + '"'


def test_unsigned(nameserver: DnsServer, keys: dict[str, Key]) -> None:
    assert verify(nameserver, MESSAGE) == ()
    # A signature quoted in the body is no signature of this message.
    quoted = sign(MESSAGE, keys["rsa"], "dkim.test", "rsa")
    assert verify(nameserver, MESSAGE + quoted) == ()


def test_rsa_pass_as_stored(nameserver: DnsServer, keys: dict[str, Key]) -> None:
    # Our Return-Path: and Received: on top were not signed and change nothing.
    message = STORED_ON_TOP + sign(MESSAGE, keys["rsa"], "dkim.test", "rsa")
    assert verify(nameserver, message) == (DkimResult("pass", "dkim.test", "rsa", "rsa-sha256"),)


def test_ed25519_pass(nameserver: DnsServer, keys: dict[str, Key]) -> None:
    message = sign(MESSAGE, keys["ed"], "dkim.test", "ed")
    assert verify(nameserver, message) == (DkimResult("pass", "dkim.test", "ed", "ed25519-sha256"),)


def test_relaxed_survives_header_rewrapping(nameserver: DnsServer, keys: dict[str, Key]) -> None:
    signed = sign(MESSAGE, keys["rsa"], "dkim.test", "rsa")
    rewrapped = signed.replace(b"Subject: Hello\r\n", b"Subject:   Hello\r\n")
    assert verify(nameserver, rewrapped)[0].result == "pass"


def test_body_changed_after_signing_fails(nameserver: DnsServer, keys: dict[str, Key]) -> None:
    signed = sign(MESSAGE, keys["rsa"], "dkim.test", "rsa")
    changed = signed.replace(b"this is signed.", b"this is changed.")
    assert verify(nameserver, changed) == (
        DkimResult("fail", "dkim.test", "rsa", "rsa-sha256", "body hash mismatch"),
    )


def test_signed_header_changed_fails(nameserver: DnsServer, keys: dict[str, Key]) -> None:
    for key, selector, algorithm in (
        (keys["rsa"], "rsa", "rsa-sha256"),
        (keys["ed"], "ed", "ed25519-sha256"),
    ):
        signed = sign(MESSAGE, key, "dkim.test", selector)
        changed = signed.replace(b"Subject: Hello", b"Subject: Goodbye")
        assert verify(nameserver, changed) == (
            DkimResult("fail", "dkim.test", selector, algorithm, "signature did not verify"),
        )


def test_key_of_another_pair_fails(nameserver: DnsServer, keys: dict[str, Key]) -> None:
    message = sign(MESSAGE, keys["other"], "dkim.test", "rsa")
    assert verify(nameserver, message) == (
        DkimResult("fail", "dkim.test", "rsa", "rsa-sha256", "signature did not verify"),
    )


@pytest.mark.parametrize(
    ("selector", "reason"),
    [
        ("unknown", "no key for signature"),  # NXDOMAIN (RFC 6376 6.1.2)
        ("nodata", "no key for signature"),  # the name exists, without TXT
        ("revoked", "key revoked"),  # an empty p= (RFC 6376 3.6.1)
        ("garbage", "unusable key: could not parse RSA public key"),
        ("wrongversion", "unusable key: bad version"),
    ],
)
def test_missing_or_unusable_key_is_permerror(
    nameserver: DnsServer, keys: dict[str, Key], selector: str, reason: str
) -> None:
    message = sign(MESSAGE, keys["rsa"], "dkim.test", selector)
    assert verify(nameserver, message) == (
        DkimResult("permerror", "dkim.test", selector, "rsa-sha256", reason),
    )


def test_unanswered_key_lookup_is_temperror(nameserver: DnsServer, keys: dict[str, Key]) -> None:
    def drop(name: str, rdtype: str) -> bool:
        return name == "slow._domainkey.dkim.test"

    message = sign(MESSAGE, keys["rsa"], "dkim.test", "slow")
    with filtering_nameserver(nameserver, drop) as server:
        resolver = make_resolver(server.nameserver, 0.5)
        found = verify_dkim(message, resolver, Deadline.after(5))
    assert found == (
        DkimResult("temperror", "dkim.test", "slow", "rsa-sha256", "key lookup timed out"),
    )


def test_no_time_left_is_temperror(nameserver: DnsServer, keys: dict[str, Key]) -> None:
    message = sign(MESSAGE, keys["rsa"], "dkim.test", "rsa")
    assert verify(nameserver, message, time_limit=0) == (
        DkimResult(
            "temperror", "dkim.test", "rsa", "rsa-sha256", "no time left to look up the key"
        ),
    )


def test_one_result_per_signature_top_first(nameserver: DnsServer, keys: dict[str, Key]) -> None:
    message = sign(MESSAGE, keys["rsa"], "dkim.test", "rsa")
    message = sign(message, keys["ed"], "dkim.test", "ed")
    message = sign(message, keys["rsa"], "dkim.test", "unknown")
    assert verify(nameserver, message) == (
        DkimResult("permerror", "dkim.test", "unknown", "rsa-sha256", "no key for signature"),
        DkimResult("pass", "dkim.test", "ed", "ed25519-sha256"),
        DkimResult("pass", "dkim.test", "rsa", "rsa-sha256"),
    )


def test_rsa_sha1_is_not_accepted(nameserver: DnsServer, keys: dict[str, Key]) -> None:
    # RFC 8301 3.1: rsa-sha1 MUST NOT be used for verifying; no key is even looked up.
    message = sign(MESSAGE, keys["rsa"], "dkim.test", "rsa", algorithm=b"rsa-sha1")
    assert verify(nameserver, message) == (
        DkimResult("policy", "dkim.test", "rsa", "rsa-sha1", "rsa-sha1 is not accepted (RFC 8301)"),
    )


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        (
            b"DKIM-Signature: v=1; a=rsa-sha256; d=dkim.test; s=rsa; h=from; bh=AAAA\r\n",
            DkimResult(
                "neutral", "dkim.test", "rsa", "rsa-sha256", "signature unusable: missing b="
            ),
        ),
        (
            b"DKIM-Signature: v=1; a=rsa-sha256; d=dkim.test; d=other.test\r\n",
            DkimResult("neutral", "", "", "", "signature unusable: duplicate tag d"),
        ),
        (
            b"DKIM-Signature: v=1; a=rsa-md5; b=AAAA; bh=AAAA; d=dkim.test; h=from; s=rsa\r\n",
            DkimResult(
                "neutral",
                "dkim.test",
                "rsa",
                "rsa-md5",
                "signature unusable: unknown signature algorithm: rsa-md5",
            ),
        ),
    ],
)
def test_broken_signature_is_neutral(
    nameserver: DnsServer, field: bytes, expected: DkimResult
) -> None:
    # RFC 8601 2.7.1: neutral, "the signature or signatures contained syntax errors".
    assert verify(nameserver, field + MESSAGE) == (expected,)


def test_at_most_max_signatures(nameserver: DnsServer, keys: dict[str, Key]) -> None:
    message = MESSAGE
    for _ in range(MAX_SIGNATURES + 2):
        message = sign(message, keys["ed"], "dkim.test", "ed")
    found = verify(nameserver, message)
    assert found == (DkimResult("pass", "dkim.test", "ed", "ed25519-sha256"),) * MAX_SIGNATURES


def test_unparsable_header_section(nameserver: DnsServer, keys: dict[str, Key]) -> None:
    # dkimpy cannot split a header section with a line that is no field: the signature in it
    # is reported, as permerror; without one there is nothing to report.
    signed = sign(MESSAGE, keys["rsa"], "dkim.test", "rsa")
    assert verify(nameserver, b"no colon here\r\n" + signed) == (
        DkimResult(
            "permerror",
            "",
            "",
            "",
            "header section unusable: Unexpected characters in RFC822 header: no colon here",
        ),
    )
    assert verify(nameserver, b"no colon here\r\n" + MESSAGE) == ()
