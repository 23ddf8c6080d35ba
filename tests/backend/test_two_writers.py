"""The compliance guarantees with two processes writing to one store at the same time, as
two auth instances on one database do: compare-and-swap never loses an update, a create
race has one winner, and a watcher sees every change once, in commit order."""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap

from limen.backend.base import Item
from tests.backend.conftest import Store

INCREMENTS = 40  # per process
RACES = 15

WRITER = textwrap.dedent(
    """
    import asyncio, json, sys
    from limen.backend import Item, open_backend
    from limen.errors import AlreadyExists, CompareFailed

    async def main():
        kind, options, me = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
        b = await open_backend(kind, sweep_interval=None, **options)
        wins = []
        try:
            for i in range(int(sys.argv[4])):
                while True:  # read, add one, swap; again if the other process got there first
                    current = await b.get("/counter")
                    new = str(int(current.value) + 1).encode()
                    try:
                        await b.compare_and_swap(current, Item("/counter", new))
                        break
                    except CompareFailed:
                        continue
                if i < int(sys.argv[5]):
                    try:
                        await b.create(Item(f"/race/{i}", me.encode()))
                        wins.append(i)
                    except AlreadyExists:
                        pass
                await b.put(Item(f"/own/{me}/{i}", b"x"))
        finally:
            await b.close()
        print(json.dumps(wins))

    asyncio.run(main())
    """
)


async def test_two_processes_writing_at_once(shared_store: Store) -> None:
    backend = await shared_store.open()
    await backend.put(Item("/counter", b"0"))
    async with backend.watch(["/counter", "/race/"]) as w:
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable, "-c", WRITER, shared_store.kind,
                json.dumps(shared_store.options), me, str(INCREMENTS), str(RACES),
                stdout=asyncio.subprocess.PIPE,
            )
            for me in ("one", "two")
        ]
        async with asyncio.timeout(120):
            outputs = [await p.communicate() for p in procs]
        assert [p.returncode for p in procs] == [0, 0]
        wins = [set(json.loads(out)) for out, _err in outputs]
        # Every increment counted: no update lost to the other process.
        assert (await backend.get("/counter")).value == str(2 * INCREMENTS).encode()
        # Each contested key has exactly one creator.
        assert not wins[0] & wins[1] and wins[0] | wins[1] == set(range(RACES))
        for i in range(RACES):
            owner = "one" if i in wins[0] else "two"
            assert (await backend.get(f"/race/{i}")).value == owner.encode()
        assert len(await backend.range("/own/")) == 2 * INCREMENTS
        # The watcher saw each change once, in commit order.
        seen = [await w.next(timeout=10) for _ in range(2 * INCREMENTS + RACES)]
        counts = [int(e.item.value) for e in seen if e.item.key == "/counter"]
        assert counts == list(range(1, 2 * INCREMENTS + 1))
        races = sorted(e.item.key for e in seen if e.item.key.startswith("/race/"))
        assert races == sorted(f"/race/{i}" for i in range(RACES))
