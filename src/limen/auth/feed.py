"""The access feed: roles, users and locks as a snapshot, then every change.

Nodes (which have no database) and other consumers keep a cache from it, so access
decisions need no query per session and a lock reaches live sessions within moments.
Each message is a dict: {"op": "put"|"delete", "kind", "name", "resource"?}, and one
{"op": "ready"} after the snapshot.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from limen.auth.context import Stores
from limen.backend.base import Event, OpType
from limen.resources import Lock, Role, User

PREFIXES = {"/roles/": ("role", Role), "/locks/": ("lock", Lock), "/users/": ("user", User)}


def _parse(event: Event) -> dict[str, Any] | None:
    for prefix, (kind, model) in PREFIXES.items():
        if not event.item.key.startswith(prefix):
            continue
        rest = event.item.key[len(prefix):]
        if kind == "user":  # only the user record, never password or TOTP keys
            if not rest.endswith("/params") or rest.count("/") != 1:
                return None
            rest = rest.split("/", 1)[0]
        if event.type == OpType.DELETE:
            return {"op": "delete", "kind": kind, "name": rest}
        resource = model.from_bytes(event.item.value)
        return {"op": "put", "kind": kind, "name": rest, "resource": resource.to_public()}
    return None


async def access_feed(stores: Stores) -> AsyncIterator[dict[str, Any]]:
    """Snapshot then live changes; ends with an error when the watch breaks (re-sync)."""
    async with stores.backend.watch(list(PREFIXES)) as watcher:
        for kind, store in (("role", stores.roles), ("user", stores.users),
                            ("lock", stores.locks)):
            for resource in await store.list():
                yield {"op": "put", "kind": kind, "name": resource.name,
                       "resource": resource.to_public()}
        yield {"op": "ready"}
        async for event in watcher:
            message = _parse(event)
            if message is not None:
                yield message
