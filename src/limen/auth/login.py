"""Login: password + TOTP, lockout after repeated failures, then a short-lived certificate."""

from __future__ import annotations

import asyncio
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncssh

from limen.audit import schema
from limen.auth import passwords, totp
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
        key = _parse_public_key(public_key)
        user = await self._authenticate(name, password, otp, remote_addr)
        try:
            await self._locks.check(user.name, list(user.spec.roles))
        except AccessDenied as exc:
            await self._failed(name, remote_addr, f"locked: {exc.message}")
            raise
        checker = await self._checker_for(user)
        result = await self._issue(user, checker, key, ttl, origin, api_token)
        metrics.login_attempt(success=True)
        await self.ctx.audit.emit(schema.UserLogin(
            user=name, method="local", success=True, addr_remote=remote_addr or None,
            mfa_device="TOTP", roles=list(checker.role_names),
        ))
        return result

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
            raise AccessDenied(_locked_message(name, locked_until, user.status.lock_reason))
        hashed = await self.ctx.stores.credentials.password_hash(name)
        if not await asyncio.to_thread(passwords.verify_password, password, hashed):
            await self._count_failure(user, remote, "wrong password")
        found = await self.ctx.stores.credentials.totp_device(name)
        if found is None:
            await self._count_failure(user, remote, "no second factor enrolled")
        device, item = found
        step = totp.matching_step(device.secret, otp, now)
        if step is None:
            await self._count_failure(user, remote, "wrong TOTP code")
        if not await self.ctx.stores.credentials.consume_step(name, item, device, step):
            # Right password, a real but spent code: a person retrying too fast (e.g. just
            # after signup), not a guess; refused without counting toward the lockout.
            await self._failed(name, remote, "TOTP code already used")
            raise AccessDenied(INVALID)
        if user.status.failed_logins:
            await self._reset_failures(name)
        return user

    async def _count_failure(self, user: User, remote: str, reason: str) -> None:
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
        await self._failed(user.name, remote, reason)
        if updated.status.locked_until and updated.status.locked_until > now:
            raise AccessDenied(
                _locked_message(user.name, updated.status.locked_until, updated.status.lock_reason)
            )
        raise AccessDenied(INVALID)

    async def _reset_failures(self, name: str) -> None:
        def reset(u: User) -> None:
            u.status.failed_logins = 0

        await self.ctx.stores.users.modify(name, reset)

    async def _failed(self, name: str, remote: str, reason: str) -> None:
        metrics.login_attempt(success=False)
        await self.ctx.audit.emit(schema.UserLogin(
            user=name, method="local", success=False, error=reason, addr_remote=remote or None,
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


def _parse_public_key(text: str) -> asyncssh.SSHKey:
    try:
        return asyncssh.import_public_key(text)
    except (asyncssh.KeyImportError, ValueError) as exc:
        raise BadParameter("the public key is not a valid OpenSSH public key") from exc


def _locked_message(name: str, until: datetime, reason: str) -> str:
    when = until.strftime("%Y-%m-%d %H:%M:%S UTC")
    why = f" after {reason}" if reason else ""
    return (
        f"user {name} is locked until {when}{why}; "
        f"an admin can lift it with: limen users unlock {name}"
    )
