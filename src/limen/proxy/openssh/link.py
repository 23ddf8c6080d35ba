"""What the OpenSSH gateway asks of the auth service, as the proxy's own identity.

Certificates for sessions and recordings go through the authorization facade with the
built-in ``proxy`` identity (the facade lets only the proxy obtain a session
certificate, and the user's current roles and locks decide); audit events are typed at
the boundary (``schema.openssh_report``) before they are written.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import asyncssh

from limen.audit import schema
from limen.audit.bindings import SessionBinding
from limen.auth.facade import AuthFacade
from limen.auth.identity import Identity
from limen.auth.node_credentials import sign_host_certificate
from limen.auth.server import AuthServer
from limen.errors import BadParameter, LimenError, NotFound
from limen.resources import Node, Session

log = logging.getLogger(__name__)

PROXY = Identity(user="proxy", builtin="proxy")
FRONT_CERT_TTL = timedelta(hours=1)


class AuthLink:
    def __init__(self, auth: AuthServer) -> None:
        self.auth = auth
        self.facade = AuthFacade(auth, PROXY)

    @property
    def cluster(self) -> str:
        return self.auth.cluster_name

    @property
    def user_ca(self) -> asyncssh.SSHKey:
        return self.auth.ctx.cas.user_ca.convert_to_public()

    @property
    def host_ca(self) -> asyncssh.SSHKey:
        return self.auth.ctx.cas.host_ca.convert_to_public()

    async def node(self, node_id: str) -> Node:
        return await self.auth.ctx.stores.nodes.get(node_id)

    async def openssh_nodes(self) -> list[Node]:
        """For the health check's rounds: from the watch-fed view of the nodes when there is
        one (reading and parsing every registration each round grows with the whole fleet,
        thousands of tunneled nodes, while OpenSSH nodes are few), else from the storage."""
        view = self.auth.nodes.view
        if view is not None:
            return view.of_kind("openssh")
        return [n for n in await self.auth.ctx.stores.nodes.list() if n.spec.kind == "openssh"]

    async def set_state(self, node_id: str, state: str) -> None:
        """What the health check saw, in the node's presence (``limen ls``)."""
        store = self.auth.ctx.stores.node_presence
        try:
            presence = await store.get(node_id)
        except NotFound:  # removed meanwhile
            return
        if presence.spec.state != state:
            presence.spec.state = state
            presence.spec.since = self.auth.ctx.clock.now()
            await store.upsert(presence)

    def front_certificate(self, node: Node, key: asyncssh.SSHKey) -> asyncssh.SSHCertificate:
        """The host certificate the proxy presents to users for this node's names."""
        public = key.convert_to_public()
        cluster = self.cluster
        principals = [node.name, node.spec.hostname, f"{node.spec.hostname}.{cluster}"]
        return sign_host_certificate(self.auth.ctx, node.name, principals, public,
                                     FRONT_CERT_TTL, role="openssh-front")

    async def session_cert(self, user: str, login: str, node_id: str,
                           public_key: str) -> asyncssh.SSHCertificate:
        cert: asyncssh.SSHCertificate = await self.facade.openssh_session_cert(
            user, login, node_id, public_key)
        return cert

    async def file_copy_allowed(self, user: str) -> bool:
        """Whether every one of the user's current roles allows scp and sftp."""
        try:
            record = await self.auth.ctx.stores.users.get(user)
        except NotFound:
            return False
        return (await self.auth.checker_for_user(record)).file_copy()

    async def bind(self, sid: str, node: Node, user: str, login: str) -> None:
        """The session is this node's (no other reporter may claim it)."""
        await self.auth.sessions.bind(SessionBinding(sid, node.name, node.spec.hostname,
                                                     user, login))

    async def track(self, session: Session) -> None:
        """The session in `limen sessions ls` (kept there while it is refreshed)."""
        await self.facade.upsert_session(session)

    async def untrack(self, sid: str) -> None:
        await self.facade.end_session(sid)

    @property
    def track_every(self) -> float:
        return self.auth.ctx.settings.session_ttl.total_seconds() / 3

    async def emit(self, name: str, fields: dict[str, Any]) -> None:
        try:
            event = schema.openssh_report(name, fields)
        except BadParameter as exc:  # a bug of ours: say so, never store it unchecked
            log.error("refused a %s event for an OpenSSH node: %s", name, exc.message)
            return
        await self.auth.ctx.audit.emit(event)

    # RecordingLink (limen.recording.upload)

    async def recording_update(self, session_id: str, meta: dict[str, Any]) -> dict[str, Any]:
        return await self.facade.update_recording(session_id, meta)

    async def recordings_whole(self, recordings: list[tuple[str, dict[str, Any]]]
                               ) -> list[dict[str, Any] | LimenError]:
        return await self.facade.update_recordings(recordings)

    async def recording_append(self, session_id: str, offset: int, data: bytes) -> int:
        return await self.facade.append_recording(session_id, offset, data)
