"""HTTPS API routes for join tokens, node registration, heartbeats, renewals, events and
sessions."""

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from limen.auth.feed import access_feed
from limen.auth.identity import Identity
from limen.auth.join import JoinRequest
from limen.auth.server import AuthServer
from limen.durations import parse_duration
from limen.errors import AccessDenied, BadParameter
from limen.resources import Node, NodePresence, Session
from limen.tunnel.registry import TunnelDirectory, TunnelStatus


class TokenCreate(BaseModel):
    type: str = "node"
    ttl: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    # How many nodes may join with it (single use by default); reusable: any number.
    uses: int = Field(default=1, ge=1, le=100000)
    reusable: bool = False


class JoinBody(BaseModel):
    token: str = Field(max_length=256)
    name: str = Field(max_length=253)
    public_key: str = Field(max_length=16384)
    addr: str = Field(default="", max_length=300)
    labels: dict[str, str] = Field(default_factory=dict)


class Heartbeat(BaseModel):
    """Presence only: a heartbeat that tries to say more (a name, labels) is refused."""

    model_config = ConfigDict(extra="forbid")

    addr: str | None = Field(default=None, max_length=300)
    connection: str = "direct"


class Renewal(BaseModel):
    """A signed statement, by the node's registered host key, naming the token renewed."""

    model_config = ConfigDict(extra="forbid")

    time: str = Field(max_length=64)
    signature: str = Field(max_length=4096)


class ReportedEvent(BaseModel):
    event: str = Field(max_length=64)
    fields: dict[str, Any] = Field(default_factory=dict)


def node_json(node: Node, presence: NodePresence,
              tunnel: TunnelStatus | None = None) -> dict[str, Any]:
    """A node as listings show it. A tunnel node is online only while its tunnel to
    this proxy is up, and "since" is when that tunnel came up or went down; a direct
    node's "since" is when it took its current address."""
    here = presence.spec
    since = here.since or node.spec.joined
    online = True
    if here.connection == "tunnel":
        online = tunnel is not None and tunnel.online
        since = tunnel.since if tunnel is not None else None
    expires = node.spec.credentials_expire
    return {
        "name": node.spec.hostname,
        "id": node.name,
        "addr": here.addr,
        "labels": node.metadata.labels,
        "connection": here.connection,
        "online": online,
        "since": since.isoformat() if since else "",
        "last_heartbeat": here.last_heartbeat.isoformat() if here.last_heartbeat else "",
        "version": here.version,
        "credentials_expire": expires.isoformat() if expires else "",
    }


def session_json(session: Session) -> dict[str, Any]:
    spec = session.spec
    return {
        "id": session.name,
        "user": spec.user,
        "login": spec.login,
        "node": spec.node_name,
        "node_id": spec.node_id,
        "interactive": spec.interactive,
        "command": spec.command,
        "started": spec.started.isoformat(),
        "remote_addr": spec.remote_addr,
        "parties": spec.parties,
        "state": spec.state,
    }


PING_SECONDS = 10.0


async def _ndjson(feed: AsyncIterator[dict[str, Any]],
                  still_allowed: Callable[[], Awaitable[bool]] | None = None,
                  ) -> AsyncIterator[bytes]:
    """Feed messages as lines, with a ping whenever the feed is quiet; the stream ends
    at a ping when ``still_allowed`` says the caller lost its right to it."""
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize=1024)

    async def pump() -> None:
        try:
            async for message in feed:
                await queue.put(message)
        finally:
            await queue.put(None)

    task = asyncio.create_task(pump())
    try:
        while True:
            try:
                async with asyncio.timeout(PING_SECONDS):
                    message = await queue.get()
            except TimeoutError:
                message = {"op": "ping"}
                if still_allowed is not None and not await still_allowed():
                    return
            if message is None:
                return
            yield (json.dumps(message, default=str) + "\n").encode()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


def add_routes(app: FastAPI, auth: AuthServer, caller_dep: Any, limited: Any,
               tunnels: Callable[[], TunnelDirectory | None] = lambda: None) -> None:
    Caller = Annotated[Identity, Depends(caller_dep)]

    def tunnel_of(node: Node) -> TunnelStatus | None:
        directory = tunnels()
        return directory.status(node.name) if directory is not None else None

    @app.post("/v1/tokens")
    async def create_token(body: TokenCreate, caller: Caller) -> dict[str, Any]:
        await auth.authorize(caller, "token", "create")
        if body.type != "node":
            raise BadParameter("only --type node tokens exist so far")
        ttl = parse_duration(body.ttl) if body.ttl else None
        uses = None if body.reusable else body.uses
        issued = await auth.join.create_token(caller, ttl, body.labels, uses)
        return {"token": issued.token, "expires": issued.expires, "labels": issued.labels,
                "ca_pin": issued.ca_pin, "type": "node", "uses": issued.uses}

    @app.get("/v1/tokens")
    async def list_tokens(caller: Caller) -> list[dict[str, Any]]:
        await auth.authorize(caller, "token", "list")
        return [
            {"id": t.name[:12], "type": "node", "labels": t.spec.labels,
             "expires": t.metadata.expires.isoformat() if t.metadata.expires else "",
             "created_by": t.spec.created_by, "uses_left": t.spec.remaining}
            for t in await auth.join.list_tokens()
        ]

    @app.delete("/v1/tokens/{token}")
    async def delete_token(token: str, caller: Caller) -> dict[str, Any]:
        await auth.authorize(caller, "token", "delete")
        return {"deleted": await auth.join.delete_token(caller, token)}

    @app.post("/v1/join", dependencies=[limited])
    async def join(body: JoinBody, request: Request) -> dict[str, Any]:
        remote = request.client.host if request.client else ""
        req = JoinRequest(name=body.name, public_key=body.public_key, addr=body.addr,
                          labels=body.labels)
        result = await auth.join.join(body.token, req, remote)
        return result.__dict__

    @app.post("/v1/nodes/heartbeat")
    async def heartbeat(body: Heartbeat, caller: Caller) -> dict[str, Any]:
        node, presence = await auth.nodes.heartbeat(caller, body.addr, body.connection)
        return node_json(node, presence)

    @app.post("/v1/nodes/renew")
    async def renew(body: Renewal, request: Request) -> dict[str, Any]:
        """New credentials for a node; its own bearer token, and a proof by its host key.

        Not behind the usual token check: the token of a renewal whose answer was lost
        is no longer current, and the node may retry with it (and its host key)."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AccessDenied("a node renews its credentials with its API token")
        remote = request.client.host if request.client else ""
        renewed = await auth.node_renewal.renew(token.strip(), body.time, body.signature,
                                                  remote)
        return {"host_cert": renewed.host_cert, "api_token": renewed.api_token,
                "expires": renewed.expires}

    @app.get("/v1/nodes")
    async def list_nodes(caller: Caller) -> list[dict[str, Any]]:
        checker = await auth.checker_for(caller)
        nodes = await auth.nodes.present()
        if not caller.is_admin:
            nodes = [(n, p) for n, p in nodes if checker.can_access_node(n.metadata.labels)]
        nodes.sort(key=lambda pair: pair[0].spec.hostname)
        return [node_json(n, p, tunnel_of(n)) for n, p in nodes]

    @app.post("/v1/events")
    async def report_event(body: ReportedEvent, caller: Caller) -> dict[str, Any]:
        await auth.tracking.report_event(caller, body.event, body.fields)
        return {"ok": True}

    @app.put("/v1/sessions/{session_id}")
    async def upsert_session(session_id: str, body: Session, caller: Caller) -> dict[str, Any]:
        body.metadata.name = session_id
        return session_json(await auth.tracking.upsert_session(caller, body))

    @app.delete("/v1/sessions/{session_id}")
    async def end_session(session_id: str, caller: Caller) -> dict[str, Any]:
        await auth.tracking.end_session(caller, session_id)
        return {"ended": session_id}

    @app.get("/v1/watch/access")
    async def watch_access(caller: Caller) -> StreamingResponse:
        """Roles, users and locks, then every change, as NDJSON (nodes keep a cache)."""
        if caller.builtin not in ("node", "proxy", "admin"):
            raise AccessDenied("only nodes and proxies watch the access feed")

        async def still_allowed() -> bool:  # a node removed or locked meanwhile: end it
            return caller.builtin != "node" or await auth.nodes.in_good_standing(caller.user)

        return StreamingResponse(_ndjson(access_feed(auth.ctx.stores), still_allowed),
                                 media_type="application/x-ndjson")

    @app.get("/v1/sessions")
    async def list_sessions(caller: Caller) -> list[dict[str, Any]]:
        """Everyone sees their own live sessions; the session list rule shows all."""
        sessions = await auth.tracking.list_sessions()
        try:
            (await auth.checker_for(caller)).check_rule("session", "list")
        except AccessDenied:
            sessions = [s for s in sessions if s.spec.user == caller.user]
        return [session_json(s) for s in sessions]
