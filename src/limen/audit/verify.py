"""`limen audit verify`: check the hash chain in the day files and in the store.

It names the first event that was changed, removed, inserted or reordered:

- changed: a line whose content no longer matches its hash (or, when the hash was
  recomputed too, the line the next event no longer links to);
- removed: seqs missing from the chain, or missing before its first line with no signed
  retention anchor that says they were removed on purpose;
- inserted: a line that does not belong between its neighbours (they link to each other);
- reordered: a seq where another was expected, the expected one appearing later.

Checkpoints (``audit.checkpoint``) and anchors (``audit.retention``) must carry a valid
signature by the audit key the verifier trusts: DATA_DIR/ca/audit_key.pub for the local
log, and for others only the keys registered in the store with the cluster CA's voucher
(vouchers.py). A chain whose key is not trusted is refused by name ("untrusted"): anyone
who can write to the store could otherwise add a log signed with a key of their own. The
store must hold the same events as the files: every row's hash equal to the file line of
the same seq.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from limen.audit import events as types
from limen.audit import files
from limen.audit.chain import (
    GENESIS,
    checkpoint_message,
    event_hash,
    parse_time,
    signature_ok,
)
from limen.audit.store import EventStore, stored_event

_CHAIN_FIELDS = ("log_id", "seq", "prev_hash", "hash")
_PAGE = 5000
_GRACE_NS = 5 * 1_000_000_000  # events this recent may postdate the read of the files


@dataclass(frozen=True)
class Problem:
    kind: str  # changed, removed, inserted, reordered, signature, untrusted, store
    where: str  # "2024-05-01.log:17" or "store: log L seq 17"
    message: str
    seq: int | None = None
    uid: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "where": self.where, "message": self.message,
                "seq": self.seq, "uid": self.uid}


@dataclass
class Report:
    files_checked: int = 0
    store_checked: int = 0
    checkpoints: int = 0
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "files_checked": self.files_checked,
                "store_checked": self.store_checked, "checkpoints": self.checkpoints,
                "problems": [p.to_json() for p in self.problems], "notes": self.notes}


@dataclass(frozen=True)
class Item:
    where: str
    record: dict[str, Any] | None
    index: int  # position in the stream, for looking further ahead


def _chained(record: dict[str, Any] | None) -> bool:
    return (record is not None and all(k in record for k in _CHAIN_FIELDS)
            and isinstance(record["seq"], int))


class ChainChecker:
    """Checks one chain, record by record, each seen with the record after it."""

    def __init__(
        self,
        keys: dict[str, str],
        report: Report,
        find_later: Callable[[str, int, int], str | None],
        anchored: Callable[[str, int, str], bool],
        start_free: bool = False,
        earlier: Callable[[str, int, str], bool] = lambda *_: False,
    ) -> None:
        self.keys = keys
        self.report = report
        self.find_later = find_later  # (log_id, seq, after index) -> where it is, or None
        self.anchored = anchored  # (log_id, seq, hash) -> a signed anchor says so
        self.start_free = start_free  # --since: the first record's predecessor is not ours
        self.earlier = earlier  # (log_id, seq, hash) -> that exact event was seen before
        self.prev: Item | None = None

    def check(self, item: Item, after: Item | None) -> Problem | None:
        problem = self._check(item, after)
        if problem is None:
            self.prev = item
        return problem

    def _check(self, item: Item, after: Item | None) -> Problem | None:
        r, prev = item.record, self.prev.record if self.prev else None
        nxt = after.record if after is not None and _chained(after.record) else None
        if not _chained(r):
            kind = "inserted" if self._links(prev, nxt) else "changed"
            return Problem(kind, item.where, "the line is not an event of the chain "
                           f"({'not JSON' if r is None else 'no chain fields'})")
        assert r is not None
        seq, uid = r["seq"], str(r.get("uid", ""))
        if event_hash(r) != r["hash"]:
            if self._links(prev, nxt):
                return Problem("inserted", item.where, "the line does not belong here: the "
                               "events around it link to each other", seq, uid)
            return Problem("changed", item.where, "the event's content does not match its "
                           "hash", seq, uid)
        if prev is None or prev.get("log_id") != r["log_id"]:
            return self._first(item, r)
        expected = prev["seq"] + 1
        if seq == expected:
            if r["prev_hash"] == prev["hash"]:
                return self._signed(item, r, prev)
            if nxt is not None and nxt["seq"] == seq and nxt["prev_hash"] == prev["hash"]:
                return Problem("inserted", item.where, "this event does not link to the one "
                               "before it, and the next one does", seq, uid)
            assert self.prev is not None
            return Problem("changed", self.prev.where, "the next event no longer links to "
                           "this one: it was changed and its hash recomputed",
                           prev["seq"], str(prev.get("uid", "")))
        if seq > expected:
            later = self.find_later(r["log_id"], expected, item.index)
            if later is not None:
                return Problem("reordered", item.where, f"seq {seq} is here where seq "
                               f"{expected} was expected; seq {expected} is at {later}",
                               seq, uid)
            missing = f"seq {expected}" if seq == expected + 1 else f"seqs {expected}-{seq - 1}"
            return Problem("removed", item.where, f"{missing} missing before this line "
                           "(removed)", expected, None)
        if seq == prev["seq"] and r["prev_hash"] == prev["prev_hash"]:
            assert self.prev is not None
            genuine_is_this = nxt is not None and nxt["prev_hash"] == r["hash"]
            where = self.prev.where if genuine_is_this else item.where
            return Problem("inserted", where, f"two events claim seq {seq}; this one is not "
                           "the one the chain continues from", seq, uid)
        if self.earlier(r["log_id"], seq, r["hash"]):
            return Problem("inserted", item.where, f"a copy of the event with seq {seq}, "
                           "which appeared earlier", seq, uid)
        return Problem("reordered", item.where, f"seq {seq} comes after seq {prev['seq']} "
                       "(a line was moved here)", seq, uid)

    @staticmethod
    def _links(prev: dict[str, Any] | None, nxt: dict[str, Any] | None) -> bool:
        return (prev is not None and nxt is not None and nxt["seq"] == prev["seq"] + 1
                and nxt["prev_hash"] == prev["hash"])

    def _first(self, item: Item, r: dict[str, Any]) -> Problem | None:
        if r["log_id"] not in self.keys:
            return Problem("untrusted", item.where, f"log {r['log_id']} is signed with a key "
                           "the cluster's CA does not vouch for: its events cannot be trusted",
                           r["seq"], str(r.get("uid", "")))
        if self.prev is not None:
            self.report.notes.append(f"a new chain (log {r['log_id']}) begins at {item.where}")
        if self.start_free or (r["seq"] == 1 and r["prev_hash"] == GENESIS):
            return self._signed(item, r, None)
        if self.anchored(r["log_id"], r["seq"] - 1, r["prev_hash"]):
            self.report.notes.append(
                f"log {r['log_id']} starts at seq {r['seq']}: older events were removed by "
                "retention (signed anchor found)")
            return self._signed(item, r, None)
        return Problem("removed", item.where, f"the chain starts at seq {r['seq']}: events "
                       f"before it are missing and no signed retention anchor covers them",
                       r["seq"] - 1, None)

    def _signed(self, item: Item, r: dict[str, Any],
                prev: dict[str, Any] | None) -> Problem | None:
        """Checkpoints and anchors must be signed by the chain's trusted key."""
        if r["event"] not in (types.AUDIT_CHECKPOINT.name, types.AUDIT_RETENTION.name):
            return None
        key = self.keys[r["log_id"]]  # _first refused chains without a trusted key
        if r["event"] == types.AUDIT_CHECKPOINT.name:
            self.report.checkpoints += 1
            through = (r.get("through_seq"), r.get("through_hash"))
            if prev is not None and through != (prev["seq"], prev["hash"]):
                return Problem("changed", item.where, "the checkpoint does not name the event "
                               "before it", r["seq"], str(r.get("uid", "")))
            message = checkpoint_message("checkpoint", r["log_id"], r.get("through_seq", -1),
                                         str(r.get("through_hash", "")))
        else:
            message = checkpoint_message("anchor", r["log_id"], r.get("removed_through_seq", -1),
                                         str(r.get("anchor_hash", "")))
        if not signature_ok(key, message, str(r.get("signature", ""))):
            return Problem("signature", item.where, f"the {r['event']} signature is not valid "
                           "for the audit key", r["seq"], str(r.get("uid", "")))
        return None


def anchor_valid(record: dict[str, Any], keys: dict[str, str]) -> bool:
    key = keys.get(str(record.get("log_id")))
    if key is None or record.get("event") != types.AUDIT_RETENTION.name:
        return False
    message = checkpoint_message("anchor", record["log_id"], record.get("removed_through_seq", -1),
                                 str(record.get("anchor_hash", "")))
    return signature_ok(key, message, str(record.get("signature", "")))


# -- the files ------------------------------------------------------------------------------


@dataclass
class FileChain:
    """What the files say, for comparing with the store: hashes by seq, one chain."""

    log_id: str = ""
    first_seq: int = 0
    digests: bytearray = field(default_factory=bytearray)
    read_at_ns: int = 0  # when the files were read: later events may be in the store only

    def hash_at(self, seq: int) -> str | None:
        index = seq - self.first_seq
        if index < 0 or (index + 1) * 32 > len(self.digests):
            return None
        return self.digests[index * 32:(index + 1) * 32].hex()

    @property
    def last_seq(self) -> int:
        return self.first_seq + len(self.digests) // 32 - 1


def _file_items(directory: Path, since_ns: int | None, skip: int = 0) -> Iterator[Item]:
    index = -1
    started = since_ns is None
    for line in files.read_all(directory):
        index += 1
        if index < skip:
            continue
        if not started:
            when = line.record.get("time") if line.record else None
            try:
                started = isinstance(when, str) and parse_time(when) >= since_ns
            except ValueError:
                started = False
            if not started:
                continue
        yield Item(line.where, line.record, index)


def verify_files(directory: Path, keys: dict[str, str], since_ns: int | None = None,
                 report: Report | None = None) -> tuple[Report, FileChain]:
    report = report or Report()
    read_at = time.time_ns()
    chain = FileChain(read_at_ns=read_at)

    def find_later(log_id: str, seq: int, after: int) -> str | None:
        for item in _file_items(directory, None, after + 1):
            r = item.record
            if r is not None and r.get("log_id") == log_id and r.get("seq") == seq:
                return item.where
        return None

    def anchored(log_id: str, seq: int, digest: str) -> bool:
        for line in files.read_all(directory):
            if types.AUDIT_RETENTION.name in line.text and line.record is not None:
                r = line.record
                if (r.get("log_id"), r.get("removed_through_seq"), r.get("anchor_hash")) == (
                        log_id, seq, digest) and anchor_valid(r, keys):
                    return True
        return False

    def earlier(log_id: str, seq: int, digest: str) -> bool:
        return log_id == chain.log_id and chain.hash_at(seq) == digest

    checker = ChainChecker(keys, report, find_later, anchored, start_free=since_ns is not None,
                           earlier=earlier)
    stream = _file_items(directory, since_ns)
    item = next(stream, None)
    while item is not None:
        after = next(stream, None)
        problem = checker.check(item, after)
        if problem is not None:
            report.problems.append(problem)
            return report, chain
        report.files_checked += 1
        r = item.record
        assert r is not None
        if r["log_id"] != chain.log_id:  # the newest chain is the one the store follows
            chain = FileChain(r["log_id"], r["seq"], read_at_ns=read_at)
        chain.digests += bytes.fromhex(r["hash"])
        item = after
    return report, chain


# -- the store ------------------------------------------------------------------------------


async def verify_store(store: EventStore, keys: dict[str, str], files_chain: FileChain | None,
                       since_ns: int | None = None, report: Report | None = None) -> Report:
    report = report or Report()
    for log_id in await store.log_ids():
        anchor_set: set[tuple[int, str]] = set()
        for row in await store.by_event(log_id, types.AUDIT_RETENTION.name):
            record = files.parse(row.data)
            if record is not None and anchor_valid(record, keys):
                anchor_set.add((record["removed_through_seq"], record["anchor_hash"]))
        checker = ChainChecker(
            keys, report, lambda *_: None,
            lambda _log, seq, digest, found=anchor_set: (seq, digest) in found,
            start_free=since_ns is not None,
        )
        compare = files_chain if files_chain and files_chain.log_id == log_id else None
        problem = await _check_store_log(store, log_id, checker, compare, since_ns, report)
        if problem is not None:
            report.problems.append(problem)
            return report
        if compare is not None and compare.digests:
            last = await store.last(log_id)
            behind = compare.last_seq - (last.seq if last else 0)
            if behind > 0:
                report.notes.append(f"the store is {behind} event(s) behind the files for log "
                                    f"{log_id}; they are copied with the next write")
    return report


async def _check_store_log(store: EventStore, log_id: str, checker: ChainChecker,
                           compare: FileChain | None, since_ns: int | None,
                           report: Report) -> Problem | None:
    after_seq, index = 0, 0
    pending: Item | None = None
    while True:
        rows = await store.chain(log_id, after_seq, _PAGE)
        for row in rows:
            if since_ns is not None and row.time_ns < since_ns:
                after_seq = row.seq
                continue
            record = files.parse(row.data)
            where = f"store: log {log_id} seq {row.seq}"
            problem = _row_columns(row, record, where, compare)
            if problem is not None:
                return problem
            item = Item(where, record, index)
            index += 1
            if pending is not None:
                problem = checker.check(pending, item)
                if problem is not None:
                    return problem
                report.store_checked += 1
            pending = item
            after_seq = row.seq
        if len(rows) < _PAGE:
            break
    if pending is not None:
        problem = checker.check(pending, None)
        if problem is not None:
            return problem
        report.store_checked += 1
    return None


def _row_columns(row: Any, record: dict[str, Any] | None, where: str,
                 compare: FileChain | None) -> Problem | None:
    """The searched columns must say what the stored line says, and match the files."""
    if record is None:
        return Problem("changed", where, "the stored line is not JSON", row.seq, row.uid)

    try:
        expected = stored_event(record, row.data)
    except (KeyError, ValueError, TypeError):
        return Problem("changed", where, "the stored line lacks the chain fields", row.seq,
                       row.uid)
    if expected != row:
        return Problem("changed", where, "the row's searchable columns differ from its "
                       "stored event", row.seq, row.uid)
    if compare is not None:
        file_hash = compare.hash_at(row.seq)
        if file_hash is not None and file_hash != row.hash:
            return Problem("store", where, "the store's event differs from the file's event "
                           "with the same seq", row.seq, row.uid)
        written_since = row.time_ns >= compare.read_at_ns - _GRACE_NS
        if file_hash is None and row.seq > compare.last_seq and compare.digests and (
                not written_since):
            return Problem("store", where, "the store has an event the files do not have "
                           "(inserted into the store, or lines removed from the files' end)",
                           row.seq, row.uid)
    return None
