"""Reading the JSON-lines day files: DATA_DIR/log/events/YYYY-MM-DD.log, oldest first."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

DAY_FILE = re.compile(r"^\d{4}-\d{2}-\d{2}\.log$")


@dataclass(frozen=True)
class Line:
    path: Path
    number: int  # 1-based
    text: str
    record: dict[str, Any] | None  # None when the line is not a JSON object

    @property
    def where(self) -> str:
        return f"{self.path.name}:{self.number}"


def day_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if DAY_FILE.match(p.name))


def parse(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def read_lines(path: Path) -> Iterator[Line]:
    """Complete lines of one file. A last line without its newline is a write still in
    progress (or torn by a crash before it was acknowledged) and is not yielded."""
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.endswith(b"\n"):
                return
            text = raw.decode("utf-8", "replace").rstrip("\n")
            if text.strip():
                yield Line(path, number, text, parse(text))


def read_all(directory: Path) -> Iterator[Line]:
    for path in day_files(directory):
        yield from read_lines(path)


def last_record(directory: Path, log_id: str) -> dict[str, Any] | None:
    """The newest record of one chain, looking back through the files from the newest."""
    for path in reversed(day_files(directory)):
        found = None
        for line in read_lines(path):
            if line.record is not None and line.record.get("log_id") == log_id:
                found = line.record
        if found is not None:
            return found
    return None


def complete_lines_end(fh: BinaryIO, end: int) -> int:
    """Offset just past the last newline before `end` (0 when there is none)."""
    pos = end
    while pos > 0:
        step = min(pos, 64 * 1024)
        fh.seek(pos - step)
        newline = fh.read(step).rfind(b"\n")
        if newline >= 0:
            return pos - step + newline + 1
        pos -= step
    return 0


def truncate_torn_tail(path: Path) -> int:
    """Cut a partial last line left by a crash (it was never acknowledged, because a
    line is acknowledged only after its fsync); returns the bytes removed."""
    with path.open("rb+") as fh:
        end = fh.seek(0, os.SEEK_END)
        keep = complete_lines_end(fh, end)
        if keep == end:
            return 0
        fh.truncate(keep)
        fh.flush()
        os.fsync(fh.fileno())
        return end - keep
