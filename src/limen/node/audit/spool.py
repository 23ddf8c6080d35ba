"""Audit events the node could not deliver, kept on its disk until the auth service is back.

An event goes to DATA_DIR/audit/events.spool (one JSON line, fsynced) when the auth
service cannot be reached, and from then on every event goes there too, so they reach
the log in the order they happened. A replay task sends them, oldest first, and drops
each one once the auth service acknowledged it. Each event carries the uid the node gave
it, so an event that did reach the log before an answer got lost is not written twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class EventSpool:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = asyncio.Lock()
        self._count: int | None = None

    def __len__(self) -> int:
        if self._count is None:
            self._count = len(self._read())
        return self._count

    async def append(self, entry: dict[str, Any]) -> None:
        line = (json.dumps(entry, default=str) + "\n").encode()
        async with self._lock:
            before = len(self)
            await asyncio.to_thread(self._append, line)
            self._count = before + 1

    def _append(self, line: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)

    def peek(self, limit: int = 100) -> list[dict[str, Any]]:
        return self._read()[:limit]

    def _read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        entries = []
        with self.path.open("rb") as fh:
            for raw in fh:
                if not raw.endswith(b"\n"):
                    break  # torn by a crash before its fsync returned: never acknowledged
                try:
                    entries.append(json.loads(raw))
                except ValueError:
                    log.error("dropping an unreadable line from %s", self.path)
        return entries

    async def drop(self, count: int) -> None:
        """Forget the oldest ``count`` entries (delivered)."""
        async with self._lock:
            await asyncio.to_thread(self._drop, count)
            self._count = None

    def _drop(self, count: int) -> None:
        rest = self._read()[count:]
        if not rest:
            self.path.unlink(missing_ok=True)
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            for entry in rest:
                fh.write((json.dumps(entry, default=str) + "\n").encode())
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(self.path)
