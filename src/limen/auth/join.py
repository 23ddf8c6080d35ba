"""Join tokens, and a node's first contact: checking what it claims, then registering it.

A join token is single-use unless its creator chose otherwise (``--uses N`` or
``--reusable``); each join consumes one use with the backend's compare-and-swap, so two
nodes racing one single-use token cannot both join. The token's labels bind: the node's
own labels only add keys the token does not set.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import uuid
from dataclasses import dataclass, replace
from datetime import timedelta

import asyncssh

from limen.audit import events
from limen.auth import node_credentials as creds
from limen.auth.ca import spki_pin
from limen.auth.context import AuthContext
from limen.auth.identity import Identity
from limen.auth.node_registry import JoinRequest, JoinResult, NodeRegistry
from limen.backend.base import Item
from limen.errors import AccessDenied, BadParameter, CompareFailed, LimenError, NotFound
from limen.netpolicy import check_advertised, parse_ip, special_kind
from limen.resources import JoinToken, validate_name
from limen.resources.token import new_token, token_hash
from limen.services.node_names import NameTaken

__all__ = ["BAD_JOIN_TOKEN", "IssuedJoinToken", "JoinRequest", "JoinResult", "JoinService"]

BAD_JOIN_TOKEN = (
    "the join token is not valid: it has expired or was never issued; "
    "create a new one with: limen tokens add --type node"
)
USED_UP = (
    "the join token has been used already (join tokens are single-use unless created "
    "with --uses N or --reusable); create a new one with: limen tokens add --type node"
)
MAX_JOIN_TOKEN_TTL = timedelta(hours=48)
CONSUME_ATTEMPTS = 500


@dataclass(frozen=True)
class IssuedJoinToken:
    token: str
    expires: str
    labels: dict[str, str]
    ca_pin: str
    uses: int | None  # None: reusable until it expires


class JoinService:
    def __init__(self, ctx: AuthContext, nodes: NodeRegistry) -> None:
        self.ctx = ctx
        self.nodes = nodes
        # Joins served here take a token's uses one at a time: racing each other on
        # compare-and-swap cost every joiner a write per rival, and a fleet of a few
        # hundred nodes joining with one token timed out. Other instances still race.
        self._consuming = asyncio.Lock()

    # -- tokens -------------------------------------------------------------------------

    async def create_token(
        self, actor: Identity, ttl: timedelta | None, labels: dict[str, str],
        uses: int | None = 1,
    ) -> IssuedJoinToken:
        """A join token for ``uses`` nodes (None: any number until it expires)."""
        ttl = ttl or self.ctx.settings.join_token_ttl
        if ttl > MAX_JOIN_TOKEN_TTL:
            raise BadParameter("a join token may live at most 48h")
        if uses is not None and uses < 1:
            raise BadParameter("a join token needs at least one use (or --reusable)")
        token = new_token()
        expires = self.ctx.clock.now() + ttl
        record = JoinToken.model_validate(
            {
                "metadata": {"name": token_hash(token), "expires": expires, "labels": labels},
                "spec": {"roles": ["node"], "labels": labels, "created_by": actor.user,
                         "uses_left": uses or 0, "reusable": uses is None},
            }
        )
        await self.ctx.stores.join_tokens.create(record)
        await self.ctx.audit.emit(
            events.JOIN_TOKEN_CREATE,
            user=actor.user,
            roles=["node"],
            labels=labels,
            ttl=str(ttl),
            uses="unlimited" if uses is None else uses,
            token_id=record.name[:12],
        )
        pin = spki_pin(self.ctx.cas.tls_ca_cert)
        return IssuedJoinToken(token, expires.isoformat(), labels, pin, uses)

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

    async def _consume(self, token: str) -> JoinToken:
        """Take one use of the token, atomically; AccessDenied when none is left.

        Many nodes may join with one token at once (a fleet started together): the joins
        this instance serves take turns, and a compare-and-swap lost to another instance
        is retried after a short random pause, many times."""
        async with self._consuming:
            return await self._take_use(token)

    async def _take_use(self, token: str) -> JoinToken:
        store = self.ctx.stores.join_tokens
        for attempt in range(CONSUME_ATTEMPTS):
            try:
                item = await store.raw(token_hash(token))
            except NotFound:
                raise AccessDenied(BAD_JOIN_TOKEN) from None
            record = JoinToken.from_bytes(item.value, item.revision)
            if record.spec.reusable:
                return record
            if record.spec.uses_left < 1:
                raise AccessDenied(USED_UP)
            record.spec.uses_left -= 1
            new = Item(key=item.key, value=record.to_bytes(), expires=record.metadata.expires)
            try:
                await self.ctx.stores.backend.compare_and_swap(item, new)
                return record
            except CompareFailed:
                await asyncio.sleep(random.uniform(0, 0.002 * min(attempt + 1, 25)))
        raise CompareFailed("too many nodes joined with this token at once; try again")

    async def _give_back(self, record: JoinToken) -> None:
        """Return a use taken by a join that then failed (the name was taken meanwhile)."""
        if record.spec.reusable:
            return

        def give(current: JoinToken) -> None:
            current.spec.uses_left += 1

        with contextlib.suppress(LimenError):
            await self.ctx.stores.join_tokens.modify(record.name, give)

    # -- joining ------------------------------------------------------------------------

    async def join(self, token: str, request: JoinRequest, remote_addr: str = "") -> JoinResult:
        """A node presents a token: check its claims, take a use of the token, register it.

        Every refusal is an ``instance.join`` failure event and changes nothing.
        """
        try:
            await self.ctx.stores.join_tokens.get(token_hash(token))
        except NotFound:
            await self._refused(request, "invalid or expired token", remote_addr)
            raise AccessDenied(BAD_JOIN_TOKEN) from None
        record: JoinToken | None = None
        try:
            self._check_claims(request)
            request = replace(request, node_id=await self._check_name_free(request, token))
            record = await self._consume(token)
            labels = {**request.labels, **record.spec.labels}  # the token's labels win
            await self.ctx.audit.emit(
                events.JOIN_TOKEN_USE,
                token_id=record.name[:12],
                node_name=request.name,
                created_by=record.spec.created_by,
                uses_left="unlimited" if record.spec.reusable else record.spec.uses_left,
                addr_remote=remote_addr,
            )
            return await self.nodes.register(
                request, labels, local=False, remote_addr=remote_addr,
                certify_addr=self.claimable_addr(request.addr),
            )
        except LimenError as exc:
            if record is not None:
                await self._give_back(record)
            await self._refused(request, exc.message, remote_addr)
            raise

    async def _refused(self, request: JoinRequest, error: str, remote_addr: str) -> None:
        await self.ctx.audit.emit(
            events.NODE_JOIN_FAILURE,
            success=False,
            error=error,
            node_name=request.name,
            server_addr=request.addr,
            addr_remote=remote_addr,
        )

    def _check_claims(self, request: JoinRequest) -> None:
        """A joining host names itself, and its host certificate will say so: refuse names
        that would let it pose as the proxy, another well-known host or another node, and
        addresses that reach the proxy's own host rather than a node.

        Every client trusts the host CA for any host name (`@cert-authority *`), so a node
        certificate naming `localhost`, a loopback address or the proxy's own name could
        answer for the proxy; a name shaped like a node id could answer for that node (ids
        are principals too). The local node of `limen start` is registered in-process and
        is not subject to this.
        """
        validate_name(request.name, "node name")
        name = request.name.lower()
        if name in self._reserved_names() or parse_ip(name) is not None or _is_uuid(name):
            raise BadParameter(
                f"the node name {request.name!r} is reserved or an address (or shaped like "
                "a node id); choose another --name"
            )
        if request.addr:
            check_advertised(request.addr, self.ctx.settings.node_networks, port_known=False)
        creds.import_host_key(request.public_key)

    async def _check_name_free(self, request: JoinRequest, token: str) -> str:
        """Fail before the token is spent when the name is visibly taken (register()
        decides for good, atomically). A node joining again under its name with its
        registered host key keeps its id, once it proves it holds that key: the id
        returned (empty for a new node)."""
        holder = await self.nodes.names.holder(request.name)
        if holder is None:
            return ""
        try:
            node = await self.ctx.stores.nodes.get(holder)
        except NotFound:
            return ""
        key = creds.import_host_key(request.public_key).export_public_key("openssh")
        if node.spec.host_key != key.decode().strip():
            raise NameTaken(request.name, holder)
        creds.check_join(node.spec.host_key, request.name, token, request.proof,
                         self.ctx.clock.now())
        return holder

    def _reserved_names(self) -> set[str]:
        """Names the proxy answers to, which no joining node may have certified."""
        names = {"proxy", "localhost", self.ctx.settings.cluster_name, socket.gethostname()}
        return {n.lower() for n in names | set(self.ctx.settings.reserved_host_names)}

    def check_host_claims(self, name: str, addr: str, public_key: str) -> None:
        """What a host certificate may name, for hosts an admin registers (OpenSSH nodes):
        the same refusals as for a joining node."""
        self._check_claims(JoinRequest(name=name, public_key=public_key, addr=addr))

    def claimable_addr(self, addr: str) -> bool:
        """Whether a joining node's advertised host may appear in its certificate.

        Loopback, wildcard and reserved names (accepted only where an operator allowed
        them) are never certified: the certificate would otherwise answer for the
        proxy's host.
        """
        host = addr.rsplit(":", 1)[0].strip("[]").lower() if addr else ""
        ip = parse_ip(host) if host else None
        return (bool(host) and host not in self._reserved_names()
                and (ip is None or special_kind(ip) is None))

    # -- the proxy's own host certificate ---------------------------------------------

    def sign_host(
        self,
        host_id: str,
        name: str,
        addr: str,
        public_key: str,
        extra: list[str] | None = None,
        role: str = "node",
    ) -> asyncssh.SSHCertificate:
        """A host certificate outside node registration (the proxy's, made at each start)."""
        cluster = self.ctx.settings.cluster_name
        principals = [host_id, name, f"{name}.{cluster}"]
        if addr:
            principals.append(addr.rsplit(":", 1)[0].strip("[]"))
        principals += extra or []
        key = creds.import_host_key(public_key)
        return creds.sign_host_certificate(self.ctx, host_id, principals, key,
                                           self.ctx.settings.host_cert_ttl, role=role)


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True
