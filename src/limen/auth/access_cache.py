"""The node's cache of roles, users and locks, kept fresh by the auth service's feed.

Access decisions read the cache (no query per session). A new or changed lock ends
the live sessions it targets at once. If the feed breaks, the cache reconnects with
backoff; until it is ready again, new sessions wait a few seconds for it and are then
refused: a node that cannot see the locks does not guess (fail closed).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from limen.errors import ConnectionProblem, NotFound
from limen.rbac import AccessChecker
from limen.resources import Lock, Role, User
from limen.tasks import cancel_and_wait
from limen.tunnel.backoff import Backoff

log = logging.getLogger(__name__)

_MODELS = {"role": Role, "user": User, "lock": Lock}

# Opens the feed: its messages until it breaks (limen.auth.feed says what they are).
Feed = Callable[[], AsyncIterator[dict[str, Any]]]


class AccessCache:
    def __init__(
        self,
        feed: Feed,
        on_lock: Callable[[Lock], Awaitable[None]],
        wait_ready: float = 5.0,
        backoff: Backoff | None = None,
    ) -> None:
        self._feed = feed
        self._on_lock = on_lock
        self._wait_ready = wait_ready
        # Between tries of a broken feed; back to its first step once a feed synced, so
        # that a feed cut by a proxy restart comes back in a second, not in the 5 to 10 s
        # that earlier breaks had grown the pause to (sessions wait for the cache).
        self.backoff = backoff or Backoff(first=0.5, cap=10.0)
        self._items: dict[str, dict[str, Any]] = {"role": {}, "user": {}, "lock": {}}
        self.ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    async def _run(self) -> None:
        while True:
            try:
                await self._consume()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any break means: re-sync
                log.warning("access feed broke (%s); reconnecting", exc)
            self.ready.clear()
            await asyncio.sleep(self.backoff.next())

    async def _consume(self) -> None:
        fresh: dict[str, dict[str, Any]] = {"role": {}, "user": {}, "lock": {}}
        synced = False
        async for message in self._feed():
            op = message["op"]
            if op == "ready":
                self._items, synced = fresh, True
                self.ready.set()
                self.backoff.reset()
                for lock in list(self._items["lock"].values()):
                    await self._on_lock(lock)
                continue
            target = self._items if synced else fresh
            kind, name = message["kind"], message["name"]
            if op == "delete":
                target[kind].pop(name, None)
                continue
            resource = _MODELS[kind].model_validate(message["resource"])
            target[kind][name] = resource
            if synced and kind == "lock":
                await self._on_lock(resource)

    async def wait_until_ready(self) -> None:
        try:
            async with asyncio.timeout(self._wait_ready):
                await self.ready.wait()
        except TimeoutError:
            raise ConnectionProblem(
                "the auth service cannot be reached to check your access; try again soon"
            ) from None

    async def checker_for(self, user: str) -> AccessChecker:
        await self.wait_until_ready()
        record: User | None = self._items["user"].get(user)
        if record is None:
            raise NotFound(f"user {user} does not exist")
        roles = [self._items["role"][r] for r in record.spec.roles if r in self._items["role"]]
        return AccessChecker(roles, record.spec.traits)

    def roles_of(self, user: str) -> list[str]:
        record: User | None = self._items["user"].get(user)
        return list(record.spec.roles) if record else []

    def lock_for(self, user: str, login: str, node_names: tuple[str, ...]) -> Lock | None:
        roles = self.roles_of(user)
        for lock in self._items["lock"].values():
            if lock.applies_to(user=user, roles=roles, login=login, node_names=node_names):
                return lock
        return None
