"""Renewing a node's credentials before they lapse.

A node asks with its API token and a statement signed by the host key it registered
with (node_credentials.check_renewal); the in-process node of `limen start` asks
in-process. Either gets a new host certificate (same key, same principals, a new serial)
and, for a remote node, a new API token; the registration then names the new ones, so
the token renewed and certificates before this one stop working at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from limen.audit import events
from limen.auth import node_credentials as creds
from limen.auth.context import AuthContext
from limen.auth.node_registry import GONE, NodeRegistry
from limen.errors import AccessDenied, NotFound
from limen.resources import Node
from limen.services.sessions import APISession


@dataclass(frozen=True)
class Renewed:
    host_cert: str
    api_token: str  # empty for the in-process node
    expires: str


class NodeRenewal:
    def __init__(self, ctx: AuthContext, nodes: NodeRegistry) -> None:
        self.ctx = ctx
        self.nodes = nodes

    async def renew(self, api_token: str, stamp: str, signature: str,
                    remote_addr: str = "") -> Renewed:
        """New credentials for a node that proves it holds its registered host key.

        The token may be the current one or, to retry a renewal whose answer was lost,
        the one before it. The token renewed stops working at once.
        """
        node_id = ""
        try:
            session = await self._node_session(api_token)
            node_id = session.spec.user
            node = await self.nodes.registered(node_id)
            used = creds.session_token_id(session.name)
            if used not in {node.spec.token_id, node.spec.previous_token_id} - {""}:
                raise AccessDenied("this node API token is no longer the node's")
            await self.nodes.refuse_if_locked(node)
            creds.check_renewal(node.spec.host_key, node_id, used, stamp, signature,
                                self.ctx.clock.now())
            proven_at = datetime.fromisoformat(stamp)  # well-formed: check_renewal said so
            last = node.spec.last_renewal_proof
            if last is not None and proven_at <= last:
                raise AccessDenied("this renewal's proof was used before (a replay)")
            return await self._reissue(node, used, remote_addr, proven_at)
        except AccessDenied as exc:
            await self.ctx.audit.emit(
                events.NODE_RENEW_FAILURE, success=False, error=exc.message,
                server_id=node_id, addr_remote=remote_addr,
            )
            raise

    async def renew_local(self, node_id: str) -> Renewed:
        """The in-process node renews without a token: it is the auth service's own."""
        node = await self.nodes.registered(node_id)
        if not node.spec.local:
            raise AccessDenied("only the node inside the auth service renews in-process")
        await self.nodes.refuse_if_locked(node)
        return await self._reissue(node, "", "")

    async def _node_session(self, api_token: str) -> APISession:
        try:
            session = await self.ctx.stores.api_sessions.lookup(api_token)
        except NotFound:
            raise AccessDenied(
                "this node's API token is not valid or has expired: the node was away "
                "longer than its credentials' lifetime; join it again with a new token"
            ) from None
        if session.spec.builtin != "node":
            raise AccessDenied("only a node renews node credentials")
        return session

    async def _reissue(self, node: Node, used_token_id: str, remote_addr: str,
                       proven_at: datetime | None = None) -> Renewed:
        key = creds.import_host_key(node.spec.host_key)
        issued = await creds.issue(self.ctx, node.name, node.spec.principals, key,
                                   with_token=not node.spec.local)

        def apply(current: Node) -> None:
            current.metadata.expires = issued.expires
            current.spec.cert_serial = issued.serial
            current.spec.credentials_expire = issued.expires
            current.spec.previous_token_id = used_token_id
            if proven_at is not None:
                last = current.spec.last_renewal_proof
                if last is not None and proven_at <= last:  # a racing twin got here first
                    raise AccessDenied("this renewal's proof was used before (a replay)")
                current.spec.last_renewal_proof = proven_at
            current.spec.token_id = creds.token_id(issued.api_token) if issued.api_token else ""

        try:
            await self.ctx.stores.nodes.modify(node.name, apply)
        except NotFound:
            raise AccessDenied(GONE.format(node=node.name)) from None
        await self.ctx.audit.emit(
            events.NODE_RENEW, server_id=node.name, server_hostname=node.spec.hostname,
            cert_serial=issued.serial, expires=issued.expires.isoformat(),
            addr_remote=remote_addr,
        )
        return Renewed(issued.cert_line(), issued.api_token, issued.expires.isoformat())
