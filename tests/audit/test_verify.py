"""`limen audit verify`: passes on an untouched log, and after one line is edited,
deleted, reordered or inserted, fails (exit 1) naming the first event concerned; it
checks the store too, against the files."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from limen.audit import schema
from limen.audit.log import AuditLog
from limen.audit.store import open_audit_store

SID = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"


def _verify(data_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "limen.cli.main", "audit", "verify", "--data-dir", str(data_dir),
         *extra], capture_output=True, text=True, timeout=60,
        env={**os.environ, "LIMEN_HOME": str(data_dir / "home")},
    )


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A data dir with a log of 30 events (and 3 checkpoints), in the files and the store."""

    async def write() -> None:
        store = await open_audit_store("sqlite", tmp_path)
        log = AuditLog(tmp_path / "log" / "events", "test.limen", store=store.events,
                       checkpoint_every=10)
        for i in range(30):
            await log.emit(schema.Exec(sid=SID, user=f"user{i % 3}", command=f"echo {i}"))
        await log.close()
        await store.close()

    asyncio.run(write())
    return tmp_path


def _day_file(data_dir: Path) -> Path:
    return next((data_dir / "log" / "events").glob("*.log"))


def _rewrite(data_dir: Path, change) -> str:  # noqa: ANN001 - a function of the lines
    path = _day_file(data_dir)
    lines = path.read_text().splitlines(keepends=True)
    change(lines)
    path.write_text("".join(lines))
    return path.name


def test_an_untouched_log_verifies(data_dir: Path) -> None:
    result = _verify(data_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: 33 events in the files and 33 in the store checked" in result.stdout
    as_json = json.loads(_verify(data_dir, "--format", "json").stdout)
    assert as_json["ok"] is True and as_json["checkpoints"] == 6  # 3 in files, 3 in store
    assert _verify(data_dir, "--since", "1h").returncode == 0


def test_an_edited_line_is_named(data_dir: Path) -> None:
    def edit(lines: list[str]) -> None:
        lines[4] = lines[4].replace('"user1"', '"mallory"')

    name = _rewrite(data_dir, edit)
    result = _verify(data_dir)
    assert result.returncode == 1
    assert f"BROKEN: changed at {name}:5" in result.stdout, result.stdout


def test_an_edited_line_with_its_hash_recomputed_is_named(data_dir: Path) -> None:
    from limen.audit.chain import event_hash

    def edit(lines: list[str]) -> None:
        record = json.loads(lines[4])
        record["user"] = "mallory"
        record["hash"] = event_hash(record)
        lines[4] = json.dumps(record) + "\n"

    name = _rewrite(data_dir, edit)
    result = _verify(data_dir)
    assert result.returncode == 1
    assert f"BROKEN: changed at {name}:5" in result.stdout, result.stdout


def test_a_deleted_line_is_named(data_dir: Path) -> None:
    name = _rewrite(data_dir, lambda lines: lines.pop(6))
    result = _verify(data_dir)
    assert result.returncode == 1
    assert f"BROKEN: removed at {name}:7: seq 7 missing" in result.stdout, result.stdout


def test_a_reordered_line_is_named(data_dir: Path) -> None:
    def swap(lines: list[str]) -> None:
        lines[11], lines[12] = lines[12], lines[11]

    name = _rewrite(data_dir, swap)
    result = _verify(data_dir)
    assert result.returncode == 1
    assert f"BROKEN: reordered at {name}:12" in result.stdout, result.stdout
    assert f"seq 12 is at {name}:13" in result.stdout


def test_an_inserted_line_is_named(data_dir: Path) -> None:
    def insert(lines: list[str]) -> None:
        forged = json.loads(lines[2])
        forged["user"] = "ghost"
        lines.insert(3, json.dumps(forged) + "\n")

    name = _rewrite(data_dir, insert)
    result = _verify(data_dir)
    assert result.returncode == 1
    assert f"BROKEN: inserted at {name}:4" in result.stdout, result.stdout


def test_a_forged_checkpoint_is_refused(data_dir: Path) -> None:
    from limen.audit.chain import event_hash

    def forge(lines: list[str]) -> None:
        index = next(i for i, line in enumerate(lines) if "audit.checkpoint" in line)
        record = json.loads(lines[index])
        record["signature"] = record["signature"][::-1]
        record["hash"] = event_hash(record)
        lines[index] = json.dumps(record) + "\n"
        after = json.loads(lines[index + 1])  # relink the next event, as a forger would
        after["prev_hash"] = record["hash"]
        after["hash"] = event_hash(after)
        lines[index + 1] = json.dumps(after) + "\n"

    _rewrite(data_dir, forge)
    result = _verify(data_dir)
    assert result.returncode == 1
    assert "BROKEN: signature at" in result.stdout, result.stdout


def test_the_store_is_checked_against_the_files(data_dir: Path) -> None:
    with sqlite3.connect(data_dir / "audit.sqlite") as db:
        row = db.execute("SELECT data FROM audit_events WHERE seq = 8").fetchone()
        db.execute("UPDATE audit_events SET data = ? WHERE seq = 8",
                   (row[0].replace('"echo 7"', '"echo seven"'),))
    result = _verify(data_dir)
    assert result.returncode == 1
    assert "BROKEN: changed at store: log" in result.stdout and "seq 8" in result.stdout

    with sqlite3.connect(data_dir / "audit.sqlite") as db:
        db.execute("UPDATE audit_events SET data = ? WHERE seq = 8", (row[0],))
        db.execute("UPDATE audit_events SET user = 'nobody' WHERE seq = 9")
    result = _verify(data_dir)
    assert result.returncode == 1
    assert "searchable columns differ" in result.stdout

    with sqlite3.connect(data_dir / "audit.sqlite") as db:
        db.execute("UPDATE audit_events SET user = 'user2' WHERE seq = 9")
        db.execute("DELETE FROM audit_events WHERE seq = 10")
    result = _verify(data_dir)
    assert result.returncode == 1
    assert "removed at store" in result.stdout and "seq 10 missing" in result.stdout
