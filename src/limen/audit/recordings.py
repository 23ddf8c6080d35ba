"""Session recordings on the auth service: nodes stream them in, auditors list, play,
export and search them.

A node first sends a recording's metadata (``update``), then its bytes as they are
written (``append``, idempotent by offset), and once the session ended and every byte
arrived, the final metadata with the total size. A session that ended before its node
first sent anything (most commands) comes in one request: the final metadata with the
cast's text as ``data``. Only then is the recording marked
ended (complete, or interrupted when its node stopped mid-session) and a
``session.upload`` event written. A node may only write recordings of its own sessions
(the ones it reported the start of, see bindings.py); who the recording shows and the
event names are the start's, not what the node's metadata says.

Who may call what is checked before these methods run (limen.auth.facade); this
service checks only what needs its data: that a node extends its own recordings.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

from limen.audit import schema
from limen.audit.bindings import SessionBinding, SessionBindings
from limen.audit.chain import format_time
from limen.audit.log import AuditLog
from limen.audit.store import RecordingMeta, RecordingStore
from limen.auth.identity import Identity
from limen.errors import AccessDenied, BadParameter, LimenError, NotFound
from limen.recording import asciicast

MAX_APPEND = 4 * 1024 * 1024


def session_id(text: str) -> str:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise BadParameter(f"{text!r} is not a session id (a UUID)") from None


def meta_json(meta: RecordingMeta) -> dict[str, Any]:
    """What `limen recordings ls --format json` prints for one recording."""
    return {
        "session_id": meta.session_id,
        "user": meta.user,
        "login": meta.login,
        "node": meta.node,
        "node_id": meta.node_id,
        "kind": meta.kind,
        "command": meta.command,
        "start": format_time(meta.start_ns) if meta.start_ns else None,
        "end": format_time(meta.end_ns) if meta.end_ns is not None else None,
        "size": meta.size,
        "complete": meta.complete,
        "interrupted": meta.interrupted,
    }


def _int(value: Any, default: int | None = None) -> int | None:
    if value is None:
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise BadParameter(f"{value!r} is not a number") from None


class RecordingService:
    def __init__(self, store: RecordingStore, audit: AuditLog,
                 sessions: SessionBindings | None = None) -> None:
        self.store = store
        self.audit = audit
        self.sessions = sessions

    # -- nodes -----------------------------------------------------------------------------

    async def update(self, identity: Identity, sid: str, meta: dict[str, Any]) -> dict[str, Any]:
        """A recording's metadata, or the whole recording (``data``); its state after."""
        (answer,) = await self.update_many(identity, [(sid, meta)])
        if isinstance(answer, LimenError):
            raise answer
        return answer

    async def _update_one(self, identity: Identity, sid: str, meta: dict[str, Any]
                          ) -> dict[str, Any]:
        if meta.get("data") is not None:
            return await self._whole(identity, sid, meta)
        return await self._update_meta(identity, sid, meta)

    async def _update_meta(self, identity: Identity, sid: str, meta: dict[str, Any]
                           ) -> dict[str, Any]:
        sid = session_id(sid)
        existing, binding = await self._checked(identity, sid)
        if existing is not None and existing.end_ns is not None:
            return self._state(existing)
        size = existing.size if existing is not None else 0
        saved = await self.store.upsert_meta(_record(identity, sid, meta, binding, size))
        if saved.end_ns is not None:
            await self.audit.emit(_uploaded(identity, binding, saved))
        return self._state(saved)

    async def update_many(self, identity: Identity, items: Sequence[tuple[str, dict[str, Any]]]
                          ) -> list[dict[str, Any] | LimenError]:
        """Several recordings (metadata, or whole with ``data``): each one's state, or
        its refusal. New recordings sent whole (short sessions) are stored in one
        transaction and their session.upload events written in one group commit; the
        rest one by one, as their three requests would be."""
        answers: list[dict[str, Any] | LimenError | None] = []
        whole: list[tuple[RecordingMeta, bytes, SessionBinding | None]] = []
        for sid, meta in items:
            try:
                found = await self._new_whole(identity, sid, meta)
                answers.append(None if found else await self._update_one(identity, sid, meta))
            except (BadParameter, AccessDenied, NotFound) as exc:
                answers.append(exc)
                continue
            if found:
                whole.append(found)
        if not whole:
            return [answer for answer in answers if answer is not None]
        stored = await self.store.put_whole([(record, data) for record, data, _ in whole],
                                            asciicast.printed_text)
        await self.audit.record_many([
            (_uploaded(identity, binding, dataclasses.replace(record, size=len(data))), None)
            for (record, data, binding), fresh in zip(whole, stored, strict=True) if fresh])
        states = iter([
            {"size": len(data), "complete": record.complete, "ended": True} if fresh
            else self._state(await self.store.get(record.session_id))  # stored meanwhile
            for (record, data, _), fresh in zip(whole, stored, strict=True)])
        return [next(states) if answer is None else answer for answer in answers]

    async def _new_whole(self, identity: Identity, sid: str, meta: dict[str, Any]
                         ) -> tuple[RecordingMeta, bytes, SessionBinding | None] | None:
        """A recording this store does not have yet, sent whole and ended with all its
        bytes: what to store. None for any other (``_update_one`` takes those)."""
        if meta.get("data") is None:
            return None
        data = _whole_data(meta)
        sid = session_id(sid)
        existing, binding = await self._checked(identity, sid)
        if existing is not None or _int(meta.get("size")) != len(data):
            return None
        record = _record(identity, sid, meta, binding, len(data))
        return (record, data, binding) if record.end_ns is not None else None

    async def _checked(self, identity: Identity, sid: str
                       ) -> tuple[RecordingMeta | None, SessionBinding | None]:
        """The recording so far and the session's binding; a node's attempt at another
        node's recording is refused (AccessDenied) and audited."""
        try:
            return await self._owned(identity, sid), await self._binding(identity, sid)
        except AccessDenied as exc:
            await self.audit.emit(schema.ReportRefused(
                server_id=identity.user, reporter=identity.builtin or "user",
                reported="recording", error=exc.message,
            ))
            raise

    async def append(self, identity: Identity, sid: str, offset: int, data: bytes) -> int:
        sid = session_id(sid)
        if len(data) > MAX_APPEND:
            raise BadParameter(f"send at most {MAX_APPEND} bytes of a recording at a time")
        if offset < 0:
            raise BadParameter("the offset must not be negative")
        existing = await self._owned(identity, sid)
        if existing is None:
            raise BadParameter(f"no recording of session {sid} yet: send its metadata first")
        if existing.end_ns is not None:
            return existing.size
        return await self.store.append(sid, offset, data, asciicast.printed_text)

    async def _whole(self, identity: Identity, sid: str, meta: dict[str, Any]) -> dict[str, Any]:
        """A recording in one request (a short session, ended before its node's first
        upload): its metadata, its bytes from offset 0 (``data``, the cast's text), and the
        final metadata, each checked as the three requests it replaces would be. A repeat
        (the answer was lost) appends nothing twice."""
        data = _whole_data(meta)
        final = {key: value for key, value in meta.items() if key != "data"}
        opening = {key: value for key, value in final.items()
                   if key not in ("end_ns", "size", "interrupted")}
        state = await self._update_meta(identity, sid, opening)
        if state["ended"]:
            return state
        await self.append(identity, sid, 0, data)
        return await self._update_meta(identity, sid, final)

    async def _binding(self, identity: Identity, sid: str) -> SessionBinding | None:
        """The session's start, when a node sends its recording (AccessDenied when another
        node started it)."""
        if self.sessions is None or identity.builtin != "node":
            return None
        return await self.sessions.owned(sid, identity.user)

    async def _owned(self, identity: Identity, sid: str) -> RecordingMeta | None:
        try:
            existing = await self.store.get(sid)
        except NotFound:
            return None
        if identity.builtin == "node" and existing.node_id and existing.node_id != identity.user:
            raise AccessDenied(f"the recording of session {sid} belongs to another node; "
                               "a node may only send recordings of its own sessions")
        return existing

    @staticmethod
    def _state(meta: RecordingMeta) -> dict[str, Any]:
        return {"size": meta.size, "complete": meta.complete, "ended": meta.end_ns is not None}

    # -- people -----------------------------------------------------------------------------

    async def list(self, limit: int = 100, since_ns: int | None = None) -> list[RecordingMeta]:
        return await self.store.list(max(1, min(limit, 10_000)), since_ns)

    async def search(self, text: str, limit: int = 100) -> list[RecordingMeta]:
        if not text.strip():
            raise BadParameter("say what text to look for")
        return await self.store.search_text(text, max(1, min(limit, 10_000)))

    async def get(self, sid: str) -> RecordingMeta:
        return await self.store.get(session_id(sid))

    async def open(self, identity: Identity, sid: str) -> tuple[RecordingMeta,
                                                                AsyncIterator[bytes]]:
        """The recording's bytes, for playing or exporting; the access is audited."""
        meta = await self.get(sid)
        await self.audit.emit(schema.RecordingAccess(
            user=identity.user, sid=meta.session_id, addr_remote=identity.remote_addr or None,
        ))
        return meta, self.store.read(meta.session_id)


def _whole_data(meta: dict[str, Any]) -> bytes:
    data = str(meta["data"]).encode()
    if len(data) > MAX_APPEND:
        raise BadParameter(f"send at most {MAX_APPEND} bytes of a recording at a time")
    return data


def _record(identity: Identity, sid: str, meta: dict[str, Any],
            binding: SessionBinding | None, size: int) -> RecordingMeta:
    """The metadata to store: the node's, with who and where as the session's start
    established them; ended once the final metadata says so and every byte (``size``
    stored) arrived."""
    node_id = identity.user if identity.builtin == "node" else str(meta.get("node_id", ""))
    record = RecordingMeta(
        session_id=sid, user=str(meta.get("user", "")), login=str(meta.get("login", "")),
        node=str(meta.get("node", "")), node_id=node_id, kind=str(meta.get("kind", "")),
        command=str(meta.get("command", "")), start_ns=_int(meta.get("start_ns"), 0) or 0,
        extra=dict(meta.get("extra") or {}),
    )
    if binding is not None:
        record.node = binding.server_hostname or record.node
        if binding.user is not None:
            record.user, record.login = binding.user, binding.login or ""
    end_ns = _int(meta.get("end_ns"))
    if end_ns is not None and _int(meta.get("size")) == size:
        record.end_ns = end_ns
        record.interrupted = bool(meta.get("interrupted"))
        record.complete = not record.interrupted
    return record


def _uploaded(identity: Identity, binding: SessionBinding | None,
              saved: RecordingMeta) -> schema.SessionUpload:
    return schema.SessionUpload(
        sid=saved.session_id, server_id=saved.node_id or None,
        server_hostname=saved.node or None, size=saved.size, complete=saved.complete,
        interrupted=saved.interrupted, recording=f"limen play {saved.session_id}",
        **_who(identity, binding, saved),
    )


def _who(identity: Identity, binding: SessionBinding | None,
         saved: RecordingMeta) -> dict[str, str | None]:
    """A node's word for who is a claim unless the session's start backed it."""
    if binding is not None and binding.user is not None:
        return {"user": binding.user, "login": binding.login}
    if identity.builtin == "node":
        return {"claimed_user": saved.user or None, "claimed_login": saved.login or None}
    return {"user": saved.user or None, "login": saved.login or None}
