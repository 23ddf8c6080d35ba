"""The proxy's side of locks: a lock ends the jump connections and channels it targets.

Nodes end the sessions a lock targets; the proxy ends what passes through it, so that
an established ``ssh -J`` connection (and every forward inside it) cannot outlive a
lock. The proxy does not see which login a channel uses (the user's SSH session to the
node is encrypted end to end), so a lock that names a login is left to the nodes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from limen.auth.access_cache import AccessCache
from limen.proxy.ssh_jump import JumpHost
from limen.proxy.ssh_routes import JumpIdentity, NodeRoute
from limen.resources import Lock


class JumpLocks:
    def __init__(self, jump: JumpHost,
                 feed: Callable[[], AsyncIterator[dict[str, Any]]]) -> None:
        self.jump = jump
        self.cache = AccessCache(feed, self._on_lock)

    def start(self) -> None:
        self.cache.start()

    async def stop(self) -> None:
        await self.cache.stop()

    async def _on_lock(self, lock: Lock) -> None:
        target = lock.spec.target
        if target.login:
            return
        message = f"limen: {lock.refusal()}"

        def person(ident: JumpIdentity) -> bool:
            return lock.applies_to(user=ident.user, roles=self.cache.roles_of(ident.user))

        def channel(ident: JumpIdentity, route: NodeRoute) -> bool:
            return lock.applies_to(user=ident.user, roles=self.cache.roles_of(ident.user),
                                   node_names=(route.node_id, route.name))

        if target.node is None:
            self.jump.end_connections(person, message)
        else:
            self.jump.end_channels(channel)
