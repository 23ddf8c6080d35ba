"""One compliance suite for every Backend: memory, SQLite and PostgreSQL.

Whatever passes here can be swapped for another engine without the services noticing.
Waits are on conditions with timeouts, never sleeps.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
import textwrap
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import asyncpg
import pytest

from limen.backend import Backend, Event, Item, OpType, Watcher, open_backend
from limen.errors import (
    AlreadyExists,
    BadParameter,
    CompareFailed,
    ConnectionProblem,
    LimitExceeded,
    NotFound,
)
from tests.backend.conftest import PG_DSN, Store

WAIT = 10.0  # seconds to wait for an event that must come


async def take(watcher: Watcher, count: int) -> list[Event]:
    """The next ``count`` events, failing if they don't arrive in time."""
    return [await watcher.next(timeout=WAIT) for _ in range(count)]


def summary(events: list[Event | None]) -> list[tuple[str, str, bytes]]:
    return [(e.type.value, e.item.key, e.item.value) for e in events if e is not None]


async def quiet(watcher: Watcher, seconds: float = 0.3) -> None:
    """Assert nothing more arrives for a little while (long enough for a poll or two)."""
    with pytest.raises(TimeoutError):
        await watcher.next(timeout=seconds)


# -- CRUD ------------------------------------------------------------------------------


async def test_put_get_and_revisions(backend: Backend) -> None:
    first = await backend.put(Item("/users/alice", b"v1"))
    assert first.key == "/users/alice" and first.value == b"v1" and first.revision
    assert await backend.get("/users/alice") == first

    second = await backend.put(Item("/users/alice", b"v2"))
    assert second.value == b"v2"
    assert second.revision and second.revision != first.revision
    assert await backend.get("/users/alice") == second


async def test_put_many_stores_all_in_order_with_their_events(store: Store,
                                                             backend: Backend) -> None:
    old = await backend.put(Item("/p/b", b"old"))
    when = store.clock.now() + timedelta(minutes=10)
    async with backend.watch(["/p/"]) as w:
        stored = await backend.put_many([
            Item("/p/c", b"3", expires=when), Item("/p/a", b"1"), Item("/p/b", b"2"),
        ])
        events = await take(w, 3)
        await quiet(w)
    assert [(i.key, i.value) for i in stored] == [("/p/c", b"3"), ("/p/a", b"1"),
                                                  ("/p/b", b"2")]
    assert len({i.revision for i in stored} | {old.revision}) == 4
    assert [await backend.get(i.key) for i in stored] == stored
    assert stored[0].expires == when
    assert [e.item for e in events] == stored  # in the given order, revisions included
    assert await backend.put_many([]) == []


async def test_put_many_is_all_or_nothing(backend: Backend) -> None:
    with pytest.raises(BadParameter):
        await backend.put_many([Item("/q/a", b"1"), Item("/q/b\x00", b"2")])
    with pytest.raises(BadParameter):  # one key twice: which write won would be a guess
        await backend.put_many([Item("/q/a", b"1"), Item("/q/a", b"2")])
    assert await backend.range("/q/") == []


async def test_delete_many_removes_the_live_ones_in_order(store: Store,
                                                          backend: Backend) -> None:
    soon = store.clock.now() + timedelta(seconds=1)
    for key in ("/d/a", "/d/b", "/d/c"):
        await backend.put(Item(key, b"x"))
    await backend.put(Item("/d/old", b"x", expires=soon))
    store.clock.advance(2)
    async with backend.watch(["/d/"]) as w:
        removed = await backend.delete_many(["/d/c", "/d/missing", "/d/old", "/d/a", "/d/c"])
        events = await take(w, 2)
        await quiet(w)
    assert removed == 2  # a missing key, an expired one and a repeat are passed over
    assert summary(events) == [("delete", "/d/c", b""), ("delete", "/d/a", b"")]
    assert [i.key for i in await backend.range("/d/")] == ["/d/b"]
    assert await backend.delete_many([]) == 0


async def test_delete_many_checks_every_key_before_removing_any(backend: Backend) -> None:
    await backend.put(Item("/d/a", b"x"))
    with pytest.raises(BadParameter):
        await backend.delete_many(["/d/a", "/d/b\x00"])
    assert (await backend.get("/d/a")).value == b"x"


async def test_create_update_delete(backend: Backend) -> None:
    created = await backend.create(Item("/roles/admin", b"a"))
    with pytest.raises(AlreadyExists):
        await backend.create(Item("/roles/admin", b"b"))
    assert (await backend.get("/roles/admin")).value == b"a"

    updated = await backend.update(Item("/roles/admin", b"c"))
    assert updated.value == b"c" and updated.revision != created.revision
    with pytest.raises(NotFound):
        await backend.update(Item("/roles/nobody", b"x"))

    await backend.delete("/roles/admin")
    with pytest.raises(NotFound):
        await backend.get("/roles/admin")
    with pytest.raises(NotFound):
        await backend.delete("/roles/admin")
    # Deleted keys can be created again.
    assert (await backend.create(Item("/roles/admin", b"d"))).value == b"d"


async def test_values_are_bytes_exactly(backend: Backend) -> None:
    samples = {
        "/v/empty": b"",
        "/v/binary": bytes(range(256)),
        "/v/nul": b"\x00\x00",
        "/v/big": os.urandom(1 << 20),
    }
    for key, value in samples.items():
        await backend.put(Item(key, value))
    for key, value in samples.items():
        assert (await backend.get(key)).value == value


async def test_expiry_round_trips_to_the_microsecond(store: Store, backend: Backend) -> None:
    when = store.clock.now() + timedelta(hours=1, microseconds=123457)
    stored = await backend.put(Item("/t/x", b"1", expires=when))
    assert stored.expires == when
    got = await backend.get("/t/x")
    assert got.expires == when and got.expires.tzinfo is not None
    # Other time zones are accepted and mean the same instant.
    east = when.astimezone(timezone(timedelta(hours=5)))
    assert (await backend.put(Item("/t/y", b"1", expires=east))).expires == when
    assert (await backend.get("/t/y")).expires == when


async def test_bad_parameters(backend: Backend) -> None:
    with pytest.raises(BadParameter):
        await backend.get("")
    with pytest.raises(BadParameter):
        await backend.put(Item("/a\x00b", b"x"))
    with pytest.raises(BadParameter):
        await backend.put(Item("/a", "text"))  # type: ignore[arg-type]
    with pytest.raises(BadParameter):
        await backend.put(Item("/a", b"x", expires=datetime(2030, 1, 1)))  # naive
    with pytest.raises(BadParameter):
        await backend.compare_and_swap(Item("/a", b"x"), Item("/b", b"y"))
    with pytest.raises(BadParameter):
        await backend.range("/", limit=0)
    with pytest.raises(BadParameter):
        backend.watch("/users/")  # a string, not a list of prefixes
    with pytest.raises(BadParameter):
        backend.watch([])


async def test_open_backend_arguments(tmp_path: Path) -> None:
    with pytest.raises(BadParameter):
        await open_backend("etcd")
    with pytest.raises(BadParameter):
        await open_backend("sqlite")
    with pytest.raises(BadParameter):
        await open_backend("postgres")
    with pytest.raises(BadParameter):
        await open_backend("postgres", dsn="postgresql://u@127.0.0.1/test", schema="x; drop")
    with pytest.raises(ConnectionProblem):
        await open_backend("sqlite", path=str(tmp_path / "missing-dir" / "db.sqlite"))


async def test_unreachable_postgres_is_a_connection_problem_without_secrets() -> None:
    # Port 1 refuses at once; no server needed.
    dsn = "postgresql://limen:hunter2-secret@127.0.0.1:1/test"
    with pytest.raises(ConnectionProblem) as info:
        await open_backend("postgres", dsn=dsn, sweep_interval=None)
    assert "hunter2" not in info.value.message
    assert "127.0.0.1:1" in info.value.message


async def test_closed_backend_refuses_work(store: Store) -> None:
    backend = await store.open()
    await backend.put(Item("/a", b"1"))
    await backend.close()
    await backend.close()  # idempotent
    with pytest.raises(ConnectionProblem):
        await backend.get("/a")
    with pytest.raises(ConnectionProblem):
        await backend.put(Item("/a", b"2"))
    with pytest.raises(ConnectionProblem):
        async with backend.watch(["/"]):
            pass


# -- range -----------------------------------------------------------------------------

KEYS = ["/a", "/a/", "/a/1", "/a/2/x", "/a0", "/ab", "/b", "/b/1", "/u/z", "/u/é", "/u/😀"]


async def test_range_respects_prefix_boundaries(backend: Backend) -> None:
    for key in reversed(KEYS):
        await backend.put(Item(key, key.encode()))

    async def keys(prefix: str, limit: int | None = None) -> list[str]:
        return [i.key for i in await backend.range(prefix, limit)]

    assert await keys("/a/") == ["/a/", "/a/1", "/a/2/x"]
    assert await keys("/a") == ["/a", "/a/", "/a/1", "/a/2/x", "/a0", "/ab"]
    assert await keys("/ab") == ["/ab"]
    assert await keys("/b/") == ["/b/1"]
    assert await keys("/c") == []
    assert await keys("") == sorted(KEYS)
    assert await keys("/u/") == ["/u/z", "/u/é", "/u/😀"]  # code point order
    assert await keys("/u/\uffff") == []
    assert await keys("/a", limit=2) == ["/a", "/a/"]
    items = await backend.range("/b")
    assert [(i.key, i.value) for i in items] == [("/b", b"/b"), ("/b/1", b"/b/1")]


async def test_keys_with_quotes_and_sql_are_values_not_sql(backend: Backend) -> None:
    """Keys reach every engine as bound values: quotes, SQL and LIKE wildcards in them
    neither break a read nor widen it."""
    odd = ["/q/it's", '/q/"x"', "/q/a'; DROP TABLE kv_items; --", "/q/%", "/q/_",
           "/q/\\", "/q/é"]
    for i, key in enumerate(odd):
        await backend.put(Item(key, str(i).encode()))
    for i, key in enumerate(odd):
        assert (await backend.get(key)).value == str(i).encode()
    assert sorted(item.key for item in await backend.range("/q/")) == sorted(odd)
    assert [item.key for item in await backend.range("/q/%")] == ["/q/%"]
    assert [item.key for item in await backend.range("/q/_")] == ["/q/_"]
    with pytest.raises(NotFound):
        await backend.get("/q/' OR '1'='1")
    assert len(await backend.range("/q/", limit=2)) == 2


async def test_delete_range_respects_prefix_boundaries(backend: Backend) -> None:
    for key in KEYS:
        await backend.put(Item(key, b"x"))
    assert await backend.delete_range("/a/") == 3
    assert [i.key for i in await backend.range("/a")] == ["/a", "/a0", "/ab"]
    assert await backend.delete_range("/a/") == 0
    assert await backend.delete_range("/u/") == 3
    assert await backend.delete_range("") == 5
    assert await backend.range("") == []


# -- compare and swap ------------------------------------------------------------------


async def test_compare_and_swap(backend: Backend) -> None:
    with pytest.raises(CompareFailed):  # missing counts as failed
        await backend.compare_and_swap(Item("/c", b"0"), Item("/c", b"1"))
    first = await backend.put(Item("/c", b"0"))
    swapped = await backend.compare_and_swap(first, Item("/c", b"1"))
    assert swapped.value == b"1" and swapped.revision != first.revision
    with pytest.raises(CompareFailed):
        await backend.compare_and_swap(first, Item("/c", b"2"))
    assert (await backend.get("/c")).value == b"1"


async def test_compare_and_swap_under_concurrent_writers(store: Store) -> None:
    # Several Backend instances (separate connection pools) where the engine allows it.
    backends = [await store.open() for _ in range(4 if store.shared else 1)]
    await backends[0].put(Item("/counter", b"0"))
    retries = 0

    async def increment(backend: Backend) -> None:
        nonlocal retries
        while True:
            current = await backend.get("/counter")
            await asyncio.sleep(0)  # let the others read the same value
            new = str(int(current.value) + 1).encode()
            try:
                await backend.compare_and_swap(current, Item("/counter", new))
                return
            except CompareFailed:
                retries += 1

    await asyncio.gather(*(increment(backends[i % len(backends)]) for i in range(20)))
    assert (await backends[-1].get("/counter")).value == b"20"
    assert retries > 0  # the race really happened


async def test_create_is_exclusive_under_concurrent_writers(store: Store) -> None:
    backends = [await store.open() for _ in range(4 if store.shared else 1)]

    async def attempt(i: int) -> bool:
        try:
            await backends[i % len(backends)].create(Item("/lock", str(i).encode()))
            return True
        except AlreadyExists:
            return False

    results = await asyncio.gather(*(attempt(i) for i in range(12)))
    assert results.count(True) == 1


# -- expiry ----------------------------------------------------------------------------


async def test_expired_items_are_invisible_at_once(store: Store, backend: Backend) -> None:
    soon = store.clock.now() + timedelta(seconds=10)
    await backend.put(Item("/tokens/a", b"a", expires=soon))
    await backend.put(Item("/tokens/b", b"b"))
    assert (await backend.get("/tokens/a")).value == b"a"

    store.clock.advance(10)  # expiry is inclusive: at `expires` it is gone
    with pytest.raises(NotFound):
        await backend.get("/tokens/a")
    assert [i.key for i in await backend.range("/tokens/")] == ["/tokens/b"]
    with pytest.raises(NotFound):
        await backend.update(Item("/tokens/a", b"x"))
    with pytest.raises(NotFound):
        await backend.delete("/tokens/a")
    with pytest.raises(CompareFailed):
        await backend.compare_and_swap(Item("/tokens/a", b"a"), Item("/tokens/a", b"x"))
    # An expired key is free for create.
    assert (await backend.create(Item("/tokens/a", b"new"))).value == b"new"
    assert (await backend.get("/tokens/a")).value == b"new"


async def test_range_limit_skips_expired(store: Store, backend: Backend) -> None:
    soon = store.clock.now() + timedelta(seconds=1)
    for i in range(5):
        await backend.put(Item(f"/r/{i}", b"x", expires=soon if i < 3 else None))
    store.clock.advance(2)
    assert [i.key for i in await backend.range("/r/", limit=1)] == ["/r/3"]
    assert await backend.delete_range("/r/") == 2  # only live items count


async def test_sweep_deletes_expired_and_emits_delete(store: Store, backend: Backend) -> None:
    soon = store.clock.now() + timedelta(seconds=5)
    await backend.put(Item("/s/a", b"a", expires=soon))
    await backend.put(Item("/s/b", b"b", expires=soon + timedelta(hours=1)))
    await backend.put(Item("/s/c", b"c"))
    async with backend.watch(["/s/"]) as w:
        assert await backend.sweep() == 0
        store.clock.advance(6)
        assert await backend.sweep() == 1
        assert await backend.sweep() == 0
        assert summary(await take(w, 1)) == [("delete", "/s/a", b"")]
        await quiet(w)
    assert [i.key for i in await backend.range("/s/")] == ["/s/b", "/s/c"]


async def test_background_sweeper(store: Store) -> None:
    backend = await store.open(sweep_interval=0.05)
    await backend.put(Item("/s/a", b"a", expires=store.clock.now() + timedelta(seconds=5)))
    async with backend.watch(["/s/"]) as w:
        store.clock.advance(6)
        assert summary(await take(w, 1)) == [("delete", "/s/a", b"")]


# -- watch -----------------------------------------------------------------------------


async def test_watch_delivers_every_change_in_order(backend: Backend) -> None:
    await backend.put(Item("/users/before", b"0"))  # before the watch: not delivered
    async with backend.watch(["/users/", "/locks/"]) as w:
        a1 = await backend.put(Item("/users/a", b"1"))
        await backend.put(Item("/roles/x", b"ignored"))
        await backend.create(Item("/locks/l", b"L"))
        await backend.update(Item("/users/a", b"2"))
        current = await backend.get("/users/a")
        await backend.compare_and_swap(current, Item("/users/a", b"3"))
        with pytest.raises(CompareFailed):
            await backend.compare_and_swap(current, Item("/users/a", b"never"))
        await backend.put(Item("/users/b", b"B"))
        await backend.delete("/locks/l")
        await backend.delete_range("/users/")
        await backend.put(Item("/usersX", b"outside the prefix"))
        events = await take(w, 9)
        await quiet(w)

    assert summary(events) == [
        ("put", "/users/a", b"1"),
        ("put", "/locks/l", b"L"),
        ("put", "/users/a", b"2"),
        ("put", "/users/a", b"3"),
        ("put", "/users/b", b"B"),
        ("delete", "/locks/l", b""),
        ("delete", "/users/a", b""),
        ("delete", "/users/b", b""),
        ("delete", "/users/before", b""),
    ]
    assert events[0].item == a1  # the event carries the stored item, revision included
    assert all(e.type is OpType.DELETE for e in events[5:])


async def test_watch_with_async_for_and_close(backend: Backend) -> None:
    async with backend.watch(["/"]) as w:
        await backend.put(Item("/1", b"1"))
        await backend.put(Item("/2", b"2"))
        seen = []
        async with asyncio.timeout(WAIT):
            async for event in w:
                seen.append(event.item.key)
                if len(seen) == 2:
                    w.close()  # the consumer may stop the stream itself
        assert seen == ["/1", "/2"]
        assert w.closed and w.error is None
        assert await w.next() is None


async def test_two_watchers_are_independent(backend: Backend) -> None:
    async with backend.watch(["/x/"]) as wx, backend.watch(["/"]) as wall:
        await backend.put(Item("/x/1", b"1"))
        await backend.put(Item("/y/1", b"1"))
        assert summary(await take(wall, 2)) == [("put", "/x/1", b"1"), ("put", "/y/1", b"1")]
        assert summary(await take(wx, 1)) == [("put", "/x/1", b"1")]
    async with backend.watch(["/y/"]) as wy:
        await backend.delete("/y/1")
        assert summary(await take(wy, 1)) == [("delete", "/y/1", b"")]


async def test_watchers_of_the_same_prefixes_each_get_every_change(backend: Backend) -> None:
    """Watchers of the same prefixes (every node's access feed) are matched as a group:
    each still gets every change, only those after it started, and one that closes
    leaves the others their stream."""
    async with backend.watch(["/a/", "/b/"]) as first:
        await backend.put(Item("/a/1", b"1"))
        async with backend.watch(["/a/", "/b/"]) as second, backend.watch(["/b/"]) as other:
            await backend.put(Item("/b/1", b"1"))
            await backend.put(Item("/c/1", b"1"))
            first.close()
            await backend.put(Item("/a/2", b"2"))
            assert summary(await take(second, 2)) == [("put", "/b/1", b"1"),
                                                      ("put", "/a/2", b"2")]
            assert summary(await take(other, 1)) == [("put", "/b/1", b"1")]
            await quiet(second)
            await quiet(other)
    assert first.closed and await first.next() is None


async def test_watchers_end_when_backend_closes(store: Store) -> None:
    backend = await store.open()
    async with backend.watch(["/"]) as w:
        waiter = asyncio.create_task(w.next(timeout=WAIT))
        await asyncio.sleep(0)
        await backend.close()
        assert await waiter is None  # a normal end, not an error
        assert w.closed


async def test_slow_watcher_is_closed_with_an_error(store: Store, backend: Backend) -> None:
    backend.watch_capacity = 3  # type: ignore[attr-defined]
    async with backend.watch(["/"]) as w:
        for i in range(10):
            await backend.put(Item(f"/k/{i}", b"x"))
        with pytest.raises(LimitExceeded):
            async with asyncio.timeout(WAIT):
                async for _ in w:
                    pass
        assert w.closed and isinstance(w.error, LimitExceeded)
    # Writers were never blocked, and a new watch works.
    assert len(await backend.range("/k/")) == 10
    async with backend.watch(["/"]) as w2:
        await backend.put(Item("/k/again", b"y"))
        assert summary(await take(w2, 1)) == [("put", "/k/again", b"y")]


async def test_watch_sees_another_instance(shared_store: Store) -> None:
    reader = await shared_store.open()
    writer = await shared_store.open()
    async with reader.watch(["/locks/"]) as w:
        await writer.put(Item("/locks/a", b"1"))
        current = await writer.get("/locks/a")
        await writer.compare_and_swap(current, Item("/locks/a", b"2"))
        await writer.delete("/locks/a")
        assert summary(await take(w, 3)) == [
            ("put", "/locks/a", b"1"),
            ("put", "/locks/a", b"2"),
            ("delete", "/locks/a", b""),
        ]


async def test_watch_sees_another_process(shared_store: Store) -> None:
    reader = await shared_store.open()
    script = textwrap.dedent(
        """
        import asyncio, json, sys
        from limen.backend import Item, open_backend

        async def main():
            b = await open_backend(sys.argv[1], sweep_interval=None, **json.loads(sys.argv[2]))
            try:
                await b.put(Item("/nodes/n1", b"from another process"))
            finally:
                await b.close()

        asyncio.run(main())
        """
    )
    async with reader.watch(["/nodes/"]) as w:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", script, shared_store.kind, json.dumps(shared_store.options)
        )
        async with asyncio.timeout(WAIT * 3):
            assert await proc.wait() == 0
        assert summary(await take(w, 1)) == [("put", "/nodes/n1", b"from another process")]


async def test_sweep_on_one_instance_reaches_watchers_of_another(shared_store: Store) -> None:
    one = await shared_store.open()
    two = await shared_store.open()
    await one.put(Item("/t/x", b"x", expires=shared_store.clock.now() + timedelta(seconds=1)))
    async with two.watch(["/t/"]) as w:
        shared_store.clock.advance(2)
        assert await one.sweep() == 1
        assert await two.sweep() == 0  # swept once, whichever instance gets there
        assert summary(await take(w, 1)) == [("delete", "/t/x", b"")]
        await quiet(w)


async def test_pruned_change_log_keeps_watch_working(shared_store: Store) -> None:
    backend = await shared_store.open()
    for i in range(5):
        await backend.put(Item(f"/p/{i}", b"x"))
    backend.change_retention = 0  # type: ignore[attr-defined]
    assert await backend.prune_changes() == 4  # type: ignore[attr-defined]  # newest kept
    # Ids never go back after a prune (SQLite AUTOINCREMENT, PostgreSQL sequence), so a
    # new watcher on a fresh instance still sees what comes next.
    other = await shared_store.open()
    async with other.watch(["/p/"]) as w:
        await backend.put(Item("/p/new", b"y"))
        assert summary(await take(w, 1)) == [("put", "/p/new", b"y")]


async def test_lost_database_closes_watchers_with_an_error(pg_store: Store) -> None:
    backend = await pg_store.open()
    async with backend.watch(["/"]) as w:
        conn = await asyncpg.connect(PG_DSN)
        try:
            await conn.execute(f'DROP SCHEMA "{pg_store.options["schema"]}" CASCADE')
        finally:
            await conn.close()
        with pytest.raises(ConnectionProblem):
            await w.next(timeout=WAIT)
    with pytest.raises(ConnectionProblem):
        await backend.get("/anything")


# -- persistence and files -------------------------------------------------------------


async def test_data_survives_reopen(shared_store: Store) -> None:
    when = datetime(2100, 1, 1, tzinfo=UTC)
    first = await shared_store.open()
    stored = await first.put(Item("/users/alice", b"secret", expires=when))
    await first.close()
    second = await shared_store.open()
    assert await second.get("/users/alice") == stored


async def test_sqlite_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "backend.sqlite"
    backend = await open_backend("sqlite", path=str(path), sweep_interval=None)
    try:
        await backend.put(Item("/ca/key", b"private key"))
        for name in ("backend.sqlite", "backend.sqlite-wal", "backend.sqlite-shm"):
            file = tmp_path / name
            if name == "backend.sqlite":
                assert file.exists()
            if file.exists():
                assert stat.S_IMODE(file.stat().st_mode) == 0o600, name
    finally:
        await backend.close()
    # An existing file with loose permissions is tightened on open.
    path.chmod(0o644)
    backend = await open_backend("sqlite", path=str(path), sweep_interval=None)
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert (await backend.get("/ca/key")).value == b"private key"
    finally:
        await backend.close()
