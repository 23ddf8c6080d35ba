"""User management and signup: create, reset, unlock, delete, enroll password + TOTP."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from limen import totp
from limen.audit import schema
from limen.auth import passwords
from limen.auth.context import AuthContext
from limen.auth.identity import Identity
from limen.errors import AccessDenied, BadParameter, NotFound
from limen.resources import User, UserStatus, UserToken, validate_name
from limen.resources.token import new_token, token_hash
from limen.services.credentials import TOTPDevice

BAD_TOKEN = (
    "this signup token is not valid: it was already used, it has expired, or it was never "
    "issued; ask an admin for a new one (limen users reset NAME)"
)


@dataclass(frozen=True)
class IssuedToken:
    token: str
    user: str
    purpose: str
    expires: datetime


@dataclass(frozen=True)
class SignupChallenge:
    user: str
    totp_secret: str
    otpauth_uri: str
    purpose: str
    # For an SSO user: their connector. Signup then enrolls only the TOTP device (the
    # connector's second factor); there is no local password to set.
    sso_connector: str = ""


class UserManager:
    def __init__(self, ctx: AuthContext) -> None:
        self.ctx = ctx

    async def create(
        self,
        actor: Identity,
        name: str,
        roles: list[str],
        logins: list[str],
        ttl: timedelta | None = None,
    ) -> IssuedToken:
        validate_name(name, "user name")
        for role in roles:
            await self.ctx.stores.roles.get(role)  # NotFound names the missing role
        for login in logins:
            validate_name(login, "login")
        user = User.model_validate(
            {
                "metadata": {"name": name},
                "spec": {
                    "roles": roles,
                    "traits": {"logins": logins},
                    "created_by": actor.user,
                    "created": self.ctx.clock.now(),
                },
            }
        )
        await self.ctx.stores.users.create(user)
        await self.ctx.audit.emit(
            schema.UserCreate(user=actor.user, name=name, roles=roles, logins=logins)
        )
        return await self._issue_token(actor, name, "signup", ttl)

    async def reset(self, actor: Identity, name: str, ttl: timedelta | None = None) -> IssuedToken:
        """New reset token; the old password and TOTP device stop working at once."""
        await self.ctx.stores.users.get(name)
        await self.ctx.stores.credentials.clear(name)
        await self._set_active(name, False)
        await self.ctx.audit.emit(schema.UserUpdate(user=actor.user, name=name, action="reset"))
        return await self._issue_token(actor, name, "reset", ttl)

    async def delete(self, actor: Identity, name: str) -> None:
        await self.ctx.stores.users.get(name)
        await self.ctx.stores.backend.delete_range(f"/users/{name}/")
        for token in await self.ctx.stores.user_tokens.list():
            if token.spec.user == name:
                await self._forget_token(token.name)
        await self.ctx.audit.emit(schema.UserDelete(user=actor.user, name=name))

    async def unlock(self, actor: Identity, name: str) -> User:
        def clear(user: User) -> None:
            user.status = UserStatus()

        user = await self.ctx.stores.users.modify(name, clear)
        await self.ctx.audit.emit(schema.UserUnlock(user=actor.user, name=name))
        return user

    async def list(self) -> list[User]:
        return await self.ctx.stores.users.list()

    async def _issue_token(
        self, actor: Identity, name: str, purpose: str, ttl: timedelta | None
    ) -> IssuedToken:
        settings = self.ctx.settings
        default, cap = (
            (settings.signup_token_ttl, settings.max_signup_token_ttl)
            if purpose == "signup"
            else (settings.reset_token_ttl, settings.max_reset_token_ttl)
        )
        ttl = ttl or default
        if ttl > cap:
            raise BadParameter(f"a {purpose} token may live at most {cap}; asked for {ttl}")
        # Any older token for this user stops working: only the newest is valid.
        for old in await self.ctx.stores.user_tokens.list():
            if old.spec.user == name:
                await self._forget_token(old.name)
        token = new_token()
        expires = self.ctx.clock.now() + ttl
        record = UserToken.model_validate(
            {
                "metadata": {"name": token_hash(token), "expires": expires},
                "spec": {"user": name, "purpose": purpose},
            }
        )
        await self.ctx.stores.user_tokens.create(record)
        await self.ctx.audit.emit(schema.UserTokenCreate(
            user=actor.user, name=name, purpose=purpose, expires=expires.isoformat(),
        ))
        return IssuedToken(token=token, user=name, purpose=purpose, expires=expires)

    async def _forget_token(self, hashed: str) -> None:
        with contextlib.suppress(NotFound):
            await self.ctx.stores.user_tokens.delete(hashed)

    async def _token(self, token: str) -> UserToken:
        try:
            return await self.ctx.stores.user_tokens.get(token_hash(token))
        except NotFound:
            raise AccessDenied(BAD_TOKEN) from None

    async def signup_start(self, token: str, remote_addr: str = "") -> SignupChallenge:
        """Offer a TOTP secret for this token; asking again returns the same one."""
        try:
            record = await self._token(token)
        except AccessDenied:
            await self._signup_failed("", remote_addr, "invalid or used token")
            raise

        def ensure_secret(rec: UserToken) -> None:
            if not rec.spec.pending_totp_secret:
                rec.spec.pending_totp_secret = totp.new_secret()

        record = await self.ctx.stores.user_tokens.modify(record.name, ensure_secret)
        secret = record.spec.pending_totp_secret
        uri = totp.provisioning_uri(secret, record.spec.user, self.ctx.settings.cluster_name)
        return SignupChallenge(record.spec.user, secret, uri, record.spec.purpose,
                               await self._sso_connector(record.spec.user))

    async def _sso_connector(self, name: str) -> str:
        user = await self.ctx.stores.users.get(name)
        return user.spec.sso.connector if user.spec.kind == "sso" and user.spec.sso else ""

    async def signup_finish(
        self, token: str, password: str, otp: str, remote_addr: str = ""
    ) -> str:
        """Set the password and TOTP device; the token is used up. Returns the user name."""
        record = await self._token(token)
        user = record.spec.user
        sso = bool(await self._sso_connector(user))
        if not sso:
            passwords.check_rules(user, password)
        secret = record.spec.pending_totp_secret
        if not secret:
            raise BadParameter("start the signup first: the TOTP secret was never shown")
        step = totp.matching_step(secret, otp, self.ctx.clock.now())
        if step is None:
            await self._signup_failed(user, remote_addr, "wrong TOTP code")
            raise AccessDenied("the TOTP code is not valid; check your authenticator's clock")
        try:  # Claim the token atomically: of two racing signups only one wins.
            await self.ctx.stores.user_tokens.delete(record.name)
        except NotFound:
            raise AccessDenied(BAD_TOKEN) from None
        if not sso:  # an SSO user's password is the provider's business
            hashed = await asyncio.to_thread(passwords.hash_password, password)
            await self.ctx.stores.credentials.set_password_hash(user, hashed)
        device = TOTPDevice(secret=secret, added=self.ctx.clock.now(), last_step=step)
        await self.ctx.stores.credentials.set_totp_device(user, device)
        await self._set_active(user, True)
        await self.ctx.audit.emit(
            schema.UserPasswordChange(user=user, addr_remote=remote_addr or None)
        )
        await self.ctx.audit.emit(
            schema.MfaAdd(user=user, mfa_device_name=device.name, mfa_device_type="TOTP")
        )
        return user

    async def _signup_failed(self, user: str, remote_addr: str, reason: str) -> None:
        await self.ctx.audit.emit(schema.UserSignupFailure(
            user=user, success=False, error=reason, addr_remote=remote_addr or None,
        ))

    async def _set_active(self, name: str, active: bool) -> None:
        def change(user: User) -> None:
            user.spec.active = active
            if active:
                user.status = UserStatus()

        await self.ctx.stores.users.modify(name, change)
