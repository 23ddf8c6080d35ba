"""The tunnel tests' cluster on the test's own event loop (tests/tunnel/kit.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.tunnel.kit import Kit


@pytest.fixture
async def kit() -> AsyncIterator[Kit]:
    kit = Kit()
    await kit.start_proxy()
    yield kit
    await kit.close()
