"""Self-signed TLS certificates for STARTTLS (RFC 3207): for testing and a first start.

Mail servers delivering to port 25 use TLS opportunistically and rarely check the certificate
(RFC 7435, RFC 3207 4.1), so a self-signed one already encrypts the traffic; replace it with one
from a CA (e.g. Let's Encrypt) and send ``smtpkit serve`` a SIGHUP to load it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from smtpkit.addresses import normalize_hostname
from smtpkit.errors import SmtpkitError, UserError
from smtpkit.fsutil import atomic_write, make_dirs

__all__ = [
    "DEFAULT_DAYS",
    "KEY_TYPES",
    "KeyType",
    "MAX_DAYS",
    "SelfSigned",
    "TlsError",
    "make_self_signed",
    "san_name",
    "write_self_signed",
]

KeyType = Literal["ecdsa", "rsa"]
KEY_TYPES: tuple[KeyType, ...] = ("ecdsa", "rsa")
DEFAULT_DAYS = 365
# Certificates are dated from a little in the past so that a peer whose clock is slightly
# behind does not see a certificate that is "not yet valid".
BACKDATE = timedelta(hours=1)
MAX_DAYS = 36500

_KEY_NAMES: dict[KeyType, str] = {"ecdsa": "ECDSA P-256", "rsa": "RSA 2048"}


class TlsError(SmtpkitError):
    """A certificate could not be made or written."""


@dataclass(frozen=True, slots=True)
class SelfSigned:
    """What ``write_self_signed`` wrote."""

    certificate: Path
    key: Path
    hostname: str
    key_type: str
    not_after: datetime
    sha256: str  # fingerprint of the certificate, hex with colons as openssl shows it


def san_name(hostname: str) -> x509.GeneralName:
    """The subjectAltName entry for ``hostname``: an IP address, or a DNS name in its ASCII
    form (``smtpkit.addresses.normalize_hostname``: IDNA 2008, so ``faß.example`` is
    ``xn--fa-hia.example``, as senders look it up, and not ``fass.example``). Raises
    ``TlsError`` for anything else."""
    text = hostname.strip()
    try:
        return x509.IPAddress(ipaddress.ip_address(text.rstrip(".").strip("[]")))
    except ValueError:
        pass
    try:
        return x509.DNSName(normalize_hostname(text))
    except UserError:
        raise TlsError(f"{hostname!r} is not a valid host name") from None


def _new_key(key_type: KeyType) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    if key_type == "ecdsa":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise TlsError(f"unknown key type {key_type!r} (choose from {', '.join(KEY_TYPES)})")


def make_self_signed(
    hostname: str,
    *,
    days: int = DEFAULT_DAYS,
    key_type: KeyType = "ecdsa",
    now: datetime | None = None,
) -> tuple[bytes, bytes]:
    """A new key and a self-signed certificate for ``hostname``: ``(certificate PEM, key PEM)``.

    The certificate names the host in its subjectAltName (RFC 6125 6.4.4: clients check that,
    not the CN), is valid for ``days`` days and may only be used by a TLS server.
    """
    if not 1 <= days <= MAX_DAYS:
        raise TlsError(f"days must be between 1 and {MAX_DAYS}, got {days}")
    san = san_name(hostname)
    key = _new_key(key_type)
    start = (now or datetime.now(UTC)) - BACKDATE
    common_name = str(san.value)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    public = key.public_key()
    # Key usages by key type (RFC 5280 4.2.1.3): RSA key exchange in TLS 1.2 needs
    # keyEncipherment, ECDHE signs with the key (digitalSignature) either way.
    usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=key_type == "rsa",
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + BACKDATE + timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([san]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        # Strict verifiers (OpenSSL's X509_V_FLAG_X509_STRICT, the default of Python 3.13's
        # ssl.create_default_context) want both key identifiers, even on a self-signed one.
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
    )
    cert = builder.sign(key, hashes.SHA256())
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert_pem, key_pem


def write_self_signed(
    certificate: Path,
    key: Path,
    hostname: str,
    *,
    days: int = DEFAULT_DAYS,
    key_type: KeyType = "ecdsa",
    force: bool = False,
) -> SelfSigned:
    """Make a self-signed certificate for ``hostname`` and write it and its key.

    Existing files are replaced only with ``force``. Each file is written atomically (a server
    reloading meanwhile reads the old file or the new one, never half of one); the key first,
    with mode 0600, so that a reload between the two writes sees a mismatched pair and keeps
    its old certificate rather than loading half of the new one. The folder is created (mode
    0700) if needed.
    """
    if not force:
        for path in (certificate, key):
            if path.exists() or path.is_symlink():
                raise TlsError(f"{path} already exists (use --force to replace it)")
    now = datetime.now(UTC).replace(microsecond=0)
    cert_pem, key_pem = make_self_signed(hostname, days=days, key_type=key_type, now=now)
    for path, data, mode in ((key, key_pem, 0o600), (certificate, cert_pem, 0o644)):
        try:
            make_dirs(path.parent, 0o700)
            atomic_write(path, data, mode=mode)
        except OSError as exc:
            raise TlsError(f"cannot write {path}: {exc.strerror or exc}") from None
    cert = x509.load_pem_x509_certificate(cert_pem)
    return SelfSigned(
        certificate=certificate,
        key=key,
        hostname=str(san_name(hostname).value),
        key_type=_KEY_NAMES[key_type],
        not_after=now + timedelta(days=days),
        sha256=cert.fingerprint(hashes.SHA256()).hex(":").upper(),
    )
