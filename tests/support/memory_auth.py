"""An auth service's context over a memory backend with an injected clock, and node
id-1 (web-1) registered: for tests of what reaches the auth service from a node."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from limen.audit.log import AuditLog
from limen.auth.ca import CAStore
from limen.auth.context import AuthContext, AuthSettings, Stores
from limen.backend import open_backend
from limen.clock import FakeClock
from limen.resources import Node


@asynccontextmanager
async def memory_auth_context(tmp_path: Path, cluster: str) -> AsyncIterator[AuthContext]:
    clock = FakeClock()
    backend = await open_backend("memory", sweep_interval=None)
    cas = CAStore.load_or_create(tmp_path / "ca", cluster, clock.now())
    audit = AuditLog(tmp_path / "log" / "events", cluster, clock)
    ctx = AuthContext(AuthSettings(cluster_name=cluster), Stores(backend), cas, clock, audit)
    await ctx.stores.nodes.create(Node(metadata={"name": "id-1"}, spec={"hostname": "web-1"}))
    try:
        yield ctx
    finally:
        await audit.close()
        await backend.close()
