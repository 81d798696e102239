"""One host-name label rule (addresses.is_host_name) for every name smtpkit checks: domains,
host names, the reporting host of a delivery report and DKIM selectors."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from smtpkit.addresses import is_host_name, is_valid_domain, normalize_hostname
from smtpkit.bounce import OriginalEnvelope, RecipientStatus, build_report
from smtpkit.errors import UserError
from smtpkit.mailauth.keys import parse_selector

PACKAGE = Path(__file__).resolve().parent.parent / "smtpkit"

NAMES = [
    ("mx1.example.org", True),
    ("localhost", True),
    ("MX1.Example.ORG", True),
    ("a-b.c-d", True),
    ("1.2.3", True),
    ("x" * 63 + ".example", True),
    ("x" * 64 + ".example", False),
    (".".join(["abcdefghi"] * 25) + ".abc", True),  # 253 octets
    (".".join(["abcdefghi"] * 25) + ".abcd", False),  # 254
    ("", False),
    ("-mx.example", False),
    ("mx-.example", False),
    ("mx..example", False),
    ("mx.example.", False),
    ("mx_1.example", False),
    ("mx 1.example", False),
    ("mx.example\n", False),
    ("b\u00fccher.example", False),  # a U-label: only callers that convert it take it
    ("\u212a.example", False),  # KELVIN SIGN, which [a-z] with IGNORECASE would match
    ("[192.0.2.1]", False),
]


def reports(host: str) -> bool:
    envelope = OriginalEnvelope("a@example.net", datetime(2026, 1, 1, tzinfo=UTC))
    status = RecipientStatus("b@example.org", action="failed", status="5.1.1")
    try:
        build_report(host, envelope, [status], io.BytesIO(b"Subject: x\r\n\r\nbody\r\n"))
    except ValueError as exc:
        assert "reporting host" in str(exc)
        return False
    return True


def selects(name: str) -> bool:
    try:
        parse_selector(name)
    except ValueError:
        return False
    return True


def normalizes(name: str) -> bool:
    try:
        normalize_hostname(name)
    except UserError:
        return False
    return True


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("name", "valid"), NAMES)
def test_one_rule_for_every_name(name: str, valid: bool) -> None:
    assert is_host_name(name) is valid
    assert reports(name) is valid
    assert selects(name) is valid
    assert is_valid_domain(name) is (valid and "." in name and name == name.lower())
    if name.isascii() and not name.endswith(".") and name == name.strip():
        # normalize_hostname also takes a final dot, spaces around and U-labels.
        assert normalizes(name) is valid


@pytest.mark.timeout(30)
def test_no_module_keeps_a_label_pattern_of_its_own() -> None:
    label = re.compile(r"\{0,61\}")
    owners = [
        str(path.relative_to(PACKAGE))
        for path in sorted(PACKAGE.rglob("*.py"))
        if label.search(path.read_text(encoding="utf-8"))
    ]
    assert owners == ["addresses.py"]
