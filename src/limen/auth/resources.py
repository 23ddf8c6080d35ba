"""Generic resource commands (get, create, update, delete) for the kubectl-style CLI.

Each kind maps to its store and model. Who may do what is checked before these run
(limen.auth.facade: the caller's rule on the kind, create or update depending on whether
the resource exists). Updates use compare-and-swap on the revision the caller
read, so two admins editing at once cannot silently overwrite each other.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from limen.audit import schema
from limen.auth.identity import Identity
from limen.backend.base import Item
from limen.errors import BadParameter, CompareFailed, NotFound
from limen.resources import AnyConnector, Lock, Role
from limen.resources.base import Resource
from limen.services.store import ResourceStore

ALIASES = {
    "role": "role",
    "roles": "role",
    "lock": "lock",
    "locks": "lock",
    "user": "user",
    "users": "user",
    "node": "node",
    "nodes": "node",
    "token": "token",
    "tokens": "token",
    "session": "session",
    "sessions": "session",
    # Identity connectors: one rule kind (connector) for both protocols.
    "connector": "connector",
    "connectors": "connector",
    "oidc": "connector",
    "ldap": "connector",
}
WRITABLE: dict[str, Any] = {"role": Role, "lock": Lock, "connector": None}


def canonical_kind(kind: str) -> str:
    try:
        return ALIASES[kind.lower()]
    except KeyError:
        raise BadParameter(
            f"unknown kind {kind!r}; known: role, lock, user, node, token, session, "
            "connector (oidc, ldap)"
        ) from None


def public(resource: Resource) -> dict[str, Any]:
    data = resource.to_public()
    data["metadata"]["revision"] = resource.metadata.revision
    return data


def parse(kind: str, document: dict[str, Any]) -> Resource:
    model = WRITABLE.get(kind)
    if kind == "connector":
        model = AnyConnector.MODELS.get(str(document.get("kind", "")).lower())
        if model is None:
            raise BadParameter("a connector is a document of kind oidc or kind ldap")
    if model is None:
        raise BadParameter(f"{kind} resources cannot be created this way")
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise BadParameter(f"{kind}: field '{field}': {err['msg']}") from None


def parse_document(document: dict[str, Any]) -> tuple[str, Resource]:
    """A resource document's kind and its validated resource."""
    kind = canonical_kind(str(document.get("kind", "")))
    return kind, parse(kind, document)


class ResourceService:
    def __init__(self, auth: Any) -> None:
        self.auth = auth
        self.stores = auth.ctx.stores

    def _store(self, kind: str) -> ResourceStore[Any]:
        return {
            "role": self.stores.roles,
            "lock": self.stores.locks,
            "user": self.stores.users,
            "node": self.stores.nodes,
            "token": self.stores.join_tokens,
            "session": self.stores.sessions,
            "connector": self.auth.sso.connectors,
        }[kind]

    async def get(self, kind: str, name: str | None) -> list[dict[str, Any]]:
        store = self._store(kind)
        items = [await store.get(name)] if name else await store.list()
        return [public(item) for item in items]

    async def exists(self, kind: str, name: str) -> bool:
        try:
            await self._store(kind).get(name)
        except NotFound:
            return False
        return True

    async def put(self, actor: Identity, kind: str, resource: Resource, exists: bool,
                  force: bool) -> dict[str, Any]:
        """Create, or with force replace; an update carrying a revision is compare-and-swap."""
        revision = resource.metadata.revision
        store = self._store(kind)
        if revision:
            saved = await self._swap(store, resource, revision)
        elif exists and not force:
            raise BadParameter(
                f"{kind} {resource.name!r} already exists; use --force to replace it"
            )
        elif kind == "lock":
            saved = await self.auth.locks.save(actor, resource, create=not exists)
        elif exists:
            saved = await store.upsert(resource)
        else:  # one allowed only to create must not replace what appeared meanwhile
            saved = await store.create(resource)
        await self._audit_put(actor, kind, saved, created=not exists)
        return public(saved)

    @staticmethod
    async def _swap(store: ResourceStore[Any], resource: Resource, revision: str) -> Resource:
        current = await store.raw(resource.name)
        if current.revision != revision:
            raise CompareFailed(
                f"{resource.kind} {resource.name!r} was changed by someone else since you read "
                "it; nothing was saved. Read it again and reapply your change."
            )
        new = Item(
            key=store.key(resource.name),
            value=resource.to_bytes(),
            expires=resource.metadata.expires,
        )
        try:
            saved = await store.backend.compare_and_swap(current, new)
        except CompareFailed:
            raise CompareFailed(
                f"{resource.kind} {resource.name!r} changed while saving; nothing was saved"
            ) from None
        return store.model.from_bytes(saved.value, saved.revision)

    async def _audit_put(self, actor: Identity, kind: str, saved: Resource, created: bool) -> None:
        if kind == "role":
            event = schema.RoleCreated if created else schema.RoleUpdated
            await self.auth.ctx.audit.emit(event(user=actor.user, name=saved.name))
        elif kind == "connector":
            changed = schema.ConnectorCreated if created else schema.ConnectorUpdated
            await self.auth.ctx.audit.emit(changed(user=actor.user, name=saved.name,
                                                   connector_kind=saved.kind))

    async def delete(self, actor: Identity, kind: str, name: str) -> None:
        if kind == "lock":
            await self.auth.locks.delete(actor, name)
        elif kind == "user":
            await self.auth.users.delete(actor, name)
        elif kind == "token":
            await self.auth.join.delete_token(actor, name)
        elif kind == "node":  # by name or id; its credentials stop working at once
            await self.auth.nodes.remove(actor, name)
        elif kind == "connector":
            gone = await self._store(kind).get(name)
            await self._store(kind).delete(name)
            await self.auth.ctx.audit.emit(schema.ConnectorDeleted(
                user=actor.user, name=name, connector_kind=gone.kind))
        else:
            await self._store(kind).delete(name)
            if kind == "role":
                await self.auth.ctx.audit.emit(schema.RoleDeleted(user=actor.user, name=name))
