"""The audit log writer: chained lines on disk before emit returns, group commit, signed
checkpoints, recovery after a torn write, a store that catches up, resends written once."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import threading
import uuid
from pathlib import Path

import pytest

from limen.audit import schema
from limen.audit.chain import GENESIS, AuditKey, checkpoint_message, event_hash, signature_ok
from limen.audit.log import AuditLog
from limen.audit.verify import verify_files
from limen.backend.audit_memory import MemoryEventStore
from limen.errors import BadParameter, ConnectionProblem

SID = "0b6c1f3e-5d2a-4e8b-9c7d-1a2b3c4d5e6f"


def _exec(user: str, command: str | None = None) -> schema.Exec:
    return schema.Exec(sid=SID, user=user, command=command)


def _log(tmp_path: Path, **kwargs) -> AuditLog:
    return AuditLog(tmp_path / "log" / "events", "test.limen", **kwargs)


def _lines(log: AuditLog) -> list[dict]:
    return [json.loads(line) for path in sorted(log.directory.glob("*.log"))
            for line in path.read_text().splitlines()]


def _count_fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The file descriptors os.fsync is called with from now on, in order."""
    synced: list[int] = []
    real = os.fsync

    def counting(fd: int) -> None:
        synced.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", counting)
    return synced


def _keys(log: AuditLog) -> dict[str, str]:
    return {log.log_id: log.key.public_b64}


async def test_an_event_is_chained_and_on_disk_when_emit_returns(tmp_path: Path) -> None:
    log = _log(tmp_path)
    first = await log.emit(schema.UserLogin(user="alice", addr_remote="10.0.0.1"))
    assert _lines(log) == [first]  # written before emit returned
    second = await log.emit(schema.UserDelete(user="admin", name="bob"))
    assert (first["seq"], second["seq"]) == (1, 2)
    assert first["prev_hash"] == GENESIS and second["prev_hash"] == first["hash"]
    assert first["hash"] == event_hash(first) and first["addr.remote"] == "10.0.0.1"
    assert (first["event"], first["code"], first["cluster_name"]) == ("user.login", "T1000I",
                                                                      "test.limen")
    assert len(first["time"]) == len("2024-05-01T12:00:00.123456789Z")
    assert (tmp_path / "ca" / "audit_key.pem").stat().st_mode & 0o777 == 0o600
    await log.close()


async def test_concurrent_events_share_an_fsync(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    log = _log(tmp_path)
    await log.start()
    syncs = _count_fsyncs(monkeypatch)
    await asyncio.gather(*(log.emit(_exec(f"u{i}")) for i in range(500)))
    assert [r["seq"] for r in _lines(log)] == list(range(1, 501))
    assert len(syncs) < 50  # group commit: far fewer fsyncs than events
    await log.close()


async def test_a_caller_that_gives_up_still_has_its_event_written_in_order(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = _log(tmp_path)
    await log.start()
    syncing, release = threading.Event(), threading.Event()
    real = os.fsync

    def held(fd: int) -> None:  # the writer stays in its fsync until the test lets go
        syncing.set()
        assert release.wait(10)
        real(fd)

    monkeypatch.setattr(os, "fsync", held)
    first = asyncio.ensure_future(log.emit(_exec("first")))
    assert await asyncio.to_thread(syncing.wait, 10)
    gave_up = asyncio.ensure_future(log.emit(_exec("gave-up")))
    await asyncio.sleep(0)  # queued behind the batch being synced
    gave_up.cancel()
    release.set()
    await first
    last = await log.emit(_exec("last"))
    with pytest.raises(asyncio.CancelledError):
        await gave_up
    assert [r["user"] for r in _lines(log)] == ["first", "gave-up", "last"]
    assert last["seq"] == 3
    await log.close()


async def test_each_event_gets_its_own_random_version_4_uuid(tmp_path: Path) -> None:
    log = _log(tmp_path)
    written = await asyncio.gather(*(log.emit(_exec(f"u{i}")) for i in range(600)))
    uids = [uuid.UUID(record["uid"]) for record in written]
    assert len(set(uids)) == 600  # more than one pool of randomness
    assert all(u.version == 4 and u.variant == uuid.RFC_4122 for u in uids)
    assert [str(u) for u in uids] == [record["uid"] for record in written]
    await log.close()


async def test_checkpoints_are_signed_and_the_chain_verifies(tmp_path: Path) -> None:
    log = _log(tmp_path, checkpoint_every=10)
    for i in range(25):
        await log.emit(_exec("alice", f"cmd {i}"))
    await log.close()  # writes a last checkpoint
    checkpoints = [r for r in _lines(log) if r["event"] == "audit.checkpoint"]
    assert len(checkpoints) == 3
    for cp in checkpoints:
        message = checkpoint_message("checkpoint", log.log_id, cp["through_seq"],
                                     cp["through_hash"])
        assert signature_ok(log.key.public_b64, message, cp["signature"])
        assert cp["through_seq"] == cp["seq"] - 1
    report, _ = verify_files(log.directory, _keys(log))
    assert report.ok and report.checkpoints == 3 and report.files_checked == 28


async def test_a_torn_last_line_is_cut_and_the_chain_continues(tmp_path: Path) -> None:
    log = _log(tmp_path)
    await log.emit(_exec("alice"))
    await log.close()
    path = next(log.directory.glob("*.log"))
    with path.open("a") as fh:
        fh.write('{"event":"exec","user":"half')  # a crash in the middle of a write
    again = _log(tmp_path)
    record = await again.emit(_exec("bob"))
    assert record["seq"] == 3  # after the close checkpoint
    assert path.read_text().count("half") == 0
    report, _ = verify_files(again.directory, _keys(again))
    assert report.ok, report.problems
    await again.close()


async def test_a_failed_write_fails_the_action_and_leaves_no_half_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = _log(tmp_path)
    await log.emit(_exec("alice"))
    real = os.fsync

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(ConnectionProblem):
        await log.emit(_exec("lost"))
    monkeypatch.setattr(os, "fsync", real)
    record = await log.emit(_exec("bob"))
    assert record["seq"] == 2
    assert [r["user"] for r in _lines(log)] == ["alice", "bob"]
    await log.close()


class FlakyStore(MemoryEventStore):
    def __init__(self) -> None:
        super().__init__()
        self.down = False

    async def insert(self, rows):  # noqa: ANN001, ANN201 - the protocol's signature
        if self.down:
            raise ConnectionProblem("database away")
        await super().insert(rows)


async def test_the_store_catches_up_with_the_files(tmp_path: Path) -> None:
    store = FlakyStore()
    log = _log(tmp_path, store=store)
    await log.emit(_exec("a"))
    await log.flush()
    store.down = True
    await log.emit(_exec("b"))  # still durable in the files
    await log.emit(_exec("c"))
    await log.flush()
    assert await store.count() == 1
    store.down = False
    await log.emit(_exec("d"))
    await log.flush()
    assert [e.seq for e in await store.chain(log.log_id, 0, 100)] == [1, 2, 3, 4]
    await log.close()

    # A store that lost everything is filled again from the files on the next start.
    fresh = FlakyStore()
    reopened = _log(tmp_path, store=fresh)
    await reopened.start()
    assert await fresh.count() == 5
    await reopened.close()


async def test_a_resent_event_is_written_once(tmp_path: Path) -> None:
    store = MemoryEventStore()
    log = _log(tmp_path, store=store)
    uid = "6f1d2b4e-8c2a-4c1e-9a55-0d2e3f4a5b6c"
    start = schema.SessionStart(sid=SID, user="alice")
    first = await log.record(start, uid=uid)
    again = await log.record(start, uid=uid)
    await log.flush()
    assert first["uid"] == uid and first["user"] == "alice"
    assert again == {"uid": uid, "duplicate": True}
    await log.close()
    restarted = _log(tmp_path, store=store)  # remembers through the store, too
    assert (await restarted.record(schema.SessionStart(sid=SID), uid=uid))["duplicate"]
    assert [r["uid"] for r in _lines(log) if r["event"] == "session.start"] == [uid]
    await restarted.close()


async def test_a_batch_is_written_in_order_with_one_fsync(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """record_many: a node's batch waits for one fsync, not one per event; each event is
    answered, a refused one alone, and a uid already written (or twice in the batch) is
    written once."""
    store = MemoryEventStore()
    log = _log(tmp_path, store=store)
    resent = "6f1d2b4e-8c2a-4c1e-9a55-0d2e3f4a5b6c"
    await log.record(_exec("earlier"), uid=resent)
    syncs = _count_fsyncs(monkeypatch)
    twice = "7a2e3c5f-9d3b-4d2f-8b66-1e3f4a5b6c7d"
    answers = await log.record_many([
        (_exec("a"), None), (_exec("b"), resent), (_exec("c", "cat \ud800"), None),
        (_exec("d"), twice), (_exec("e"), twice), (_exec("f"), None),
    ])
    assert len(syncs) == 1
    assert answers[1] == {"uid": resent, "duplicate": True}
    assert answers[4] == {"uid": twice, "duplicate": True}
    assert isinstance(answers[2], BadParameter)
    written = [answers[0], answers[3], answers[5]]
    assert [r["user"] for r in written] == ["a", "d", "f"]
    assert [r["seq"] for r in written] == [2, 3, 4]
    assert [r["user"] for r in _lines(log)] == ["earlier", "a", "d", "f"]
    await log.close()


def test_the_audit_key_persists_and_names_the_chain(tmp_path: Path) -> None:
    first = AuditKey.load_or_create(tmp_path)
    second = AuditKey.load_or_create(tmp_path)
    assert first.log_id == second.log_id and len(first.log_id) == 16
    assert (tmp_path / "audit_key.pub").read_text().strip() == first.public_b64



async def test_an_event_that_cannot_be_written_as_utf8_fails_alone(tmp_path: Path) -> None:
    """A lone surrogate (JSON's \\ud800 escape makes one) used to stop the writer for
    good: every later emit waited for ever."""
    log = _log(tmp_path)
    before = await log.emit(_exec("alice", "ls"))
    bad = asyncio.ensure_future(log.emit(_exec("mallory", "cat \ud800")))
    after = asyncio.ensure_future(log.emit(_exec("bob", "id")))  # in the same batch
    async with asyncio.timeout(5):
        with pytest.raises(BadParameter, match="cannot be written as UTF-8"):
            await bad
        written = await after
    assert written["seq"] == before["seq"] + 1  # no gap where the refused one was
    assert (await log.emit(_exec("carol", "pwd")))["seq"] == written["seq"] + 1
    await log.close()
    report, _ = verify_files(log.directory, _keys(log))
    assert report.ok
    assert [line.get("user") for line in _lines(log) if line["event"] == "exec"] == [
        "alice", "bob", "carol"]


async def test_the_writer_outlives_a_batch_it_cannot_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure that is not the disk's (here the checkpoint's signing) fails that batch's
    callers and nothing after it: before, it ended the writer task."""
    log = _log(tmp_path)
    await log.emit(_exec("alice"))

    def broken(key: AuditKey, message: bytes) -> str:
        raise RuntimeError("signing failed")

    monkeypatch.setattr(AuditKey, "sign", broken)
    async with asyncio.timeout(5):
        with pytest.raises(ConnectionProblem, match="could not write"):
            await log.checkpoint()
    monkeypatch.undo()
    async with asyncio.timeout(5):
        assert (await log.emit(_exec("bob")))["seq"] == 2
    await log.close()
    assert [r["user"] for r in _lines(log) if r["event"] == "exec"] == ["alice", "bob"]
