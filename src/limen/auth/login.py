"""Login: password + TOTP, lockout after repeated failures, then a short-lived certificate.

Single sign-on (limen.auth.connectors) ends here too: once a connector has said who
someone is, ``issue_for`` makes the same certificate and API token a local login makes,
so nothing downstream knows how they signed in.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncssh

from limen import totp
from limen.audit import schema
from limen.auth import passwords
from limen.auth.ca import known_hosts_line, sign_user_cert
from limen.auth.context import AuthContext
from limen.auth.locks import LockService
from limen.diag import metrics
from limen.errors import AccessDenied, BadParameter, NotFound
from limen.rbac import AccessChecker
from limen.resources import User

INVALID = "invalid user name, password or second factor"


@dataclass(frozen=True)
class LoginResult:
    user: str
    cert: str  # OpenSSH certificate line
    valid_before: datetime
    principals: list[str]
    roles: list[str]
    host_ca: str  # known_hosts line: @cert-authority * ...
    cluster: str
    api_token: str  # "" when none was asked for (a web sign-in keeps its own session)


# Where a certificate's holder signs in from, carried in the certificate (origin@limen)
# so that a node can say where a session came from. Only the auth service sets it.
ORIGIN_EXTENSION = "origin@limen"
ORIGIN_WEB = "web"


class LoginService:
    def __init__(self, ctx: AuthContext, checker_for, locks: LockService) -> None:
        self.ctx = ctx
        self._checker_for = checker_for
        self._locks = locks

    async def login(
        self,
        name: str,
        password: str,
        otp: str,
        public_key: str,
        ttl: timedelta | None = None,
        remote_addr: str = "",
        *,
        origin: str | None = None,
        api_token: bool = True,
    ) -> LoginResult:
        """``origin`` goes into the certificate (origin@limen); ``api_token`` False issues
        no API bearer token (the web UI's sessions are their own record)."""
        key = parse_public_key(public_key)
        user = await self._authenticate(name, password, otp, remote_addr)
        result = await self.issue_for(user, key, ttl, remote_addr, "local", origin=origin,
                                      api_token=api_token)
        metrics.login_attempt(success=True)
        await self.ctx.audit.emit(schema.UserLogin(
            user=name, method="local", success=True, addr_remote=remote_addr or None,
            mfa_device="TOTP", roles=list(result.roles),
        ))
        return result

    async def issue_for(self, user: User, key: asyncssh.SSHKey | str, ttl: timedelta | None,
                        remote_addr: str, method: str, *, origin: str | None = None,
                        api_token: bool = True, **audit: Any) -> LoginResult:
        """A certificate for someone already authenticated, unless a lock says no.
        ``audit``: more fields of the failure event (a connector and its claims)."""
        if isinstance(key, str):
            key = parse_public_key(key)
        try:
            await self._locks.check(user.name, list(user.spec.roles))
        except AccessDenied as exc:
            await self._failed(user.name, remote_addr, f"locked: {exc.message}", method, **audit)
            raise
        return await self._issue(user, await self._checker_for(user), key, ttl, origin, api_token)

    async def check_second_factor(self, user: User, otp: str, remote: str, method: str,
                                  **audit: Any) -> None:
        """The user's own TOTP code (a connector that asks for one); failures count."""
        found = await self.ctx.stores.credentials.totp_device(user.name)
        if found is None:
            await self._failed(user.name, remote, "no second factor enrolled", method, **audit)
            raise AccessDenied(
                f"this sign-in needs a TOTP code and {user.name} has no device enrolled; an "
                f"admin can issue one with: limen users reset {user.name}")
        device, item = found
        step = totp.matching_step(device.secret, otp, self.ctx.clock.now())
        if step is None:
            await self.count_failure(user, remote, "wrong TOTP code", method, **audit)
        if not await self.ctx.stores.credentials.consume_step(user.name, item, device, step):
            await self._failed(user.name, remote, "TOTP code already used", method, **audit)
            raise AccessDenied(INVALID)

    async def _authenticate(self, name: str, password: str, otp: str, remote: str) -> User:
        try:
            user = await self.ctx.stores.users.get(name)
        except NotFound:
            await asyncio.to_thread(passwords.verify_password, password, None)
            await self._failed(name, remote, "unknown user")
            raise AccessDenied(INVALID) from None
        now = self.ctx.clock.now()
        locked_until = user.status.locked_until
        if locked_until and locked_until > now:
            await self._failed(name, remote, "user is locked")
            raise AccessDenied(locked_message(name, locked_until, user.status.lock_reason))
        if user.spec.kind == "sso":
            # No local password to try (and guesses must not lock them out); the same
            # bcrypt work as any other attempt, then say where they sign in.
            await asyncio.to_thread(passwords.verify_password, password, None)
            connector = user.spec.sso.connector if user.spec.sso else "?"
            await self._failed(name, remote, f"an SSO user has no local password ({connector})")
            raise AccessDenied(f"user {name} signs in through single sign-on: "
                               f"limen login --auth {connector}")
        hashed = await self.ctx.stores.credentials.password_hash(name)
        if not await asyncio.to_thread(passwords.verify_password, password, hashed):
            await self.count_failure(user, remote, "wrong password")
        found = await self.ctx.stores.credentials.totp_device(name)
        if found is None:
            await self.count_failure(user, remote, "no second factor enrolled")
        device, item = found
        step = totp.matching_step(device.secret, otp, now)
        if step is None:
            await self.count_failure(user, remote, "wrong TOTP code")
        if not await self.ctx.stores.credentials.consume_step(name, item, device, step):
            # Right password, a real but spent code: a person retrying too fast (e.g. just
            # after signup), not a guess; refused without counting toward the lockout.
            await self._failed(name, remote, "TOTP code already used")
            raise AccessDenied(INVALID)
        if user.status.failed_logins:
            await self._reset_failures(name)
        return user

    async def count_failure(self, user: User, remote: str, reason: str,
                            method: str = "local", **audit: Any) -> None:
        """Record one failure, lock the user after too many, and refuse."""
        settings = self.ctx.settings
        now = self.ctx.clock.now()

        def bump(u: User) -> None:
            u.status.failed_logins += 1
            if u.status.failed_logins >= settings.lockout_attempts:
                u.status.locked_until = now + settings.lockout_duration
                u.status.lock_reason = f"{u.status.failed_logins} failed login attempts"
                u.status.failed_logins = 0

        updated = await self.ctx.stores.users.modify(user.name, bump)
        await self._failed(user.name, remote, reason, method, **audit)
        if updated.status.locked_until and updated.status.locked_until > now:
            raise AccessDenied(
                locked_message(user.name, updated.status.locked_until, updated.status.lock_reason)
            )
        raise AccessDenied(INVALID)

    async def _reset_failures(self, name: str) -> None:
        def reset(u: User) -> None:
            u.status.failed_logins = 0

        await self.ctx.stores.users.modify(name, reset)

    async def _failed(self, name: str, remote: str, reason: str, method: str = "local",
                      **audit: Any) -> None:
        metrics.login_attempt(success=False)
        await self.ctx.audit.emit(schema.UserLogin(
            user=name, method=method, success=False, error=reason, addr_remote=remote or None,
            **audit,
        ))

    async def _issue(
        self, user: User, checker: AccessChecker, key: asyncssh.SSHKey, ttl: timedelta | None,
        origin: str | None = None, with_token: bool = True,
    ) -> LoginResult:
        settings = self.ctx.settings
        now = self.ctx.clock.now()
        ttl = min(ttl or settings.cert_ttl, settings.max_cert_ttl)
        role_cap = checker.max_session_ttl()
        if role_cap is not None:
            ttl = min(ttl, role_cap)
        valid_before = now + ttl
        principals = checker.logins() or [f"-limen-nologin-{secrets.token_hex(4)}"]
        extensions = {
            "roles@limen": json.dumps(checker.role_names),
            "traits@limen": json.dumps(user.spec.traits, sort_keys=True),
            "cluster@limen": settings.cluster_name,
        }
        if origin:
            extensions[ORIGIN_EXTENSION] = origin
        cert = sign_user_cert(
            self.ctx.cas.user_ca,
            key,
            key_id=user.name,
            principals=principals,
            valid_after=now - timedelta(minutes=1),
            valid_before=valid_before,
            permit_pty=True,
            permit_port_forwarding=checker.any_port_forwarding(),
            permit_agent_forwarding=checker.forward_agent(),
            extensions=extensions,
            serial=secrets.randbits(63),
        )
        token = (await self.ctx.stores.api_sessions.issue(user.name, valid_before)
                 if with_token else "")
        metrics.certificate_issued()
        await self.ctx.audit.emit(schema.CertIssued(
            user=user.name, principals=list(principals), valid_before=valid_before.isoformat(),
            roles=list(checker.role_names),
        ))
        return LoginResult(
            user=user.name,
            cert=cert.export_certificate("openssh").decode().strip(),
            valid_before=valid_before,
            principals=principals,
            roles=checker.role_names,
            host_ca=known_hosts_line(self.ctx.cas.host_ca),
            cluster=settings.cluster_name,
            api_token=token,
        )


def parse_public_key(text: str) -> asyncssh.SSHKey:
    try:
        return asyncssh.import_public_key(text)
    except (asyncssh.KeyImportError, ValueError) as exc:
        raise BadParameter("the public key is not a valid OpenSSH public key") from exc


def locked_message(name: str, until: datetime, reason: str) -> str:
    when = until.strftime("%Y-%m-%d %H:%M:%S UTC")
    why = f" after {reason}" if reason else ""
    return (
        f"user {name} is locked until {when}{why}; "
        f"an admin can lift it with: limen users unlock {name}"
    )
