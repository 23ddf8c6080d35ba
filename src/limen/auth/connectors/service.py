"""Single sign-on as the auth service runs it: which connectors exist, the OIDC flow
from start to redeemed certificate, and the LDAP sign-in; every attempt audited.

The OIDC flow, as the CLI sees it:

1. ``oidc_start``: the CLI sends its public key, its one-time localhost callback and the
   SHA-256 of a secret nonce it keeps; it gets the provider's authorization URL. The
   sign-in is stored under its ``state`` (for a few minutes, in the cluster's store).
2. The browser signs in at the provider, which redirects it to the proxy:
   ``oidc_callback`` claims the state once, exchanges the code (with the PKCE
   verifier), checks the ID token, maps the claims and saves the SSO user, then sends
   the browser on to the CLI's callback with a one-time exchange code.
3. ``redeem``: the CLI presents the state, the exchange code, its secret nonce and a
   signature over them by the private key it asked a certificate for. Only then is the
   certificate issued, through the same path as a local login. Someone who intercepts
   the redirect to localhost holds a code that is useless without the nonce and the key.
"""

from __future__ import annotations

import contextlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit

import asyncssh

from limen.audit import schema
from limen.auth.connectors.identity import ExternalIdentity
from limen.auth.connectors.ldap import DirectoryRefused, LDAPDirectory
from limen.auth.connectors.oidc import OIDCSignIn, Providers
from limen.auth.connectors.sso_users import SSOUsers
from limen.auth.context import AuthContext
from limen.auth.login import LoginResult, LoginService, locked_message, parse_public_key
from limen.diag import metrics
from limen.durations import parse_duration
from limen.errors import AccessDenied, BadParameter, LimenError, NotFound
from limen.resources import (
    AnyConnector,
    Connector,
    LDAPConnector,
    OIDCConnector,
    SSORequest,
    User,
)
from limen.resources.token import token_hash
from limen.services.store import ResourceStore

# How long a person has to sign in at the provider, and then for the CLI to redeem.
SIGN_IN_TTL = timedelta(minutes=10)
REDEEM_TTL = timedelta(minutes=2)
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
REDEEM_CONTEXT = b"limen-sso-redeem"


def redeem_message(state: str, code: str) -> bytes:
    """What the CLI signs with its key to redeem a sign-in (the client builds the same)."""
    return b"\0".join((REDEEM_CONTEXT, state.encode(), code.encode()))


@dataclass(frozen=True)
class ConnectorInfo:
    """What the sign-in page and `limen login` may know of a connector: no secrets."""

    name: str
    kind: str
    display: str
    default: bool
    second_factor: str  # none, or totp: the CLI asks for a code too


@dataclass(frozen=True)
class OIDCStart:
    auth_url: str
    state: str
    expires: datetime


class SSOService:
    def __init__(self, ctx: AuthContext, login: LoginService) -> None:
        self.ctx = ctx
        self.login = login
        self.connectors: ResourceStore[Any] = ResourceStore(
            ctx.stores.backend, AnyConnector, "/connectors")  # type: ignore[arg-type]
        self.requests = ResourceStore(ctx.stores.backend, SSORequest, "/sso_requests")
        self.providers = Providers(ctx.clock)
        self.users = SSOUsers(ctx)

    # -- which connectors ----------------------------------------------------------------

    async def list_public(self) -> list[ConnectorInfo]:
        return [ConnectorInfo(c.name, c.kind, c.spec.display or c.name, c.spec.default,
                              getattr(c.spec, "second_factor", "none"))
                for c in sorted(await self.connectors.list(), key=lambda c: c.name)]

    async def connector(self, name: str | None, kind: str) -> Connector:
        """The connector named, or the default one of that kind."""
        everyone = sorted(await self.connectors.list(), key=lambda c: c.name)
        if name:
            found = next((c for c in everyone if c.name == name), None)
            if found is None:
                raise NotFound(f"there is no connector {name!r}; known: "
                               f"{', '.join(c.name for c in everyone) or 'none'}")
        else:
            fitting = [c for c in everyone if c.kind == kind]
            defaults = [c for c in fitting if c.spec.default]
            if not defaults and len(fitting) != 1:
                raise BadParameter(f"name a connector with --auth NAME; known: "
                                   f"{', '.join(c.name for c in everyone) or 'none'}")
            found = (defaults or fitting)[0]
        if found.kind != kind:
            raise BadParameter(f"connector {found.name} is of kind {found.kind}, not {kind}")
        return found

    # -- OIDC ------------------------------------------------------------------------------

    async def oidc_start(self, name: str | None, public_key: str, client_callback: str,
                         client_nonce_hash: str, ttl: str | None,
                         remote: str) -> OIDCStart:
        parse_public_key(public_key)
        _check_client_callback(client_callback)
        if ttl:
            parse_duration(ttl)
        if len(client_nonce_hash) != 64:
            raise BadParameter("client_nonce_hash must be a SHA-256 in hex")
        return await self.oidc_begin(name, public_key, client_callback, client_nonce_hash,
                                     ttl, remote)

    async def oidc_begin(self, name: str | None, public_key: str, client_callback: str,
                         client_nonce_hash: str, ttl: str | None, remote: str,
                         web_seal: str = "") -> OIDCStart:
        """Store a sign-in and return the provider's URL. The caller has checked its
        arguments: ``oidc_start`` for the CLI, ``limen.auth.web_sso`` for a browser."""
        connector = await self.connector(name, "oidc")
        assert isinstance(connector, OIDCConnector)
        state, nonce = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        verifier = secrets.token_urlsafe(64)
        sign_in = self._sign_in(connector)
        url = await sign_in.authorization_url(state, nonce, verifier)
        expires = self.ctx.clock.now() + SIGN_IN_TTL
        await self.requests.create(SSORequest.model_validate({
            "metadata": {"name": token_hash(state), "expires": expires},
            "spec": {"connector": connector.name, "nonce": nonce, "code_verifier": verifier,
                     "public_key": public_key, "client_callback": client_callback,
                     "client_nonce_hash": client_nonce_hash.lower(), "ttl": ttl,
                     "remote_addr": remote, "web_seal": web_seal},
        }))
        return OIDCStart(url, state, expires)

    def _sign_in(self, connector: OIDCConnector) -> OIDCSignIn:
        return OIDCSignIn(connector, self.providers.for_connector(connector))

    async def oidc_callback(self, state: str, code: str, error: str, remote: str) -> str:
        """Where to send the browser next: the CLI's callback, with a code or the reason."""
        request = await self._claim(state, remote)
        spec = request.spec
        identity: ExternalIdentity | None = None
        try:
            if error:
                raise AccessDenied(f"the identity provider did not sign you in: {error}")
            if not code:
                raise AccessDenied("the identity provider sent no authorization code")
            connector = await self.connector(spec.connector, "oidc")
            assert isinstance(connector, OIDCConnector)
            identity = await self._sign_in(connector).finish(code, spec.nonce,
                                                            spec.code_verifier)
            user = await self._admit(identity)
        except LimenError as exc:
            await self._failed(identity.username if identity else "", remote, exc.message,
                               "oidc", spec.connector, identity.offered if identity else None)
            return await self._refused(request, exc.message)
        exchange = secrets.token_urlsafe(32)

        def answered(req: SSORequest) -> None:
            req.spec.exchange_hash = token_hash(exchange)
            req.spec.result = {"user": user.name, "claims": identity.decided_by}
            req.metadata.expires = self.ctx.clock.now() + REDEEM_TTL

        await self.requests.modify(request.name, answered)
        return _with_query(spec.client_callback, code=exchange)

    async def _refused(self, request: SSORequest, reason: str) -> str:
        """Where a refused sign-in sends the browser. The CLI's listener gets the reason in
        its URL. A web sign-in keeps it in the request, for the browser that proves it
        started it (limen.auth.web_sso): a reason in the URL would let anyone put words
        of their choosing on the sign-in page."""
        if not request.spec.web_seal:
            await self._forget(request)
            return _with_query(request.spec.client_callback, error=reason)

        def refused(req: SSORequest) -> None:
            req.spec.result = {"error": reason}
            req.metadata.expires = self.ctx.clock.now() + REDEEM_TTL

        await self.requests.modify(request.name, refused)
        return _with_query(request.spec.client_callback, refused="1")

    async def _claim(self, state: str, remote: str) -> SSORequest:
        """The sign-in this state names, taken once: a replayed redirect finds it taken."""
        def take(req: SSORequest) -> None:
            if req.spec.claimed:
                raise AccessDenied("this sign-in was already answered; start the sign-in "
                                   "again")
            req.spec.claimed = True

        try:
            request = await self.requests.modify(token_hash(state or "-"), take)
        except NotFound:
            await self._failed("", remote, "unknown or expired state", "oidc", None, None)
            raise AccessDenied("this sign-in is unknown or has expired (state); start the "
                               "sign-in again") from None
        except AccessDenied as exc:
            await self._failed("", remote, "state already used", "oidc", None, None)
            raise AccessDenied(exc.message) from None
        if self._expired(request):
            await self._forget(request)
            await self._failed("", remote, "sign-in expired", "oidc", request.spec.connector,
                               None)
            raise AccessDenied("this sign-in has expired; start the sign-in again")
        return request

    async def redeem(self, state: str, code: str, client_nonce: str, signature: str,
                     remote: str, *, origin: str | None = None,
                     api_token: bool = True) -> LoginResult:
        try:
            request = await self.requests.get(token_hash(state or "-"))
        except NotFound:
            await self._failed("", remote, "redeem of an unknown sign-in", "oidc", None, None)
            raise AccessDenied("this sign-in is unknown, expired or already redeemed") from None
        spec = request.spec
        if not spec.exchange_hash:  # the browser has not come back yet: nothing to take
            raise AccessDenied("this sign-in is not finished in the browser yet")
        user_name = str((spec.result or {}).get("user", ""))
        claims = (spec.result or {}).get("claims") or {}
        try:
            self._check_proof(request, state, code, client_nonce, signature)
            await self.requests.delete(request.name)  # once: a racing second redeem fails
        except (AccessDenied, NotFound) as exc:
            await self._forget(request)
            await self._failed(user_name, remote, f"redeem refused: {exc.message}", "oidc",
                               spec.connector, None)
            raise AccessDenied(f"the sign-in could not be redeemed: {exc.message}") from None
        user = await self.ctx.stores.users.get(user_name)
        ttl = parse_duration(spec.ttl) if spec.ttl else None
        audit = {"connector": spec.connector, "claims": dict(claims)}
        result = await self.login.issue_for(user, spec.public_key, ttl, remote, "oidc",
                                            origin=origin, api_token=api_token, **audit)
        await self._succeeded(user, remote, "oidc", result, audit)
        return result

    def _check_proof(self, request: SSORequest, state: str, code: str, client_nonce: str,
                     signature: str) -> None:
        spec = request.spec
        if self._expired(request):
            raise AccessDenied("it has expired")
        if not hmac.compare_digest(spec.exchange_hash, token_hash(code)):
            raise AccessDenied("wrong exchange code")
        if not hmac.compare_digest(spec.client_nonce_hash, token_hash(client_nonce)):
            raise AccessDenied("wrong client nonce")
        key = parse_public_key(spec.public_key)
        try:
            valid = key.verify(redeem_message(state, code), bytes.fromhex(signature))
        except (ValueError, asyncssh.Error):
            valid = False
        if not valid:
            raise AccessDenied("the signature is not by the key the certificate is for")

    def _expired(self, request: SSORequest) -> bool:
        expires = request.metadata.expires
        return expires is not None and expires <= self.ctx.clock.now()

    async def _forget(self, request: SSORequest) -> None:
        with contextlib.suppress(NotFound):
            await self.requests.delete(request.name)

    # -- LDAP ------------------------------------------------------------------------------

    async def ldap_login(self, name: str | None, username: str, password: str, otp: str,
                         public_key: str, ttl: timedelta | None, remote: str, *,
                         origin: str | None = None, api_token: bool = True) -> LoginResult:
        parse_public_key(public_key)
        connector = await self.connector(name, "ldap")
        assert isinstance(connector, LDAPConnector)
        # Directories match user names regardless of case; so must the user, its lockout
        # and its locks (ALICE is alice).
        username = username.strip().lower()
        try:
            self.users.check_name(username)
            existing = await self.users.find(connector.name, username)
            if existing is not None:
                self._refuse_if_locked(existing)
            identity = await LDAPDirectory(connector).authenticate(username, password)
        except DirectoryRefused as exc:
            if exc.known:  # the directory has them: the wrong password counts
                user = existing or await self.users.placeholder(
                    connector.name, "ldap", username, "")
                await self.login.count_failure(user, remote, exc.reason, "ldap",
                                               connector=connector.name)
            await self._failed(username, remote, exc.reason, "ldap", connector.name, None)
            raise AccessDenied(exc.message) from None
        except LimenError as exc:
            await self._failed(username, remote, exc.message, "ldap", connector.name, None)
            raise
        user = await self._admit_audited(identity, remote, "ldap")
        audit = {"connector": connector.name, "claims": identity.decided_by}
        if connector.spec.second_factor == "totp":
            await self.login.check_second_factor(user, otp, remote, "ldap", **audit)
        result = await self.login.issue_for(user, public_key, ttl, remote, "ldap",
                                            origin=origin, api_token=api_token, **audit)
        await self._succeeded(user, remote, "ldap", result, audit)
        return result

    # -- shared ----------------------------------------------------------------------------

    async def _admit_audited(self, identity: ExternalIdentity, remote: str,
                             method: str) -> User:
        try:
            return await self._admit(identity)
        except LimenError as exc:
            await self._failed(identity.username, remote, exc.message, method,
                               identity.connector, identity.offered)
            raise

    async def _admit(self, identity: ExternalIdentity) -> User:
        """The SSO user for this answer, saved; refused when locked or mapped to no role."""
        self.users.check_name(identity.username)
        existing = await self.users.find(identity.connector, identity.username)
        if existing is not None:
            self._refuse_if_locked(existing)
        if not identity.roles:
            if existing is not None:  # what they could do before ends now
                await self.users.save(identity)
            looked_at = ", ".join(sorted(identity.offered)) or "nothing"
            raise AccessDenied(
                f"the identity provider does not map {identity.username} to any Limen role "
                f"(connector {identity.connector} looks at: {looked_at}); ask an admin to "
                "add you to a group the connector maps")
        return await self.users.save(identity)

    def _refuse_if_locked(self, user: User) -> None:
        until = self.users.locked(user)
        if until is not None:
            raise AccessDenied(locked_message(user.name, until, user.status.lock_reason))

    async def _succeeded(self, user: User, remote: str, method: str, result: LoginResult,
                         audit: dict[str, Any]) -> None:
        if user.status.failed_logins:
            await self.users.reset_failures(user.name)
        metrics.login_attempt(success=True)
        await self.ctx.audit.emit(schema.UserLogin(
            user=user.name, method=method, success=True, addr_remote=remote or None,
            roles=list(result.roles), **audit))

    async def _failed(self, user: str, remote: str, reason: str, method: str,
                      connector: str | None, claims: dict[str, list[str]] | None) -> None:
        metrics.login_attempt(success=False)
        await self.ctx.audit.emit(schema.UserLogin(
            user=user, method=method, success=False, error=reason, addr_remote=remote or None,
            connector=connector, claims=claims or None))


def _check_client_callback(url: str) -> None:
    """The CLI's callback must be on this machine's loopback: anything else would hand
    a sign-in to whatever host the requester named."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        port = None
        parts = None
    if (parts is None or parts.scheme != "http" or parts.hostname not in LOOPBACK_HOSTS
            or not port or parts.username or parts.fragment or len(url) > 512):
        raise BadParameter("client_callback must be http://127.0.0.1:PORT/PATH (or [::1], "
                           "localhost): the CLI's own one-time listener")


def _with_query(url: str, **params: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{urlencode(params)}"
