"""The cluster's X.509 CA, for the proxy's HTTPS listener and the auth API.

Both the CA and the leaves are ECDSA P-256 with SHA-256 signatures: every browser,
Python's ssl module and OpenSSL accept that pair, while Ed25519 certificates are still
refused by browsers. Clients pin the CA by the SHA-256 of its SubjectPublicKeyInfo
(Teleport's ``--ca-pin``), so the pin survives re-issuing the CA certificate for the
same key.
"""

from __future__ import annotations

import hashlib
import ipaddress
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from limen.errors import BadParameter

__all__ = [
    "TLSPrivateKey",
    "dump_tls_cert_pem",
    "dump_tls_key_pem",
    "generate_tls_ca",
    "generate_tls_key",
    "issue_tls_server_cert",
    "load_tls_cert_pem",
    "load_tls_key_pem",
    "reissue_tls_ca_cert",
    "spki_pin",
]

TLSPrivateKey = ec.EllipticCurvePrivateKey

# Certificates start a minute in the past so a peer whose clock runs a little
# behind does not see them as "not yet valid" (Teleport does the same).
_BACKDATE = timedelta(minutes=1)
_ORGANIZATION = "Limen"


def _require_aware(when: datetime, what: str) -> None:
    if when.tzinfo is None or when.utcoffset() is None:
        raise BadParameter(f"{what} must be a timezone-aware datetime.")


def generate_tls_key() -> TLSPrivateKey:
    """A new ECDSA P-256 private key."""
    return ec.generate_private_key(ec.SECP256R1())


def generate_tls_ca(
    cluster_name: str, *, now: datetime, years: int = 10
) -> tuple[TLSPrivateKey, x509.Certificate]:
    """Create a self-signed CA for ``cluster_name``, valid for ``years`` from ``now``."""
    if not cluster_name:
        raise BadParameter("A cluster name is required for the TLS CA.")
    if years < 1:
        raise BadParameter("The TLS CA must be valid for at least one year.")
    _require_aware(now, "now")
    key = generate_tls_key()
    return key, _self_sign_ca(key, cluster_name, now=now, years=years)


def _self_sign_ca(
    key: TLSPrivateKey, cluster_name: str, *, now: datetime, years: int
) -> x509.Certificate:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, cluster_name),
        ]
    )
    public = key.public_key()
    # 365 days a year is close enough for a validity window; no leap-day arithmetic.
    not_after = now + timedelta(days=365 * years)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(not_after)
        # path_length=0: this CA signs leaves only, never another CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )


def reissue_tls_ca_cert(
    key: TLSPrivateKey, cluster_name: str, *, now: datetime, years: int = 10
) -> x509.Certificate:
    """A new self-signed CA certificate for an existing CA key (same SPKI pin)."""
    _require_aware(now, "now")
    return _self_sign_ca(key, cluster_name, now=now, years=years)


def _subject_alt_names(names: list[str], ips: list[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = [x509.DNSName(name) for name in names]
    for ip in ips:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(ip)))
        except ValueError as exc:
            raise BadParameter(f"{ip!r} is not an IP address.") from exc
    return x509.SubjectAlternativeName(entries)


def _authority_key_id(ca_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        # A CA made elsewhere may lack the SKI; derive the same value from its key.
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key())
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def issue_tls_server_cert(
    ca_key: TLSPrivateKey,
    ca_cert: x509.Certificate,
    *,
    names: list[str],
    ips: list[str],
    now: datetime,
    days: int = 365,
) -> tuple[TLSPrivateKey, x509.Certificate]:
    """Issue a server certificate for the given DNS names and IP addresses."""
    if not names and not ips:
        raise BadParameter("A TLS server certificate needs at least one name or address.")
    if days < 1:
        raise BadParameter("A TLS server certificate must be valid for at least one day.")
    _require_aware(now, "now")
    sans = _subject_alt_names(names, ips)
    key = generate_tls_key()
    # A leaf that outlives its CA would be rejected anyway; cap it so the date is honest.
    not_after = min(now + timedelta(days=days), ca_cert.not_valid_after_utc)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, (names or ips)[0]),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(sans, critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(_authority_key_id(ca_cert), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def spki_pin(cert: x509.Certificate) -> str:
    """``sha256:<hex>`` of the certificate's DER SubjectPublicKeyInfo (a CA pin)."""
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256:" + hashlib.sha256(spki).hexdigest()


def dump_tls_key_pem(key: TLSPrivateKey) -> bytes:
    """PKCS#8 PEM, unencrypted: the file's 0600 mode is what protects it."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_tls_key_pem(data: bytes) -> TLSPrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise BadParameter("The TLS private key is not a valid unencrypted PEM key.") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise BadParameter("The TLS private key must be an ECDSA key.")
    return key


def dump_tls_cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def load_tls_cert_pem(data: bytes) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise BadParameter("The TLS certificate is not a valid PEM certificate.") from exc
