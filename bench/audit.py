"""Benchmark: the audit log's write throughput (fsync before acknowledging) and search over
a million events, each with its ratio to a baseline measured in the same run.

    .venv/bin/python bench/audit.py [--events N] [--writes N] [--postgres DSN [--no-sqlite]]

Writes: ``AuditLog.emit`` (hash chain, JSON line, fsync, then the SQLite store) with one
caller at a time and with 64 concurrent callers (group commit), against the baseline of
the simplest durable writer: one ``write`` + ``fsync`` per JSON line.

Search: the store (SQLite, and PostgreSQL with --postgres) filled with --events events
(30 days, 500 users, 200 nodes, 50 000 sessions, 12 event types), then the median and
99th percentile time of ``limen audit search``'s queries (50 newest, by type, user,
node, session, the last hour, and the 20th page of a user's events, asked with the
cursor of the 19th), against the baseline of scanning the same events as JSON lines
(what grep-style tools do with the day files).

Verify: ``verify_files`` over the --writes events written above.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from limen.audit.chain import log_id_for, read_public_key  # noqa: E402
from limen.audit.log import AuditLog  # noqa: E402
from limen.audit.schema import Exec  # noqa: E402
from limen.audit.store import EventQuery, StoredEvent, open_audit_store  # noqa: E402
from limen.audit.verify import verify_files  # noqa: E402

TYPES = ["session.start", "session.end", "exec", "resize", "session.data", "auth",
         "user.login", "port", "sftp", "client.disconnect", "scp", "session.rejected"]
DAY_NS = 86_400 * 10**9


def _median(samples: list[float]) -> float:
    return statistics.median(samples)


# -- writes -----------------------------------------------------------------------------


def baseline_writes(directory: Path, count: int) -> float:
    path = directory / "baseline.log"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    line = json.dumps({"event": "exec", "user": "alice", "command": "true"}) + "\n"
    start = time.perf_counter()
    for _ in range(count):
        os.write(fd, line.encode())
        os.fsync(fd)
    elapsed = time.perf_counter() - start
    os.close(fd)
    return count / elapsed


async def limen_writes(directory: Path, count: int, concurrency: int) -> tuple[float, float]:
    """Events acknowledged per second, and the seconds the searchable store then took
    to hold them all (it is copied after the acknowledgement)."""
    store = await open_audit_store("sqlite", directory)
    log = AuditLog(directory / "log" / "events", "bench.limen", store=store.events)
    await log.start()
    per_task = count // concurrency

    async def caller(n: int) -> None:
        for i in range(per_task):
            await log.emit(Exec(user=f"user{n}", command=f"echo {i}", sid=str(n)))

    start = time.perf_counter()
    await asyncio.gather(*(caller(n) for n in range(concurrency)))
    elapsed = time.perf_counter() - start
    await log.flush()
    lag = time.perf_counter() - start - elapsed
    await log.close()
    await store.close()
    return per_task * concurrency / elapsed, lag


# -- search -----------------------------------------------------------------------------


def synthetic(count: int, now_ns: int) -> Iterator[StoredEvent]:
    """The same events on every call (a fixed seed), made as they are used: ten million
    held at once would need many gigabytes."""
    rng = random.Random(6)
    users = [f"user{i}" for i in range(500)]
    nodes = [f"node{i}" for i in range(200)]
    node_ids = {n: str(uuid.UUID(int=i + 1)) for i, n in enumerate(nodes)}
    sessions = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(50_000)]
    start = now_ns - 30 * DAY_NS
    step = (30 * DAY_NS) // count
    for seq in range(1, count + 1):
        user, node, event = rng.choice(users), rng.choice(nodes), rng.choice(TYPES)
        sid = rng.choice(sessions)
        record = {"event": event, "code": "T0000I", "uid": f"u{seq}", "user": user,
                  "server_hostname": node, "server_id": node_ids[node], "sid": sid, "seq": seq}
        yield StoredEvent("benchlog", seq, f"u{seq}", start + seq * step, event,
                          "T0000I", user, node, node_ids[node], sid, f"{seq:064x}",
                          json.dumps(record))


QUERIES = {
    "newest 50": {},
    "--type session.start": {"types": ("session.start",)},
    "--user user42": {"user": "user42"},
    "--node node7": {"node": "node7"},
    "--session SID": {"session": None},  # filled in with a real session id
    "--since 1h": {"since_ns": None},
    "--user, its 20th page": {"user": "user42", "pages": 20},
}


RUNS = 100  # per query: enough for a 99th percentile


async def time_query(store, spec: dict, runs: int = RUNS) -> tuple[float, float]:  # noqa: ANN001
    """Median and 99th percentile of one query's time. A paged query is timed at its last
    page, asked with the cursor the pages before it gave (as a person paging there
    asks for it): keyset paging makes a deep page cost what the first one does."""
    spec = dict(spec)
    pages = spec.pop("pages", 1)
    cursor = None
    for _ in range(pages - 1):
        cursor = (await store.events.search(EventQuery(limit=50, cursor=cursor, **spec))).cursor
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        await store.events.search(EventQuery(limit=50, cursor=cursor, **spec))
        samples.append(time.perf_counter() - start)
    return _median(samples), statistics.quantiles(samples, n=100)[98]


def scan_baseline(path: Path, predicate) -> float:  # noqa: ANN001
    start = time.perf_counter()
    found = []
    with path.open() as fh:
        for line in fh:
            record = json.loads(line)
            if predicate(record):
                found.append(record)
    found.sort(key=lambda r: r["seq"], reverse=True)
    del found[50:]
    return time.perf_counter() - start


async def search_bench(kind: str, count: int, now_ns: int, sample: StoredEvent,
                       directory: Path, dsn: str | None) -> dict[str, tuple[float, float]]:
    schema = f"bench_{uuid.uuid4().hex[:8]}" if kind == "postgres" else None
    store = await open_audit_store(kind, directory, dsn, schema)
    try:
        start = time.perf_counter()
        rows = synthetic(count, now_ns)
        while chunk := list(itertools.islice(rows, 20_000)):
            await store.events.insert(chunk)
            now = chunk[-1].time_ns
        load = time.perf_counter() - start
        print(f"  {kind}: loaded {count:,} events in {load:.1f} s ({count / load:,.0f}/s)")
        results = {}
        for name, spec in QUERIES.items():
            spec = dict(spec)
            if "session" in spec:
                spec["session"] = sample.sid
            if "since_ns" in spec:
                spec["since_ns"] = now - 3600 * 10**9
            results[name] = await time_query(store, spec)
        return results
    finally:
        if kind == "postgres":
            from sqlalchemy import text

            async with store.db.write() as conn:  # type: ignore[attr-defined]
                await conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        await store.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--writes", type=int, default=5000)
    parser.add_argument("--postgres", help="also PostgreSQL, e.g. postgresql://postgres@127.0.0.1/test")
    parser.add_argument("--no-sqlite", action="store_true", help="search PostgreSQL only")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="limen-bench-") as tmp:
        base = Path(tmp)
        print(f"writes ({args.writes} events, fsync before each acknowledgement):")
        base_rate = baseline_writes(base, min(args.writes, 2000))
        print(f"  baseline write+fsync per line:        {base_rate:10,.0f} events/s")
        for concurrency in (1, 64):
            where = base / f"w{concurrency}"
            where.mkdir()
            rate, lag = await limen_writes(where, args.writes, concurrency)
            print(f"  AuditLog.emit, {concurrency:2d} concurrent callers:  {rate:10,.0f} events/s"
                  f"  (x{rate / base_rate:.2f} baseline; the store held them all "
                  f"{lag * 1000:.0f} ms after the last acknowledgement)")
        start = time.perf_counter()
        key = read_public_key(base / "w64" / "ca") or ""
        report, _ = verify_files(base / "w64" / "log" / "events", {log_id_for(key): key})
        elapsed = time.perf_counter() - start
        print(f"  verify_files over {report.files_checked:,} events: {elapsed:.2f} s "
              f"({report.files_checked / elapsed:,.0f} events/s), ok={report.ok}")

        print(f"\nsearch over {args.events:,} events (median and p99 of {RUNS} runs, "
              "50 per page; goal: p99 <= 5 ms):")
        now_ns = time.time_ns()
        lines = base / "events.jsonl"
        with lines.open("w") as fh:
            for row in synthetic(args.events, now_ns):
                fh.write(row.data + "\n")
                if row.seq == args.events // 2 + 1:
                    sample = row
        scans = {
            "--user user42": scan_baseline(lines, lambda r: r["user"] == "user42"),
            "--session SID": scan_baseline(lines, lambda r: r["sid"] == sample.sid),
        }
        kinds = [] if args.no_sqlite else [("sqlite", None)]
        kinds += [("postgres", args.postgres)] if args.postgres else []
        for kind, dsn in kinds:
            where = base / kind
            where.mkdir()
            results = await search_bench(kind, args.events, now_ns, sample, where, dsn)
            for name, (seconds, p99) in results.items():
                line = f"    {name:22s} {seconds * 1000:8.2f} ms  p99 {p99 * 1000:7.2f} ms"
                if name in scans:
                    line += f"  (scan of the JSON lines: {scans[name]:.2f} s, " \
                            f"x{scans[name] / seconds:,.0f} faster)"
                print(line)


if __name__ == "__main__":
    asyncio.run(main())
