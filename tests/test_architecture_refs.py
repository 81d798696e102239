"""Code comments point at ARCHITECTURE.md by section name: every name they give must be a
heading of that page, or a newcomer following the pointer finds nothing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# ARCHITECTURE.md, "Section" (the name may wrap onto the next line of a comment).
POINTER = re.compile(r'ARCHITECTURE\.md,\s+(?:#\s*)?"([^"]+)"')


def headings() -> set[str]:
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    return {m.group(1).strip() for m in re.finditer(r"^#{2,4}\s+(.+)$", text, re.MULTILINE)}


def pointers() -> list[tuple[str, str]]:
    found = []
    for path in sorted((ROOT / "smtpkit").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for match in POINTER.finditer(text):
            name = " ".join(match.group(1).split())
            found.append((str(path.relative_to(ROOT)), name))
    return found


@pytest.mark.timeout(30)
def test_every_pointer_names_a_section() -> None:
    found = pointers()
    assert found, "no pointers found: the pattern no longer matches the comments"
    known = headings()
    missing = [(path, name) for path, name in found if name not in known]
    assert missing == [], f"sections that ARCHITECTURE.md does not have: {missing}"
