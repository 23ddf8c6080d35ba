"""Who is on the other end of a node connection: facts read from the verified user certificate."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncssh

# OpenSSH writes "forever" as the largest uint64; anything past year 9999 is forever.
_FOREVER = datetime.max.replace(tzinfo=UTC)
CERT_TYPE_USER = 1
CERT_TYPE_HOST = 2


@dataclass(frozen=True)
class CertFields:
    """The certificate header fields asyncssh decodes but does not expose publicly."""

    cert_type: int
    serial: int
    key_id: str
    valid_after: datetime
    valid_before: datetime


def _timestamp(value: int) -> datetime:
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        return _FOREVER


def cert_fields(cert: asyncssh.SSHCertificate) -> CertFields:
    """Read the header fields of a decoded OpenSSH certificate.

    asyncssh 2.24 keeps them in private attributes; reading them here, in one place,
    keeps the dependency visible. The version is pinned below 2.25 in pyproject.
    """
    try:
        return CertFields(
            cert_type=int(cert._cert_type),  # type: ignore[attr-defined]
            serial=int(cert._serial),  # type: ignore[attr-defined]
            key_id=str(cert._key_id),  # type: ignore[attr-defined]
            valid_after=_timestamp(cert._valid_after),  # type: ignore[attr-defined]
            valid_before=_timestamp(cert._valid_before),  # type: ignore[attr-defined]
        )
    except AttributeError as exc:  # a newer asyncssh moved them: fail loudly, not open
        raise RuntimeError(f"asyncssh certificate layout changed: {exc}") from exc


def fingerprint(key: asyncssh.SSHKey) -> str:
    return key.get_fingerprint("sha256")


@dataclass(frozen=True)
class UserIdentity:
    """The authenticated user of one SSH connection to the node.

    ``cert`` holds the raw certificate blob (wire format): asyncssh drops unknown
    extensions when it parses, so whoever needs Limen's custom extensions decodes
    them from these bytes.
    """

    user: str
    principals: tuple[str, ...]
    valid_after: datetime
    valid_before: datetime
    serial: int
    ca_fingerprint: str
    key_fingerprint: str
    permit_pty: bool
    permit_port_forwarding: bool
    permit_agent_forwarding: bool
    permit_x11_forwarding: bool
    force_command: str | None
    remote_addr: tuple[str, int] | None
    cert: bytes = field(repr=False)

    @property
    def remote_host(self) -> str:
        return self.remote_addr[0] if self.remote_addr else ""


def identity_from_certificate(
    cert: asyncssh.SSHCertificate, remote_addr: tuple[str, int] | None
) -> UserIdentity:
    fields = cert_fields(cert)
    options = cert.options
    return UserIdentity(
        user=fields.key_id,
        principals=tuple(cert.principals),
        valid_after=fields.valid_after,
        valid_before=fields.valid_before,
        serial=fields.serial,
        ca_fingerprint=fingerprint(cert.signing_key),
        key_fingerprint=fingerprint(cert.key),
        permit_pty=bool(options.get("permit-pty")),
        permit_port_forwarding=bool(options.get("permit-port-forwarding")),
        permit_agent_forwarding=bool(options.get("permit-agent-forwarding")),
        permit_x11_forwarding=bool(options.get("permit-X11-forwarding")),
        force_command=options.get("force-command"),
        remote_addr=remote_addr,
        cert=bytes(cert.public_data),
    )
