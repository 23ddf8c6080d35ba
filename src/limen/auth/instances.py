"""The cluster's auth/proxy instances: each heartbeats a record of itself into shared storage.

Every instance on the database writes ``/instances/ID`` every ``interval`` seconds (the
id lives in DATA_DIR/instance_id, so a restarted instance takes its old place). Readers
call an instance down when three heartbeats are missing, or at once when it stopped
cleanly. Proxies learn their peers here: node agents are told every proxy's tunnel
address (limen.tunnel.discovery), and node listings say which proxies hold a tunnel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from limen.clock import Clock
from limen.files import write_private
from limen.resources import Metadata
from limen.resources.instance import Instance, InstanceSpec
from limen.services.store import ResourceStore
from limen.tasks import cancel_and_wait

log = logging.getLogger(__name__)

ID_FILE = "instance_id"
#: How long an instance's record outlives its last heartbeat (listed as down meanwhile).
KEEP = timedelta(hours=1)


def instance_id(data_dir: Path) -> str:
    """This data dir's instance id, made on first use."""
    path = data_dir / ID_FILE
    if path.exists():
        return path.read_text().strip()
    new = uuid.uuid4().hex[:12]
    write_private(path, new + "\n")
    return new


class InstanceHeartbeat:
    """Writes this instance's record now and every ``interval`` seconds until stopped."""

    def __init__(self, store: ResourceStore[Instance], clock: Clock, ident: str,
                 interval: float, describe: Callable[[], InstanceSpec]) -> None:
        self.store = store
        self.clock = clock
        self.id = ident
        self.interval = interval
        self._describe = describe
        self._started = clock.now()
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        # The instances heartbeating as of this instance's last beat (itself included).
        self.live: list[Instance] = []
        self.on_live: list[Callable[[list[Instance]], None]] = []

    async def start(self) -> None:
        await self.beat()
        self._task = asyncio.create_task(self._run(), name="limen-instance-heartbeat")

    def soon(self) -> None:
        """Beat now rather than at the next tick (what this instance serves changed)."""
        self._wake.set()

    async def beat(self, stopped: bool = False) -> None:
        spec = self._describe()
        now = self.clock.now()
        spec.started, spec.last_heartbeat = self._started, now
        spec.heartbeat_interval = self.interval
        spec.stopped = stopped
        await self.store.upsert(Instance(metadata=Metadata(name=self.id, expires=now + KEEP),
                                         spec=spec))
        if not stopped:
            self.live = [i for i in await list_instances(self.store) if i.up(now)]
            for listener in self.on_live:
                listener(self.live)

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.beat()
            except Exception as exc:  # noqa: BLE001 - the database may be away; beat again
                log.warning("instance heartbeat failed: %s", exc)

    async def stop(self) -> None:
        """Stop beating and say so: listings show this instance down at once."""
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
            try:
                await self.beat(stopped=True)
            except Exception as exc:  # noqa: BLE001 - it will show down once its beats age
                log.warning("could not record this instance's stop: %s", exc)


async def list_instances(store: ResourceStore[Instance]) -> list[Instance]:
    return sorted(await store.list(), key=lambda i: (i.spec.hostname, i.spec.web_addr, i.name))
