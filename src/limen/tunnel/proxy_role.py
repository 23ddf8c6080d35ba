"""The tunnel server inside `limen start` (proxy role), with the proxy's host identity."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asyncssh import SSHCertificate, SSHKey

from limen.auth.facade import AuthFacade
from limen.auth.identity import Identity
from limen.auth.server import AuthServer
from limen.clock import Clock
from limen.config import ProxyConfig, split_host_port
from limen.diag import metrics
from limen.proxy.routing import AuditObserver
from limen.proxy.web_nodes import node_json
from limen.sshauth.judge import Revoked
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
                          heartbeat=answer_heartbeats(auth, proxies))
    await server.start()
    return server


def answer_heartbeats(auth: AuthServer, proxies: Callable[[], dict[str, Any]]) -> BeatHandler:
    """A heartbeat inside a tunnel, answered as ``POST /v1/nodes/heartbeat`` answers one.

    The tunnel server has judged the node's certificate (registered, current, unlocked)
    just before; the registration comes from the watch-fed view when it has the node
    unlocked, as for a node's API token (NodeRegistry.admit), else from the storage."""

    async def beat(node_id: str, peer: str) -> dict[str, Any]:
        caller = Identity(user=node_id, builtin="node", remote_addr=peer,
                          admitted_node=auth.nodes.viewed_unlocked(node_id))
        node, presence = await AuthFacade(auth, caller).heartbeat(None, "tunnel")
        metrics.node_heartbeat("tunnel")
        return {**node_json(node, presence), **proxies()}

    return beat
