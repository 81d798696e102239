"""smtpkit: a small, durable SMTP server for people who run their own domain."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
