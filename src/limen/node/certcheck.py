"""The node's own verdict on a key offered for login, with a reason a person can read.

asyncssh checks certificates too, but only answers yes or no; the audit log needs to
say why a login was refused. The node accepts only user certificates from a trusted
user CA that are valid now and name the requested login among their principals.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import asyncssh
from asyncssh.public_key import decode_ssh_certificate, decode_ssh_public_key  # wire format

from limen.node.identity import (
    CERT_TYPE_USER,
    UserIdentity,
    cert_fields,
    fingerprint,
    identity_from_certificate,
)


@dataclass(frozen=True)
class CertCheck:
    identity: UserIdentity | None
    reason: str
    user: str | None = None  # the key id, when a certificate could be read

    @property
    def ok(self) -> bool:
        return self.identity is not None


class TrustedCAs:
    """The user CA public keys this node trusts, compared by their wire encoding."""

    def __init__(self, keys: Iterable[asyncssh.SSHKey]) -> None:
        self._blobs = {bytes(key.public_data) for key in keys}

    def __contains__(self, key: asyncssh.SSHKey) -> bool:
        return bytes(key.public_data) in self._blobs

    def __bool__(self) -> bool:
        return bool(self._blobs)


def _when(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC"


def _refuse(reason: str, user: str | None = None) -> CertCheck:
    return CertCheck(None, reason, user)


def _decode(key_data: bytes) -> asyncssh.SSHCertificate | CertCheck:
    try:
        return decode_ssh_certificate(key_data)
    except asyncssh.KeyImportError as exc:
        try:
            key = decode_ssh_public_key(key_data)
        except asyncssh.KeyImportError:
            return _refuse(f"the offered key could not be read ({exc})")
        return _refuse(
            f"plain public keys are not accepted ({fingerprint(key)}); "
            "log in to get a certificate from the cluster's user CA"
        )


def check_user_certificate(
    key_data: bytes,
    login: str,
    trusted: TrustedCAs,
    now: datetime,
    remote_addr: tuple[str, int] | None = None,
) -> CertCheck:
    """Decide whether ``key_data`` may log in as ``login`` at time ``now``."""
    cert = _decode(key_data)
    if isinstance(cert, CertCheck):
        return cert
    if cert.is_x509_chain:
        return _refuse("X.509 certificates are not accepted")
    fields = cert_fields(cert)
    user = fields.key_id
    if fields.cert_type != CERT_TYPE_USER:
        return _refuse("a host certificate cannot be used to log in", user)
    if cert.signing_key not in trusted:
        return _refuse(
            "the certificate is signed by an untrusted certificate authority "
            f"({fingerprint(cert.signing_key)})",
            user,
        )
    if now < fields.valid_after:
        return _refuse(f"the certificate is not valid before {_when(fields.valid_after)}", user)
    if now >= fields.valid_before:
        return _refuse(f"the certificate expired at {_when(fields.valid_before)}", user)
    if not cert.principals:
        return _refuse("the certificate names no logins (principals)", user)
    if login not in cert.principals:
        allowed = ", ".join(cert.principals)
        return _refuse(
            f"the certificate does not allow login as {login!r} (it allows: {allowed})", user
        )
    return CertCheck(identity_from_certificate(cert, remote_addr), "ok", user)
