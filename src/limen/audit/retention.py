"""Retention: remove events and recordings older than the configured maximum age.

Events go a whole day file at a time (a file whose every line is older than the cutoff),
with their rows in the store. Before anything is removed, an ``audit.retention`` event
is written: it names the last seq removed and its hash, signed by the audit key, so the
chain that remains still verifies from its first line (the anchor carries it across).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from limen.audit import files, schema
from limen.audit.chain import checkpoint_message, format_time
from limen.audit.log import AuditLog, now_ns
from limen.audit.store import AuditStore
from limen.errors import LimenError
from limen.tasks import cancel_and_wait

log = logging.getLogger(__name__)

@dataclass
class RetentionResult:
    files_removed: int = 0
    events_removed: int = 0
    recordings_removed: int = 0


class Retention:
    def __init__(self, audit: AuditLog, store: AuditStore, events_max_age: timedelta | None,
                 recordings_max_age: timedelta | None, interval: float = 3600.0) -> None:
        self.audit = audit
        self.store = store
        self.events_max_age = events_max_age
        self.recordings_max_age = recordings_max_age
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.events_max_age or self.recordings_max_age:
            self._task = asyncio.create_task(self._loop(), name="limen-audit-retention")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    async def _loop(self) -> None:
        while True:
            try:
                result = await self.run_once()
                if result.files_removed or result.recordings_removed:
                    log.info("retention removed %d day files (%d events) and %d recordings",
                             result.files_removed, result.events_removed,
                             result.recordings_removed)
            except (LimenError, OSError) as exc:
                log.warning("audit retention failed (will retry): %s", exc)
            await asyncio.sleep(self.interval)

    async def run_once(self) -> RetentionResult:
        result = RetentionResult()
        now = now_ns(self.audit.clock)
        if self.recordings_max_age:
            cutoff = now - int(self.recordings_max_age.total_seconds() * 1e9)
            result.recordings_removed = await self.store.recordings.delete_ended_before(cutoff)
        if self.events_max_age:
            cutoff = now - int(self.events_max_age.total_seconds() * 1e9)
            await self._remove_events(cutoff, result)
        return result

    async def _remove_events(self, cutoff_ns: int, result: RetentionResult) -> None:
        await self.audit.start()
        old = await asyncio.to_thread(self._old_files, cutoff_ns)
        if not old:
            return
        last = await asyncio.to_thread(_last_of, old, self.audit.log_id)
        if last is not None:
            seq, digest = int(last["seq"]), str(last["hash"])
            signature = self.audit.key.sign(
                checkpoint_message("anchor", self.audit.log_id, seq, digest)
            )
            # Written (and fsynced) before anything goes: a crash in between leaves more
            # than needed, never a chain that cannot be verified.
            await self.audit.emit(schema.AuditRetention(
                removed_through_seq=seq, anchor_hash=digest, signature=signature,
                public_key=self.audit.key.public_b64, files=[p.name for p in old],
                cutoff=_day(cutoff_ns),
            ))
            # The store is filled a moment after the files: let it catch up first, or
            # rows copied after the delete would outlive their files.
            await self.audit.flush()
            result.events_removed = await self.store.events.delete_through(
                self.audit.log_id, seq
            )
        for path in old:
            path.unlink(missing_ok=True)
        result.files_removed = len(old)

    def _old_files(self, cutoff_ns: int) -> list[Path]:
        """Day files entirely older than the cutoff; never the newest (being written)."""
        day_files = files.day_files(self.audit.directory)[:-1]
        cutoff_day = _day(cutoff_ns)
        return [p for p in day_files if p.stem < cutoff_day]


def _day(ns: int) -> str:
    return format_time(ns)[:10]


def _last_of(paths: list[Path], log_id: str) -> dict[str, Any] | None:
    for path in reversed(paths):
        found = None
        for line in files.read_lines(path):
            if line.record is not None and line.record.get("log_id") == log_id:
                found = line.record
        if found is not None:
            return found
    return None
