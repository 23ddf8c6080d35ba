"""The SHA-256 of a file's bytes as they were transferred, put in offset order.

SFTP clients keep many requests in flight, and a reply may be shorter than asked, so
pieces can arrive after a gap. A piece beyond the next expected offset waits (copied,
up to ``MAX_WAITING`` bytes) until the gap is filled. A piece that overlaps what was
already hashed, a gap that is never filled, or too much waiting leaves no digest, and
the audit says why instead.
"""

from __future__ import annotations

import hashlib
from typing import Any

MAX_WAITING = 16 * 1024 * 1024
NON_SEQUENTIAL = "non-sequential"


class OffsetDigest:
    def __init__(self) -> None:
        self._sha = hashlib.sha256()
        self.length = 0  # every byte transferred, hashed or not
        self.start: int | None = None  # offset of the first byte hashed
        self._next = 0
        self._waiting: dict[int, bytes] = {}
        self._waiting_bytes = 0
        self._gave_up = False

    def add(self, offset: int, data: bytes | memoryview) -> None:
        size = len(data)
        self.length += size
        if self._gave_up or not size:
            return
        if self.start is None:
            self.start = self._next = offset
        if offset == self._next:
            self._sha.update(data)
            self._next += size
            self._drain()
        elif (offset > self._next and offset not in self._waiting
              and self._waiting_bytes + size <= MAX_WAITING):
            self._waiting[offset] = bytes(data)
            self._waiting_bytes += size
        else:
            self._give_up()

    def _drain(self) -> None:
        while self._waiting:
            piece = self._waiting.pop(self._next, None)
            if piece is None:
                return
            self._waiting_bytes -= len(piece)
            self._sha.update(piece)
            self._next += len(piece)

    def _give_up(self) -> None:
        self._gave_up = True
        self._waiting.clear()
        self._waiting_bytes = 0

    def fields(self) -> dict[str, Any]:
        """``sha256`` (and ``offset`` when it did not start at 0), or why there is none."""
        if self._gave_up or self._waiting:
            return {"sha256_skipped": NON_SEQUENTIAL}
        fields: dict[str, Any] = {"sha256": self._sha.hexdigest()}
        if self.start:
            fields["offset"] = self.start
        return fields
