"""A watch on PostgreSQL outlives a database outage: after its connections were dropped
and the database refused new ones for a while, the watcher delivers exactly the changes
made meanwhile (other instances kept writing), once each and in order."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from limen.backend import Backend, open_backend
from limen.backend.base import Item
from tests.backend.conftest import PG_DSN

pytestmark = pytest.mark.postgres


@pytest.fixture
async def outage() -> AsyncIterator[tuple[str, str]]:
    """A login role of the test's own and a schema it owns; both dropped afterwards."""
    role, schema = f"limen_r_{uuid.uuid4().hex[:10]}", f"limen_w_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(PG_DSN)
    try:
        await admin.execute(f'CREATE ROLE "{role}" LOGIN')
        await admin.execute(f'CREATE SCHEMA "{schema}" AUTHORIZATION "{role}"')
        yield role, schema
    finally:
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            f"WHERE usename = '{role}'")
        await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        await admin.close()


async def test_a_watch_resumes_after_the_database_went_away(outage: tuple[str, str]) -> None:
    role, schema = outage
    as_role = make_url(PG_DSN).set(username=role).render_as_string(hide_password=False)
    # The role's backend first: it creates (and owns) the tables.
    watching = await open_backend("postgres", dsn=as_role, schema=schema, sweep_interval=None)
    writer = await open_backend("postgres", dsn=PG_DSN, schema=schema, sweep_interval=None)
    admin = await asyncpg.connect(PG_DSN)
    try:
        async with watching.watch(["/w/"]) as w:
            await writer.put(Item("/w/1", b"1"))
            assert (await w.next(timeout=5)).item.key == "/w/1"
            # The watcher's database connections die, and no new one is let in.
            await admin.execute(f'ALTER ROLE "{role}" NOLOGIN')
            await admin.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                f"WHERE usename = '{role}'")
            for n in (2, 3, 4):
                await writer.put(Item(f"/w/{n}", str(n).encode()))
            with pytest.raises(TimeoutError):  # nothing arrives while it is away...
                await w.next(timeout=1.0)
            assert not w.closed  # ...and the watcher was not given up on
            await admin.execute(f'ALTER ROLE "{role}" LOGIN')
            got = [await w.next(timeout=10) for _ in range(3)]
            assert [e.item.key for e in got] == ["/w/2", "/w/3", "/w/4"]
            await writer.delete("/w/2")
            after = await w.next(timeout=5)
            assert (after.type, after.item.key) == ("delete", "/w/2")
            with pytest.raises(TimeoutError):  # nothing twice
                await w.next(timeout=0.5)
    finally:
        await admin.execute(f'ALTER ROLE "{role}" LOGIN')
        await admin.close()
        await _close(watching, writer)


async def _close(*backends: Backend) -> None:
    for backend in backends:
        await backend.close()


