"""The tunnel server inside `limen start` (proxy role), with the proxy's host identity."""

from __future__ import annotations

from asyncssh import SSHCertificate, SSHKey

from limen.auth.server import AuthServer
from limen.clock import Clock
from limen.config import ProxyConfig, split_host_port
from limen.proxy.routing import AuditObserver
from limen.sshauth.judge import Revoked
from limen.tunnel.server import TunnelServer, TunnelSettings


async def start_tunnel_server(config: ProxyConfig, auth: AuthServer, clock: Clock,
                              identity: tuple[SSHKey, SSHCertificate],
                              revoked: Revoked | None = None) -> TunnelServer:
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
    server = TunnelServer(settings, AuditObserver(auth), clock=clock, revoked=revoked)
    await server.start()
    return server
