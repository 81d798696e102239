"""DKIM signing with a parent domain's keys: mail from a domain without keys of its own (the
server's reports, From: MAILER-DAEMON@server.hostname) is signed by the closest parent
domain with keys, within the same organizational domain, and by no other."""

from __future__ import annotations

from pathlib import Path

import pytest

from smtpkit.mailauth import dmarc
from smtpkit.mailauth.keys import DkimKey, generate
from smtpkit.mailauth.signing import Signer
from tests.test_signing import MESSAGE, dns_for, fields, tags, verifies


def _from(author: str) -> bytes:
    return MESSAGE.replace(b"ann@example.org", author.encode())


@pytest.fixture
def org_key(tmp_path: Path) -> DkimKey:
    return generate(tmp_path, "example.org", "s202611", "rsa")


@pytest.mark.parametrize("author", ["MAILER-DAEMON@mx.example.org", "ann@a.b.News.Example.ORG"])
def test_a_subdomain_without_keys_is_signed_by_its_parent(org_key: DkimKey, author: str) -> None:
    message = _from(author)
    signature = Signer({"example.org": [org_key]}).sign(message)
    [field] = fields(signature)
    found = tags(field)
    assert (found["d"], found["s"], found["i"]) == ("example.org", "s202611", "@example.org")
    assert verifies(signature + message, dns_for(org_key))
    # What a receiver's DMARC makes of it: relaxed alignment passes, strict does not.
    domain = author.rpartition("@")[2]
    assert dmarc.aligned(found["d"], domain, "r")
    assert not dmarc.aligned(found["d"], domain, "s")


def test_the_closest_parent_with_keys_signs(tmp_path: Path, org_key: DkimKey) -> None:
    news = generate(tmp_path, "news.example.org", "n1", "ed25519")
    signer = Signer.from_directory(tmp_path)
    assert signer.keys_for("mx.news.example.org") == "news.example.org"
    assert signer.keys_for("news.example.org") == "news.example.org"
    assert signer.keys_for("mx.example.org") == "example.org"
    message = _from("MAILER-DAEMON@mx.news.example.org")
    signature = signer.sign(message)
    [field] = fields(signature)  # only news.example.org's key: not the parent's too
    assert (tags(field)["d"], tags(field)["s"]) == ("news.example.org", "n1")
    assert verifies(signature + message, dns_for(news))


def test_a_domain_with_keys_uses_only_its_own(tmp_path: Path, org_key: DkimKey) -> None:
    generate(tmp_path, "news.example.org", "n1", "ed25519")
    signature = Signer.from_directory(tmp_path).sign(MESSAGE)
    assert [tags(f)["d"] for f in fields(signature)] == ["example.org"]


@pytest.mark.parametrize(
    ("keys_of", "author"),
    [
        # Beyond the organizational domain: a public suffix's key signs no one's mail.
        ("org", "ann@example.org"),
        ("co.uk", "ann@example.co.uk"),
        # A public suffix of the private section: each site is an organization of its own.
        ("github.io", "ann@ann.github.io"),
        # The test TLD is unknown to the list: "*" makes example.test an organization.
        ("test", "MAILER-DAEMON@mx.example.test"),
        # Not a parent at all.
        ("example.org", "ann@example.org.evil.test"),
        ("example.org", "ann@badexample.org"),
        ("news.example.org", "ann@example.org"),
    ],
)
def test_no_key_beyond_the_organizational_domain(tmp_path: Path, keys_of: str, author: str) -> None:
    key = generate(tmp_path, keys_of, "s1", "ed25519")
    signer = Signer({keys_of: [key]})
    assert signer.keys_for(author.rpartition("@")[2].lower()) is None
    assert signer.sign(_from(author)) == b""


def test_without_keys_nothing_signs(tmp_path: Path) -> None:
    signer = Signer.from_directory(tmp_path)
    assert signer.keys_for("mx.example.org") is None
    assert signer.sign(_from("MAILER-DAEMON@mx.example.org")) == b""
