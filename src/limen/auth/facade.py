"""The auth service's operations as one caller may do them: check, then delegate.

Every way into the auth service that acts for someone goes through an ``AuthFacade``
built around that caller's ``Identity``: the HTTPS API for people, nodes and proxies,
and the in-process link of the node that runs beside the auth service. Each operation
first checks what it asks of the caller, then calls the service that does the work;
the services below check nothing about who calls (they still check their data, such as
whose recording a node may extend). So an in-process node meets exactly the checks a
remote one meets, and a new operation has one obvious place for its check.

Every refusal, whether the check's or a service's, is written as an ``access.denied``
event before the caller hears it.

Three kinds of check:

- a rule: the caller's current roles allow ``verb`` on ``kind`` (deny wins); the data
  dir's admin identity holds the admin role, a node's identity holds no roles;
- a built-in identity: only nodes (their own heartbeats), or only nodes, proxies and
  the admin (what nodes report, the access feed);
- signed in: any authenticated caller (who am I, the nodes and sessions one may see).

Signup, login, single sign-on and node join carry their own credential (a token, a
password and code, a provider's answer) and are checked by the services that verify it;
they are here so that the API has one entry, not because a caller's identity could
allow them.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.serialization import Encoding

from limen.audit import schema
from limen.audit.store import EventQuery, RecordingMeta
from limen.audit.verify import Report
from limen.auth.ca import authorized_keys_line, known_hosts_line, spki_pin
from limen.auth.connectors.service import ConnectorInfo, OIDCStart
from limen.auth.feed import access_feed
from limen.auth.identity import Identity
from limen.auth.instances import list_instances
from limen.auth.join import IssuedJoinToken, JoinRequest, JoinResult
from limen.auth.login import ORIGIN_WEB, LoginResult
from limen.auth.node_renewal import Renewed
from limen.auth.openssh_nodes import OpenSSHCert
from limen.auth.resources import canonical_kind, parse_document
from limen.auth.users import IssuedToken, SignupChallenge
from limen.auth.web_sessions import SignedIn, WebSessions
from limen.auth.web_sso import WebFlow, WebSSO
from limen.clock import Clock
from limen.errors import AccessDenied, LimenError, NotFound
from limen.rbac import AccessChecker
from limen.rbac.joining import join_modes
from limen.resources import Instance, JoinToken, Lock, Node, NodePresence, Session, User

if TYPE_CHECKING:
    from limen.auth.server import AuthServer

# Built-in identities that report what happens on hosts and keep access caches.
HOSTS = frozenset({"node", "proxy", "admin"})
NODES = frozenset({"node"})
# Recordings are written by the node that recorded the session (or the admin, for repair),
# and by the proxy for the OpenSSH nodes whose sessions it relays.
RECORDERS = frozenset({"node", "proxy", "admin"})
PROXIES = frozenset({"proxy"})


@dataclass(frozen=True)
class ClusterTrust:
    cluster: str
    host_ca: str  # known_hosts line
    user_ca: str  # authorized_keys line
    tls_ca: str  # PEM
    ca_pin: str  # sha256:HEX of the TLS CA's public key


class AuthFacade:
    """The auth service as seen by one caller (Teleport calls this ServerWithRoles)."""

    def __init__(self, auth: AuthServer, caller: Identity) -> None:
        self.auth = auth
        self.caller = caller

    # -- the checks ----------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _rule(self, kind: str, verb: str) -> AsyncIterator[None]:
        """The caller's roles allow verb on kind; refusals (also the body's) are audited."""
        async with self._audited(kind, verb):
            (await self.checker()).check_rule(kind, verb)
            yield

    @contextlib.asynccontextmanager
    async def _builtin(self, allowed: frozenset[str], kind: str, verb: str,
                       refusal: str) -> AsyncIterator[None]:
        """Only these built-in identities may; refusals (also the body's) are audited."""
        async with self._audited(kind, verb):
            if self.caller.builtin not in allowed:
                raise AccessDenied(refusal)
            yield

    @contextlib.asynccontextmanager
    async def _audited(self, kind: str, verb: str) -> AsyncIterator[None]:
        try:
            yield
        except AccessDenied as exc:
            await self._access_refused(kind, verb, exc)
            raise

    async def _access_refused(self, kind: str, verb: str, exc: AccessDenied) -> None:
        await self.auth.ctx.audit.emit(schema.AccessRefused(
            user=self.caller.user, resource=kind, verb=verb, error=exc.message,
            addr_remote=self.caller.remote_addr or None,
        ))

    async def checker(self) -> AccessChecker:
        """The caller's current roles (loaded now, so a role edit applies at once)."""
        return await self.auth.checker_for(self.caller)

    async def _allows(self, kind: str, verb: str) -> bool:
        try:
            (await self.checker()).check_rule(kind, verb)
        except AccessDenied:
            return False
        return True

    # -- public ----------------------------------------------------------------------------

    @property
    def clock(self) -> Clock:
        return self.auth.ctx.clock

    def trust(self) -> ClusterTrust:
        """What a client pins and trusts on first contact (public: no check)."""
        cas = self.auth.ctx.cas
        return ClusterTrust(
            cluster=self.auth.cluster_name,
            host_ca=known_hosts_line(cas.host_ca),
            user_ca=authorized_keys_line(cas.user_ca),
            tls_ca=cas.tls_ca_cert.public_bytes(Encoding.PEM).decode(),
            ca_pin=spki_pin(cas.tls_ca_cert),
        )

    # -- carrying their own credential ---------------------------------------------------

    async def signup_start(self, token: str) -> SignupChallenge:
        return await self.auth.users.signup_start(token, self.caller.remote_addr)

    async def signup_finish(self, token: str, password: str, otp: str) -> str:
        return await self.auth.users.signup_finish(token, password, otp, self.caller.remote_addr)

    async def login(self, user: str, password: str, otp: str, public_key: str,
                    ttl: timedelta | None) -> LoginResult:
        return await self.auth.login_service.login(
            user, password, otp, public_key, ttl, self.caller.remote_addr
        )

    async def join(self, token: str, request: JoinRequest) -> JoinResult:
        return await self.auth.join.join(token, request, self.caller.remote_addr)

    # -- single sign-on (the provider's answer, a directory password, or the proof the
    # CLI holds is the credential) ---------------------------------------------------------

    async def list_connectors(self) -> list[ConnectorInfo]:
        """Name, kind and display name of each connector, for sign-in pages (public)."""
        return await self.auth.sso.list_public()

    async def sso_oidc_start(self, connector: str | None, public_key: str,
                             client_callback: str, client_nonce_hash: str,
                             ttl: str | None) -> OIDCStart:
        return await self.auth.sso.oidc_start(connector, public_key, client_callback,
                                              client_nonce_hash, ttl, self.caller.remote_addr)

    async def sso_oidc_callback(self, state: str, code: str, error: str) -> str:
        return await self.auth.sso.oidc_callback(state, code, error, self.caller.remote_addr)

    async def sso_redeem(self, state: str, code: str, client_nonce: str,
                         signature: str) -> LoginResult:
        return await self.auth.sso.redeem(state, code, client_nonce, signature,
                                          self.caller.remote_addr)

    async def sso_ldap_login(self, connector: str | None, user: str, password: str, otp: str,
                             public_key: str, ttl: timedelta | None) -> LoginResult:
        return await self.auth.sso.ldap_login(connector, user, password, otp, public_key, ttl,
                                              self.caller.remote_addr)
    # -- web sessions (the browser's sign-in; limen.auth.web_sessions) -------------------

    def _web_sessions(self) -> WebSessions:
        return WebSessions(self.auth.ctx, self.auth.locks)

    async def login_connector(self, name: str, kind: str) -> ConnectorInfo:
        """One connector of a kind, for its sign-in page; NotFound when there is none."""
        found = [c for c in await self.auth.sso.list_public()
                 if c.name == name and c.kind == kind]
        if not found:
            raise NotFound(f"there is no {kind} connector {name!r}")
        return found[0]

    def _web_sso(self) -> WebSSO:
        return WebSSO(self.auth.sso, self._web_sessions())

    async def web_sso_oidc_start(self, connector: str, finish_url: str) -> WebFlow:
        return await self._web_sso().start_oidc(connector, finish_url, self.caller.remote_addr)

    async def web_sso_oidc_refusal(self, cookie: str) -> str:
        return await self._web_sso().refusal(cookie)

    async def web_sso_oidc_finish(self, cookie: str, code: str) -> SignedIn:
        return await self._web_sso().finish_oidc(cookie, code, self.caller.remote_addr)

    async def web_sso_ldap_sign_in(self, connector: str, user: str, password: str,
                                   otp: str) -> SignedIn:
        return await self._web_sso().ldap(connector, user, password, otp,
                                          self.caller.remote_addr)

    async def web_sign_in(self, user: str, password: str, otp: str) -> SignedIn:
        """``login`` for a browser: a key pair the proxy keeps, a certificate marked
        ``origin@limen: web``, no API token, and a web session holding both."""
        sessions = self._web_sessions()
        key = sessions.new_key()
        public_key = key.export_public_key("openssh").decode()
        result = await self.auth.login_service.login(
            user, password, otp, public_key, None, self.caller.remote_addr,
            origin=ORIGIN_WEB, api_token=False,
        )
        return await sessions.create(result, key, self.caller.remote_addr)

    async def web_session(self, token: str) -> SignedIn:
        """The session a browser's cookie names, if still good (the cookie is its own
        credential: the check is the session's certificate, user and locks)."""
        return await self._web_sessions().find(token, self.caller.remote_addr)

    async def web_sign_out(self, token: str) -> None:
        await self._web_sessions().end(token)

    # -- any signed-in caller ------------------------------------------------------------

    async def whoami(self) -> AccessChecker:
        return await self.checker()

    async def list_nodes(self) -> list[tuple[Node, NodePresence]]:
        """The present nodes the caller's roles reach (the admin sees every node)."""
        nodes = await self.auth.nodes.present()
        if self.caller.is_admin:
            return nodes
        checker = await self.checker()
        return [(n, p) for n, p in nodes if checker.can_access_node(n.metadata.labels)]

    async def list_sessions(self) -> list[Session]:
        """Everyone sees their own live sessions, and the interactive ones their roles let
        them join (join_sessions); the rule on session (list) shows all."""
        sessions = await self.auth.tracking.list_sessions()
        if await self._allows("session", "list"):
            return sessions
        checker = await self.checker()
        return [s for s in sessions
                if s.spec.user == self.caller.user or await self._may_join(checker, s)]

    async def _may_join(self, checker: AccessChecker, session: Session) -> bool:
        return bool(await self._modes(checker, session))

    async def join_modes(self, session: Session) -> list[str]:
        """The modes the caller's roles let them join this session in (none for their
        own); what to offer, while the node decides again when they join."""
        if session.spec.user == self.caller.user:
            return []
        return await self._modes(await self.checker(), session)

    async def _modes(self, checker: AccessChecker, session: Session) -> list[str]:
        if not session.spec.interactive:
            return []
        try:
            owner = await self.auth.ctx.stores.users.get(session.spec.user)
        except NotFound:
            return []
        return join_modes(checker, list(owner.spec.roles))

    # -- users ---------------------------------------------------------------------------

    async def list_users(self) -> list[User]:
        async with self._rule("user", "list"):
            return await self.auth.users.list()

    async def create_user(self, name: str, roles: list[str], logins: list[str],
                          ttl: timedelta | None) -> IssuedToken:
        async with self._rule("user", "create"):
            return await self.auth.users.create(self.caller, name, roles, logins, ttl)

    async def delete_user(self, name: str) -> None:
        async with self._rule("user", "delete"):
            await self.auth.users.delete(self.caller, name)

    async def reset_user(self, name: str, ttl: timedelta | None) -> IssuedToken:
        async with self._rule("user", "update"):
            return await self.auth.users.reset(self.caller, name, ttl)

    async def unlock_user(self, name: str) -> User:
        async with self._rule("user", "update"):
            return await self.auth.users.unlock(self.caller, name)

    # -- join tokens ---------------------------------------------------------------------

    async def create_join_token(self, ttl: timedelta | None, labels: dict[str, str],
                                uses: int | None = 1) -> IssuedJoinToken:
        async with self._rule("token", "create"):
            return await self.auth.join.create_token(self.caller, ttl, labels, uses)

    async def list_join_tokens(self) -> list[JoinToken]:
        async with self._rule("token", "list"):
            return await self.auth.join.list_tokens()

    async def delete_join_token(self, token_or_id: str) -> str:
        async with self._rule("token", "delete"):
            return await self.auth.join.delete_token(self.caller, token_or_id)

    # -- generic resources and locks -----------------------------------------------------

    async def get_resources(self, kind: str, name: str | None) -> list[dict[str, Any]]:
        kind = canonical_kind(kind)
        async with self._rule(kind, "read" if name else "list"):
            return await self.auth.resources.get(kind, name)

    async def put_resource(self, document: dict[str, Any], force: bool) -> dict[str, Any]:
        """Create (rule: create) or replace (rule: update) a role or lock."""
        kind, resource = parse_document(document)
        exists = await self.auth.resources.exists(kind, resource.name)
        async with self._rule(kind, "update" if exists else "create"):
            return await self.auth.resources.put(self.caller, kind, resource, exists, force)

    async def delete_resource(self, kind: str, name: str) -> None:
        kind = canonical_kind(kind)
        async with self._rule(kind, "delete"):
            await self.auth.resources.delete(self.caller, kind, name)

    async def create_lock(self, target: dict[str, str], message: str, ttl: timedelta | None,
                          expires: datetime | None) -> Lock:
        async with self._rule("lock", "create"):
            return await self.auth.locks.create(self.caller, target, message, ttl, expires)

    # -- OpenSSH nodes (limen.auth.openssh_nodes) ---------------------------------------

    async def add_openssh_node(self, name: str, addr: str, labels: dict[str, str],
                               public_key: str, ttl: timedelta | None) -> OpenSSHCert:
        async with self._rule("node", "create"):
            return await self.auth.openssh.add(self.caller, name, addr, labels, public_key, ttl)

    async def certify_openssh_node(self, name: str, public_key: str,
                                   ttl: timedelta | None) -> OpenSSHCert:
        async with self._rule("node", "update"):
            return await self.auth.openssh.certify(self.caller, name, public_key, ttl)

    async def openssh_session_cert(self, user: str, login: str, node_id: str,
                                   public_key: str) -> Any:
        """A short-lived certificate for a session the proxy relays to an OpenSSH node:
        only the proxy asks, and the user's current roles and locks decide."""
        async with self._builtin(PROXIES, "node", "connect",
                                 "only the proxy obtains certificates for OpenSSH nodes"):
            return await self.auth.openssh.session_cert(user, login, node_id, public_key)

    # -- what nodes report ---------------------------------------------------------------

    async def heartbeat(self, addr: str | None,
                        connection: str) -> tuple[Node, NodePresence]:
        async with self._builtin(NODES, "node", "update",
                                 "only a node's own identity may send its heartbeat"):
            return await self.auth.nodes.heartbeat(self.caller, addr, connection)

    async def renew_local_node(self) -> Renewed:
        """The node inside the auth service's process renews without a token."""
        async with self._builtin(NODES, "node", "update",
                                 "only a node's own identity may renew it"):
            return await self.auth.node_renewal.renew_local(self.caller.user)

    async def renew_node(self, api_token: str, stamp: str, signature: str) -> Renewed:
        """New credentials for a node: its own credential is the proof (its token, even
        the one before if an answer was lost, and a signature by its host key)."""
        return await self.auth.node_renewal.renew(api_token, stamp, signature,
                                                  self.caller.remote_addr)

    async def report_event(self, name: str, fields: dict[str, Any]) -> None:
        async with self._builtin(HOSTS, "event", "create",
                                 "only nodes and proxies report events and sessions"):
            await self.auth.tracking.report_event(self.caller, name, fields)

    async def report_events(self, events: list[tuple[str, dict[str, Any]]]
                            ) -> list[LimenError | None]:
        """Several events in one call, each taken (or refused) as ``report_event`` takes
        it, in order; returns each one's refusal, or None where it was written. Anything
        but a refusal of the event itself (a caller that is not a node, the storage)
        fails the whole call."""
        async with self._builtin(NODES, "event", "create", "only nodes report events"):
            answers = await self.auth.tracking.report_events(self.caller, events)
        for answer in answers:  # audited as the refusal of a single event is
            if isinstance(answer, AccessDenied):
                await self._access_refused("event", "create", answer)
        return answers

    async def upsert_session(self, session: Session) -> Session:
        async with self._builtin(HOSTS, "session", "update",
                                 "only nodes and proxies report events and sessions"):
            return await self.auth.tracking.upsert_session(self.caller, session)

    async def end_session(self, session_id: str) -> None:
        async with self._builtin(HOSTS, "session", "delete",
                                 "only nodes and proxies report events and sessions"):
            await self.auth.tracking.end_session(self.caller, session_id)

    async def watch_access(self) -> AsyncGenerator[dict[str, Any], None]:
        """Roles, users and locks, then every change (what nodes cache their checks on)."""
        async with self._builtin(HOSTS, "access_feed", "read",
                                 "only nodes and proxies watch the access feed"):
            return access_feed(self.auth.ctx.stores)

    async def still_in_good_standing(self) -> bool:
        """For a stream opened earlier: a node removed or locked meanwhile is cut off."""
        return self.caller.builtin != "node" or await self.auth.nodes.in_good_standing(
            self.caller.user)

    def on_revoked(self, end: Callable[[], None]) -> Callable[[], None]:
        """For a stream a node keeps open: ``end`` is called when the node is removed or
        locked. Returns what forgets it (call it when the stream ends)."""
        if self.caller.builtin != "node":
            return lambda: None
        return self.auth.nodes.on_revoked(self.caller.user, end)

    # -- recordings ----------------------------------------------------------------------

    async def update_recording(self, session_id: str, meta: dict[str, Any]) -> dict[str, Any]:
        async with self._builtin(RECORDERS, "recording", "update", "only nodes send recordings"):
            return await self.auth.recordings.update(self.caller, session_id, meta)

    async def update_recordings(self, recordings: list[tuple[str, dict[str, Any]]]
                                ) -> list[dict[str, Any] | LimenError]:
        """Several recordings, each taken (or refused) as ``update_recording`` takes it,
        in order: each one's answer or refusal. Anything but a refusal of the recording
        itself (a caller that may not send any, the storage) fails the whole call."""
        async with self._builtin(RECORDERS, "recording", "update", "only nodes send recordings"):
            answers = await self.auth.recordings.update_many(self.caller, recordings)
        for answer in answers:  # audited as the refusal of a single recording is
            if isinstance(answer, AccessDenied):
                await self._access_refused("recording", "update", answer)
        return answers

    async def append_recording(self, session_id: str, offset: int, data: bytes) -> int:
        async with self._builtin(RECORDERS, "recording", "update", "only nodes send recordings"):
            return await self.auth.recordings.append(self.caller, session_id, offset, data)

    async def list_recordings(self, limit: int, since_ns: int | None) -> list[RecordingMeta]:
        async with self._rule("recording", "list"):
            return await self.auth.recordings.list(limit, since_ns)

    async def search_recordings(self, text: str, limit: int) -> list[RecordingMeta]:
        async with self._rule("recording", "list"):
            return await self.auth.recordings.search(text, limit)

    async def get_recording(self, session_id: str) -> RecordingMeta:
        async with self._rule("recording", "read"):
            return await self.auth.recordings.get(session_id)

    async def play_recording(self, session_id: str) -> tuple[RecordingMeta,
                                                            AsyncIterator[bytes]]:
        """The recording's bytes, for playing or exporting; the access is audited."""
        async with self._rule("recording", "read"):
            return await self.auth.recordings.open(self.caller, session_id)

    # -- the cluster's instances ----------------------------------------------------------

    async def list_instances(self) -> list[Instance]:
        """The auth/proxy instances sharing this cluster's storage, up or down."""
        async with self._rule("instance", "list"):
            return await list_instances(self.auth.ctx.stores.instances)

    # -- the audit log -------------------------------------------------------------------

    async def search_events(self, query: EventQuery) -> tuple[list[dict[str, Any]],
                                                             str | None]:
        async with self._rule("event", "list"):
            return await self.auth.audit_search.search(query)

    async def verify_audit(self, since_ns: int | None) -> Report:
        async with self._rule("event", "read"):
            return await self.auth.audit_search.verify(since_ns)
