"""The auth role: its services, bootstrap, and who a caller is.

Nothing here checks what a caller may do: callers reach these services through
limen.auth.facade (check, then delegate).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from pathlib import Path

from limen.audit.bindings import SessionBindings
from limen.audit.recordings import RecordingService
from limen.audit.search import AuditSearch
from limen.auth import builtin_roles, passwords
from limen.auth.connectors.service import SSOService
from limen.auth.context import AuthContext
from limen.auth.identity import Identity
from limen.auth.join import JoinService
from limen.auth.locks import LockService
from limen.auth.login import LoginService
from limen.auth.node_registry import NodeRegistry
from limen.auth.node_renewal import NodeRenewal
from limen.auth.openssh_nodes import OpenSSHNodes
from limen.auth.resources import ResourceService
from limen.auth.tracking import Tracking
from limen.auth.users import UserManager
from limen.errors import AccessDenied, AlreadyExists, NotFound
from limen.files import write_private
from limen.rbac import AccessChecker
from limen.resources import Role, User

log = logging.getLogger(__name__)

ADMIN_TOKEN_FILE = "admin.token"
ADMIN_USER = "admin"


class AuthServer:
    def __init__(self, ctx: AuthContext) -> None:
        self.ctx = ctx
        self.users = UserManager(ctx)
        self.locks = LockService(ctx)
        self.login_service = LoginService(ctx, self.checker_for_user, self.locks)
        self.sso = SSOService(ctx, self.login_service)
        self.nodes = NodeRegistry(ctx)
        self.node_renewal = NodeRenewal(ctx, self.nodes)
        self.join = JoinService(ctx, self.nodes)
        self.openssh = OpenSSHNodes(ctx, self.nodes, self.join, self.locks,
                                    self.checker_for_user)
        if ctx.audit_store is None:
            from limen.backend.audit_memory import MemoryAuditStore

            ctx.audit_store = MemoryAuditStore()
        # Which node started which session: events and recordings of a session are taken
        # only from that node.
        self.sessions = SessionBindings(ctx.audit_store.events)
        self.tracking = Tracking(ctx, self.sessions)
        self.recordings = RecordingService(ctx.audit_store.recordings, ctx.audit, self.sessions)
        self.audit_search = AuditSearch(ctx.audit, ctx.audit_store.events, ctx.cas.host_ca)
        self.resources = ResourceService(self)

    @property
    def cluster_name(self) -> str:
        return self.ctx.settings.cluster_name

    async def bootstrap(self, data_dir: Path) -> None:
        """First start: built-in roles and the data dir's admin identity. Idempotent."""
        for role in builtin_roles.all_builtin():
            try:
                await self.ctx.stores.roles.create(role)
                log.info("created built-in role %s", role.name)
            except AlreadyExists:
                pass
        await self._ensure_admin_identity(data_dir)
        # Made now, so that not even the first unknown user's login takes longer.
        await asyncio.to_thread(passwords.dummy_hash)

    async def _ensure_admin_identity(self, data_dir: Path) -> None:
        """A token in DATA_DIR/admin.token (0600) lets admin commands on this host act."""
        path = data_dir / ADMIN_TOKEN_FILE
        if path.exists():
            token = path.read_text().strip()
        else:
            token = secrets.token_hex(32)
            write_private(path, token + "\n")
        session = self.ctx.stores.api_sessions.for_token(token, ADMIN_USER, None, builtin="admin")
        await self.ctx.stores.api_sessions.upsert(session)

    async def identity_for_token(self, token: str, remote_addr: str = "") -> Identity:
        try:
            session = await self.ctx.stores.api_sessions.lookup(token)
        except NotFound:
            raise AccessDenied(
                "your session is not valid or has expired; run limen login again"
            ) from None
        admitted = None
        if session.spec.builtin == "node":  # only a registered, unlocked node's current token
            admitted = await self.nodes.admit(session, remote_addr)
        if session.spec.builtin:
            return Identity(
                user=session.spec.user, builtin=session.spec.builtin, remote_addr=remote_addr,
                admitted_node=admitted,
            )
        try:
            user = await self.ctx.stores.users.get(session.spec.user)
        except NotFound:
            raise AccessDenied(f"user {session.spec.user} no longer exists") from None
        return Identity(
            user=user.name,
            roles=list(user.spec.roles),
            traits=user.spec.traits,
            expires=session.metadata.expires,
            remote_addr=remote_addr,
        )

    async def checker_for_user(self, user: User) -> AccessChecker:
        return AccessChecker(await self._load_roles(user.spec.roles), user.spec.traits)

    async def checker_for(self, identity: Identity) -> AccessChecker:
        if identity.builtin == "node":
            return AccessChecker([])
        if identity.is_admin:
            return AccessChecker([builtin_roles.admin_role()])
        return AccessChecker(await self._load_roles(identity.roles), identity.traits)

    async def _load_roles(self, names: list[str]) -> list[Role]:
        roles = []
        for name in names:
            try:
                roles.append(await self.ctx.stores.roles.get(name))
            except NotFound:
                log.warning("role %s is assigned but does not exist; ignoring it", name)
        return roles
