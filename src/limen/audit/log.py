"""A durable JSON-lines audit writer: one file per UTC day, fsync before acknowledging.

`emit()` returns only after the line is on disk, so the action it records can be
acknowledged after it. Writes are serialized, so lines never interleave.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from limen.audit.events import EventType
from limen.clock import Clock, RealClock

log = logging.getLogger(__name__)


# Python keywords cannot hold dots; these are the names auditors' tools expect.
_FIELD_NAMES = {"addr_remote": "addr.remote", "addr_local": "addr.local"}


def _rfc3339(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"


class AuditLog:
    def __init__(self, directory: Path, cluster_name: str, clock: Clock | None = None) -> None:
        self.directory = directory
        self.cluster_name = cluster_name
        self.clock = clock or RealClock()
        self._lock = asyncio.Lock()
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    def build(self, event: EventType, fields: dict[str, Any]) -> dict[str, Any]:
        now = self.clock.now()
        record: dict[str, Any] = {
            "event": event.name,
            "code": event.code,
            "uid": str(uuid.uuid4()),
            "time": _rfc3339(now),
            "cluster_name": self.cluster_name,
        }
        record.update({_FIELD_NAMES.get(k, k): v for k, v in fields.items() if v is not None})
        return record

    async def emit(self, event: EventType, **fields: Any) -> dict[str, Any]:
        record = self.build(event, fields)
        line = json.dumps(record, separators=(",", ":"), default=str) + "\n"
        async with self._lock:
            await asyncio.to_thread(self._append, record["time"][:10], line)
        return record

    def _append(self, day: str, line: str) -> None:
        path = self.directory / f"{day}.log"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def read_all(self) -> list[dict[str, Any]]:
        """Every event on disk, oldest first (for tests and simple tools)."""
        events: list[dict[str, Any]] = []
        for path in sorted(self.directory.glob("*.log")):
            for line in path.read_text().splitlines():
                if line.strip():
                    events.append(json.loads(line))
        return events
