"""Carry an SSH connection inside TLS to the proxy's web port (ALPN-selected).

asyncssh accepts any object with ``create_connection(factory, host, port)`` as a
``tunnel``; this one opens TLS with the given ALPN protocol and verifies the proxy
through the cluster's CA (not the host name: proxies are often reached by IP).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from limen.client.tls_relay import ALPN_SSH
from limen.client.trust import shared_verifying_context

ALPN_TUNNEL = "limen-tunnel"


class TLSTunnel:
    def __init__(self, ca_pem: str, alpn: str = ALPN_SSH) -> None:
        self.ctx = shared_verifying_context(ca_pem, (alpn,))

    async def create_connection(
        self, session_factory: Callable[[], Any], host: str, port: int
    ) -> tuple[asyncio.BaseTransport, Any]:
        loop = asyncio.get_running_loop()
        return await loop.create_connection(
            session_factory, host, port, ssl=self.ctx, server_hostname=host
        )

    def close(self) -> None:  # asyncssh closes the tunnel it was given
        return None

    async def wait_closed(self) -> None:
        return None
