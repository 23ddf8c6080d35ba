"""SFTP: the stock OpenSSH sftp-server, run as the login user, audited from its protocol.

Why not asyncssh's in-process SFTPServer: it would run with the node's privileges
(root), so every permission check would be ours to get right. sftp-server started
through the executor runs with the user's uid, gid and groups, so the kernel enforces
permissions and users get OpenSSH's exact semantics (and modern ``scp``, which speaks
SFTP). Its stderr goes to the user, as with sshd.

The audit comes from the packets the node relays, both ways, never from a log or a
name: requests (OPEN, WRITE, READ, CLOSE, REMOVE, RENAME, ...) as the user sends them,
replies (HANDLE, DATA, STATUS) as sftp-server answers. One ``sftp`` event per file
opened (closed, or still open when the session ended), carrying the bytes actually
transferred and their SHA-256, and one per change (remove, rename, mkdir, rmdir,
symlink, link, setstat, copy) with the status sftp-server answered.

sftp-server answers requests one at a time, in order. A request is matched with its
reply by id; a handle is resolved when the server state it refers to is known: for a
WRITE, at once when no OPEN or CLOSE is still waiting for its reply, else (a copy of its
data) when its own reply comes.
"""

from __future__ import annotations

import posixpath
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from limen.errors import BadParameter
from limen.transfer import sftp_wire as wire
from limen.transfer.digest import OffsetDigest
from limen.transfer.sftp_wire import Fields, Framer

MAX_PENDING = 65536  # requests without a reply yet
MAX_DEFERRED = 64 * 1024 * 1024  # bytes of WRITE data waiting for a reply to resolve
MAX_OPEN = 65536  # handles open at once

Event = dict[str, Any]


def sftp_server_argv(path: str) -> tuple[str, ...]:
    return (path,)


@dataclass
class _OpenFile:
    path: str
    flags: int
    written: OffsetDigest = field(default_factory=OffsetDigest)
    read: OffsetDigest = field(default_factory=OffsetDigest)
    failure: tuple[str, str] | None = None  # the first failed read or write

    def event(self, status: str, error: str) -> Event:
        """The file's event; the first failed read or write outranks the close's status."""
        upload = bool(self.written.length) or (
            bool(self.flags & wire.FXF_WRITE) and not self.read.length
        )
        moved = self.written if upload else self.read
        event: Event = {"action": "upload" if upload else "download", "path": self.path,
                        "len": moved.length, **moved.fields()}
        return _with_status(event, *(self.failure or (status, error)))


@dataclass
class _Request:
    id: int
    kind: str  # "open", "opendir", "close", "read", "write", "change", "other"
    path: str = ""
    handle: bytes = b""
    flags: int = 0
    offset: int = 0
    data: bytes | None = None  # a WRITE's data, kept until its handle can be resolved
    target_handle: bytes = b""  # copy-data: the handle written to
    file: _OpenFile | None = None  # a WRITE's file, resolved when it was sent
    event: Event = field(default_factory=dict)  # a change's event, waiting for its status


def _with_status(event: Event, status: str, error: str = "") -> Event:
    event["status"] = status
    event["success"] = status == "ok"
    if status != "ok" and error:
        event["error"] = error
    return event


class SftpFollower:
    """Follows one SFTP session; ``from_user`` and ``to_user`` raise BadParameter when the
    stream breaks the protocol (the session must then end)."""

    event = "sftp"
    holding = False  # requests never wait for replies to be understood

    def __init__(self, cwd: str) -> None:
        self._cwd = cwd
        self._requests = Framer(wire.MAX_REQUEST)
        self._replies = Framer(wire.MAX_REPLY, keep=False)
        self._pending: dict[int, deque[_Request]] = {}
        self._pending_count = 0
        self._rebinding = 0  # OPEN, OPENDIR and CLOSE requests waiting for their reply
        self._deferred = 0
        self._files: dict[bytes, _OpenFile] = {}
        self._dirs: set[bytes] = set()
        self._events: list[Event] = []

    # -- the interface the session uses ------------------------------------------------------

    def from_user(self, data: bytes) -> None:
        self._requests.feed(data, self._request)

    def take_input(self) -> bytes:
        """The requests read in full so far: only those may reach sftp-server."""
        return self._requests.take_passed()

    def to_user(self, data: bytes) -> None:
        self._replies.feed(data, self._reply)

    def take_events(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    def finish(self) -> list[Event]:
        """The session ended: what never got a reply, and files never closed."""
        for queue in self._pending.values():
            for request in queue:
                if request.kind == "change":
                    self._events.append(_with_status(request.event, "no_reply"))
                elif request.kind == "write" and request.data is not None:
                    self._write(request.handle, request.offset, request.data, request)
        self._pending.clear()
        for handle, opened in list(self._files.items()):
            self._events.append(opened.event("not_closed", "the session ended first"))
            del self._files[handle]
        return self.take_events()

    # -- requests ------------------------------------------------------------------------------

    def _path(self, raw: bytes) -> str:
        """Absolute against the session's directory for display; a newline is just a
        character of the name."""
        return posixpath.join(self._cwd, raw.decode("utf-8", "replace"))

    def _request(self, packet: memoryview) -> None:
        fields = Fields(packet)
        kind = fields.byte()
        if kind == wire.INIT:
            return
        if not (wire.OPEN <= kind <= wire.SYMLINK or kind == wire.EXTENDED):
            return  # sftp-server does not answer unknown types: nothing to wait for
        request = _Request(fields.u32(), "other")
        if kind == wire.OPEN:
            request.kind, request.path = "open", self._path(fields.string())
            request.flags = fields.u32()
            fields.attrs()
        elif kind == wire.OPENDIR:
            request.kind = "opendir"
        elif kind == wire.CLOSE:
            request.kind, request.handle = "close", fields.string()
        elif kind == wire.READ:
            request.kind, request.handle, request.offset = "read", fields.string(), fields.u64()
            fields.u32()
        elif kind == wire.WRITE:
            self._write_request(request, fields)
        elif kind == wire.EXTENDED:
            self._extended(request, fields)
        else:
            self._change(request, kind, fields)
        self._expect(request)

    def _write_request(self, request: _Request, fields: Fields) -> None:
        request.kind, request.handle, request.offset = "write", fields.string(), fields.u64()
        data = fields.data()
        if self._rebinding:  # which file the handle names depends on replies to come
            self._deferred += len(data)
            if self._deferred > MAX_DEFERRED:
                raise BadParameter("too much SFTP write data is waiting for replies")
            request.data = bytes(data)
        else:
            self._write(request.handle, request.offset, data, request)

    def _write(self, handle: bytes, offset: int, data: bytes | memoryview,
               request: _Request) -> None:
        opened = self._files.get(handle)
        request.file = opened
        if opened is not None:
            opened.written.add(offset, data)

    def _change(self, request: _Request, kind: int, fields: Fields) -> None:
        if kind in (wire.REMOVE, wire.RMDIR):
            self._changed(request, "remove" if kind == wire.REMOVE else "rmdir", fields.string())
        elif kind == wire.MKDIR:
            self._changed(request, "mkdir", fields.string())
            fields.attrs()
        elif kind == wire.RENAME:
            self._changed(request, "rename", fields.string(), fields.string())
        elif kind == wire.SYMLINK:
            # OpenSSH sends the link's contents first, then the link's own path.
            target, link = fields.string(), fields.string()
            self._changed(request, "symlink", link, target)
        elif kind == wire.SETSTAT:
            self._changed(request, "setstat", fields.string())
            request.event["attributes"] = fields.attrs()
        elif kind == wire.FSETSTAT:
            request.kind, request.handle = "fsetstat", fields.string()
            request.event = {"action": "setstat", "attributes": fields.attrs()}

    def _changed(self, request: _Request, action: str, path: bytes,
                 target: bytes | None = None) -> None:
        request.kind = "change"
        request.event = {"action": action, "path": self._path(path)}
        if target is not None:
            request.event["target"] = self._path(target)

    def _extended(self, request: _Request, fields: Fields) -> None:
        name = fields.string()
        if name == b"posix-rename@openssh.com":
            self._changed(request, "rename", fields.string(), fields.string())
        elif name == b"hardlink@openssh.com":
            existing, link = fields.string(), fields.string()
            self._changed(request, "link", link, existing)
        elif name == b"lsetstat@openssh.com":
            self._changed(request, "setstat", fields.string())
            request.event["attributes"] = fields.attrs()
        elif name in (b"copy-data", b"copy-data@openssh.com"):
            request.kind, request.handle = "copy", fields.string()
            request.offset, length = fields.u64(), fields.u64()
            request.target_handle = fields.string()
            request.event = {"action": "copy", "read_offset": request.offset,
                             "read_len": length, "write_offset": fields.u64()}

    def _expect(self, request: _Request) -> None:
        if self._pending_count >= MAX_PENDING:
            raise BadParameter("too many SFTP requests are waiting for replies")
        self._pending.setdefault(request.id, deque()).append(request)
        self._pending_count += 1
        if request.kind in ("open", "opendir", "close"):
            self._rebinding += 1

    # -- replies -------------------------------------------------------------------------------

    def _matching(self, request_id: int) -> _Request | None:
        queue = self._pending.get(request_id)
        if not queue:
            return None  # not a request we wait for: nothing to learn from it
        request = queue.popleft()
        if not queue:
            del self._pending[request_id]
        self._pending_count -= 1
        if request.kind in ("open", "opendir", "close"):
            self._rebinding -= 1
        return request

    def _reply(self, packet: memoryview) -> None:
        fields = Fields(packet)
        kind = fields.byte()
        if kind == wire.VERSION:
            return
        request = self._matching(fields.u32())
        if request is None:
            return
        if request.kind == "write" and request.data is not None:
            self._deferred -= len(request.data)
            self._write(request.handle, request.offset, request.data, request)
            request.data = None
        if kind == wire.STATUS:
            code = fields.u32()
            message = fields.string().decode("utf-8", "replace") if fields.left >= 4 else ""
            self._status(request, wire.status_name(code), message)
        elif kind == wire.HANDLE:
            self._handle(request, fields.string())
        elif kind == wire.DATA and request.kind == "read":
            opened = self._files.get(request.handle)
            if opened is not None:
                opened.read.add(request.offset, fields.data())

    def _handle(self, request: _Request, handle: bytes) -> None:
        if request.kind == "open":
            if len(self._files) >= MAX_OPEN:
                raise BadParameter("too many files are open in this SFTP session")
            self._files[handle] = _OpenFile(request.path, request.flags)
        elif request.kind == "opendir":
            self._dirs.add(handle)

    def _status(self, request: _Request, status: str, message: str) -> None:
        if request.kind == "open":  # a refused open: what was tried, and why not
            self._events.append(_OpenFile(request.path, request.flags).event(status, message))
        elif request.kind == "close":
            self._dirs.discard(request.handle)
            opened = self._files.pop(request.handle, None)
            if opened is not None:
                self._events.append(opened.event(status, message))
        elif request.kind in ("write", "read") and status not in ("ok", "eof"):
            opened = request.file if request.kind == "write" else self._files.get(request.handle)
            if opened is not None and opened.failure is None:
                opened.failure = (status, message)
        elif request.kind == "change":
            self._events.append(_with_status(request.event, status, message))
        elif request.kind == "fsetstat":
            opened = self._files.get(request.handle)
            if opened is not None:
                self._events.append(_with_status({**request.event, "path": opened.path},
                                                 status, message))
        elif request.kind == "copy":
            self._copied(request, status, message)

    def _copied(self, request: _Request, status: str, message: str) -> None:
        source = self._files.get(request.handle)
        target = self._files.get(request.target_handle)
        event = {**request.event, "path": source.path if source else "",
                 "target": target.path if target else ""}
        self._events.append(_with_status(event, status, message))
