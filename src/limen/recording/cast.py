"""A session's recording on the node's disk: asciicast v2, written through.

Every output chunk and resize is one ``os.write`` of one complete line, so a node killed
mid-session leaves every event it had sent to the user in the file (a recording kept in
memory is lost entirely when the process dies). Binary output, and everything a file
transfer prints, is counted instead of stored: the recording shows how many bytes went
by, and the transfer's audit events say which files they were. The file is fsynced
every ``FSYNC_SECONDS`` and when the session ends, against power loss too. The periodic
fsync runs in a worker thread: on a busy disk one can take seconds, and on the event loop
it would stall every session of the node (and, in one process, the proxy) meanwhile.

Beside each ``SID.cast`` a ``SID.json`` says who, where and when, and, once the session
ended, when and how. The uploader (recording_upload.py) ships both to the auth service.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from limen.files import write_private
from limen.recording import asciicast

FSYNC_SECONDS = 1.0


@dataclass
class LocalRecording:
    """The metadata file beside a recording (what the auth service's metadata says)."""

    session_id: str
    user: str = ""
    login: str = ""
    node: str = ""
    node_id: str = ""
    kind: str = ""
    command: str = ""
    start_ns: int = 0
    end_ns: int | None = None
    interrupted: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ended(self) -> bool:
        return self.end_ns is not None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def load(cls, path: Path) -> LocalRecording:
        data = json.loads(path.read_text())
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def save(self, path: Path) -> None:
        write_private(path, json.dumps(self.to_json()))

class CastWriter:
    """One session's asciicast file. Not thread-safe; called from the node's event loop."""

    def __init__(self, path: Path, width: int, height: int, start_ns: int,
                 title: str = "", command: str = "", term: str = "") -> None:
        self.path = path
        self._start = time.monotonic()
        # Strict: a chunk that is not UTF-8 is binary output (tar, images), which a
        # terminal recording cannot show; it is counted, not stored (see output()).
        self._decoder = codecs.getincrementaldecoder("utf-8")("strict")
        self.binary_bytes = 0
        self._binary_run = 0
        self._last_sync = self._start
        self._sync_lock = threading.Lock()  # a background fsync against close()
        self._syncing = False
        self._sync_error: OSError | None = None
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        try:
            env = {"TERM": term} if term else {}
            self._write(asciicast.header_line(width, height, start_ns // 1_000_000_000,
                                              title=title, command=command, env=env))
            os.fsync(self._fd)
        except BaseException:
            self.close()
            raise

    def binary(self, data: bytes) -> None:
        """Bytes of a file-transfer protocol (sftp, scp): counted, never decoded."""
        self._decoder.reset()
        self._binary_run += len(data)
        self.binary_bytes += len(data)

    def output(self, data: bytes) -> None:
        try:
            text = self._decoder.decode(data) if b"\x00" not in data else None
        except UnicodeDecodeError:
            text = None
        if text is None:
            self.binary(data)
            return
        self._end_binary_run()
        if text:
            self._event("o", text)

    def _end_binary_run(self) -> None:
        """One line in place of a run of binary output: what the viewer is told."""
        if self._binary_run:
            run, self._binary_run = self._binary_run, 0
            self._event("o", f"\r\n[limen: {run} bytes of binary output not recorded]\r\n")

    def resize(self, cols: int, rows: int) -> None:
        self._event("r", f"{cols}x{rows}")

    def close(self) -> None:
        if self._fd < 0:
            return
        try:
            self._end_binary_run()
            with contextlib.suppress(UnicodeDecodeError):
                rest = self._decoder.decode(b"", final=True)
                if rest:
                    self._write(asciicast.event_line(time.monotonic() - self._start, "o",
                                                     rest))
            with self._sync_lock:
                os.fsync(self._fd)
        finally:
            with self._sync_lock:
                os.close(self._fd)
                self._fd = -1

    def _event(self, code: str, data: str) -> None:
        self._write(asciicast.event_line(time.monotonic() - self._start, code, data))
        now = time.monotonic()
        if now - self._last_sync >= FSYNC_SECONDS and not self._syncing:
            self._last_sync = now
            self._sync_soon()

    def _sync_soon(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (a tool, a test): nothing to stall
            self._sync()
            return
        self._syncing = True
        loop.run_in_executor(None, self._sync)

    def _sync(self) -> None:
        try:
            with self._sync_lock:
                if self._fd >= 0:
                    os.fsync(self._fd)
        except OSError as exc:
            self._sync_error = exc  # raised by the next write, as a failed write would be
        finally:
            self._syncing = False

    def _write(self, line: str) -> None:
        if self._fd < 0:
            raise OSError("the recording is closed")
        if self._sync_error is not None:
            raise self._sync_error
        data = memoryview(line.encode())
        while data:
            data = data[os.write(self._fd, data):]

    def __del__(self) -> None:
        with contextlib.suppress(OSError):
            if self._fd >= 0:
                os.close(self._fd)
