"""smtpkit.tls (self-signed certificates) and the server's TLS context, with real handshakes
between two ssl objects in memory."""

from __future__ import annotations

import ipaddress
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from smtpkit.config import TlsConfig
from smtpkit.errors import ConfigError, SmtpkitError
from smtpkit.server.server import make_tls_context
from smtpkit.tls import TlsError, make_self_signed, san_name, write_self_signed


def _write_pair(folder: Path, hostname: str = "mx.example.org", **kw: object) -> TlsConfig:
    cert, key = folder / "cert.pem", folder / "key.pem"
    write_self_signed(cert, key, hostname, **kw)  # type: ignore[arg-type]
    return TlsConfig(certificate=cert, key=key)


def client_context(cafile: Path) -> ssl.SSLContext:
    """What a careful sending MTA uses: verify the chain and the host name, strictly."""
    context = ssl.create_default_context(cafile=str(cafile))
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    return context


def handshake(server: ssl.SSLContext, client: ssl.SSLContext, hostname: str) -> ssl.SSLObject:
    """Run a TLS handshake between two in-memory ssl objects; return the client side."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    cli = client.wrap_bio(c_in, c_out, server_hostname=hostname)
    srv = server.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(20):
        for name, obj in (("client", cli), ("server", srv)):
            if not done[name]:
                try:
                    obj.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return cli
    raise AssertionError("handshake did not finish")


# --- the certificate ---------------------------------------------------------------------------


def test_self_signed_certificate_names_the_host_and_is_for_servers_only() -> None:
    now = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    cert_pem, key_pem = make_self_signed("MX.Example.org", days=30, now=now)
    cert = x509.load_pem_x509_certificate(cert_pem)
    key = load_pem_private_key(key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert cert.public_key() == key.public_key()
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["mx.example.org"]
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "mx.example.org"
    assert cert.issuer == cert.subject
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca is False
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_cert_sign
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    # Backdated an hour for clocks that lag; valid for exactly the days asked after now.
    assert cert.not_valid_before_utc == datetime(2030, 1, 2, 2, 4, 5, tzinfo=UTC)
    assert cert.not_valid_after_utc == datetime(2030, 2, 1, 3, 4, 5, tzinfo=UTC)


def test_rsa_keys_and_fresh_serials() -> None:
    first, key_pem = make_self_signed("mx.example.org", key_type="rsa")
    key = load_pem_private_key(key_pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    usage = x509.load_pem_x509_certificate(first).extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.value.key_encipherment  # RSA key exchange of TLS 1.2 clients
    second, _ = make_self_signed("mx.example.org", key_type="rsa")
    serials = {x509.load_pem_x509_certificate(pem).serial_number for pem in (first, second)}
    assert len(serials) == 2


@pytest.mark.parametrize(
    ("hostname", "expected"),
    [
        ("localhost", x509.DNSName("localhost")),
        ("mail.example.org.", x509.DNSName("mail.example.org")),
        ("bücher.example", x509.DNSName("xn--bcher-kva.example")),
        # IDNA 2008 (UTS #46 non-transitional), the rule of smtpkit.addresses: the sharp s is
        # kept, so faß.example and fass.example are two names, as they are in DNS.
        ("faß.example", x509.DNSName("xn--fa-hia.example")),
        ("FASS.example", x509.DNSName("fass.example")),
        ("192.0.2.25.", x509.IPAddress(ipaddress.ip_address("192.0.2.25"))),
        ("192.0.2.25", x509.IPAddress(ipaddress.ip_address("192.0.2.25"))),
        ("[2001:db8::25]", x509.IPAddress(ipaddress.ip_address("2001:db8::25"))),
    ],
)
def test_san_name_forms(hostname: str, expected: x509.GeneralName) -> None:
    assert san_name(hostname) == expected


@pytest.mark.parametrize(
    "hostname",
    ["", "mx..example.org", "-mx.example.org", "mx_1.example.org", "a b", "x" * 64,
     "mx.example.org..", "☃.example"],
)  # fmt: skip
def test_san_name_refuses_what_is_not_a_host_name(hostname: str) -> None:
    with pytest.raises(TlsError) as info:
        san_name(hostname)
    assert str(info.value) == f"{hostname!r} is not a valid host name"


def test_certificate_for_an_international_name_keeps_the_sharp_s() -> None:
    cert_pem, _ = make_self_signed("faß.example")
    cert = x509.load_pem_x509_certificate(cert_pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["xn--fa-hia.example"]
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        "xn--fa-hia.example"
    )
    other = x509.load_pem_x509_certificate(make_self_signed("fass.example")[0])
    other_san = other.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert other_san.get_values_for_type(x509.DNSName) == ["fass.example"]


@pytest.mark.parametrize("days", [0, -1, 36501])
def test_days_out_of_range(days: int) -> None:
    with pytest.raises(TlsError, match=f"days must be between 1 and 36500, got {days}"):
        make_self_signed("mx.example.org", days=days)


# --- writing it --------------------------------------------------------------------------------


def test_write_self_signed_modes_and_no_leftovers(tmp_path: Path) -> None:
    folder = tmp_path / "data" / "tls"
    made = write_self_signed(folder / "cert.pem", folder / "key.pem", "mx.example.org", days=10)
    assert folder.stat().st_mode & 0o777 == 0o700
    assert (folder / "key.pem").stat().st_mode & 0o777 == 0o600
    assert (folder / "cert.pem").stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in folder.iterdir()) == ["cert.pem", "key.pem"]
    cert = x509.load_pem_x509_certificate((folder / "cert.pem").read_bytes())
    assert made.hostname == "mx.example.org" and made.key_type == "ECDSA P-256"
    assert made.not_after == cert.not_valid_after_utc
    assert timedelta(days=10) - timedelta(minutes=1) < made.not_after - datetime.now(UTC)
    assert made.not_after - datetime.now(UTC) <= timedelta(days=10)
    assert made.sha256 == cert.fingerprint(hashes.SHA256()).hex(":").upper()


def test_write_self_signed_refuses_to_overwrite_unless_forced(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    key.write_text("mine")
    with pytest.raises(TlsError) as info:
        write_self_signed(cert, key, "mx.example.org")
    assert str(info.value) == f"{key} already exists (use --force to replace it)"
    assert not cert.exists() and key.read_text() == "mine"
    write_self_signed(cert, key, "mx.example.org", force=True)
    assert key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")


def test_write_errors_are_smtpkit_errors(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(SmtpkitError, match=r"^cannot write .*/file/tls/key\.pem: Not a directory$"):
        write_self_signed(
            tmp_path / "file" / "tls" / "cert.pem",
            tmp_path / "file" / "tls" / "key.pem",
            "mx.example.org",
        )


# --- the server's context ----------------------------------------------------------------------


@pytest.mark.parametrize("key_type", ["ecdsa", "rsa"])
def test_generated_pair_serves_a_verified_handshake(tmp_path: Path, key_type: str) -> None:
    tls = _write_pair(tmp_path, key_type=key_type)
    server = make_tls_context(tls)
    assert server.minimum_version is ssl.TLSVersion.TLSv1_2
    assert server.options & ssl.OP_NO_RENEGOTIATION
    client = handshake(server, client_context(tls.certificate), "mx.example.org")
    assert client.version() == "TLSv1.3"
    assert client.getpeercert(binary_form=True) == ssl.PEM_cert_to_DER_cert(
        tls.certificate.read_text()
    )
    old = client_context(tls.certificate)
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    assert handshake(server, old, "mx.example.org").version() == "TLSv1.2"


def test_wrong_host_name_fails_verification(tmp_path: Path) -> None:
    tls = _write_pair(tmp_path)
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        handshake(make_tls_context(tls), client_context(tls.certificate), "other.example.org")


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
@pytest.mark.parametrize(
    ("version", "name"), [(ssl.TLSVersion.TLSv1, "TLSv1"), (ssl.TLSVersion.TLSv1_1, "TLSv1.1")]
)
def test_protocols_older_than_tls_1_2_are_refused(
    tmp_path: Path, version: ssl.TLSVersion, name: str
) -> None:
    tls = _write_pair(tmp_path)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    client.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client really offer the old protocol
    client.minimum_version = client.maximum_version = version
    # Control: a server that allows it does speak it with this client, on this OpenSSL...
    lax = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    lax.set_ciphers("DEFAULT:@SECLEVEL=0")
    lax.minimum_version = version
    lax.load_cert_chain(tls.certificate, tls.key)
    assert handshake(lax, client, "mx.example.org").version() == name
    # ... and smtpkit's refuses it.
    with pytest.raises(ssl.SSLError, match="UNSUPPORTED_PROTOCOL|PROTOCOL_VERSION"):
        handshake(make_tls_context(tls), client, "mx.example.org")


def test_missing_files_are_named(tmp_path: Path) -> None:
    tls = TlsConfig(certificate=tmp_path / "cert.pem", key=tmp_path / "key.pem")
    with pytest.raises(ConfigError) as info:
        make_tls_context(tls)
    assert str(info.value) == (
        f"tls -> certificate: cannot read {tmp_path / 'cert.pem'}: No such file or directory"
    )
    tls.certificate.write_bytes(make_self_signed("mx.example.org")[0])
    with pytest.raises(ConfigError) as info:
        make_tls_context(tls)
    assert str(info.value) == (
        f"tls -> key: cannot read {tmp_path / 'key.pem'}: No such file or directory"
    )


def test_a_key_of_another_certificate_is_refused(tmp_path: Path) -> None:
    tls = _write_pair(tmp_path)
    tls.key.write_bytes(make_self_signed("mx.example.org")[1])
    with pytest.raises(ConfigError) as info:
        make_tls_context(tls)
    assert str(info.value).startswith(
        f"tls: cannot use certificate {tls.certificate} with key {tls.key}: expected a PEM "
        "certificate and its matching PEM private key ("
    )
