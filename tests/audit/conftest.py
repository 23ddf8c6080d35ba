"""Fixtures for the audit tests: an audit store on each engine (PostgreSQL in a schema of
its own, dropped afterwards; see tests/backend/conftest.py for the server it needs)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from limen.audit.store import AuditStore, open_audit_store
from tests.backend.conftest import PG_DSN

ALL_KINDS = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=ALL_KINDS)
async def audit_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AuditStore]:
    async with _store(request.param, tmp_path) as store:
        yield store


@pytest.fixture
async def audit_store_pg(tmp_path: Path) -> AsyncIterator[AuditStore]:
    async with _store("postgres", tmp_path) as store:
        yield store


@contextlib.asynccontextmanager
async def _store(kind: str, tmp_path: Path) -> AsyncIterator[AuditStore]:
    schema = f"limen_audit_{uuid.uuid4().hex[:16]}"
    store = await open_audit_store(kind, tmp_path, PG_DSN, schema)
    try:
        yield store
    finally:
        await store.close()
        if kind == "postgres":
            conn = await asyncpg.connect(PG_DSN)
            try:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            finally:
                await conn.close()
