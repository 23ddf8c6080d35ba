"""Locks: create, list, delete, and the check every door makes."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from limen.audit import schema
from limen.auth.context import AuthContext
from limen.auth.identity import Identity
from limen.errors import AccessDenied, BadParameter
from limen.resources import Lock


class LockService:
    def __init__(self, ctx: AuthContext) -> None:
        self.ctx = ctx

    async def create(
        self,
        actor: Identity,
        target: dict[str, str],
        message: str = "",
        ttl: timedelta | None = None,
        expires: datetime | None = None,
        name: str | None = None,
    ) -> Lock:
        now = self.ctx.clock.now()
        if ttl is not None:
            expires = now + ttl
        if expires is not None and expires <= now:
            raise BadParameter("the lock would expire before it starts")
        lock = Lock.model_validate(
            {
                "metadata": {"name": name or str(uuid.uuid4()), "expires": expires},
                "spec": {"target": target, "message": message, "created_by": actor.user,
                         "created": now},
            }
        )
        return await self.save(actor, lock, create=True)

    async def save(self, actor: Identity, lock: Lock, create: bool) -> Lock:
        store = self.ctx.stores.locks
        saved = await (store.create(lock) if create else store.upsert(lock))
        await self.ctx.audit.emit(schema.LockCreated(
            user=actor.user, name=lock.name, target=_target(lock), message=lock.spec.message,
            expires=lock.metadata.expires.isoformat() if lock.metadata.expires else None,
        ))
        return saved

    async def delete(self, actor: Identity, name: str) -> None:
        lock = await self.ctx.stores.locks.get(name)
        await self.ctx.stores.locks.delete(name)
        await self.ctx.audit.emit(
            schema.LockDeleted(user=actor.user, name=name, target=_target(lock))
        )

    async def in_force(self) -> list[Lock]:
        now = self.ctx.clock.now()
        return [
            lock for lock in await self.ctx.stores.locks.list()
            if lock.metadata.expires is None or lock.metadata.expires > now
        ]

    async def check(
        self, user: str, roles: list[str], login: str = "", node_names: tuple[str, ...] = ()
    ) -> None:
        """Raise AccessDenied with the lock's message if any lock targets this access."""
        for lock in await self.in_force():
            if lock.applies_to(user=user, roles=roles, login=login, node_names=node_names):
                raise AccessDenied(lock.refusal())


def _target(lock: Lock) -> dict[str, str]:
    return {k: str(v) for k, v in lock.spec.target.model_dump(exclude_none=True).items()}
