"""Shared fixtures: one cluster for the whole session, fresh ones for tests that move time."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cluster import ClusterHarness


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterHarness]:
    harness = ClusterHarness(tmp_path_factory.mktemp("cluster")).start()
    yield harness
    harness.stop()


@pytest.fixture
def fresh_cluster(tmp_path: Path) -> Iterator[ClusterHarness]:
    """A cluster of the test's own, for tests that move the clock far or restart it."""
    harness = ClusterHarness(tmp_path).start()
    yield harness
    harness.stop()
