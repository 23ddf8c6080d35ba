"""The tunnel server inside `limen start` (proxy role), with the proxy's host identity."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from asyncssh import SSHCertificate, SSHKey

from limen.auth.facade import AuthFacade
from limen.auth.identity import Identity
from limen.auth.server import AuthServer
from limen.clock import Clock
from limen.config import ProxyConfig, split_host_port
from limen.diag import metrics
from limen.proxy.routing import AuditObserver
from limen.proxy.web_nodes import ndjson_lines, node_json
from limen.sshauth.judge import Revoked
from limen.tunnel.feed import PING_SECONDS, FeedHandler
from limen.tunnel.heartbeat import BeatHandler
from limen.tunnel.server import TunnelServer, TunnelSettings


async def start_tunnel_server(config: ProxyConfig, auth: AuthServer, clock: Clock,
                              identity: tuple[SSHKey, SSHCertificate],
                              revoked: Revoked | None = None,
                              proxies: Callable[[], dict[str, Any]] = dict) -> TunnelServer:
    """``proxies``: the cluster's proxies, as a heartbeat's answer lists them."""
    # No dedicated port (null): agents reach the tunnel server only through the web port.
    host, port = (
        split_host_port(config.tunnel_listen_addr) if config.tunnel_listen_addr else ("", None)
    )
    key, cert = identity
    settings = TunnelSettings(
        host=host, port=port, host_key=key, host_certs=[cert],
        host_ca_keys=[auth.ctx.cas.host_ca.convert_to_public()],
        cluster_name=auth.cluster_name,
    )
    server = TunnelServer(settings, AuditObserver(auth), clock=clock, revoked=revoked,
                          heartbeat=answer_heartbeats(auth, proxies),
                          feed=open_feeds(auth))
    await server.start()
    return server


def answer_heartbeats(auth: AuthServer, proxies: Callable[[], dict[str, Any]]) -> BeatHandler:
    """A heartbeat inside a tunnel, answered as ``POST /v1/nodes/heartbeat`` answers one.

    The tunnel server has judged the node's certificate (registered, current, unlocked)
    just before."""

    async def beat(node_id: str, peer: str) -> dict[str, Any]:
        caller = _node_caller(auth, node_id, peer)
        node, presence = await AuthFacade(auth, caller).heartbeat(None, "tunnel")
        metrics.node_heartbeat("tunnel")
        return {**node_json(node, presence), **proxies()}

    return beat


def _node_caller(auth: AuthServer, node_id: str, peer: str) -> Identity:
    """The node a tunnel logged in as, as the API sees a node's token: its registration
    from the watch-fed view when it has the node unlocked (NodeRegistry.admit)."""
    return Identity(user=node_id, builtin="node", remote_addr=peer,
                    admitted_node=auth.nodes.viewed_unlocked(node_id))


def open_feeds(auth: AuthServer) -> FeedHandler:
    """An access feed inside a tunnel, as ``GET /v1/watch/access`` streams one: the same
    lines, pings, and end when the node is removed or locked."""

    async def feed(node_id: str, peer: str) -> AsyncIterator[bytes]:
        api = AuthFacade(auth, _node_caller(auth, node_id, peer))
        lines = ndjson_lines(await api.watch_access(), api.still_in_good_standing,
                             api.on_revoked, ping_seconds=PING_SECONDS)
        metrics.access_feed("tunnel")
        return lines

    return feed
