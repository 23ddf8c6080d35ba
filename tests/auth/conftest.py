"""A node registry over a memory backend with an injected clock, with or without the
watch-fed view the proxy keeps (limen.auth.node_watch)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from limen.auth.node_registry import NodeRegistry
from limen.auth.node_watch import NodeWatch
from tests.support.memory_auth import memory_auth_context


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[NodeRegistry]:
    async with memory_auth_context(tmp_path, "standing.test") as ctx:
        yield NodeRegistry(ctx)


@pytest.fixture
async def viewed(registry: NodeRegistry) -> AsyncIterator[NodeRegistry]:
    """The registry with a watch-fed view that follows the storage (until stopped)."""
    view = registry.view = NodeWatch(registry.ctx.stores, registry.ctx.clock)
    await view.start()
    yield registry
    await view.stop()
