"""Keeping the node's credentials fresh.

The host certificate and the API token live hours (``auth.node_credential_ttl``). Once a
third of the certificate's life is gone the node asks for new ones, proving it holds its
registered host key; if that fails it has two thirds of the lifetime left to retry.
The new certificate is saved with the identity and handed to whoever serves it (the SSH
service's listeners and the tunnel agent), without ending any session.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import asyncssh

from limen.clock import Clock
from limen.errors import AccessDenied
from limen.node.cluster.link import ClusterLink
from limen.node.cluster.membership import NodeIdentity, save_identity
from limen.sshauth import read_certificate

log = logging.getLogger(__name__)

RENEW_AFTER = 1 / 3  # of the certificate's lifetime


def renewal_due(cert_line: str, now: datetime) -> bool:
    facts = read_certificate(cert_line)
    life = facts.valid_before - facts.valid_after
    return now >= facts.valid_after + life * RENEW_AFTER


class CredentialRenewal:
    def __init__(self, link: ClusterLink, identity: NodeIdentity, host_key: asyncssh.SSHKey,
                 data_dir: Path, clock: Clock,
                 on_renewed: Callable[[asyncssh.SSHCertificate], None]) -> None:
        self.link = link
        self.identity = identity
        self.host_key = host_key
        self.data_dir = data_dir
        self.clock = clock
        self.on_renewed = on_renewed
        self.renewals = 0
        # One renewal at a time: the periodic heartbeat and a tunnel's reconnection may both
        # find it due, and a second request signed with the token the first revokes (or an
        # older answer saved last) would lock the node out.
        self._renewing = asyncio.Lock()

    def due(self) -> bool:
        return renewal_due(self.identity.host_cert, self.clock.now())

    async def renew_if_due(self) -> bool:
        """Renew when due; a failure is logged and retried at the next heartbeat."""
        if not self.due():
            return False
        async with self._renewing:
            if not self.due():  # renewed while this one waited
                return False
            return await self._renew_logged()

    async def _renew_logged(self) -> bool:
        try:
            await self.renew()
        except AccessDenied as exc:
            log.error("the cluster refused to renew this node's credentials: %s", exc.message)
            return False
        except Exception as exc:  # noqa: BLE001 - retried at the next heartbeat
            log.warning("renewing this node's credentials failed: %s", exc)
            return False
        return True

    async def renew(self) -> None:
        identity = self.identity
        renewed = await self.link.renew(self.host_key, identity.node_id, self.clock.now())
        identity.host_cert = renewed.host_cert
        if renewed.api_token:
            identity.api_token = renewed.api_token
        save_identity(self.data_dir, identity)  # the old token is dead: keep the new one
        self.renewals += 1
        log.info("renewed this node's credentials until %s", renewed.expires)
        self.on_renewed(identity.certificate())
