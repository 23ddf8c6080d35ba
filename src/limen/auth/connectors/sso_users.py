"""SSO users: the user record a connector's answer becomes.

An SSO user is an ordinary user record of kind ``sso``: its roles and traits are the
last mapping its connector made, so every check downstream (certificates, the API, the
nodes' access caches, locks) treats it like anyone else. It is made at the first
sign-in, updated at each one, and never gets a local password. A name that belongs to
a local user, or to another connector's user, is refused: a provider cannot take over
an account it does not own.
"""

from __future__ import annotations

from datetime import datetime

from limen.audit import schema
from limen.auth.connectors.identity import ExternalIdentity
from limen.auth.context import AuthContext
from limen.errors import AccessDenied, AlreadyExists, BadParameter, NotFound
from limen.resources import SSOLink, User, validate_name


class SSOUsers:
    def __init__(self, ctx: AuthContext) -> None:
        self.ctx = ctx

    async def find(self, connector: str, username: str) -> User | None:
        """This connector's user by name; None if there is none yet."""
        try:
            user = await self.ctx.stores.users.get(username)
        except NotFound:
            return None
        self._owned_by(user, connector)
        return user

    @staticmethod
    def check_name(username: str) -> None:
        try:
            validate_name(username, "the user name the provider gave")
        except BadParameter as exc:
            raise AccessDenied(exc.message) from None

    def _owned_by(self, user: User, connector: str) -> None:
        if user.spec.kind != "sso":
            raise AccessDenied(
                f"{user.name} is a local Limen user, not one of connector {connector}: "
                "single sign-on cannot sign in as them")
        owner = user.spec.sso.connector if user.spec.sso else ""
        if owner != connector:
            raise AccessDenied(f"{user.name} signs in through connector {owner}, "
                               f"not {connector}")

    @staticmethod
    def _same_person(user: User, identity: ExternalIdentity) -> None:
        """The provider's subject (OIDC ``sub``, the LDAP entry's DN) names the person; the
        claim the user name comes from (an email, a preferred username) may change hands."""
        known = user.spec.sso.subject if user.spec.sso else ""
        if known and identity.subject and known != identity.subject:
            raise AccessDenied(
                f"{user.name} belongs to another account at the identity provider (subject "
                f"{known!r}, not {identity.subject!r}); ask an admin to remove the old user")

    async def placeholder(self, connector: str, kind: str, username: str, subject: str) -> User:
        """The record a wrong directory password is counted on before a first sign-in
        (the directory knows the person, so the lockout must too); it holds no roles."""
        found = await self.find(connector, username)
        if found is not None:
            return found
        user = self._new(username, SSOLink(connector=connector, connector_kind=kind,
                                           subject=subject), roles=[], traits={})
        try:
            return await self.ctx.stores.users.create(user)
        except AlreadyExists:  # a racing sign-in made it
            found = await self.find(connector, username)
            assert found is not None
            return found

    async def save(self, identity: ExternalIdentity) -> User:
        """Create or update the user from the connector's answer (even an answer that maps
        to no role: the record then holds none, and whatever it signed before stops)."""
        now = self.ctx.clock.now()
        link = SSOLink(connector=identity.connector, connector_kind=identity.connector_kind,
                       subject=identity.subject, claims=identity.decided_by, last_login=now)
        existing = await self.find(identity.connector, identity.username)
        if existing is None:
            user = self._new(identity.username, link, identity.roles, identity.traits)
            try:
                created = await self.ctx.stores.users.create(user)
            except AlreadyExists:
                return await self.save(identity)  # made meanwhile: update it
            await self.ctx.audit.emit(schema.UserCreate(
                user=identity.username, name=identity.username, roles=list(identity.roles),
                logins=identity.traits.get("logins"), connector=identity.connector))
            return created
        before = list(existing.spec.roles)

        def apply(user: User) -> None:
            self._owned_by(user, identity.connector)
            self._same_person(user, identity)
            user.spec.roles = list(identity.roles)
            user.spec.traits = dict(identity.traits)
            user.spec.sso = link
            user.spec.active = True

        updated = await self.ctx.stores.users.modify(identity.username, apply)
        if before != updated.spec.roles:
            await self.ctx.audit.emit(schema.UserUpdate(
                user=identity.username, name=identity.username, action="sso_mapping",
                connector=identity.connector, roles=list(updated.spec.roles)))
        return updated

    def _new(self, name: str, link: SSOLink, roles: list[str],
             traits: dict[str, list[str]]) -> User:
        return User.model_validate({
            "metadata": {"name": name},
            "spec": {
                "roles": roles, "traits": traits, "created_by": f"connector:{link.connector}",
                "created": self.ctx.clock.now(), "active": True, "kind": "sso",
                "sso": link.model_dump(),
            },
        })

    def locked(self, user: User) -> datetime | None:
        until = user.status.locked_until
        return until if until and until > self.ctx.clock.now() else None

    async def reset_failures(self, name: str) -> None:
        def reset(user: User) -> None:
            user.status.failed_logins = 0

        await self.ctx.stores.users.modify(name, reset)
