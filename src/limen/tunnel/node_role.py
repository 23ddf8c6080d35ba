"""The agent inside `limen start` (node role): built from the node's joined identity."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncssh

from limen.errors import BadParameter
from limen.node.cluster.membership import NodeIdentity
from limen.node.ssh.server import NodeServer
from limen.tunnel.agent import AgentIdentity, ProxyLocator, TunnelAgent
from limen.tunnel.discovery import TunnelTarget
from limen.tunnel.peers import PeerTunnels
from limen.tunnel.registry import NODE_PORT


def host_ca_key(known_hosts_line: str) -> asyncssh.SSHKey:
    """The CA key of an ``@cert-authority * ALG BASE64 comment`` line."""
    fields = known_hosts_line.split()
    if len(fields) < 4 or fields[0] != "@cert-authority":
        raise BadParameter("the node's identity holds no host CA line; join the node again")
    return asyncssh.import_public_key(f"{fields[2]} {fields[3]}")


def start_agent(identity: NodeIdentity, host_key: asyncssh.SSHKey, server: NodeServer,
                on_connected: Callable[[], Awaitable[None]] | None = None,
                data_connections: bool = True) -> TunnelAgent:
    """Dial the proxy the node joined through and serve the node inside the tunnel;
    with ``data_connections``, sessions come on connections the node dials back
    (limen.tunnel.data_link) where the proxy asks for them."""
    if not identity.proxy:
        raise BadParameter("a tunneled node needs the proxy it joined through (--proxy)")

    async def serve(conn: asyncssh.SSHClientConnection) -> Any:
        return await server.listen_on(conn, identity.node_id, NODE_PORT)

    locator = ProxyLocator(identity.proxy, identity.tls_ca)
    agent = TunnelAgent(
        AgentIdentity(identity.node_id, host_key, identity.certificate(),
                      host_ca_key(identity.host_ca), identity.cluster),
        locator,
        serve,
        on_connected=on_connected,
        serve_socket=server.serve_socket if data_connections else None,
    )
    agent.start()
    return agent


def start_peer_tunnels(main: TunnelAgent | None, server: NodeServer,
                       identity: NodeIdentity, beat_seconds: float) -> PeerTunnels:
    """One more agent for each other proxy of the cluster (limen.tunnel.peers); with no
    main agent (a node the proxies dial) only the proxies' addresses are learned, for the
    node's API calls to fail over to. ``beat_seconds``: the most between the node's
    heartbeats (limen.node.cluster.membership.Heartbeat.quiet_seconds)."""
    # A heartbeat's answer lists the proxies: good until one more beat is overdue.
    heard = beat_seconds * 1.5
    if main is None:
        locator = ProxyLocator(identity.proxy, identity.tls_ca)
        return _started(PeerTunnels(locator, None, heard_seconds=heard))
    assert isinstance(main.locator, ProxyLocator)
    tunnel_main = main

    async def serve(conn: asyncssh.SSHClientConnection) -> Any:
        return await server.listen_on(conn, identity.node_id, NODE_PORT)

    def make_agent(target: TunnelTarget) -> TunnelAgent:
        async def locate() -> TunnelTarget:
            return target

        # The main agent's identity as of now: it carries the latest renewed certificate.
        return TunnelAgent(tunnel_main.identity, locate, serve,
                           serve_socket=tunnel_main.serves_data)

    return _started(PeerTunnels(main.locator, make_agent, heard_seconds=heard))


def _started(peers: PeerTunnels) -> PeerTunnels:
    peers.start()
    return peers
