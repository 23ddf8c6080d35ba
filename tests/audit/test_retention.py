"""Retention removes whole day files older than the maximum age (and their store rows)
and old recordings; a signed anchor keeps the rest of the chain verifiable, while the
same removal done by hand, without an anchor, is reported."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from limen.audit import schema
from limen.audit.log import AuditLog
from limen.audit.retention import Retention
from limen.audit.store import RecordingMeta, open_audit_store
from limen.audit.verify import verify_files, verify_store
from limen.clock import FakeClock

DAY = timedelta(days=1)
SID = "5e2a9c1d-7b3f-4a6e-8d0c-2f1e3a4b5c6d"


def _exec(command: str) -> schema.Exec:
    return schema.Exec(sid=SID, user="alice", command=command)


async def _three_days(tmp_path: Path):  # noqa: ANN202 - (log, store, clock)
    clock = FakeClock(datetime(2030, 3, 1, 12, tzinfo=UTC))
    store = await open_audit_store("sqlite", tmp_path)
    log = AuditLog(tmp_path / "log" / "events", "test.limen", clock, store=store.events,
                   checkpoint_every=4)
    for day in range(3):
        for i in range(5):
            await log.emit(_exec(f"day {day} cmd {i}"))
        clock.advance(DAY)
    return log, store, clock


async def test_old_days_go_and_the_chain_still_verifies(tmp_path: Path) -> None:
    log, store, clock = await _three_days(tmp_path)
    keys = {log.log_id: log.key.public_b64}
    files = sorted(p.name for p in log.directory.glob("*.log"))
    assert files == ["2030-03-01.log", "2030-03-02.log", "2030-03-03.log"]

    old = RecordingMeta("3c8e7a1e-1d5b-4c55-8a8e-0f6b2f1d9a01", start_ns=1, end_ns=2)
    await store.recordings.upsert_meta(old)
    retention = Retention(log, store, events_max_age=DAY, recordings_max_age=DAY)
    result = await retention.run_once()  # it is now 2030-03-04 12:00
    assert (result.files_removed, result.recordings_removed) == (2, 1)
    assert result.events_removed == 12  # 10 events and 2 checkpoints
    assert sorted(p.name for p in log.directory.glob("*.log")) == ["2030-03-03.log",
                                                                  "2030-03-04.log"]
    anchor = [r for r in log.read_all() if r["event"] == "audit.retention"][0]
    assert anchor["removed_through_seq"] == 12 and anchor["code"] == "TAU01I"

    await log.emit(_exec("after retention"))  # the chain goes on
    await log.close()
    report, chain = verify_files(log.directory, keys)
    assert report.ok, report.problems
    assert any("removed by retention" in note for note in report.notes)
    await verify_store(store.events, keys, chain, None, report)
    assert report.ok, report.problems
    assert report.store_checked == report.files_checked
    await store.close()


async def test_removing_old_files_by_hand_is_reported(tmp_path: Path) -> None:
    log, store, _ = await _three_days(tmp_path)
    await log.close()
    (log.directory / "2030-03-01.log").unlink()
    report, _ = verify_files(log.directory, {log.log_id: log.key.public_b64})
    assert not report.ok
    problem = report.problems[0]
    assert problem.kind == "removed" and problem.where == "2030-03-02.log:1"
    assert "no signed retention anchor" in problem.message
    await store.close()


async def test_nothing_is_removed_without_a_maximum_age(tmp_path: Path) -> None:
    log, store, _ = await _three_days(tmp_path)
    result = await Retention(log, store, None, None).run_once()
    assert (result.files_removed, result.recordings_removed) == (0, 0)
    assert len(list(log.directory.glob("*.log"))) == 3
    await log.close()
    await store.close()
