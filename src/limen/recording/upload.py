"""Ships recordings from the node's disk to the auth service while sessions run.

For each ``SID.cast`` in DATA_DIR/recordings it sends the complete lines the auth
service does not have yet (it answers with its size, so a restart of either side just
resumes), then, once the session ended and every byte arrived, the final metadata. A
short session that ended before its first upload goes whole (WHOLE_MAX), together with
the others that did in one request (WHOLE_BATCH, WHOLE_BATCH_BYTES). Only
when the auth service confirms the recording complete are the node's files removed.
Failures are retried with a growing pause (at most ``MAX_BACKOFF``), and logged; nothing
is dropped while the files exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from limen.audit.files import complete_lines_end
from limen.errors import BadParameter, LimenError, NotFound
from limen.recording.cast import LocalRecording
from limen.tasks import cancel_and_wait

log = logging.getLogger(__name__)

MAX_UPLOAD = 1024 * 1024  # bytes per request (whole lines; one line may be longer)
UPLOAD_DELAY = 0.2  # seconds to gather output before sending, while a session runs
MAX_BACKOFF = 10.0
# A session that ended before its first upload (most commands) goes in one request up to
# this size: three requests (metadata, bytes, final metadata) were most of what the
# auth service did for the recording of a short session.
WHOLE_MAX = 256 * 1024
# Such recordings go together, up to this many and this many characters of cast a
# request (what the API takes: MAX_WHOLE_RECORDINGS and MAX_APPEND). Under many short
# sessions, a request each was most of the node's HTTP work (py-spy, bench/sessions.py).
WHOLE_BATCH = 64
WHOLE_BATCH_BYTES = 4 * 1024 * 1024
# A running session's recording starts to ship once the uploader has known it this long
# (seconds): a command that ends sooner then goes in that one request, where shipping
# as soon as it started made three of most short sessions under load. Its files are on
# the node's disk meanwhile, as every recording's are until the auth service has it.
FIRST_UPLOAD_AFTER = 1.0


class RecordingLink(Protocol):
    async def recording_update(self, session_id: str, meta: dict[str, Any]) -> dict[str, Any]: ...
    async def recordings_whole(self, recordings: list[tuple[str, dict[str, Any]]]
                               ) -> list[dict[str, Any] | LimenError]: ...
    async def recording_append(self, session_id: str, offset: int, data: bytes) -> int: ...


class RecordingUploader:
    def __init__(self, link: RecordingLink, directory: Path) -> None:
        self.link = link
        self.directory = directory
        self._sent: dict[str, int] = {}  # what the auth service has, by session
        self._seen: dict[str, float] = {}  # when each session was first pending
        self.monotonic: Callable[[], float] = time.monotonic  # tests move it by hand
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failures = 0
        self._stopping = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="limen-recording-upload")

    def wake(self) -> None:
        self._wake.set()

    async def stop(self, grace: float = 5.0) -> None:
        """One last pass to ship what ended (bounded), then stop."""
        self._stopping = True
        self._wake.set()
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._task), grace)
        await cancel_and_wait(self._task)

    def pending(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        return sorted(p.stem for p in self.directory.glob("*.json"))

    async def _loop(self) -> None:
        while True:
            try:
                await self.upload_all()
                self._failures = 0
            except LimenError as exc:
                self._failures += 1
                log.warning("recording upload failed (will retry): %s", exc.message)
            except OSError as exc:
                self._failures += 1
                log.warning("reading recordings in %s failed (will retry): %s",
                            self.directory, exc)
            if self._stopping:
                return
            pause = min(MAX_BACKOFF, 0.5 * 2 ** self._failures) if self._failures else 5.0
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause):
                    await self._wake.wait()
            self._wake.clear()
            if not self._failures:
                await asyncio.sleep(UPLOAD_DELAY)  # let a burst of output gather

    async def upload_all(self) -> None:
        pending = self.pending()
        now = self.monotonic()
        self._seen = {sid: self._seen.get(sid, now) for sid in pending}
        not_whole = await self._upload_whole([sid for sid in pending if sid not in self._sent])
        for session_id in pending:  # the rest, and any the auth service refused whole
            if (self.directory / f"{session_id}.json").exists():
                # A refusal raises there, as it always did. One that was running when the
                # batch was read, and has ended since, waits for the next batch (the
                # session's end wakes the uploader): alone it would cost a request.
                await self.upload(session_id, alone=session_id not in not_whole)

    async def _upload_whole(self, candidates: list[str]) -> set[str]:
        """Send the ended recordings never sent before, each whole, together; returns
        the candidates that were not to go whole (running, or too long). Those the auth
        service refuses stay on disk for upload(), which raises the refusal."""
        batch: list[_Whole] = []
        others: set[str] = set()
        for session_id in candidates:
            whole = await asyncio.to_thread(_Whole.read, self.directory, session_id)
            if whole is None:
                others.add(session_id)
                continue
            if len(batch) == WHOLE_BATCH or \
                    sum(w.chars for w in batch) + whole.chars > WHOLE_BATCH_BYTES:
                await self._send_whole(batch)
                batch = []
            batch.append(whole)
        if batch:
            await self._send_whole(batch)
        return others

    async def _send_whole(self, batch: list[_Whole]) -> None:
        try:
            answers = await self.link.recordings_whole([(w.session_id, w.body) for w in batch])
        except (BadParameter, NotFound):
            # A proxy from before the batch (no such route: 404 or 405) or a batch refused
            # as a whole: upload() sends each in a request of its own.
            return
        for whole, answer in zip(batch, answers, strict=True):
            if not isinstance(answer, LimenError):
                self._settled(whole.session_id, answer, whole.cast_path, whole.meta_path)

    async def upload(self, session_id: str, alone: bool = True) -> bool:
        """Send what is new; returns True once the recording is complete upstream.
        ``alone`` False: a recording that could now go whole is left for a batch."""
        meta_path = self.directory / f"{session_id}.json"
        cast_path = self.directory / f"{session_id}.cast"
        try:
            meta = LocalRecording.load(meta_path)
        except (OSError, ValueError) as exc:
            log.error("recording metadata %s is unreadable: %s", meta_path, exc)
            return False
        if session_id not in self._sent:
            whole = await asyncio.to_thread(_Whole.of, session_id, meta, meta_path, cast_path)
            if whole is not None:
                if not alone:
                    return False
                answer = await self.link.recording_update(session_id, whole.body)
                return self._settled(session_id, answer, cast_path, meta_path)
        if session_id not in self._sent:
            if self.monotonic() - self._seen.get(session_id, float("-inf")) \
                    < FIRST_UPLOAD_AFTER:
                return False  # it may well end first, and go in one request
            answer = await self.link.recording_update(session_id, _public(meta, None))
            self._sent[session_id] = int(answer["size"])
        offset = self._sent[session_id]
        size = await asyncio.to_thread(_complete_size, cast_path)
        while offset < size:
            data = await asyncio.to_thread(_read_lines, cast_path, offset, size)
            try:
                offset = await self.link.recording_append(session_id, offset, data)
            except BadParameter:
                self._sent.pop(session_id, None)  # out of step: ask where to resume
                raise
            self._sent[session_id] = offset
        if not meta.ended or offset < size:
            return False
        answer = await self.link.recording_update(session_id, _public(meta, size))
        return self._settled(session_id, answer, cast_path, meta_path)

    def _settled(self, session_id: str, answer: dict[str, Any], *paths: Path) -> bool:
        """After the final metadata: the node's files go once the recording ended
        upstream; otherwise the next pass resumes from the size the answer names."""
        if not answer.get("complete") and not answer.get("ended"):
            self._sent[session_id] = int(answer["size"])
            return False
        for path in paths:
            path.unlink(missing_ok=True)
        self._sent.pop(session_id, None)
        return True


class _Whole:
    """An ended recording small enough to send whole, read from the node's disk."""

    def __init__(self, session_id: str, body: dict[str, Any], meta_path: Path,
                 cast_path: Path) -> None:
        self.session_id = session_id
        self.body = body  # the metadata, its size, and the cast as "data"
        self.chars = len(body["data"])
        self.meta_path = meta_path
        self.cast_path = cast_path

    @classmethod
    def read(cls, directory: Path, session_id: str) -> _Whole | None:
        """From the node's disk: None unless the session ended and its cast fits in one
        request."""
        meta_path = directory / f"{session_id}.json"
        try:
            meta = LocalRecording.load(meta_path)
        except (OSError, ValueError):
            return None  # upload() says so in the log
        return cls.of(session_id, meta, meta_path, directory / f"{session_id}.cast")

    @classmethod
    def of(cls, session_id: str, meta: LocalRecording, meta_path: Path,
           cast_path: Path) -> _Whole | None:
        """With its metadata already read: None unless it ended and its cast fits."""
        text = _whole_text(cast_path) if meta.ended else None
        if text is None:
            return None
        body = {**_public(meta, len(text.encode())), "data": text}
        return cls(session_id, body, meta_path, cast_path)


def _public(meta: LocalRecording, size: int | None) -> dict[str, Any]:
    data = meta.to_json()
    if size is not None:
        data["size"] = size
    return data


def _whole_text(path: Path) -> str | None:
    """The whole cast of an ended session as text when it is small enough for one request
    (WHOLE_MAX) and ends with a whole line; None sends it the usual way."""
    try:
        with path.open("rb") as fh:
            data = fh.read(WHOLE_MAX + 1)
    except FileNotFoundError:
        return None
    if len(data) > WHOLE_MAX or (data and not data.endswith(b"\n")):
        return None
    try:
        return data.decode()
    except UnicodeDecodeError:
        return None


def _complete_size(path: Path) -> int:
    """Bytes up to and including the last newline (a line being written is not sent)."""
    try:
        end = os.path.getsize(path)
    except FileNotFoundError:
        return 0
    with path.open("rb") as fh:
        return complete_lines_end(fh, end)


def _read_lines(path: Path, offset: int, size: int) -> bytes:
    """Whole lines from ``offset``: up to MAX_UPLOAD, or one line if it is longer."""
    with path.open("rb") as fh:
        fh.seek(offset)
        data = fh.read(min(size - offset, MAX_UPLOAD))
        cut = data.rfind(b"\n")
        if cut >= 0:
            return data[:cut + 1]
        rest = fh.read(size - offset - len(data))
        return data + rest
