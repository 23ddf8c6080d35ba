"""The proxy's SSH jump host inside `limen start`, with a host certificate from the cluster."""

from __future__ import annotations

import socket
from pathlib import Path

from asyncssh import SSHCertificate, SSHKey

from limen.auth.feed import access_feed
from limen.auth.server import AuthServer
from limen.clock import Clock
from limen.config import ProxyConfig, split_host_port
from limen.netpolicy import first_address
from limen.proxy.openssh.front import OpenSSHGateway
from limen.proxy.openssh.health import OpenSSHHealth
from limen.proxy.openssh.link import AuthLink
from limen.proxy.routing import AuditObserver, BackendRouter, RolePolicy
from limen.proxy.ssh_jump import JumpHost, JumpSettings, asyncssh_algs
from limen.proxy.ssh_locks import JumpLocks


def _host_key(directory: Path):
    import asyncssh

    from limen.client.profile import write_private

    path = directory / "host_key"
    if path.exists():
        return asyncssh.read_private_key(str(path))
    key = asyncssh.generate_private_key("ssh-ed25519", comment="limen proxy host key")
    write_private(path, key.export_private_key("openssh"))
    return key


def proxy_host_identity(config: ProxyConfig, data_dir: Path,
                        auth: AuthServer) -> tuple[SSHKey, SSHCertificate]:
    """The proxy's SSH host key and certificate, shared by the jump host and the tunnel
    server; the certificate names every address clients and agents may dial."""
    key = _host_key(data_dir / "proxy")
    names = ["127.0.0.1", "localhost", "::1", socket.gethostname(), first_address()]
    for addr in (config.web_listen_addr, config.ssh_listen_addr, config.tunnel_listen_addr):
        if addr is None:
            continue
        host = split_host_port(addr)[0]
        if host not in ("0.0.0.0", "::", ""):
            names.append(host)
    if config.public_addr:
        names.append(split_host_port(config.public_addr, 0)[0])
    public = key.export_public_key("openssh").decode()
    cert = auth.join.sign_host("proxy", "proxy", "", public, extra=names, role="proxy")
    return key, cert


async def start_jump_host(config: ProxyConfig, data_dir: Path, auth: AuthServer,
                          clock: Clock, router: BackendRouter,
                          identity: tuple[SSHKey, SSHCertificate] | None = None) -> JumpHost:
    """``router``: the proxy's, which proves a node's address before any splice (there is
    no default that would dial what a node claims)."""
    # No dedicated port (null): the jump host is reached only through the web port.
    host, port = split_host_port(config.ssh_listen_addr) if config.ssh_listen_addr else ("", None)
    key, cert = identity or proxy_host_identity(config, data_dir, auth)
    settings = JumpSettings(
        host=host, port=port, host_key=key, host_certs=[cert],
        user_ca_keys=[auth.ctx.cas.user_ca.convert_to_public()],
        cluster_name=auth.cluster_name,
    )
    jump = JumpHost(settings, router, RolePolicy(auth),
                    AuditObserver(auth), clock=clock)
    await jump.start()
    locks = JumpLocks(jump, lambda: access_feed(auth.ctx.stores))
    locks.start()
    jump.on_stop.append(locks.stop)
    gateway = OpenSSHGateway(AuthLink(auth), router.guard, clock, data_dir / "proxy" / "recordings",
                             asyncssh_algs())
    gateway.start()
    health = OpenSSHHealth(gateway)
    health.start()
    jump.openssh = gateway
    gateway.health = health
    jump.on_stop.extend([health.stop, gateway.stop])
    return jump
