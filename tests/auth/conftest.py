"""A node registry over a memory backend with an injected clock, with or without the
watch-fed view the proxy keeps (limen.auth.node_watch)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from limen.audit.log import AuditLog
from limen.auth.ca import CAStore
from limen.auth.context import AuthContext, AuthSettings, Stores
from limen.auth.node_registry import NodeRegistry
from limen.auth.node_watch import NodeWatch
from limen.backend import open_backend
from limen.clock import FakeClock
from limen.resources import Node


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[NodeRegistry]:
    clock = FakeClock()
    backend = await open_backend("memory", sweep_interval=None)
    cas = CAStore.load_or_create(tmp_path / "ca", "standing.test", clock.now())
    audit = AuditLog(tmp_path / "log" / "events", "standing.test", clock)
    ctx = AuthContext(AuthSettings(cluster_name="standing.test"), Stores(backend), cas,
                      clock, audit)
    await ctx.stores.nodes.create(Node(metadata={"name": "id-1"}, spec={"hostname": "web-1"}))
    yield NodeRegistry(ctx)
    await audit.close()
    await backend.close()


@pytest.fixture
async def viewed(registry: NodeRegistry) -> AsyncIterator[NodeRegistry]:
    """The registry with a watch-fed view that follows the storage (until stopped)."""
    view = registry.view = NodeWatch(registry.ctx.stores, registry.ctx.clock)
    await view.start()
    yield registry
    await view.stop()
