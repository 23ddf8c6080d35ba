"""Where a node's agent dials: the proxy's tunnel address and host key, from /v1/ping.

The node already trusts the cluster's TLS CA (pinned when it joined), so the ping is
authentic. It names the tunnel server's address and the proxy's SSH host key: the
agent then accepts only that key, not just any host certificate of the cluster's CA
(nodes have those too, for names they chose themselves).
"""

from __future__ import annotations

import contextlib
import ipaddress
from dataclasses import dataclass

import asyncssh
import httpx

from limen import tcpkeepalive
from limen.client import trust
from limen.config import split_host_port
from limen.errors import BadParameter, ConnectionProblem

PING_TIMEOUT = 5.0


@dataclass(frozen=True)
class TunnelTarget:
    host: str
    port: int
    host_key: asyncssh.SSHKey | None  # the proxy's SSH host key, when the proxy named it
    # Set when the target is the proxy's multiplexed web port: the agent wraps SSH in
    # TLS (ALPN limen-tunnel) verified by this cluster CA.
    tls_ca: str | None = None

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def choose_host(published: str, proxy_host: str) -> str:
    """The host to dial: what the proxy published, unless that only makes sense on the
    proxy's own machine (a wildcard or loopback address), when the host this node
    reached the proxy's web address by is the better guess."""
    try:
        addr = ipaddress.ip_address(published)
    except ValueError:
        return published or proxy_host
    if addr.is_unspecified or addr.is_loopback:
        return proxy_host
    return published


def target_from_ping(ping: dict, proxy: str, tls_ca_pem: str | None = None) -> TunnelTarget:
    published = ping.get("tunnel_addr") or ""
    if not published:
        raise ConnectionProblem(
            f"the proxy at {proxy} runs no tunnel server; give this node an address "
            "the proxy can dial (--advertise-addr) or enable the proxy's tunnel listener"
        )
    try:
        host, port = split_host_port(published)
        proxy_host = split_host_port(proxy, 3080)[0]
    except BadParameter as exc:
        raise ConnectionProblem(f"the proxy published a bad tunnel address: {exc}") from None
    key_text = ping.get("tunnel_host_key") or ""
    key = asyncssh.import_public_key(key_text) if key_text else None
    tls_ca = tls_ca_pem if ping.get("tunnel_tls") else None
    return TunnelTarget(choose_host(host, proxy_host), port, key, tls_ca)


def ping_client(tls_ca_pem: str, keepalive_expiry: float = 5.0) -> httpx.AsyncClient:
    """An HTTPS client for proxies' pings, verifying them by the cluster CA."""
    # The shared context names the ALPN that httpcore sets on it anyway (it sets ALPN on
    # the context it is given), so sharing it among clients changes nothing.
    ctx = trust.shared_verifying_context(tls_ca_pem, ("http/1.1",))
    # Kept alive between a node's asks, as its other connections to the proxy are.
    transport = httpx.AsyncHTTPTransport(
        verify=ctx, limits=httpx.Limits(keepalive_expiry=keepalive_expiry),
        socket_options=tcpkeepalive.socket_options())
    return httpx.AsyncClient(timeout=PING_TIMEOUT, transport=transport)


async def fetch_ping(proxy: str, tls_ca_pem: str, http: httpx.AsyncClient | None = None) -> dict:
    """The proxy's /v1/ping, over TLS verified by the cluster CA; through ``http`` (made
    with ping_client) when the caller keeps a client, else over a connection of its own."""
    try:
        async with contextlib.AsyncExitStack() as stack:
            if http is None:
                http = await stack.enter_async_context(ping_client(tls_ca_pem))
            response = await http.get(f"https://{proxy}/v1/ping")
            response.raise_for_status()
            ping = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise ConnectionProblem(f"cannot reach the proxy at {proxy}: "
                                f"{str(exc) or type(exc).__name__}") from None
    if not isinstance(ping, dict):
        raise ConnectionProblem(f"the proxy at {proxy} answered its ping with no object")
    return ping
