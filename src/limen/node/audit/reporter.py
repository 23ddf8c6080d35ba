"""The node's side of the audit log: report events without losing any, record sessions.

- Events go to the auth service; when it cannot be reached they wait in a spool on the
  node's disk (event_spool.py). Either way ``on_event`` returns only once the event is
  durable somewhere, so the action it records proceeds after that.
- Every session is recorded as asciicast v2 on the node's disk (recorder.py) and shipped
  while it runs (recording_upload.py); what a file transfer prints is counted, not
  stored. The recording is opened before the session's process starts
  (``open_recording``): under ``record_session: strict`` a session that cannot be
  recorded is refused, with best effort it runs and a ``session.recording.failure``
  event says why.
- Every live session has a journal entry (DATA_DIR/audit/live/SID.json). After a crash
  the node finds the entries on its next start and reports each session's end, marked
  interrupted, and closes its recording the same way.
- ``record_session: strict``: when a session's recorder fails mid-session, the session
  is ended at its next output.
- sftp and scp events come from the protocol the session relays (sftp.py,
  scp_stream.py), with the SHA-256 of the bytes transferred: the node never opens a
  file a user names.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import uuid
from collections.abc import Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from limen.audit.chain import format_time
from limen.audit.files import truncate_torn_tail
from limen.errors import AccessDenied, BadParameter, ConnectionProblem, LimenError, NotFound
from limen.files import write_private
from limen.node.audit.outbox import MAX_BATCH, ReportOutbox
from limen.node.audit.spool import EventSpool
from limen.recording.cast import CastWriter, LocalRecording
from limen.recording.upload import RecordingLink, RecordingUploader
from limen.tasks import cancel_and_wait

if TYPE_CHECKING:
    from limen.node.ssh.server import NodeServer

log = logging.getLogger(__name__)

STRICT_MESSAGE = ("limen: the session recorder failed and your role requires recording "
                  "(record_session: strict); ending the session")
INTERRUPTED = "interrupted: the node stopped during the session"
REPLAY_SECONDS = 2.0


class AuditLink(RecordingLink, Protocol):
    async def report_event(self, name: str, fields: dict[str, Any]) -> None: ...
    async def report_events(self, events: list[tuple[str, dict[str, Any]]]
                            ) -> list[LimenError | None]: ...


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat()


def _term_size(text: Any) -> tuple[int, int]:
    try:
        cols, rows = str(text).split(":")
        return max(1, int(cols)), max(1, int(rows))
    except ValueError:
        return 80, 24


class NodeAudit:
    def __init__(self, link: AuditLink, data_dir: Path, node_id: str, node_name: str) -> None:
        self.link = link
        self.node_id = node_id
        self.node_name = node_name
        self.recordings = data_dir / "recordings"
        self.live = data_dir / "audit" / "live"
        self.spool = EventSpool(data_dir / "audit" / "events.spool")
        self.outbox = ReportOutbox(link.report_events)
        self.uploader = RecordingUploader(link, self.recordings)
        self.server: NodeServer | None = None
        self._writers: dict[str, CastWriter] = {}
        self._failed: set[str] = set()  # recorders that failed mid-session
        self._opening: set[str] = set()  # recordings being opened
        self._enforced: set[str] = set()
        self._unrecorded: set[str] = set()  # recordings that could not be opened
        self._who: dict[str, dict[str, Any]] = {}  # a recorded session's user, login, node
        self._wake_replay = asyncio.Event()
        self._replayer: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Future[Any]] = set()

    def attach(self, server: NodeServer) -> None:
        """The SSH server whose sessions a strict recording failure ends."""
        self.server = server

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        self.live.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not self.recordings.exists():
            self.recordings.mkdir(mode=0o700)
        await self._recover()
        self.uploader.start()
        self._replayer = asyncio.create_task(self._replay_loop(), name="limen-event-replay")

    async def stop(self) -> None:
        for sid in list(self._writers):
            self._close_writer(sid)
        await self.uploader.stop()
        await cancel_and_wait(self._replayer)
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        await self.outbox.close()

    # -- events -------------------------------------------------------------------------------

    async def on_event(self, name: str, fields: dict[str, Any]) -> None:
        sid = str(fields.get("sid") or "")
        if name == "session.start" and sid:
            await self._session_started(sid, fields)
        elif name == "resize" and sid:
            self._resized(sid, fields)
        elif name == "session.rejected" and sid:
            self._unrecorded.discard(sid)  # refused before it started: nothing to end
        if name == "session.end" and sid:
            await self._session_ended(sid, fields)
            # The session says who joined it (limen.node.ssh.sharing); alone, its owner.
            if fields.get("user") and not fields.get("participants"):
                fields = {**fields, "participants": [fields["user"]]}
        await self.report(name, fields)
        if name == "session.end" and sid:
            await asyncio.to_thread(self._forget_live, sid)
            self.uploader.wake()

    async def report(self, name: str, fields: dict[str, Any]) -> None:
        """Deliver, or keep on disk for later; returns once the event is durable."""
        uid = str(uuid.uuid4())
        entry = {"event": name, "fields": fields, "uid": uid,
                 "time": format_time(time.time_ns())}
        if len(self.spool) == 0:
            try:
                await self.outbox.send(name, {**fields, "uid": uid})
                return
            except BadParameter as exc:
                log.error("the auth service refused a %s event: %s", name, exc.message)
                return
            except LimenError as exc:
                log.warning("auth service unreachable, keeping %s events on disk: %s",
                            name, exc.message)
        await self.spool.append(entry)
        self._wake_replay.set()

    async def _replay_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(REPLAY_SECONDS):
                    await self._wake_replay.wait()
            self._wake_replay.clear()
            while len(self.spool) and await self._replay_some():
                pass

    async def _replay_some(self) -> bool:
        """Send the oldest spooled events; False when the auth service is still away."""
        batch = await asyncio.to_thread(self.spool.peek, MAX_BATCH)
        if not batch:
            return False
        events = [(entry["event"], {**entry["fields"], "uid": entry["uid"],
                                    "time": entry["time"]}) for entry in batch]
        try:
            answers = await self.link.report_events(events)
        except (BadParameter, NotFound):
            # Refused as a whole: one malformed event must not hold back the others, and
            # an auth service from before batches (no such route) takes them one by one.
            answers = await self._one_by_one(events)
        except LimenError:
            return False
        sent = 0
        for entry, answer in zip(batch, answers, strict=True):
            # Refused, the event itself (the auth service audited why): sending it
            # again cannot change that. Anything else: kept, in order, for the next try.
            if isinstance(answer, BadParameter | AccessDenied):
                log.error("the auth service refused a spooled %s event: %s",
                          entry["event"], answer.message)
            elif answer is not None:
                break
            sent += 1
        if sent:
            await self.spool.drop(sent)
            log.info("delivered %d audit events kept while the auth service was away", sent)
        return sent == len(batch) and sent > 0

    async def _one_by_one(self, events: list[tuple[str, dict[str, Any]]]
                          ) -> list[LimenError | None]:
        answers: list[LimenError | None] = []
        for name, fields in events:
            try:
                await self.link.report_event(name, fields)
            except BadParameter as exc:
                answers.append(exc)
                continue
            except LimenError as exc:
                answers.append(exc)
                break
            answers.append(None)
        return answers + [ConnectionProblem("not sent")] * (len(events) - len(answers))

    # -- sessions and recordings ------------------------------------------------------------

    async def open_recording(self, sid: str, fields: dict[str, Any]) -> str | None:
        """Open the session's recording before its process starts; returns None, or why
        it cannot be recorded (reported as session.recording.failure, durable on return)."""
        if sid in self._writers or sid in self._opening:
            return None
        self._opening.add(sid)  # the files are made in a worker thread: one opener only
        try:
            return await self._open_recording(sid, fields)
        finally:
            self._opening.discard(sid)

    async def _open_recording(self, sid: str, fields: dict[str, Any]) -> str | None:
        kind = str(fields.get("session_kind", ""))
        command = str(fields.get("command") or fields.get("subsystem") or "")
        start_ns = time.time_ns()
        cols, rows = _term_size(fields.get("terminal_size") or "80:24")
        meta = LocalRecording(
            session_id=sid, user=str(fields.get("user") or ""),
            login=str(fields.get("login") or ""), node=self.node_name, node_id=self.node_id,
            kind=kind, command=command, start_ns=start_ns,
            extra={"interactive": bool(fields.get("interactive")),
                   "addr.remote": fields.get("addr.remote")},
        )
        self._who[sid] = _who(fields)
        try:
            await asyncio.to_thread(meta.save, self.recordings / f"{sid}.json")
            self._writers[sid] = await asyncio.to_thread(
                CastWriter, self.recordings / f"{sid}.cast", cols, rows, start_ns,
                title=f"{meta.user} as {meta.login} on {self.node_name}", command=command,
            )
        except OSError as exc:
            log.error("cannot record session %s: %s", sid, exc)
            self._who.pop(sid, None)
            self._unrecorded.add(sid)
            await self.report("session.recording.failure", self._failure_fields(sid, exc, fields))
            return f"the recording could not be opened ({exc.strerror or exc})"
        self.uploader.wake()
        return None

    async def _session_started(self, sid: str, fields: dict[str, Any]) -> None:
        await asyncio.to_thread(_write_json, self.live / f"{sid}.json", fields)
        if sid not in self._writers and sid not in self._unrecorded:
            await self.open_recording(sid, fields)  # a caller that did not open it first

    def _resized(self, sid: str, fields: dict[str, Any]) -> None:
        writer = self._writers.get(sid)
        if writer is not None:
            cols, rows = _term_size(fields.get("size"))
            try:
                writer.resize(cols, rows)
            except OSError as exc:
                self._failed_recording(sid, exc, fields)

    async def on_output(self, sid: str, data: bytes, stream: str) -> None:
        """A chunk the session sent to the user; ``stream`` "transfer" is a file-transfer
        protocol's bytes (counted, not stored)."""
        writer = self._writers.get(sid)
        if writer is not None:
            try:
                if stream == "transfer":
                    writer.binary(data)
                else:
                    writer.output(data)
            except OSError as exc:
                self._failed_recording(sid, exc, {"sid": sid})
            else:
                self.uploader.wake()  # it gathers output for a moment, then sends it
        elif sid in self._failed:
            self._enforce_strict(sid)

    async def _session_ended(self, sid: str, fields: dict[str, Any]) -> None:
        failed = sid in self._failed or sid in self._unrecorded
        self._failed.discard(sid)
        self._enforced.discard(sid)
        self._unrecorded.discard(sid)
        self._who.pop(sid, None)
        writer = self._writers.pop(sid, None)
        # Closing syncs the file and rewrites the metadata (two fsyncs): in a worker
        # thread, so a slow disk does not stall the node's other sessions.
        await asyncio.to_thread(self._close_recording, sid, writer, failed, fields)

    def _close_recording(self, sid: str, writer: CastWriter | None, failed: bool,
                         fields: dict[str, Any]) -> None:
        binary = writer.binary_bytes if writer is not None else 0
        if writer is not None:
            _close_quietly(sid, writer)
        path = self.recordings / f"{sid}.json"
        if not path.exists():
            return
        try:
            meta = LocalRecording.load(path)
            meta.end_ns = time.time_ns()
            if failed:
                meta.extra["recording_failed"] = True
            if binary:
                meta.extra["binary_bytes"] = binary
            meta.extra.update({k: fields.get(k) for k in ("exit_code", "exit_signal", "reason")
                               if fields.get(k) is not None})
            meta.save(path)
        except (OSError, ValueError) as exc:
            log.error("cannot close the recording of session %s: %s", sid, exc)

    def _close_writer(self, sid: str) -> None:
        writer = self._writers.pop(sid, None)
        if writer is not None:
            _close_quietly(sid, writer)

    def _failed_recording(self, sid: str, exc: OSError, fields: dict[str, Any]) -> None:
        log.error("recording session %s failed: %s", sid, exc)
        writer = self._writers.pop(sid, None)
        if writer is not None:
            with contextlib.suppress(OSError):
                writer.close()
        self._failed.add(sid)
        self._spawn(self.report("session.recording.failure", self._failure_fields(
            sid, exc, {**self._who.get(sid, {}), **_who(fields)})))
        self._enforce_strict(sid)

    @staticmethod
    def _failure_fields(sid: str, exc: OSError, fields: dict[str, Any]) -> dict[str, Any]:
        return {**_who(fields), "sid": sid, "error": str(exc), "success": False}

    def _enforce_strict(self, sid: str) -> None:
        """End a strict session whose recorder failed. Its output reaches the recorder
        only after the server lists it; until then there is nothing unrecorded to stop,
        and the next output asks again."""
        server = self.server
        if server is None or sid in self._enforced:
            return
        ctx = server.sessions.get(sid)
        if ctx is None:
            return
        self._enforced.add(sid)
        if ctx.permit.record == "strict":
            self._spawn(server.terminate(sid, STRICT_MESSAGE, "recording failed"))

    # -- after a crash ------------------------------------------------------------------------

    async def _recover(self) -> None:
        """Sessions that were live when the node stopped: report their end, interrupted."""
        for path in sorted(self.live.glob("*.json")):
            sid = path.stem
            try:
                started = json.loads(path.read_text())
            except (OSError, ValueError):
                started = {"sid": sid}
            stop_ns = await asyncio.to_thread(self._close_interrupted, sid)
            fields = {k: started.get(k) for k in (
                "user", "login", "server_id", "server_hostname", "addr.remote", "addr.local",
                "session_kind", "interactive", "command", "subsystem", "session_start")}
            fields.update(sid=sid, session_stop=_iso(stop_ns or time.time_ns()),
                          interrupted=True, reason=INTERRUPTED)
            # Its session.end also takes the session off the auth service's list.
            await self.report("session.end", {k: v for k, v in fields.items() if v is not None})
            path.unlink(missing_ok=True)
        for path in self.recordings.glob("*.json") if self.recordings.is_dir() else []:
            await asyncio.to_thread(self._close_interrupted, path.stem)

    def _close_interrupted(self, sid: str) -> int | None:
        """Mark an unfinished recording interrupted; returns its last write time (ns)."""
        meta_path = self.recordings / f"{sid}.json"
        cast = self.recordings / f"{sid}.cast"
        try:
            meta = LocalRecording.load(meta_path)
        except (OSError, ValueError):
            return None
        if meta.ended:
            return meta.end_ns
        if cast.exists():
            truncate_torn_tail(cast)
            meta.end_ns = os.stat(cast).st_mtime_ns
        else:
            meta.end_ns = time.time_ns()
        meta.interrupted = True
        meta.save(meta_path)
        return meta.end_ns

    def _forget_live(self, sid: str) -> None:
        (self.live / f"{sid}.json").unlink(missing_ok=True)
        _fsync_dir(self.live)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _close_quietly(sid: str, writer: CastWriter) -> None:
    try:
        writer.close()
    except OSError as exc:
        log.error("closing the recording of session %s failed: %s", sid, exc)


def _who(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: fields[k] for k in ("user", "login", "server_id", "server_hostname", "cert")
            if fields.get(k) is not None}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    write_private(path, json.dumps(data, default=str))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
