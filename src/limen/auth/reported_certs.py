"""A user certificate a node passes on with its report: does it back the user it names?

A node reports who logged in and who started a session. It cannot forge the cluster user
CA's signature, so the auth service believes a user name only when the node shows the
certificate it was given (the wire blob, base64): signed by the cluster's user CA, a
user certificate whose key id is the user and whose principals include the login, valid
when the node says it was used. Anything less leaves the name a claim.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncssh
from asyncssh.public_key import decode_ssh_certificate  # wire format; checks the signature

from limen.errors import BadParameter

CERT_TYPE_USER = 1
MAX_CERT_TEXT = 16 * 1024  # a user certificate is well under 2 KiB


@dataclass(frozen=True)
class BackedUser:
    """What the certificate proves about the person behind a node's report."""

    user: str  # the key id
    login: str
    serial: int
    key_fingerprint: str
    principals: tuple[str, ...]
    valid_before: datetime


def back_user(cert_text: Any, login: Any, user_ca: asyncssh.SSHKey, at: datetime) -> BackedUser:
    """The user ``cert_text`` proves for ``login`` at ``at``; BadParameter says why not."""
    cert = _decode(cert_text)
    cert_type, serial, key_id, valid_after, valid_before = _header(cert)
    if cert_type != CERT_TYPE_USER:
        raise BadParameter("the certificate is not a user certificate")
    if bytes(cert.signing_key.public_data) != bytes(user_ca.public_data):
        raise BadParameter("the certificate is not signed by the cluster's user CA")
    if not isinstance(login, str) or login not in cert.principals:
        raise BadParameter(f"the certificate does not allow the login {login!r}")
    if not valid_after <= at < valid_before:
        raise BadParameter(f"the certificate was not valid at {at.isoformat()}")
    return BackedUser(
        user=key_id, login=login, serial=serial,
        key_fingerprint=cert.key.get_fingerprint("sha256"),
        principals=tuple(cert.principals), valid_before=valid_before,
    )


def _decode(cert_text: Any) -> asyncssh.SSHCertificate:
    if not isinstance(cert_text, str) or len(cert_text) > MAX_CERT_TEXT:
        raise BadParameter("the certificate must be base64 text (the wire blob)")
    try:
        blob = base64.b64decode(cert_text, validate=True)
        return decode_ssh_certificate(blob)
    except (binascii.Error, ValueError, asyncssh.KeyImportError) as exc:
        raise BadParameter(f"the certificate could not be read ({exc})") from None


def _header(cert: asyncssh.SSHCertificate) -> tuple[int, int, str, datetime, datetime]:
    """Type, serial, key id and validity: asyncssh 2.24 decodes them into private
    attributes (the version is pinned below 2.25 in pyproject)."""
    try:
        return (int(cert._cert_type), int(cert._serial),  # type: ignore[attr-defined]
                str(cert._key_id),  # type: ignore[attr-defined]
                _when(cert._valid_after), _when(cert._valid_before))  # type: ignore[attr-defined]
    except AttributeError as exc:  # a newer asyncssh moved them: fail loudly, not open
        raise RuntimeError(f"asyncssh certificate layout changed: {exc}") from exc


def _when(value: int) -> datetime:
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        return datetime.max.replace(tzinfo=UTC)  # OpenSSH's "forever"
