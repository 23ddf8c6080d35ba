"""Shared fixtures: one cluster for the whole session, fresh ones for tests that move time,
and a check, after the whole run, that every audit event any test wrote fits its schema."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from limen.audit.files import DAY_FILE, read_lines
from limen.audit.schema import CHAIN_FIELDS, check_record
from limen.errors import BadParameter
from tests.support.cluster import ClusterHarness
from tests.support.shell_lock import stale_shell_locks_removed


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


@pytest.fixture(scope="session", autouse=True)
def no_stale_shell_lock() -> Iterator[None]:
    """Root's shell start-up on the reference machine can stall every session for 60 s
    after one was killed at the wrong moment (tests.support.shell_lock explains)."""
    with stale_shell_locks_removed():
        yield


@pytest.fixture(scope="session", autouse=True)
def every_event_fits_its_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """After the run, read every audit day file under pytest's base temp directory (in-process
    clusters, `limen start` subprocesses, logs the unit tests wrote) and validate each
    event against its schema (limen.audit.schema), naming event, field, file and line.

    Lines that are not chained events at all (not JSON, no chain fields) are the garbage
    the tamper tests write on purpose; no Limen writer produces them.
    """
    yield
    base = tmp_path_factory.getbasetemp()
    problems = []
    for path in sorted(base.rglob("*.log")):
        if path.parent.name != "events" or not DAY_FILE.match(path.name):
            continue
        for line in read_lines(path):
            if line.record is None or not all(k in line.record for k in CHAIN_FIELDS):
                continue
            try:
                check_record(line.record)
            except BadParameter as exc:
                problems.append(f"{path.relative_to(base)}:{line.number}: {exc.message}")
    if problems:
        shown = "\n".join(problems[:50])
        more = f"\n... and {len(problems) - 50} more" if len(problems) > 50 else ""
        pytest.fail(f"{len(problems)} audit events do not fit their schema:\n{shown}{more}",
                    pytrace=False)
