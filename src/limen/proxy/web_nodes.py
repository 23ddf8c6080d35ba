"""HTTPS API routes for join tokens, node registration, heartbeats, renewals, events and
sessions."""

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from limen.auth.join import JoinRequest
from limen.diag import metrics
from limen.durations import parse_duration
from limen.errors import AccessDenied, BadParameter
from limen.proxy.join_gate import JoinGate
from limen.proxy.web_errors import ANONYMOUS, SIGNED_IN, errors
from limen.resources import Node, NodePresence, Session, validate_name
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
    # {time, signature}: the host key's signature over the join (node_credentials.sign_join);
    # needed to join again under a registered node's name and key.
    proof: dict[str, str] | None = None


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


class OpenSSHNodeAdd(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=253)
    addr: str = Field(max_length=300)
    labels: dict[str, str] = Field(default_factory=dict)
    public_key: str = Field(max_length=16384)
    ttl: str | None = Field(default=None, max_length=32)


class OpenSSHCertify(BaseModel):
    model_config = ConfigDict(extra="forbid")

    public_key: str = Field(max_length=16384)
    ttl: str | None = Field(default=None, max_length=32)


class ReportedEvent(BaseModel):
    event: str = Field(max_length=64)
    fields: dict[str, Any] = Field(default_factory=dict)


# Events a node sends in one call: what gathers while its previous call was answered,
# or a batch of its spool. Bounded, so one request stays one short transaction's worth.
MAX_REPORTED_EVENTS = 100


class ReportedEvents(BaseModel):
    events: list[ReportedEvent] = Field(min_length=1, max_length=MAX_REPORTED_EVENTS)


def node_json(node: Node, presence: NodePresence, tunnel: TunnelStatus | None = None,
              proxies: list[str] | None = None) -> dict[str, Any]:
    """A node as listings show it. A tunnel node is online while its tunnel to this
    proxy, or to another proxy of the cluster (``proxies``), is up, and "since" is when
    this proxy's tunnel came up or went down; a direct node's "since" is when it took its
    current address."""
    here = presence.spec
    since = here.since or node.spec.joined
    online = True
    proxies = proxies or []
    if here.connection == "tunnel":
        online = (tunnel is not None and tunnel.online) or bool(proxies)
        since = tunnel.since if tunnel is not None else None
    elif here.connection == "openssh":  # the proxy's health check says (openssh/health.py)
        online = here.state in ("ok", "unchecked")
    expires = node.spec.credentials_expire
    return {
        "name": node.spec.hostname,
        "id": node.name,
        "addr": here.addr,
        "labels": node.metadata.labels,
        "connection": here.connection,
        "online": online,
        "proxies": proxies if here.connection == "tunnel" else [],
        "since": since.isoformat() if since else "",
        "last_heartbeat": here.last_heartbeat.isoformat() if here.last_heartbeat else "",
        "version": here.version,
        "credentials_expire": expires.isoformat() if expires else "",
        "kind": node.spec.kind or "limen",
        "state": here.state,
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


# A quiet stream's ping, unless the node asks for another interval (``?ping=``): nodes
# from before that parameter give up after 30 s without a line. A node removed or locked
# has its streams ended at once (``on_revoked``); the ping's check of its standing is the
# backstop. The bounds keep a caller from making the proxy ping it many times a second.
PING_SECONDS = 20.0
PING_MIN_SECONDS, PING_MAX_SECONDS = 5, 300

OnRevoked = Callable[[Callable[[], None]], Callable[[], None]]


async def ndjson_lines(feed: AsyncIterator[dict[str, Any]],
                  still_allowed: Callable[[], Awaitable[bool]] | None = None,
                  on_revoked: OnRevoked | None = None,
                  ping_seconds: float | None = None) -> AsyncIterator[bytes]:
    """Feed messages as lines, with a ping whenever the feed is quiet. The stream ends
    when ``on_revoked`` calls back, or at a ping when ``still_allowed`` says the caller
    lost its right to it."""
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize=1024)
    revoked = False

    async def pump() -> None:
        try:
            async for message in feed:
                await queue.put(message)
        finally:
            await queue.put(None)

    def end() -> None:
        nonlocal revoked
        revoked = True
        task.cancel()  # its last message, None, wakes the loop below

    task = asyncio.create_task(pump())
    forget = on_revoked(end) if on_revoked is not None else None
    quiet = PING_SECONDS if ping_seconds is None else ping_seconds
    try:
        while not revoked:
            try:
                async with asyncio.timeout(quiet):
                    message = await queue.get()
            except TimeoutError:
                message = {"op": "ping"}
                if still_allowed is not None and not await still_allowed():
                    return
            if message is None or revoked:
                return
            yield (json.dumps(message, default=str) + "\n").encode()
    finally:
        if forget is not None:
            forget()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


def add_routes(app: FastAPI, Caller: Any, Anonymous: Any,  # noqa: N803 - type aliases
               tunnels: Callable[[], TunnelDirectory | None] = lambda: None,
               proxies_of: Callable[[str], list[str]] = lambda _node_id: [],
               cluster_proxies: Callable[[], dict[str, Any]] = dict,
               join_gate: JoinGate | None = None) -> None:
    gate = join_gate or JoinGate()

    def tunnel_of(node: Node) -> TunnelStatus | None:
        directory = tunnels()
        return directory.status(node.name) if directory is not None else None

    @app.post("/v1/tokens", responses=errors(400, 409, *SIGNED_IN))
    async def create_token(body: TokenCreate, api: Caller) -> dict[str, Any]:
        if body.type != "node":
            raise BadParameter("only --type node tokens exist so far")
        ttl = parse_duration(body.ttl) if body.ttl else None
        issued = await api.create_join_token(ttl, body.labels,
                                             None if body.reusable else body.uses)
        return {"token": issued.token, "expires": issued.expires, "labels": issued.labels,
                "ca_pin": issued.ca_pin, "type": "node", "uses": issued.uses}

    @app.get("/v1/tokens", responses=errors(*SIGNED_IN))
    async def list_tokens(api: Caller) -> list[dict[str, Any]]:
        return [
            {"id": t.name[:12], "type": "node", "labels": t.spec.labels,
             "expires": t.metadata.expires.isoformat() if t.metadata.expires else "",
             "created_by": t.spec.created_by, "uses_left": t.spec.remaining}
            for t in await api.list_join_tokens()
        ]

    @app.delete("/v1/tokens/{token}", responses=errors(404, *SIGNED_IN))
    async def delete_token(token: str, api: Caller) -> dict[str, Any]:
        return {"deleted": await api.delete_join_token(token)}

    @app.post("/v1/join", responses=errors(*ANONYMOUS, 503))
    async def join(body: JoinBody, api: Anonymous) -> dict[str, Any]:
        """A node joins with a token; while the proxy works on as many joins as it takes
        at once, others are answered 503 with Retry-After (limen.proxy.join_gate)."""
        req = JoinRequest(name=body.name, public_key=body.public_key, addr=body.addr,
                          labels=body.labels, proof=body.proof)
        async with gate.turn():
            return (await api.join(body.token, req)).__dict__

    @app.post("/v1/nodes/heartbeat", responses=errors(400, 404, *SIGNED_IN))
    async def heartbeat(body: Heartbeat, api: Caller) -> dict[str, Any]:
        """Presence; the answer also lists the cluster's proxies (as ``/v1/ping`` does),
        so that a node learns of them without asking again."""
        node, presence = await api.heartbeat(body.addr, body.connection)
        metrics.node_heartbeat("https")
        return {**node_json(node, presence), **cluster_proxies()}

    @app.post("/v1/nodes/renew", responses=errors(400, *ANONYMOUS))
    async def renew(body: Renewal, request: Request, api: Anonymous) -> dict[str, Any]:
        """New credentials for a node; its own bearer token, and a proof by its host key.

        Not behind the usual token check: the token of a renewal whose answer was lost
        is no longer current, and the node may retry with it (and its host key)."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AccessDenied("a node renews its credentials with its API token")
        renewed = await api.renew_node(token.strip(), body.time, body.signature)
        return {"host_cert": renewed.host_cert, "api_token": renewed.api_token,
                "expires": renewed.expires}

    @app.get("/v1/nodes", responses=errors(*SIGNED_IN))
    async def list_nodes(api: Caller) -> list[dict[str, Any]]:
        nodes = sorted(await api.list_nodes(), key=lambda pair: pair[0].spec.hostname)
        return [node_json(n, p, tunnel_of(n), proxies_of(n.name)) for n, p in nodes]

    @app.post("/v1/nodes/openssh", responses=errors(400, 409, *SIGNED_IN))
    async def add_openssh_node(body: OpenSSHNodeAdd, api: Caller) -> dict[str, Any]:
        """Register a stock OpenSSH server and certify its host key (limen nodes add)."""
        ttl = parse_duration(body.ttl) if body.ttl else None
        return (await api.add_openssh_node(body.name, body.addr, body.labels,
                                           body.public_key, ttl)).__dict__

    @app.post("/v1/nodes/openssh/{name}/cert", responses=errors(400, 404, *SIGNED_IN))
    async def certify_openssh_node(name: str, body: OpenSSHCertify,
                                   api: Caller) -> dict[str, Any]:
        """A new host certificate for an OpenSSH node (limen nodes cert)."""
        ttl = parse_duration(body.ttl) if body.ttl else None
        return (await api.certify_openssh_node(name, body.public_key, ttl)).__dict__

    @app.post("/v1/events", responses=errors(400, *SIGNED_IN))
    async def report_event(body: ReportedEvent, api: Caller) -> dict[str, Any]:
        await api.report_event(body.event, body.fields)
        return {"ok": True}

    @app.post("/v1/events/batch", responses=errors(400, *SIGNED_IN))
    async def report_events(body: ReportedEvents, api: Caller) -> dict[str, Any]:
        """Each event as POST /v1/events takes it, in order; ``results`` says, event by
        event, ``{"ok": true}`` or the error that one call would have answered."""
        refusals = await api.report_events([(e.event, e.fields) for e in body.events])
        return {"results": [{"ok": True} if refusal is None else refusal.to_json()
                            for refusal in refusals]}

    @app.put("/v1/sessions/{session_id}", responses=errors(400, *SIGNED_IN))
    async def upsert_session(session_id: str, body: Session, api: Caller) -> dict[str, Any]:
        # Assigning skips the model's own check; a bad name stored here would break
        # every later listing of sessions.
        body.metadata.name = validate_name(session_id, "session id")
        return session_json(await api.upsert_session(body))

    @app.delete("/v1/sessions/{session_id}", responses=errors(*SIGNED_IN))
    async def end_session(session_id: str, api: Caller) -> dict[str, Any]:
        await api.end_session(session_id)
        return {"ended": session_id}

    @app.get(
        "/v1/watch/access",
        response_class=StreamingResponse,
        responses={
            200: {"content": {"application/x-ndjson": {"schema": {"type": "string"}}},
                  "description": "One JSON message a line, without end."},
            **errors(400, *SIGNED_IN),
        },
    )
    async def watch_access(
        api: Caller,
        ping: Annotated[int | None, Query(
            ge=PING_MIN_SECONDS, le=PING_MAX_SECONDS,
            description="seconds between pings while nothing changes (default 20)",
        )] = None,
    ) -> StreamingResponse:
        """Roles, users and locks, then every change, as NDJSON (nodes keep a cache)."""
        feed = ndjson_lines(await api.watch_access(), api.still_in_good_standing,
                            api.on_revoked, ping_seconds=ping)
        metrics.access_feed("https")
        return StreamingResponse(feed, media_type="application/x-ndjson")

    @app.get("/v1/sessions", responses=errors(*SIGNED_IN))
    async def list_sessions(api: Caller) -> list[dict[str, Any]]:
        """Everyone sees their own live sessions; the session list rule shows all."""
        return [session_json(s) for s in await api.list_sessions()]
