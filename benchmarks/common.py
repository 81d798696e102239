"""What every part of the benchmark shares: where it runs, the test addresses, the failure."""

from __future__ import annotations

from pathlib import Path

__all__ = ["DOMAIN", "HOST", "RECIPIENT", "ROOT", "SENDER", "BenchError", "mb"]

ROOT = Path(__file__).resolve().parent.parent
DOMAIN = "bench.test"
SENDER = f"sender@{DOMAIN}"
RECIPIENT = f"user@{DOMAIN}"
HOST = "127.0.0.1"


class BenchError(Exception):
    """A failed run: lost messages, a client error, a server that died. Exit status 1."""


def mb(kb: int) -> float:
    return round(kb / 1024, 1)
