"""The proxy's side of locks: a lock ends the jump connections and channels it targets.

Nodes end the sessions a lock targets; the proxy ends what passes through it, so that
an established ``ssh -J`` connection (and every forward inside it) cannot outlive a
lock. The nodes act first (they can tell a person at a terminal why, and the proxy
cannot: the SSH session is encrypted end to end); the proxy ends what is still open
``JumpSettings.node_grace`` seconds later, well inside the promise of "within 5 s". The proxy does
not see which login a channel uses (the user's SSH session to the
node is encrypted end to end), so a lock that names a login is left to the nodes. The
sessions the proxy relays to agentless OpenSSH nodes are its own to end: at once, with
the lock's message, whatever the lock names (login too).
"""

from __future__ import annotations

import asyncio
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
        message = f"limen: {lock.refusal()}"
        if self.jump.openssh is not None:  # sessions the proxy itself relays: at once
            def relayed(ident: JumpIdentity, route: NodeRoute, login: str) -> bool:
                return lock.applies_to(user=ident.user, roles=self.cache.roles_of(ident.user),
                                       login=login, node_names=(route.node_id, route.name))

            self.jump.openssh.end_sessions(relayed, message, "locked")
        if target.login:
            return

        def person(ident: JumpIdentity) -> bool:
            return lock.applies_to(user=ident.user, roles=self.cache.roles_of(ident.user))

        def channel(ident: JumpIdentity, route: NodeRoute) -> bool:
            return lock.applies_to(user=ident.user, roles=self.cache.roles_of(ident.user),
                                   node_names=(route.node_id, route.name))

        loop, grace = asyncio.get_running_loop(), self.jump.settings.node_grace
        if target.node is None:
            loop.call_later(grace, self.jump.end_connections, person, message)
        else:
            loop.call_later(grace, self.jump.end_channels, channel)
