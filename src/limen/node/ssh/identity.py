"""Who is on the other end of a node connection: facts read from the verified user certificate."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from limen.sshauth import CertFacts


@dataclass(frozen=True)
class UserIdentity:
    """The authenticated user of one SSH connection to the node.

    ``cert`` holds the raw certificate blob (wire format), for whoever needs to show
    the auth service which certificate the user logged in with.
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
    # Where the person signed in from, as the auth service wrote it into the certificate
    # (origin@limen: "web" for the browser terminal); "" for limen login.
    origin: str = ""

    @property
    def remote_host(self) -> str:
        return self.remote_addr[0] if self.remote_addr else ""


def identity_from_certificate(
    cert: CertFacts, remote_addr: tuple[str, int] | None
) -> UserIdentity:
    return UserIdentity(
        user=cert.key_id,
        principals=cert.principals,
        valid_after=cert.valid_after,
        valid_before=cert.valid_before,
        serial=cert.serial,
        ca_fingerprint=cert.ca_fingerprint,
        key_fingerprint=cert.fingerprint,
        permit_pty="pty" in cert.permits,
        permit_port_forwarding="port-forwarding" in cert.permits,
        permit_agent_forwarding="agent-forwarding" in cert.permits,
        permit_x11_forwarding="X11-forwarding" in cert.permits,
        force_command=cert.force_command,
        remote_addr=remote_addr,
        cert=cert.blob,
        origin=cert.extensions.get("origin@limen", ""),
    )
