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
from datetime import datetime
from typing import Any

import asyncssh

from limen.errors import BadParameter
from limen.sshauth import CertFacts, read_certificate

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
    if not cert.is_user:
        raise BadParameter("the certificate is not a user certificate")
    if bytes(cert.signing_key.public_data) != bytes(user_ca.public_data):
        raise BadParameter("the certificate is not signed by the cluster's user CA")
    if not isinstance(login, str) or login not in cert.principals:
        raise BadParameter(f"the certificate does not allow the login {login!r}")
    if not cert.valid_after <= at < cert.valid_before:
        raise BadParameter(f"the certificate was not valid at {at.isoformat()}")
    return BackedUser(
        user=cert.key_id, login=login, serial=cert.serial, key_fingerprint=cert.fingerprint,
        principals=cert.principals, valid_before=cert.valid_before,
    )


def _decode(cert_text: Any) -> CertFacts:
    if not isinstance(cert_text, str) or len(cert_text) > MAX_CERT_TEXT:
        raise BadParameter("the certificate must be base64 text (the wire blob)")
    try:
        blob = base64.b64decode(cert_text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadParameter(f"the certificate could not be read ({exc})") from None
    try:
        return read_certificate(blob)
    except BadParameter as exc:
        raise BadParameter(f"the certificate could not be read ({exc.message})") from None
