"""Join tokens and node registration: host certificates, node identities, heartbeats."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

import asyncssh

from limen import __version__
from limen.audit import events
from limen.auth.ca import authorized_keys_line, known_hosts_line, sign_host_cert, spki_pin
from limen.auth.context import AuthContext
from limen.auth.identity import Identity
from limen.errors import AccessDenied, BadParameter, NotFound
from limen.resources import JoinToken, Node, validate_name
from limen.resources.token import new_token, token_hash


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


def _is_special_ip(text: str) -> bool:
    try:
        addr = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return addr.is_loopback or addr.is_unspecified or addr.is_multicast


BAD_JOIN_TOKEN = (
    "the join token is not valid: it has expired or was never issued; "
    "create a new one with: limen tokens add --type node"
)


@dataclass(frozen=True)
class IssuedJoinToken:
    token: str
    expires: str
    labels: dict[str, str]
    ca_pin: str


@dataclass
class JoinRequest:
    name: str
    public_key: str
    addr: str = ""  # advertised host:port; empty for tunnel-only nodes
    labels: dict[str, str] = field(default_factory=dict)
    node_id: str = ""


@dataclass(frozen=True)
class JoinResult:
    node_id: str
    host_cert: str
    host_ca: str  # known_hosts line
    user_ca: str  # authorized_keys "cert-authority" line
    cluster: str
    api_token: str
    heartbeat_seconds: float


class JoinService:
    def __init__(self, ctx: AuthContext) -> None:
        self.ctx = ctx

    async def create_token(
        self, actor: Identity, ttl: timedelta | None, labels: dict[str, str]
    ) -> IssuedJoinToken:
        ttl = ttl or self.ctx.settings.join_token_ttl
        if ttl > timedelta(hours=48):
            raise BadParameter("a join token may live at most 48h")
        token = new_token()
        expires = self.ctx.clock.now() + ttl
        record = JoinToken.model_validate(
            {
                "metadata": {"name": token_hash(token), "expires": expires, "labels": labels},
                "spec": {"roles": ["node"], "labels": labels, "created_by": actor.user},
            }
        )
        await self.ctx.stores.join_tokens.create(record)
        await self.ctx.audit.emit(
            events.JOIN_TOKEN_CREATE,
            user=actor.user,
            roles=["node"],
            labels=labels,
            ttl=str(ttl),
            token_id=record.name[:12],
        )
        pin = spki_pin(self.ctx.cas.tls_ca_cert)
        return IssuedJoinToken(token, expires.isoformat(), labels, pin)

    async def list_tokens(self) -> list[JoinToken]:
        return await self.ctx.stores.join_tokens.list()

    async def delete_token(self, actor: Identity, token_or_id: str) -> str:
        """Delete by the token itself or by the id prefix `limen tokens ls` shows."""
        for record in await self.list_tokens():
            if record.name == token_hash(token_or_id) or (
                len(token_or_id) >= 8 and record.name.startswith(token_or_id)
            ):
                await self.ctx.stores.join_tokens.delete(record.name)
                await self.ctx.audit.emit(
                    events.JOIN_TOKEN_DELETE, user=actor.user, token_id=record.name[:12]
                )
                return record.name[:12]
        raise NotFound(f"no join token matches {token_or_id!r}")

    async def join(self, token: str, request: JoinRequest, remote_addr: str = "") -> JoinResult:
        try:
            record = await self.ctx.stores.join_tokens.get(token_hash(token))
        except NotFound:
            await self.ctx.audit.emit(
                events.NODE_JOIN_FAILURE,
                success=False,
                error="invalid or expired token",
                node_name=request.name,
                addr_remote=remote_addr,
            )
            raise AccessDenied(BAD_JOIN_TOKEN) from None
        labels = {**request.labels, **record.spec.labels}
        try:
            self._check_claims(request)
        except BadParameter as exc:
            await self.ctx.audit.emit(
                events.NODE_JOIN_FAILURE,
                success=False,
                error=exc.message,
                node_name=request.name,
                addr_remote=remote_addr,
            )
            raise
        await self.ctx.audit.emit(
            events.JOIN_TOKEN_USE,
            token_id=record.name[:12],
            node_name=request.name,
            created_by=record.spec.created_by,
            addr_remote=remote_addr,
        )
        return await self.register(
            request, labels, remote_addr, certify_addr=self._claimable_addr(request.addr)
        )

    def _check_claims(self, request: JoinRequest) -> None:
        """A joining host names itself, and its host certificate will say so: refuse names
        and addresses that would let it pose as the proxy or another well-known host.

        Every client trusts the host CA for any host name (`@cert-authority *`), so a node
        certificate naming `localhost`, a loopback address or the proxy's own name could
        answer for the proxy. The local node of `limen start` is registered in-process and
        is not subject to this.
        """
        reserved = self._reserved_names()
        if request.name.lower() in reserved or _is_ip(request.name):
            raise BadParameter(
                f"the node name {request.name!r} is reserved or an address; choose another --name"
            )

    def _reserved_names(self) -> set[str]:
        """Names the proxy answers to, which no joining node may have certified."""
        names = {"proxy", "localhost", self.ctx.settings.cluster_name, socket.gethostname()}
        return {n.lower() for n in names | set(self.ctx.settings.reserved_host_names)}

    def _claimable_addr(self, addr: str) -> bool:
        """Whether a joining node's advertised host may appear in its certificate.

        Loopback, wildcard and reserved names are still used to dial the node, but are
        never certified: the certificate would otherwise answer for the proxy's host.
        """
        host = addr.rsplit(":", 1)[0].strip("[]").lower() if addr else ""
        reserved = self._reserved_names()
        return bool(host) and host not in reserved and not _is_special_ip(host)

    async def register(
        self,
        request: JoinRequest,
        labels: dict[str, str],
        remote_addr: str = "",
        certify_addr: bool = True,
    ) -> JoinResult:
        """Issue a host certificate and a node identity (also used for the local node)."""
        validate_name(request.name, "node name")
        node_id = request.node_id or str(uuid.uuid4())
        certified_addr = request.addr if certify_addr else ""
        cert = self.sign_host(node_id, request.name, certified_addr, request.public_key)
        await self._save_node(self._new_node(node_id, request, labels))
        token = await self.ctx.stores.api_sessions.issue(node_id, None, builtin="node")
        await self.ctx.audit.emit(
            events.NODE_JOIN,
            server_id=node_id,
            server_hostname=request.name,
            server_addr=request.addr,
            labels=labels,
            addr_remote=remote_addr,
        )
        return JoinResult(
            node_id=node_id,
            host_cert=cert.export_certificate("openssh").decode().strip(),
            host_ca=known_hosts_line(self.ctx.cas.host_ca),
            user_ca=authorized_keys_line(self.ctx.cas.user_ca),
            cluster=self.ctx.settings.cluster_name,
            api_token=token,
            heartbeat_seconds=self.ctx.settings.heartbeat_interval.total_seconds(),
        )

    def sign_host(
        self,
        host_id: str,
        name: str,
        addr: str,
        public_key: str,
        extra: list[str] | None = None,
        role: str = "node",
    ) -> asyncssh.SSHCertificate:
        cluster = self.ctx.settings.cluster_name
        principals = [host_id, name, f"{name}.{cluster}"]
        if addr:
            principals.append(addr.rsplit(":", 1)[0].strip("[]"))
        principals += extra or []
        now = self.ctx.clock.now()
        try:
            key = asyncssh.import_public_key(public_key)
        except (asyncssh.KeyImportError, ValueError) as exc:
            raise BadParameter("the host public key is not a valid OpenSSH public key") from exc
        return sign_host_cert(
            self.ctx.cas.host_ca,
            key,
            key_id=host_id,
            principals=list(dict.fromkeys(principals)),
            valid_after=now - timedelta(minutes=1),
            valid_before=now + self.ctx.settings.host_cert_ttl,
            extensions={"role@limen": role, "cluster@limen": cluster},
        )

    async def _save_node(self, node: Node) -> None:
        now = self.ctx.clock.now()
        node.spec.last_heartbeat = now
        node.metadata.expires = now + self.ctx.settings.node_ttl
        await self.ctx.stores.nodes.upsert(node)

    async def heartbeat(self, identity: Identity, addr: str | None, connection: str) -> Node:
        """A node says it is alive; its entry expires if it stops saying so."""
        try:
            node = await self.ctx.stores.nodes.get(identity.user)
        except NotFound:
            raise NotFound(
                "this node's registration expired; it re-registers with its identity"
            ) from None
        mode = "direct" if connection == "direct" else "tunnel"
        moved = addr is not None and addr != node.spec.addr
        if moved or mode != node.spec.connection or node.spec.since is None:
            node.spec.since = self.ctx.clock.now()
        if addr is not None:
            node.spec.addr = addr
        node.spec.connection = mode
        await self._save_node(node)
        return node

    async def reregister(self, identity: Identity, request: JoinRequest) -> Node:
        """A node whose entry expired (long outage) comes back under its own id."""
        with contextlib.suppress(NotFound):
            return await self.heartbeat(
                identity, request.addr, "direct" if request.addr else "tunnel"
            )
        node = self._new_node(identity.user, request, request.labels)
        await self._save_node(node)
        return node

    def _new_node(self, node_id: str, request: JoinRequest, labels: dict[str, str]) -> Node:
        now = self.ctx.clock.now()
        return Node.model_validate(
            {
                "metadata": {"name": node_id, "labels": labels},
                "spec": {
                    "hostname": request.name,
                    "addr": request.addr,
                    "connection": "direct" if request.addr else "tunnel",
                    "version": __version__,
                    "joined": now,
                    "since": now,
                },
            }
        )
