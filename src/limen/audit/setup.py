"""Opening the audit machinery for the auth role: key, store, log, retention."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from limen.audit.chain import AuditKey
from limen.audit.log import AuditLog
from limen.audit.retention import Retention
from limen.audit.store import AuditStore, open_audit_store
from limen.audit.vouchers import vouch
from limen.clock import Clock
from limen.config import Config
from limen.durations import parse_duration


@dataclass
class AuditRuntime:
    log: AuditLog
    store: AuditStore
    retention: Retention

    async def close(self) -> None:
        await self.retention.stop()
        try:
            await self.log.close()
        finally:
            await self.store.close()


async def open_audit(config: Config, data_dir: Path, cluster: str, clock: Clock,
                     host_ca: asyncssh.SSHKey | None = None) -> AuditRuntime:
    """The log in DATA_DIR/log/events, its key in DATA_DIR/ca, the store on the cluster's
    storage engine; the log has caught up with the store before this returns. With the
    cluster's host CA, the log's key is registered with the CA's voucher for it."""
    key = await asyncio.to_thread(AuditKey.load_or_create, data_dir / "ca")
    voucher = vouch(host_ca, key.log_id, key.public_b64) if host_ca is not None else None
    storage = config.storage
    store = await open_audit_store(storage.type, data_dir, storage.dsn, storage.schema_name)
    try:
        settings = config.audit
        log = AuditLog(
            data_dir / "log" / "events", cluster, clock, key=key, store=store.events,
            checkpoint_interval=parse_duration(settings.checkpoint_interval).total_seconds(),
            voucher=voucher,
        )
        await log.start()
        retention = Retention(
            log, store,
            parse_duration(settings.max_age) if settings.max_age else None,
            parse_duration(settings.recordings_max_age) if settings.recordings_max_age else None,
        )
        retention.start()
    except BaseException:
        await store.close()
        raise
    return AuditRuntime(log, store, retention)
