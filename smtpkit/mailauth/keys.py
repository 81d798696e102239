"""DKIM keys on disk: ``DIR/dkim/DOMAIN/SELECTOR.key``, one private key per file (PEM,
PKCS #8, mode 0600), RSA or Ed25519. The folder layout is the whole key store: every key
present signs mail from its domain, and its public half is the TXT record to publish at
``SELECTOR._domainkey.DOMAIN`` (RFC 6376 3.6.2; Ed25519 keys as RFC 8463 3.1 encodes them).
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from smtpkit.addresses import is_host_name
from smtpkit.errors import ConfigError
from smtpkit.fsutil import atomic_write, make_dirs

__all__ = [
    "ALGORITHMS",
    "DkimKey",
    "KEYS_FOLDER",
    "generate",
    "load_keys",
    "parse_selector",
]

KEYS_FOLDER = "dkim"
ALGORITHMS = ("rsa", "ed25519")
RSA_BITS = 2048
SUFFIX = ".key"


def parse_selector(selector: str) -> str:
    """The selector, lower-cased; ValueError when it is not a dot-separated run of DNS
    labels (it names a file and a DNS name both)."""
    # RFC 6376 3.1: one or more sub-domain labels; LDH ones only (addresses.is_host_name),
    # so that the selector is also a safe file name.
    if not is_host_name(selector):
        raise ValueError(f"invalid DKIM selector {selector!r}: letters, digits, '-' and '.'")
    return selector.lower()


@dataclass(frozen=True, slots=True)
class DkimKey:
    """One private key: which domain it signs for, its selector, type and file."""

    domain: str
    selector: str
    algorithm: str  # "rsa" | "ed25519"
    path: Path
    private: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey = field(repr=False)

    @property
    def record_name(self) -> str:
        """Where the public key is published."""
        return f"{self.selector}._domainkey.{self.domain}"

    @property
    def public_data(self) -> str:
        """The ``p=`` value: an RSA key's SubjectPublicKeyInfo (RFC 6376 3.6.1), an Ed25519
        key's 32 raw bytes (RFC 8463 4.2), in base64."""
        public = self.private.public_key()
        if isinstance(public, ed25519.Ed25519PublicKey):
            raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        else:
            raw = public.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        return base64.b64encode(raw).decode("ascii")

    def txt_record(self) -> str:
        """The TXT record's text, as it should be published."""
        return f"v=DKIM1; k={self.algorithm}; p={self.public_data}"

    def signing_key(self) -> bytes:
        """The private key in the form dkimpy signs with: PEM for RSA; for Ed25519 the
        base64 of the 32-byte seed (RFC 8463)."""
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


def _domain_folder(directory: Path, domain: str) -> Path:
    return directory / KEYS_FOLDER / domain.lower()


def generate(directory: Path, domain: str, selector: str, algorithm: str = "rsa") -> DkimKey:
    """Make a key and write it to ``DIR/dkim/DOMAIN/SELECTOR.key`` (mode 0600, atomically).
    ``domain`` must already be validated (a configured domain). FileExistsError when that
    selector already has a key: a published record would no longer match it."""
    selector = parse_selector(selector)
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown key type {algorithm!r}: rsa or ed25519")
    folder = _domain_folder(directory, domain)
    path = folder / f"{selector}{SUFFIX}"
    if path.exists():
        raise FileExistsError(f"{path} already exists")
    private: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    if algorithm == "rsa":
        private = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    else:
        private = ed25519.Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    make_dirs(folder, mode=0o700)
    atomic_write(path, pem, mode=0o600)
    return DkimKey(domain.lower(), selector, algorithm, path, private)


def _load(path: Path, domain: str) -> DkimKey:
    try:
        selector = parse_selector(path.name[: -len(SUFFIX)])
        private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: not a DKIM private key ({exc})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}") from None
    if isinstance(private, ed25519.Ed25519PrivateKey):
        return DkimKey(domain, selector, "ed25519", path, private)
    if isinstance(private, rsa.RSAPrivateKey):
        if private.key_size < 1024:  # RFC 8301 3.2: verifiers refuse keys under 1024 bits
            raise ConfigError(f"{path}: an RSA key of {private.key_size} bits is too short")
        return DkimKey(domain, selector, "rsa", path, private)
    raise ConfigError(f"{path}: a DKIM key is RSA or Ed25519, not {type(private).__name__}")


def load_keys(directory: Path) -> dict[str, tuple[DkimKey, ...]]:
    """Every key below ``DIR/dkim``, by domain (lower case), in selector order. No folder:
    no keys. A file that is not a usable key is a ConfigError naming it."""
    base = directory / KEYS_FOLDER
    found: dict[str, tuple[DkimKey, ...]] = {}
    try:
        domains = sorted(os.scandir(base), key=lambda e: e.name)
    except FileNotFoundError:
        return found
    except OSError as exc:
        raise ConfigError(f"{base}: {exc.strerror or exc}") from None
    for entry in domains:
        if not entry.is_dir(follow_symlinks=False) or entry.name.startswith("."):
            continue
        domain = entry.name.lower()
        keys = [
            _load(Path(item.path), domain)
            for item in sorted(os.scandir(entry.path), key=lambda e: e.name)
            if item.name.endswith(SUFFIX) and item.is_file(follow_symlinks=False)
        ]
        if keys:
            found[domain] = tuple(keys)
    return found
