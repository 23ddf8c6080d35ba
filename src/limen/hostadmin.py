"""What admin commands do on the auth host itself, reading the data dir directly.

The CLI is a thin shell over the client library; these few actions need the server's
files (the audit log, its keys) and run where they are, with no server running. The CLI
reaches the server side only through here and service.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from limen.audit.chain import log_id_for, read_public_key
from limen.audit.log import now_ns
from limen.audit.search import parse_when
from limen.audit.store import open_audit_store
from limen.audit.verify import verify_files, verify_store
from limen.audit.vouchers import read_host_ca_public, trusted_keys
from limen.clock import RealClock
from limen.config import Config
from limen.errors import BadParameter


async def verify_audit_locally(config: Config, since: str | None) -> dict[str, Any]:
    """Check the chain in the data dir's files and in the store: ``limen audit verify``
    on the auth host, with no server running."""
    data_dir = Path(config.data_dir)
    events_dir = data_dir / "log" / "events"
    if not events_dir.is_dir():
        raise BadParameter(f"{data_dir} holds no audit log (no {events_dir})")
    since_ns = parse_when(since, now_ns(RealClock())) if since else None
    storage = config.storage
    if storage.type == "sqlite" and not (data_dir / "audit.sqlite").exists():
        # Not an empty store to compare with: the instance keeps its store elsewhere.
        raise BadParameter(
            f"{data_dir} holds no audit store (audit.sqlite): its cluster keeps the store "
            "in PostgreSQL; pass --config with the instance's config file instead"
        )
    store = await open_audit_store(storage.type, data_dir, storage.dsn, storage.schema_name)
    try:
        # The local file is the trusted copy of this log's key; other logs' keys count
        # only with the host CA's voucher.
        mine = read_public_key(data_dir / "ca")
        own = {log_id_for(mine): mine} if mine is not None else {}
        ca_public = await asyncio.to_thread(read_host_ca_public, data_dir / "ca")
        keys = trusted_keys(await store.events.log_keys(), ca_public, own)
        report, chain = await asyncio.to_thread(verify_files, events_dir, keys, since_ns)
        if report.ok and storage.type != "memory":
            await verify_store(store.events, keys, chain, since_ns, report)
    finally:
        await store.close()
    return report.to_json()
