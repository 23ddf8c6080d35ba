"""The audit log: typed events, hash-chained, fsynced before they are acknowledged.

``emit()`` returns only after the event's line is on disk (fsync), so the action it
records can be acknowledged after it. One writer task does the writing: whatever queued
while the previous fsync ran goes out in the next batch with one write and one fsync
(group commit; no artificial delay, so a lone event waits only for its own fsync).

Events are typed (limen.audit.schema): a field the schema does not know is refused
before anything is written. ``time`` is always this log's clock when the event was
received; a node's own idea of when something happened is a field of its own
(``node_time``), so ``--since`` selects by this log's clock, not by a reporter's word.

Files: one JSON line per event, one file per UTC day, under DATA_DIR/log/events/. A
line goes to the file of the day it was written, so reading the files in name order
gives the chain in order.

After the fsync the callers are answered and the batch is copied into the searchable
store (before the next batch is written). The files are the record of truth: if the
store is unreachable the copy is retried with the next batch, and on start the store
catches up with the files. Every ``checkpoint_every`` events, and every
``checkpoint_interval`` seconds when events arrived, an ``audit.checkpoint`` event signed
by the audit key pins the chain (see chain.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from limen.audit import events as types
from limen.audit import files, schema
from limen.audit.chain import (
    GENESIS,
    AuditKey,
    checkpoint_message,
    format_time,
    normalize,
    seal,
)
from limen.audit.events import EventType
from limen.audit.metadata import AuditEvent
from limen.audit.store import EventStore, StoredEvent, stored_event
from limen.clock import Clock, RealClock
from limen.diag import metrics
from limen.errors import BadParameter, ConnectionProblem, LimenError
from limen.tasks import cancel_and_wait

log = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_BATCH = 2000
# Seconds the store copy waits to gather events into one transaction: the events are
# durable already; this only delays when a search sees them.
STORE_GATHER = 0.02
_RECENT_UIDS = 10_000  # uids remembered to drop a node's resent events without a lookup


# Records with their callers' futures (None for a checkpoint nobody waits for).
_Batch = list[tuple[dict[str, Any], asyncio.Future[dict[str, Any]] | None]]


class _UidSource:
    """Random (version 4) UUIDs, 256 to a read of the OS's random source: one getrandom
    call per uid took a sixth of an event's write on this kind of machine."""

    def __init__(self) -> None:
        self._pool = b""
        self._at = 0

    def next(self) -> str:
        if self._at >= len(self._pool):
            self._pool, self._at = os.urandom(16 * 256), 0
        h = self._pool[self._at:self._at + 16].hex()
        self._at += 16
        variant = "89ab"[int(h[16], 16) & 3]  # RFC 4122: version 4, variant 10xx
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-{h[20:]}"


_uids = _UidSource()


def now_ns(clock: Clock) -> int:
    """Nanoseconds: the real clock has them; an injected clock has microseconds."""
    if isinstance(clock, RealClock):
        return time.time_ns()
    delta = clock.now() - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


class AuditLog:
    def __init__(
        self,
        directory: Path,
        cluster_name: str,
        clock: Clock | None = None,
        *,
        key: AuditKey | None = None,
        store: EventStore | None = None,
        checkpoint_every: int = 1000,
        checkpoint_interval: float = 60.0,
        voucher: str | None = None,
    ) -> None:
        self.directory = directory
        self.cluster_name = cluster_name
        self.clock = clock or RealClock()
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        # The key lives with the CAs: DATA_DIR/ca when the log is DATA_DIR/log/events.
        self.key = key or AuditKey.load_or_create(directory.parent.parent / "ca")
        self.log_id = self.key.log_id
        self.store = store
        # The cluster CA's signature over this log's key, registered with it in the store
        # so that verifiers elsewhere trust the key (limen.audit.vouchers).
        self.voucher = voucher
        self._registered = False
        self.checkpoint_every = checkpoint_every
        self.checkpoint_interval = checkpoint_interval
        self._seq = 0
        self._last_hash = GENESIS
        self._day = ""
        self._fd: int | None = None
        self._fd_day = ""
        self._queue: _Batch = []
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._started: asyncio.Future[None] | None = None
        self._since_checkpoint = 0
        self._last_checkpoint = time.monotonic()
        self._store_behind = store is not None  # catch up with the files first
        # Written lines on their way into the store, copied by a task of their own so
        # that the next batch's fsync does not wait for the database.
        self._for_store: list[tuple[dict[str, Any], str]] = []
        self._store_wake = asyncio.Event()
        self._store_idle = asyncio.Event()
        self._store_idle.set()
        self._copier: asyncio.Task[None] | None = None
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._closed = False

    # -- emitting ------------------------------------------------------------------------

    def build(self, event: AuditEvent, uid: str | None = None) -> dict[str, Any]:
        kind = event.event_type()
        record: dict[str, Any] = {
            "event": kind.name,
            "code": kind.code,
            "uid": uid or _uids.next(),
            "time": format_time(now_ns(self.clock)),
            "cluster_name": self.cluster_name,
        }
        record.update(event.fields())
        return record

    async def emit(self, event: AuditEvent | EventType, /, **fields: Any) -> dict[str, Any]:
        """Write one event; returns it (with its chain fields) once it is on disk.

        ``event`` is a typed event (limen.audit.schema). An EventType with keyword fields
        is still taken, for callers not converted yet: the fields are checked against the
        event's schema all the same (BadParameter names an unknown field).
        """
        if isinstance(event, EventType):  # None means unset, as it always did here
            event = schema.from_fields(event, {k: v for k, v in fields.items() if v is not None})
        elif fields:
            raise TypeError("a typed event carries its own fields")
        return await self.record(event)

    async def record(self, event: AuditEvent, *, uid: str | None = None) -> dict[str, Any]:
        """Write a typed event under ``uid`` when a reporter names it (a node resending
        what it spooled): an event whose uid is already in the log is not written twice."""
        # Not a batch of one: this is every emit's path, and record_many's bookkeeping
        # cost a third of the log's throughput under many concurrent callers.
        if uid is not None and await self._seen([uid]):
            return {"uid": uid, "duplicate": True}
        record = self.build(event, uid)
        await self._ensure_started()
        future = self._enqueue(record)
        self._wake.set()
        return await future

    async def record_many(self, events: Sequence[tuple[AuditEvent, str | None]]
                          ) -> list[dict[str, Any] | LimenError]:
        """Write several events, in order, in one group commit: a batch waits for one
        fsync instead of one each. Returns what ``record`` returns for each, or the
        refusal of that event alone (BadParameter); a failure of the log itself fails
        them all (raised)."""
        await self._ensure_started()
        taken = await self._seen([uid for _, uid in events if uid is not None])
        answers: list[dict[str, Any] | asyncio.Future[dict[str, Any]]] = []
        for event, uid in events:
            if uid is not None and uid in taken:  # in the log, or earlier in this batch
                answers.append({"uid": uid, "duplicate": True})
                continue
            if uid is not None:
                taken.add(uid)
            answers.append(self._enqueue(self.build(event, uid)))
        self._wake.set()
        pending = [answer for answer in answers if isinstance(answer, asyncio.Future)]
        if pending:
            try:
                await asyncio.wait(pending)
            except asyncio.CancelledError:
                for future in pending:
                    future.cancel()
                raise
        return [_answer(answer) for answer in answers]

    def _enqueue(self, record: dict[str, Any]) -> asyncio.Future[dict[str, Any]]:
        # A caller that gives up cancels only its future: the record stays queued and is
        # written in order all the same (the writer skips answering a cancelled future).
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._queue.append((record, future))
        return future

    async def _seen(self, uids: list[str]) -> set[str]:
        """Those of ``uids`` already in the log."""
        seen = {uid for uid in uids if uid in self._recent}
        rest = [uid for uid in uids if uid not in seen]
        if self.store is None or not rest:
            return seen
        try:
            return seen | await self.store.known_uids(rest)
        except ConnectionProblem:
            return seen  # a duplicate is better than a loss

    # -- the writer ----------------------------------------------------------------------

    async def _ensure_started(self) -> None:
        if self._closed:
            raise ConnectionProblem("the audit log is closed")
        started = self._started
        if started is not None and started.done() and not started.cancelled() \
                and started.exception() is None:
            return  # the usual case: no shield (a future and a callback) per event
        if started is None:
            self._started = asyncio.ensure_future(self._start())
        await asyncio.shield(self._started)

    async def start(self) -> None:
        await self._ensure_started()

    async def _start(self) -> None:
        await asyncio.to_thread(self._recover)
        if self.store is not None:
            with contextlib.suppress(LimenError):
                await self._register()
                last = await self.store.last(self.log_id)
                if last is not None and last.seq > self._seq:
                    # The files lost their newest lines: continue after the store's.
                    log.error("the audit files end at seq %d but the store has seq %d; "
                              "continuing the chain from the store", self._seq, last.seq)
                    self._seq, self._last_hash = last.seq, last.hash
            await self._sync_store()
        self._writer = asyncio.create_task(self._run(), name="limen-audit-writer")
        if self.store is not None:
            self._copier = asyncio.create_task(self._copy_loop(), name="limen-audit-store")

    def _recover(self) -> None:
        day_files = files.day_files(self.directory)
        if not day_files:
            return
        newest = day_files[-1]
        cut = files.truncate_torn_tail(newest)
        if cut:
            log.warning("removed %d bytes of a torn, unacknowledged line from %s", cut, newest)
        self._day = newest.stem
        last = files.last_record(self.directory, self.log_id)
        if last is not None:
            self._seq, self._last_hash = int(last["seq"]), str(last["hash"])

    async def _run(self) -> None:
        while True:
            if not self._queue and not self._closed:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.checkpoint_interval):
                        await self._wake.wait()
                self._wake.clear()
            batch = self._queue[:MAX_BATCH]
            del self._queue[:MAX_BATCH]
            if batch:
                await self._commit(batch)
            closing = self._closed and not self._queue
            if self._checkpoint_due() or (closing and self._since_checkpoint):
                await self._commit([(_CHECKPOINT, None)])
            if closing:
                return

    async def _commit(self, batch: _Batch) -> None:
        try:
            written, refused = await asyncio.to_thread(
                self._write, [record for record, _ in batch])
        except OSError as exc:
            log.error("cannot write the audit log in %s: %s", self.directory, exc)
            self._fail(batch, f"the audit log could not be written: {exc.strerror}")
            return
        except Exception as exc:  # the writer outlives a batch it could not write
            log.error("the audit log could not write a batch of %d events (%s)",
                      len(batch), type(exc).__name__)
            self._fail(batch, "the audit log could not write this event")
            return
        for record, _ in written:
            if record["event"] == types.AUDIT_CHECKPOINT.name:
                self._since_checkpoint = 0
                self._last_checkpoint = time.monotonic()
            else:
                self._since_checkpoint += 1
            self._remember(record["uid"])
        metrics.audit_written(len(written), queued=len(self._queue))
        # Durable now: acknowledge, then index (the store catches up from the files if
        # the copy fails, so callers need not wait for it).
        if refused:
            batch = self._answer_refused(batch, refused)
        for (_, future), (record, _) in zip(batch, written, strict=True):
            if future is not None and not future.done():
                future.set_result(record)
        if self.store is not None:
            self._for_store.extend(written)
            self._store_idle.clear()
            self._store_wake.set()

    @staticmethod
    def _fail(batch: _Batch, message: str) -> None:
        failure = ConnectionProblem(message)
        for _, future in batch:
            if future is not None and not future.done():
                future.set_exception(failure)

    @staticmethod
    def _answer_refused(batch: _Batch, refused: set[int]) -> _Batch:
        """Fail the callers of the records that could not be written; the rest of the
        batch, in order."""
        for at in refused:
            future = batch[at][1]
            if future is not None and not future.done():
                future.set_exception(BadParameter(
                    "the audit event holds text that cannot be written as UTF-8"))
        return [entry for at, entry in enumerate(batch) if at not in refused]

    def _write(
        self, records: list[dict[str, Any]]
    ) -> tuple[list[tuple[dict[str, Any], str]], set[int]]:
        """Chain, serialise, append and fsync (in a thread). State moves only on success.
        Returns the written records and lines, and the places in ``records`` of those
        refused: a record that cannot be serialised (a lone surrogate, which JSON's
        \\uD800 escape can make) fails alone instead of stopping the writer."""
        seq, prev = self._seq, self._last_hash
        day = max(self._day, self._today())
        out: list[tuple[dict[str, Any], str]] = []
        refused: set[int] = set()
        for at, base in enumerate(records):
            if base is _CHECKPOINT:  # signs the chain as it stands just before it
                base = self.build(self._checkpoint_event(seq, prev))
            record = normalize({**base, "log_id": self.log_id, "seq": seq + 1,
                                "prev_hash": prev})
            try:
                line = seal(record)
            except (UnicodeError, ValueError, TypeError):
                refused.add(at)
                continue
            seq += 1
            prev = record["hash"]
            out.append((record, line))
        data = "".join(line + "\n" for _, line in out).encode()
        fd = self._file(day)
        size = os.fstat(fd).st_size
        try:
            _write_all(fd, data)
            os.fsync(fd)
        except OSError:
            # Leave no half batch behind: its seqs are handed out again next time.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise
        self._seq, self._last_hash, self._day = seq, prev, day
        return out, refused

    def _today(self) -> str:
        return format_time(now_ns(self.clock))[:10]

    def _file(self, day: str) -> int:
        if self._fd is not None and self._fd_day == day:
            return self._fd
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        path = self.directory / f"{day}.log"
        created = not path.exists()
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._fd_day = day
        if created:  # the new name must survive a crash too
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        return self._fd

    def _remember(self, uid: str) -> None:
        self._recent[uid] = None
        if len(self._recent) > _RECENT_UIDS:
            self._recent.popitem(last=False)

    # -- checkpoints -----------------------------------------------------------------------

    def _checkpoint_due(self) -> bool:
        if self._since_checkpoint == 0:
            return False
        if self._since_checkpoint >= self.checkpoint_every:
            return True
        return time.monotonic() - self._last_checkpoint >= self.checkpoint_interval

    def _checkpoint_event(self, seq: int, digest: str) -> schema.AuditCheckpoint:
        signature = self.key.sign(checkpoint_message("checkpoint", self.log_id, seq, digest))
        return schema.AuditCheckpoint(through_seq=seq, through_hash=digest,
                                      signature=signature, public_key=self.key.public_b64)

    async def checkpoint(self) -> dict[str, Any]:
        """Write a checkpoint now (retention does before it removes anything)."""
        await self._ensure_started()
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._queue.append((_CHECKPOINT, future))
        self._wake.set()
        return await future

    @property
    def head(self) -> tuple[int, str]:
        """The newest seq and hash written."""
        return self._seq, self._last_hash

    # -- the store ---------------------------------------------------------------------------

    async def _copy_loop(self) -> None:
        # One transaction per gathering pause: copying again as soon as the last copy
        # ends made a transaction (and a database fsync) of every few events under load,
        # which halved what the log as a whole could write.
        while True:
            await self._store_wake.wait()
            await asyncio.sleep(STORE_GATHER)
            self._store_wake.clear()
            rows = self._for_store[:MAX_BATCH * 5]
            del self._for_store[:MAX_BATCH * 5]
            await self._copy_to_store(rows)
            if self._for_store:
                self._store_wake.set()
            else:
                self._store_idle.set()

    async def flush(self) -> None:
        """Wait until what was written is in the store too (tests, retention)."""
        await self._store_idle.wait()

    async def _copy_to_store(self, written: list[tuple[dict[str, Any], str]]) -> None:
        assert self.store is not None
        if self._store_behind:
            await self._sync_store()
            return  # the catch-up read these lines from the files
        try:
            await self.store.insert_written(written)
        except LimenError as exc:
            log.warning("audit store unavailable, events stay in the files for now: %s", exc)
            self._store_behind = True

    async def _register(self) -> None:
        assert self.store is not None
        await self.store.register_log(self.log_id, self.key.public_b64, self.voucher)
        self._registered = True

    async def _sync_store(self) -> None:
        """Copy into the store what the files have beyond its newest row."""
        assert self.store is not None
        try:
            if not self._registered:  # the store was away when the log started
                await self._register()
            last = await self.store.last(self.log_id)
            after = last.seq if last is not None else 0
            if after >= self._seq:
                self._store_behind = False
                return
            rows = await asyncio.to_thread(self._rows_after, after)
            await self.store.insert(rows)
            self._store_behind = False
            if rows:
                log.info("copied %d audit events from the files into the store", len(rows))
        except LimenError as exc:
            log.warning("audit store still unavailable: %s", exc)
            self._store_behind = True

    def _rows_after(self, seq: int) -> list[StoredEvent]:
        """This chain's lines after ``seq``, reading back from the newest file only as far
        as needed."""
        rows: list[StoredEvent] = []
        for path in reversed(files.day_files(self.directory)):
            mine = [line for line in files.read_lines(path)
                    if line.record is not None and line.record.get("log_id") == self.log_id
                    and isinstance(line.record.get("seq"), int)]
            rows[:0] = [stored_event(ln.record, ln.text) for ln in mine if ln.record["seq"] > seq]
            if mine and mine[0].record["seq"] <= seq + 1:
                break
        return rows

    # -- reading and closing ---------------------------------------------------------------------

    def read_all(self) -> list[dict[str, Any]]:
        """Every event on disk, oldest first (for tests and simple tools)."""
        return [line.record for line in files.read_all(self.directory) if line.record]

    async def close(self) -> None:
        """Write what is queued and a last checkpoint, then stop the writer."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        if self._writer is not None:
            await self._writer
        if self._copier is not None:
            await self.flush()
            await cancel_and_wait(self._copier)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _answer(answer: dict[str, Any] | asyncio.Future[dict[str, Any]]
            ) -> dict[str, Any] | LimenError:
    """A written record, or the refusal of that record alone; the log's own failure is
    raised (it failed every record of the batch)."""
    if not isinstance(answer, asyncio.Future):
        return answer
    problem = answer.exception()
    if isinstance(problem, BadParameter):
        return problem
    if problem is not None:
        raise problem
    return answer.result()


# A placeholder the writer replaces with a fresh checkpoint record (it must be built
# by the writer, after the events queued before it).
_CHECKPOINT: dict[str, Any] = {"event": "__checkpoint__"}


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
