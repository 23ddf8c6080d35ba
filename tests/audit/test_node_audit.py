"""The node's side: events wait on the node's disk while the auth service is away and
arrive in order, once each; recordings are written through and shipped; after a crash the
node reports each interrupted session's end and closes its recording as interrupted."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from limen.errors import AccessDenied, BadParameter, ConnectionProblem, LimenError, NotFound
from limen.node.audit.reporter import NodeAudit
from limen.recording.asciicast import printed_text
from limen.recording.cast import LocalRecording
from limen.recording.upload import FIRST_UPLOAD_AFTER, WHOLE_MAX

SID = "7d1c2b3a-4e5f-4a6b-8c7d-9e0f1a2b3c4d"


class FakeLink:
    """The auth service as the node sees it; ``down`` makes every call fail."""

    def __init__(self) -> None:
        self.down = False
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.recordings: dict[str, bytearray] = {}
        self.metas: dict[str, dict[str, Any]] = {}
        self.calls = 0  # calls that carried events
        self.recording_calls: list[str] = []  # "update", "whole", "append", in order
        self.before_batches = False  # an auth service without POST /v1/events/batch
        self.batches: list[list[str]] = []  # the session ids of each batch of recordings
        self.before_recording_batches = False  # a proxy without POST /v1/recordings/batch
        self.refused_recordings: set[str] = set()
        self.during_batch: Any = None  # awaited inside the next batch of recordings

    def _check(self) -> None:
        if self.down:
            raise ConnectionProblem("cannot reach the proxy")

    async def report_event(self, name: str, fields: dict[str, Any]) -> None:
        self._check()
        if name == "bogus":
            raise BadParameter("unknown event 'bogus'")
        if fields.get("sid") == "not-mine":
            raise AccessDenied("session not-mine was started by another node")
        if all(f.get("uid") != fields["uid"] for _, f in self.events):
            self.events.append((name, fields))

    async def report_events(self, events: list[tuple[str, dict[str, Any]]]
                            ) -> list[LimenError | None]:
        self._check()
        if self.before_batches:
            raise NotFound("Not Found")
        self.calls += 1
        answers: list[LimenError | None] = []
        for name, fields in events:
            try:
                await self.report_event(name, fields)
            except (BadParameter, AccessDenied) as exc:
                answers.append(exc)
            else:
                answers.append(None)
        return answers

    async def recording_update(self, session_id: str, meta: dict[str, Any]) -> dict[str, Any]:
        self._check()
        if session_id in self.refused_recordings:
            raise AccessDenied(f"session {session_id} was started by another node")
        data = self.recordings.setdefault(session_id, bytearray())
        whole = meta.get("data")
        self.recording_calls.append("update" if whole is None else "whole")
        if whole is not None and not data:  # as the auth service: bytes, then the end
            data += whole.encode()
        final = meta.get("end_ns") is not None and meta.get("size") == len(data)
        if final:
            self.metas[session_id] = meta
        return {"size": len(data), "complete": final and not meta.get("interrupted"),
                "ended": final}

    async def recordings_whole(self, recordings: list[tuple[str, dict[str, Any]]]
                               ) -> list[dict[str, Any] | LimenError]:
        """As POST /v1/recordings/batch: each as recording_update takes it."""
        self._check()
        if self.before_recording_batches:  # as the proxy answers a method it has no route for
            raise BadParameter("this path does not take that method")
        self.batches.append([session_id for session_id, _ in recordings])
        if self.during_batch is not None:
            await self.during_batch()
            self.during_batch = None
        answers: list[dict[str, Any] | LimenError] = []
        for session_id, meta in recordings:
            try:
                answers.append(await self.recording_update(session_id, meta))
            except AccessDenied as exc:
                answers.append(exc)
        return answers

    async def recording_append(self, session_id: str, offset: int, data: bytes) -> int:
        self._check()
        self.recording_calls.append("append")
        stored = self.recordings[session_id]
        if offset == len(stored):
            stored += data
        return len(stored)


async def eventually(predicate: Any, what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def _start_fields(**extra: Any) -> dict[str, Any]:
    return {"sid": SID, "user": "alice", "login": "root", "session_kind": "shell",
            "interactive": True, "terminal_size": "100:30", "server_id": "n1",
            "server_hostname": "web1", "session_start": "2030-01-01T00:00:00+00:00", **extra}


async def test_events_wait_on_disk_and_arrive_in_order_once(tmp_path: Path) -> None:
    link = FakeLink()
    audit = NodeAudit(link, tmp_path, "n1", "web1")
    await audit.start()
    await audit.on_event("auth", {"user": "alice", "success": True})
    link.down = True
    await audit.on_event("exec", {"user": "alice", "command": "one"})
    await audit.on_event("bogus", {"user": "alice"})
    link.down = False  # the spool is not empty: this one queues behind the others
    await audit.on_event("exec", {"user": "alice", "command": "two"})
    assert (tmp_path / "audit" / "events.spool").exists()
    await eventually(lambda: len(link.events) == 3, "the spooled events")
    assert [f.get("command") for _, f in link.events] == [None, "one", "two"]
    spooled = link.events[1][1]
    assert spooled["uid"] and spooled["time"].endswith("Z")  # when it happened
    await eventually(lambda: not (tmp_path / "audit" / "events.spool").exists(),
                     "the spool to be emptied")
    await audit.stop()



async def test_a_spooled_event_the_auth_service_refuses_does_not_hold_back_the_rest(
    tmp_path: Path,
) -> None:
    """Refused is final (the auth service audited why): the spool moves past it."""
    link = FakeLink()
    audit = NodeAudit(link, tmp_path, "n1", "web1")
    await audit.start()
    link.down = True
    await audit.on_event("exec", {"user": "alice", "command": "one"})
    await audit.on_event("exec", {"sid": "not-mine", "user": "alice", "command": "forged"})
    await audit.on_event("exec", {"user": "alice", "command": "two"})
    link.down = False
    audit._wake_replay.set()  # noqa: SLF001 - not waiting for the replay's next round
    await eventually(lambda: not (tmp_path / "audit" / "events.spool").exists(),
                     "the spool to be emptied")
    assert [f.get("command") for _, f in link.events] == ["one", "two"]
    assert link.calls == 1  # the three went in one call
    await audit.stop()


async def test_an_auth_service_without_batches_gets_the_events_one_by_one(
    tmp_path: Path,
) -> None:
    link = FakeLink()
    link.before_batches = True
    audit = NodeAudit(link, tmp_path, "n1", "web1")
    await audit.start()
    for command in ("one", "two"):
        await audit.on_event("exec", {"user": "alice", "command": command})
    audit._wake_replay.set()  # noqa: SLF001 - not waiting for the replay's next round
    await eventually(lambda: len(link.events) == 2, "the events, one call each")
    assert [f.get("command") for _, f in link.events] == ["one", "two"]
    await eventually(lambda: not (tmp_path / "audit" / "events.spool").exists(),
                     "the spool to be emptied")
    await audit.stop()

async def test_a_session_is_recorded_and_shipped(tmp_path: Path) -> None:
    link = FakeLink()
    audit = NodeAudit(link, tmp_path, "n1", "web1")
    await audit.start()
    await audit.on_event("session.start", _start_fields())
    await audit.on_output(SID, "héllo ".encode()[:2], "stdout")  # a split character
    await audit.on_output(SID, "héllo ".encode()[2:] + b"world\r\n", "stdout")
    await audit.on_event("resize", {"sid": SID, "user": "alice", "size": "120:40"})
    cast = tmp_path / "recordings" / f"{SID}.cast"
    lines = cast.read_text().splitlines()  # written through, while the session runs
    assert json.loads(lines[0])["width"] == 100
    frames = [json.loads(line)[1:] for line in lines[1:]]
    assert "".join(data for code, data in frames if code == "o") == "héllo world\r\n"
    assert frames[-1] == ["r", "120x40"]
    await audit.on_event("session.end", {"sid": SID, "user": "alice", "exit_code": 0})
    await audit.uploader.upload_all()
    assert link.metas[SID]["end_ns"] and not link.metas[SID]["interrupted"]
    assert "héllo world" in printed_text(bytes(link.recordings[SID]))
    assert not cast.exists()  # shipped, confirmed, removed
    end = [f for name, f in link.events if name == "session.end"][0]
    assert end["participants"] == ["alice"]
    await audit.stop()


async def test_a_short_session_ships_in_one_request(tmp_path: Path) -> None:
    """Ended before the uploader first looked: metadata, bytes and end in one request."""
    link = FakeLink()
    audit = NodeAudit(link, tmp_path, "n1", "web1")
    await audit.start()
    await audit.on_event("session.start", _start_fields())
    await audit.on_output(SID, b"done\r\n", "stdout")
    await audit.on_event("session.end", {"sid": SID, "user": "alice", "exit_code": 0})
    cast = tmp_path / "recordings" / f"{SID}.cast"
    sent = cast.read_bytes()
    await eventually(lambda: not cast.exists(), "the recording to ship")
    assert link.recording_calls == ["whole"]
    assert bytes(link.recordings[SID]) == sent
    assert link.metas[SID]["size"] == len(sent) and link.metas[SID]["end_ns"]
    await audit.stop()


async def _short_session(audit: NodeAudit, sid: str) -> None:
    await audit.on_event("session.start", _start_fields(sid=sid))
    await audit.on_output(sid, f"{sid}\r\n".encode(), "stdout")
    await audit.on_event("session.end", {"sid": sid, "user": "alice", "exit_code": 0})


async def test_short_sessions_ship_together_and_a_refused_one_stays(tmp_path: Path) -> None:
    """Recordings that ended before the uploader looked go in one batch; the one the
    auth service refuses keeps its files, and the next try says why."""
    link = FakeLink()
    audit = NodeAudit(link, tmp_path, "n1", "web1")
    sids = [str(uuid.UUID(int=n)) for n in range(1, 5)]
    link.refused_recordings.add(sids[2])
    for sid in sids:
        await _short_session(audit, sid)
    with pytest.raises(AccessDenied, match=f"session {sids[2]}"):
        await audit.uploader.upload_all()
    assert link.batches == [sids]  # one request for all four
    casts = tmp_path / "recordings"
    assert sorted(p.name for p in casts.iterdir()) == [f"{sids[2]}.cast", f"{sids[2]}.json"]
    for sid in (sids[0], sids[1], sids[3]):
        assert bytes(link.recordings[sid]).endswith(f'{sid}\\r\\n"]\n'.encode())
        assert link.metas[sid]["end_ns"]
    assert sids[2] not in link.recordings
    await audit.stop()


async def test_a_session_that_ends_during_a_batch_goes_in_the_next(tmp_path: Path) -> None:
    """Running when the batch was read, ended by the time the uploader reaches it: it
    waits for the next batch instead of costing a request of its own."""
    link = FakeLink()
    audit = NodeAudit(link, tmp_path, "n1", "web1")
    ended, late = str(uuid.UUID(int=1)), str(uuid.UUID(int=2))
    await _short_session(audit, ended)
    await audit.on_event("session.start", _start_fields(sid=late))

    async def end_late() -> None:
        await audit.on_event("session.end", {"sid": late, "user": "alice", "exit_code": 0})

    link.during_batch = end_late
    await audit.uploader.upload_all()
    assert link.batches == [[ended]] and link.recording_calls == ["whole"]
    await audit.uploader.upload_all()
    assert link.batches == [[ended], [late]] and link.recording_calls == ["whole"] * 2
    assert sorted(link.metas) == [ended, late]
    await audit.stop()


async def test_a_proxy_without_the_batch_gets_each_recording_whole(tmp_path: Path) -> None:
    """A node newer than its proxy: each short session still ships, in a request each."""
    link = FakeLink()
    link.before_recording_batches = True
    audit = NodeAudit(link, tmp_path, "n1", "web1")
    sids = [str(uuid.UUID(int=n)) for n in range(1, 4)]
    for sid in sids:
        await _short_session(audit, sid)
    await audit.uploader.upload_all()
    assert link.batches == [] and link.recording_calls == ["whole"] * 3
    assert sorted(link.metas) == sids and not list((tmp_path / "recordings").iterdir())
    await audit.stop()


async def test_a_running_session_ships_once_it_is_a_second_old(tmp_path: Path) -> None:
    """Until then it may still end and go in one request; after, it streams as it runs."""
    link = FakeLink()
    audit = NodeAudit(link, tmp_path, "n1", "web1")
    await audit.start()
    await audit.uploader.stop()  # this test drives the uploads itself
    now = [100.0]
    audit.uploader.monotonic = lambda: now[0]
    await audit.on_event("session.start", _start_fields())
    await audit.on_output(SID, b"still running\r\n", "stdout")
    await audit.uploader.upload_all()
    assert link.recording_calls == []  # first seen just now
    now[0] += FIRST_UPLOAD_AFTER - 0.01
    await audit.uploader.upload_all()
    assert link.recording_calls == []
    now[0] += 0.02
    await audit.uploader.upload_all()
    assert link.recording_calls == ["update", "append"]  # while it runs
    assert b"still running" in bytes(link.recordings[SID])
    await audit.stop()


async def test_a_long_or_torn_recording_ships_the_usual_way(tmp_path: Path) -> None:
    """Past WHOLE_MAX, or ending in half a line (a crash), a recording goes in whole
    lines by offset, its end last, as it always did."""
    link = FakeLink()
    audit = NodeAudit(link, tmp_path, "n1", "web1")
    await audit.start()
    await audit.uploader.stop()  # this test drives the uploads itself
    await audit.on_event("session.start", _start_fields())
    await audit.on_output(SID, b"x" * (WHOLE_MAX + 10) + b"\r\n", "stdout")
    await audit.on_event("session.end", {"sid": SID, "user": "alice", "exit_code": 0})
    cast = tmp_path / "recordings" / f"{SID}.cast"
    sent = cast.read_bytes()
    assert await audit.uploader.upload(SID)
    assert link.recording_calls == ["update", "append", "update"]
    assert bytes(link.recordings[SID]) == sent

    other = "0d1c2b3a-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
    await audit.on_event("session.start", _start_fields(sid=other))
    await audit.on_output(other, b"short\r\n", "stdout")
    await audit.on_event("session.end", {"sid": other, "user": "alice", "exit_code": 0})
    torn = tmp_path / "recordings" / f"{other}.cast"
    whole_lines = torn.read_bytes()
    with torn.open("a") as fh:
        fh.write('[1.5, "o", "half a li')
    link.recording_calls.clear()
    assert await audit.uploader.upload(other)
    assert link.recording_calls == ["update", "append", "update"]
    assert bytes(link.recordings[other]) == whole_lines  # the half line is never sent
    await audit.stop()


async def test_after_a_crash_the_session_ends_interrupted(tmp_path: Path) -> None:
    link = FakeLink()
    link.down = True  # the auth service is away too, at first
    crashed = NodeAudit(link, tmp_path, "n1", "web1")
    await crashed.start()
    await crashed.on_event("session.start", _start_fields())
    await crashed.on_output(SID, b"before the crash\r\n", "stdout")
    # The node dies here: no session.end, no close; a write was cut in the middle.
    crashed.uploader._task.cancel()  # noqa: SLF001 - simulating the process's death
    crashed._replayer.cancel()  # noqa: SLF001
    with (tmp_path / "recordings" / f"{SID}.cast").open("a") as fh:
        fh.write('[1.5, "o", "half a li')

    link.down = False
    restarted = NodeAudit(link, tmp_path, "n1", "web1")
    await restarted.start()
    await eventually(lambda: any(n == "session.end" for n, _ in link.events),
                     "the interrupted session's end")
    end = [f for name, f in link.events if name == "session.end"][0]
    assert end["interrupted"] is True and end["sid"] == SID and end["user"] == "alice"
    assert end["session_start"] == "2030-01-01T00:00:00+00:00" and end["session_stop"]
    # (that session.end is also what takes the session off the auth service's list)
    assert [n for n, _ in link.events] == ["session.start", "session.end"]
    await restarted.uploader.upload_all()
    assert link.metas[SID]["interrupted"] is True
    text = printed_text(bytes(link.recordings[SID]))
    assert "before the crash" in text and "half" not in text
    await restarted.stop()


async def test_a_recording_that_cannot_be_written_is_reported(tmp_path: Path) -> None:
    link = FakeLink()
    audit = NodeAudit(link, tmp_path, "n1", "web1")
    await audit.start()
    (tmp_path / "recordings").rmdir()
    (tmp_path / "recordings").write_text("not a directory")
    await audit.on_event("session.start", _start_fields())
    await audit.on_output(SID, b"unrecorded", "stdout")
    await eventually(lambda: any(n == "session.recording.failure" for n, _ in link.events),
                     "a failure event")
    failure = [f for n, f in link.events if n == "session.recording.failure"][0]
    assert failure["success"] is False and failure["sid"] == SID and failure["error"]
    await audit.stop()


def test_local_recording_metadata_round_trips(tmp_path: Path) -> None:
    meta = LocalRecording(SID, user="alice", start_ns=1, extra={"interactive": True})
    meta.save(tmp_path / "m.json")
    assert LocalRecording.load(tmp_path / "m.json") == meta


def test_binary_output_is_counted_not_stored(tmp_path: Path) -> None:
    from limen.recording.cast import CastWriter

    writer = CastWriter(tmp_path / "s.cast", 80, 24, 0)
    writer.output(b"text before\r\n")
    writer.output(b"\x00\x01\xff" * 1000)
    writer.output(b"\x89PNG\r\n\x1a\n\xff")
    writer.output(b"text after\r\n")
    writer.close()
    frames = [json.loads(line) for line in (tmp_path / "s.cast").read_text().splitlines()[1:]]
    assert [f[2] for f in frames] == [
        "text before\r\n", "\r\n[limen: 3009 bytes of binary output not recorded]\r\n",
        "text after\r\n"]
    assert writer.binary_bytes == 3009
