"""The readiness checks /readyz runs for a running service: is it able to serve?

- backend: the cluster's storage answers a read;
- listeners: every port this instance opened is still being served;
- auth: the auth service is reachable (in-process for auth and proxy; a node that joined
  from elsewhere asks the proxy it joined through).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import httpx

from limen.client import trust
from limen.diag.server import ReadinessCheck
from limen.errors import NotFound

if TYPE_CHECKING:
    from limen.service import Service


def readiness_checks(service: Service) -> dict[str, ReadinessCheck]:
    async def backend() -> str | None:
        if service.backend is None:
            return "the storage backend is closed"
        with contextlib.suppress(NotFound):  # answering at all is what counts
            await service.backend.get("/cluster/name")
        return None

    async def listeners() -> str | None:
        down = [name for name, up in service.listeners().items() if not up]
        return f"not serving: {', '.join(down)}" if down else None

    async def auth() -> str | None:
        if service.auth is not None:
            return None
        node = service.node
        if node is None or node.identity is None:
            return "no auth service in this process and no cluster joined"
        return await _ping(node.identity.proxy, node.identity.tls_ca)

    return {"backend": backend, "listeners": listeners, "auth": auth}


async def _ping(proxy: str, ca_pem: str) -> str | None:
    try:
        async with httpx.AsyncClient(verify=trust.verifying_context(ca_pem),
                                     timeout=httpx.Timeout(2.0)) as http:
            response = await http.get(f"https://{proxy}/v1/ping")
    except httpx.HTTPError as exc:
        return f"cannot reach the auth service through the proxy at {proxy}: {exc}"
    if not response.is_success:
        return f"the proxy at {proxy} answered HTTP {response.status_code}"
    return None
