"""Fixtures for the backend compliance suite: one store per engine, cleaned up after.

The PostgreSQL store needs the server on 127.0.0.1:5432 (trust auth, database ``test``;
override with LIMEN_TEST_POSTGRES_DSN). It is never skipped: if the server is missing
the test errors, so CI notices. Each test gets its own schema, dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from limen.backend import Backend, open_backend
from limen.clock import FakeClock

PG_DSN = os.environ.get("LIMEN_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")

ALL_KINDS = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
SHARED_KINDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@dataclass
class Store:
    """Where one test's data lives; ``open()`` gives another Backend on the same data."""

    kind: str
    options: dict[str, Any]
    clock: FakeClock = field(default_factory=FakeClock)
    opened: list[Backend] = field(default_factory=list)

    @property
    def shared(self) -> bool:
        """Whether several Backend instances (and processes) can share this store."""
        return self.kind != "memory"

    async def open(self, sweep_interval: float | None = None) -> Backend:
        # No background sweeper unless asked: tests sweep by hand to count exactly.
        backend = await open_backend(
            self.kind, clock=self.clock, sweep_interval=sweep_interval, **self.options
        )
        self.opened.append(backend)
        return backend


@asynccontextmanager
async def _store(kind: str, tmp_path: Path) -> AsyncIterator[Store]:
    schema = f"limen_test_{uuid.uuid4().hex[:16]}"
    if kind == "sqlite":
        store = Store(kind, {"path": str(tmp_path / "backend.sqlite")})
    elif kind == "postgres":
        store = Store(kind, {"dsn": PG_DSN, "schema": schema})
    else:
        store = Store(kind, {})
    try:
        yield store
    finally:
        for backend in store.opened:
            await backend.close()
        if kind == "postgres" and store.opened:
            conn = await asyncpg.connect(PG_DSN)
            try:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            finally:
                await conn.close()


@pytest.fixture(params=ALL_KINDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with _store(request.param, tmp_path) as s:
        yield s


@pytest.fixture(params=SHARED_KINDS)
async def shared_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with _store(request.param, tmp_path) as s:
        yield s


@pytest.fixture(params=[pytest.param("postgres", marks=pytest.mark.postgres)])
async def pg_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with _store(request.param, tmp_path) as s:
        yield s


@pytest.fixture
async def backend(store: Store) -> Backend:
    return await store.open()
