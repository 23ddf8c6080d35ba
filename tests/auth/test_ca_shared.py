"""The cluster's CAs in shared storage: created once however many instances start at the
same moment, offered from an existing data dir, and refused when a data dir holds
another cluster's keys."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from limen.auth.ca import CAStore
from limen.auth.ca_shared import CA_KEY, load_or_create_shared
from limen.backend import Backend, open_backend
from limen.errors import LimenError
from tests.backend.conftest import PG_DSN

pytestmark = pytest.mark.postgres

NOW = datetime(2026, 1, 1, tzinfo=UTC)
FILES = ("user_ca", "host_ca", "tls_ca.key", "tls_ca.crt")


@pytest.fixture
async def backends() -> AsyncIterator[list[Backend]]:
    """Eight backends (eight instances' connection pools) on one fresh schema."""
    schema = f"limen_ca_{uuid.uuid4().hex[:12]}"
    opened = [await open_backend("postgres", dsn=PG_DSN, schema=schema, sweep_interval=None)
              for _ in range(8)]
    try:
        yield opened
    finally:
        for backend in opened:
            await backend.close()
        conn = await asyncpg.connect(PG_DSN)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


def _files(data_dir: Path) -> dict[str, bytes]:
    return {name: (data_dir / "ca" / name).read_bytes() for name in FILES}


async def test_instances_starting_together_make_one_set_of_cas(
    backends: list[Backend], tmp_path: Path
) -> None:
    dirs = [tmp_path / f"instance{i}" for i in range(len(backends))]
    stores = await asyncio.gather(*(load_or_create_shared(b, d, "one.limen", NOW)
                                    for b, d in zip(backends, dirs, strict=True)))
    first = _files(dirs[0])
    assert all(_files(d) == first for d in dirs[1:])
    assert len({s.host_ca.export_public_key() for s in stores}) == 1
    # A restart loads the same keys, from the files and the database alike.
    again = await load_or_create_shared(backends[0], dirs[0], "one.limen", NOW)
    assert again.user_ca.export_public_key() == stores[0].user_ca.export_public_key()


async def test_an_existing_data_dir_offers_its_cas(backends: list[Backend],
                                                   tmp_path: Path) -> None:
    alone = await asyncio.to_thread(CAStore.load_or_create, tmp_path / "old", "one.limen", NOW)
    shared = await load_or_create_shared(backends[0], tmp_path / "old", "one.limen", NOW)
    assert shared.host_ca.export_public_key() == alone.host_ca.export_public_key()
    joined = await load_or_create_shared(backends[1], tmp_path / "new", "one.limen", NOW)
    assert _files(tmp_path / "new") == _files(tmp_path / "old")
    assert joined.tls_ca_cert == alone.tls_ca_cert


async def test_a_data_dir_of_another_cluster_is_refused(backends: list[Backend],
                                                        tmp_path: Path) -> None:
    await load_or_create_shared(backends[0], tmp_path / "first", "one.limen", NOW)
    await asyncio.to_thread(CAStore.load_or_create, tmp_path / "stray", "two.limen", NOW)
    before = _files(tmp_path / "stray")
    with pytest.raises(LimenError) as refused:
        await load_or_create_shared(backends[1], tmp_path / "stray", "one.limen", NOW)
    assert "belongs to another cluster" in refused.value.message
    assert _files(tmp_path / "stray") == before  # nothing overwritten
    assert (await backends[0].get(CA_KEY)).value  # nor the cluster's


async def test_unreadable_stored_cas_are_a_clear_error(backends: list[Backend],
                                                       tmp_path: Path) -> None:
    from limen.backend.base import Item

    await backends[0].put(Item(CA_KEY, b"{not json"))
    with pytest.raises(LimenError) as refused:
        await load_or_create_shared(backends[1], tmp_path / "x", "one.limen", NOW)
    assert "unreadable" in refused.value.message
    assert not (tmp_path / "x" / "ca" / "user_ca").exists()
