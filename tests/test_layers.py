"""Imports run one way (ARCHITECTURE.md, "Modules"): the protocol engine needs nothing of
the rest of smtpkit but its limits; storage never reaches up into the server or the CLI; only
the command line may import the command line."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "smtpkit"


def smtpkit_imports(path: Path) -> set[str]:
    """The smtpkit modules a file imports, as dotted names (``smtpkit.server.loop``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("smtpkit"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("smtpkit"):
            found.add(node.module)
    return found


def modules(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py"))


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


# (folder, what its modules may import from smtpkit: name prefixes)
RULES = [
    ("protocol", ("smtpkit.protocol", "smtpkit.limits")),
    (
        "delivery",
        (
            "smtpkit.delivery",
            "smtpkit.errors",
            "smtpkit.fsutil",
            "smtpkit.users",
            "smtpkit.addresses",
            "smtpkit.limits",
            "smtpkit.protocol.dsn",  # the DSN parameters a queue entry keeps (pure values)
        ),
    ),
    (
        # The queue runner drives the client engine on the server's loop, never the server.
        "outbound",
        (
            "smtpkit.outbound",
            "smtpkit.protocol",
            "smtpkit.delivery",
            "smtpkit.dns",
            "smtpkit.bounce",
            "smtpkit.config",
            "smtpkit.journal",
            "smtpkit.errors",
            "smtpkit.fsutil",
            "smtpkit.users",
            "smtpkit.addresses",
            "smtpkit.limits",
            "smtpkit.server.loop",
            "smtpkit.server.inotify",
        ),
    ),
]


@pytest.mark.parametrize(
    ("path", "allowed"),
    [(path, allowed) for folder, allowed in RULES for path in modules(folder)],
    ids=lambda v: module_name(v) if isinstance(v, Path) else "",
)
def test_lower_layers_import_only_what_is_below_them(path: Path, allowed: tuple[str, ...]) -> None:
    outside = {m for m in smtpkit_imports(path) if not m.startswith(allowed)}
    assert outside == set(), f"{module_name(path)} imports {sorted(outside)}"


@pytest.mark.parametrize(
    "path",
    [p for p in sorted(PACKAGE.rglob("*.py")) if "commands" not in p.relative_to(PACKAGE).parts],
    ids=module_name,
)
def test_only_the_command_line_imports_the_command_line(path: Path) -> None:
    if path.name == "__main__.py":
        return  # the entry point starts it
    assert not {m for m in smtpkit_imports(path) if m.startswith("smtpkit.commands")}
