"""Registered nodes: registration, presence, removal, and who may act as one.

A node's registration (``/nodes/ID``) is made once, when it joins with a token (or
in-process for the node inside ``limen start``), and lives as long as the node keeps
renewing its credentials (node_renewal.py). Heartbeats only refresh the node's presence
(``/node_presence/ID``): they can change neither its name nor its labels, and cannot
bring back a registration that was removed or lapsed. A node's API token works only
while the registration names it as the current one and no lock targets the node, so
``limen rm node/X`` or ``limen lock --node X`` stops it at once.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from limen import __version__
from limen.audit import events
from limen.auth import node_credentials as creds
from limen.auth.ca import authorized_keys_line, known_hosts_line
from limen.auth.context import AuthContext
from limen.auth.identity import Identity
from limen.auth.presence_writes import PresenceWriter
from limen.errors import AccessDenied, BadParameter, LimenError, NotFound
from limen.netpolicy import check_advertised
from limen.resources import Lock, Node, NodePresence, validate_name
from limen.resources.token import token_hash
from limen.services.node_names import NodeNames
from limen.services.sessions import APISession

if TYPE_CHECKING:
    from limen.auth.node_watch import NodeWatch

GONE = (
    "node {node} is not registered in this cluster (it was removed, or was away longer "
    "than its credentials' lifetime): join it again with a new token from limen tokens add"
)


@dataclass
class JoinRequest:
    name: str
    public_key: str
    addr: str = ""  # advertised host:port; empty for tunnel-only nodes
    labels: dict[str, str] = field(default_factory=dict)
    # The in-process node keeps its id across restarts; a joining node, once it proved it
    # holds the registered host key (limen.auth.join).
    node_id: str = ""
    proof: dict[str, str] | None = None  # a joining node's signature (node_credentials)


@dataclass(frozen=True)
class JoinResult:
    node_id: str
    host_cert: str
    host_ca: str  # known_hosts line
    user_ca: str  # authorized_keys "cert-authority" line
    cluster: str
    api_token: str
    heartbeat_seconds: float
    expires: str  # when the certificate and the token lapse unless renewed
    labels: dict[str, str] = field(default_factory=dict)  # as registered: the token's win


# A heartbeat that changes nothing rewrites the node's presence only once the stored
# record is this old. Each write is a storage transaction and a watch event on every
# instance: at one write per heartbeat, that was most of what an idle proxy did for each
# node. A record lasts node_ttl + PRESENCE_REFRESH from its write, so a node that stops
# beating drops out of listings node_ttl to node_ttl + PRESENCE_REFRESH after its last
# heartbeat (10 to 15 minutes by default), and never earlier than node_ttl.
PRESENCE_REFRESH = timedelta(minutes=5)


def _still_fresh(presence: NodePresence, now: datetime) -> bool:
    written = presence.spec.last_heartbeat
    return (written is not None and now - written < PRESENCE_REFRESH
            and presence.spec.version == __version__ and not presence.spec.state)


def locks_node(lock: Lock, names: tuple[str, ...]) -> bool:
    """A lock on the node itself (not on a user's access to it)."""
    target = lock.spec.target
    return (target.node in names and target.user is None and target.role is None
            and target.login is None)


class NodeRegistry:
    def __init__(self, ctx: AuthContext) -> None:
        self.ctx = ctx
        self.names = NodeNames(ctx.stores.backend, self._is_registered)
        #: The watch-fed view of registrations and node locks (limen.auth.node_watch),
        #: set once it has its first snapshot.
        self.view: NodeWatch | None = None
        # node id -> its last heartbeat here, which the stored presence may trail by up
        # to PRESENCE_REFRESH (see _touch); listings show the later of the two.
        self._heard: dict[str, datetime] = {}
        self.presence_writes = PresenceWriter(ctx.stores.node_presence.upsert_many)

    # -- reading ------------------------------------------------------------------------

    async def _is_registered(self, node_id: str) -> bool:
        try:
            await self.ctx.stores.nodes.get(node_id)
        except NotFound:
            return False
        return True

    async def find(self, name_or_id: str) -> Node:
        """A registration by id or name (names compare without case)."""
        with contextlib.suppress(NotFound, BadParameter):
            return await self.ctx.stores.nodes.get(name_or_id)
        holder = await self.names.holder(name_or_id)
        if holder is not None:
            with contextlib.suppress(NotFound):
                return await self.ctx.stores.nodes.get(holder)
        raise NotFound(f"no node is registered as {name_or_id!r}")

    async def present(self) -> list[tuple[Node, NodePresence]]:
        """Registered nodes that are heartbeating and not locked (from the watch-fed view
        when there is one)."""
        if self.view is not None:
            return [(node, self._as_heard(presence)) for node, presence in self.view.present()]
        presence = {p.name: p for p in await self.ctx.stores.node_presence.list()}
        locks = await self._node_locks()
        return [
            (node, self._as_heard(presence[node.name]))
            for node in await self.ctx.stores.nodes.list()
            if node.name in presence and not any(
                locks_node(lock, (node.name, node.spec.hostname)) for lock in locks)
        ]

    def _as_heard(self, presence: NodePresence) -> NodePresence:
        heard = self._heard.get(presence.name)
        stored = presence.spec.last_heartbeat
        if heard is None or (stored is not None and stored >= heard):
            return presence
        spec = presence.spec.model_copy(update={"last_heartbeat": heard})
        return presence.model_copy(update={"spec": spec})

    async def presence_of(self, node_id: str) -> NodePresence | None:
        try:
            return await self.ctx.stores.node_presence.get(node_id)
        except NotFound:
            return None

    async def lock_on(self, node: Node) -> Lock | None:
        names = (node.name, node.spec.hostname)
        return next((lock for lock in await self._node_locks() if locks_node(lock, names)), None)

    async def _node_locks(self) -> list[Lock]:
        now = self.ctx.clock.now()
        return [lock for lock in await self.ctx.stores.locks.list()
                if lock.spec.target.node and (lock.metadata.expires is None
                                              or lock.metadata.expires > now)]

    # -- registering --------------------------------------------------------------------

    async def register(self, request: JoinRequest, labels: dict[str, str], *, local: bool,
                       remote_addr: str = "", certify_addr: bool = True) -> JoinResult:
        """Register a node and issue its credentials (a joining node's or the local one's).

        The name must be free: NameTaken when another registered node holds it. The local
        node keeps its id; a joining node keeps it when the request names it (proven).
        """
        validate_name(request.name, "node name")
        key = creds.import_host_key(request.public_key)
        public = key.export_public_key("openssh").decode().strip()
        # A joining node reuses an id only as limen.auth.join decided, after a proof.
        found = await self._same_node(request.name, public) if local else ""
        node_id = request.node_id or found or str(uuid.uuid4())
        principals = self._principals(node_id, request, certify_addr)
        issued = await creds.issue(self.ctx, node_id, principals, key, with_token=not local)
        now = self.ctx.clock.now()
        node = Node.model_validate({
            "metadata": {"name": node_id, "labels": labels, "expires": issued.expires},
            "spec": {"hostname": request.name, "host_key": public,
                     "cert_serial": issued.serial, "principals": principals,
                     "token_id": creds.token_id(issued.api_token) if issued.api_token else "",
                     "credentials_expire": issued.expires, "local": local,
                     "version": __version__, "joined": now},
        })
        # Registration first, then the name: a join that sees the name taken by a node
        # whose registration is written refuses, so two racing joins cannot both win.
        await self.ctx.stores.nodes.upsert(node)
        try:
            await self.names.claim(request.name, node_id)
        except LimenError:
            with contextlib.suppress(NotFound):
                await self.ctx.stores.nodes.delete(node_id)
            if issued.api_token:  # nobody will hold it: it must not open anything either
                with contextlib.suppress(NotFound):
                    await self.ctx.stores.api_sessions.delete(token_hash(issued.api_token))
            raise
        if not request.addr.endswith(":0"):  # else present from its first heartbeat
            await self._touch(node_id, request.addr, "direct" if request.addr else "tunnel")
        await self.ctx.audit.emit(
            events.NODE_JOIN, server_id=node_id, server_hostname=request.name,
            server_addr=request.addr, labels=labels, addr_remote=remote_addr,
            cert_serial=issued.serial, expires=issued.expires.isoformat(),
        )
        return JoinResult(
            node_id=node_id,
            host_cert=issued.cert_line(),
            host_ca=known_hosts_line(self.ctx.cas.host_ca),
            user_ca=authorized_keys_line(self.ctx.cas.user_ca),
            cluster=self.ctx.settings.cluster_name,
            api_token=issued.api_token,
            heartbeat_seconds=self.ctx.settings.heartbeat_interval.total_seconds(),
            expires=issued.expires.isoformat(),
            labels=labels,
        )

    async def _same_node(self, name: str, public_key: str) -> str | None:
        """The id of the registration holding ``name`` if it is this host key's."""
        holder = await self.names.holder(name)
        if holder is None:
            return None
        with contextlib.suppress(NotFound):
            if (await self.ctx.stores.nodes.get(holder)).spec.host_key == public_key:
                return holder
        return None

    def _principals(self, node_id: str, request: JoinRequest, certify_addr: bool) -> list[str]:
        cluster = self.ctx.settings.cluster_name
        principals = [node_id, request.name, f"{request.name}.{cluster}"]
        if certify_addr and request.addr:
            principals.append(request.addr.rsplit(":", 1)[0].strip("[]"))
        return list(dict.fromkeys(principals))

    # -- presence -----------------------------------------------------------------------

    async def heartbeat(self, identity: Identity, addr: str | None,
                        connection: str) -> tuple[Node, NodePresence]:
        """A registered node says it is alive, and where; nothing else can change here."""
        if identity.builtin != "node":
            raise AccessDenied("only a node's own identity may send its heartbeat")
        node = identity.admitted_node
        if node is None or node.name != identity.user:  # not through an API token
            node = await self.registered(identity.user)
            await self.refuse_if_locked(node)
        if addr and not node.spec.local:
            try:
                check_advertised(addr, self.ctx.settings.node_networks)
            except BadParameter as exc:
                await self.ctx.audit.emit(
                    events.NODE_HEARTBEAT_FAILURE, success=False, error=exc.message,
                    server_id=node.name, server_hostname=node.spec.hostname,
                    server_addr=addr, addr_remote=identity.remote_addr,
                )
                raise
        mode = "direct" if connection == "direct" else "tunnel"
        return node, await self._touch(node.name, addr, mode)

    async def _touch(self, node_id: str, addr: str | None, mode: str) -> NodePresence:
        now = self.ctx.clock.now()
        self._heard[node_id] = now
        old = await self._last_presence(node_id)
        new_addr = addr if addr is not None else (old.spec.addr if old else "")
        moved = old is None or old.spec.addr != new_addr or old.spec.connection != mode
        if not moved and old is not None and _still_fresh(old, now):
            return self._as_heard(old)
        presence = NodePresence.model_validate({
            "metadata": {"name": node_id,
                         "expires": now + self.ctx.settings.node_ttl + PRESENCE_REFRESH},
            "spec": {"addr": new_addr, "connection": mode, "version": __version__,
                     "since": now if moved or old.spec.since is None else old.spec.since,
                     "last_heartbeat": now},
        })
        # A refresh may wait a moment to be written with others; news goes at once.
        return await self.presence_writes.write(presence, at_once=moved)

    async def _last_presence(self, node_id: str) -> NodePresence | None:
        """The node's presence as the watch-fed view has it (no read per heartbeat), or
        from the storage. The view may trail the storage by its watch's delay: at worst
        a heartbeat writes a record that was still fresh, or the next one writes it."""
        if self.view is not None:
            return self.view.presence_of(node_id)
        return await self.presence_of(node_id)

    # -- who may act as a node ----------------------------------------------------------

    async def registered(self, node_id: str) -> Node:
        """The node's registration, or AccessDenied saying it is gone."""
        try:
            return await self.ctx.stores.nodes.get(node_id)
        except NotFound:
            raise AccessDenied(GONE.format(node=node_id)) from None

    async def refuse_if_locked(self, node: Node) -> None:
        """AccessDenied with the lock's message while a lock targets the node itself."""
        lock = await self.lock_on(node)
        if lock is not None:
            raise AccessDenied(lock.refusal())

    async def in_good_standing(self, node_id: str) -> bool:
        """Registered and not locked, for the streams nodes keep open (each asks at every
        ping). A good answer comes from the watch-fed view when there is one: asking
        the storage for each stream, or re-reading every registration every few
        seconds, was most of an idle proxy's work with hundreds of nodes. The view may
        lag the storage by its watch's delay, so a refusal from it (a node that joined
        since, or whose lock was lifted) is checked in the storage, as for a node's own
        requests (``admit``)."""
        if self.view is not None and self.view.refusal(node_id) is None:
            return True
        try:
            await self.refuse_if_locked(await self.registered(node_id))
        except AccessDenied:
            return False
        return True

    def on_revoked(self, node_id: str, end: Callable[[], None]) -> Callable[[], None]:
        """``end`` is called when the view sees the node removed or locked; without a view
        nothing calls it (the streams' pings still check). Returns what forgets it."""
        if self.view is None:
            return lambda: None
        return self.view.on_revoked(node_id, end)

    async def admit(self, session: APISession, remote_addr: str = "") -> Node:
        """Refuse a node's API token unless it is the current token of a registered,
        unlocked node; every refusal is an audit event. Returns the registration."""
        node_id = session.spec.user
        known = self._admitted_by_view(node_id, session)
        if known is not None:
            return known
        try:
            node = await self.registered(node_id)
            if creds.session_token_id(session.name) != node.spec.token_id:
                raise AccessDenied(
                    "this node API token was replaced when the node renewed its credentials"
                )
            await self.refuse_if_locked(node)
        except AccessDenied as exc:
            await self.ctx.audit.emit(
                events.AUTH_FAILURE, success=False, method="node-token", kind="api",
                server_id=node_id, reason=exc.message, addr_remote=remote_addr,
            )
            raise
        return node

    def _admitted_by_view(self, node_id: str, session: APISession) -> Node | None:
        """The registration, when the watch-fed view has the token current and the node
        unlocked. Every request of every node read its registration and all locks from
        the storage: most of what a heartbeat cost the proxy. The view may lag the
        storage by its watch's delay, as the SSH side's revocations do (a lock or removal
        written here is delivered at once; one written by another instance within its
        poll); anything short of a clear yes is decided by the storage, and audited."""
        node = self.viewed_unlocked(node_id)
        if node is None or creds.session_token_id(session.name) != node.spec.token_id:
            return None
        return node

    def viewed_unlocked(self, node_id: str) -> Node | None:
        """The registration as the watch-fed view has it, when the view has no lock on
        the node; None without a view, for an unknown node, or a locked one."""
        if self.view is None or self.view.refusal(node_id) is not None:
            return None
        return self.view.node(node_id)

    # -- removal ------------------------------------------------------------------------

    async def remove(self, actor: Identity, name_or_id: str) -> Node:
        """`limen rm node/X`: the registration, its presence and its name go at once."""
        node = await self.find(name_or_id)
        await self.ctx.stores.nodes.delete(node.name)
        self._heard.pop(node.name, None)
        with contextlib.suppress(NotFound):
            await self.ctx.stores.node_presence.delete(node.name)
        await self.names.release(node.spec.hostname, node.name)
        await self.ctx.audit.emit(
            events.NODE_REMOVE, user=actor.user, server_id=node.name,
            server_hostname=node.spec.hostname, addr_remote=actor.remote_addr,
        )
        return node
