"""The whole cluster core on the PostgreSQL backend (the server on 127.0.0.1:5432)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.support.cluster import ClusterHarness, default_config
from tests.support.ha import DSN, drop_schema


@pytest.mark.postgres
def test_signup_and_login_on_postgres_survive_a_restart(tmp_path: Path) -> None:
    schema = f"limen_it_{uuid.uuid4().hex[:12]}"
    config = default_config(tmp_path / "data")
    config.storage.type = "postgres"
    config.storage.dsn = DSN
    config.storage.schema_name = schema
    first = ClusterHarness(tmp_path, config=config).start()
    try:
        user = first.create_user("pgalice", logins="pgalice")
        assert first.login(user).returncode == 0
    finally:
        first.stop()
    assert not (tmp_path / "data" / "backend.sqlite").exists()
    second = ClusterHarness(tmp_path, config=config, clock=first.clock).start()
    try:
        assert second.login(user).returncode == 0
        listed = second.admin("users", "ls", "--format", "json").json()
        assert [u["metadata"]["name"] for u in listed] == ["pgalice"]
    finally:
        second.stop()
        drop_schema(schema)
