"""Web sessions: a browser's sign-in, kept in the backend and bound to a certificate.

Signing in on the web is ``limen login`` done by the proxy on the person's behalf: the
same password, TOTP, lockout, rate limit and ``user.login`` events, and a short-lived
user certificate for a key pair the proxy generates. The certificate carries
``origin@limen: web``, so the node that runs a browser terminal's session says so in
``session.start``.

What the browser holds is a random token in an HttpOnly cookie; the backend holds, under
the token's SHA-256 (``/web_sessions/HASH``), who signed in, the certificate, and the
private key sealed with AES-256-GCM under a key derived from the token itself (HKDF).
So the private key never leaves the proxy, a copy of the backend opens no terminal (it
holds neither the token nor a usable key), and any proxy of the cluster can serve the
session after a restart. The record expires with the certificate.

A session is good only while its certificate is valid, its user exists and no lock
targets the user: every request checks all three, so a lock, a deletion or the
certificate's end closes it on the next request (live terminals end by the node's and
the proxy's own lock handling). Signing out deletes the record.

The CSRF token of a session is an HMAC of its token: bound to it, never stored, and of
no use to anyone who does not already hold the cookie.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from datetime import datetime

import asyncssh
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import BaseModel, ConfigDict

from limen.auth.context import AuthContext
from limen.auth.identity import Identity
from limen.auth.locks import LockService
from limen.auth.login import LoginResult
from limen.errors import AccessDenied, NotFound
from limen.resources.base import Resource
from limen.resources.token import token_hash
from limen.services.store import ResourceStore

PREFIX = "/web_sessions"
SIGNED_OUT = "you are signed out; sign in again"
_SEAL_INFO = b"limen web session key"
_CSRF_INFO = b"limen web csrf"
_NONCE_BYTES = 12


class WebSessionSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: str
    cert: str  # the OpenSSH certificate line issued at sign-in
    sealed_key: str  # base64(nonce + AES-GCM(private key, OpenSSH format))
    valid_before: datetime
    created: datetime
    remote_addr: str = ""


class WebSession(Resource):
    """metadata.name is the SHA-256 of the cookie's token; it expires with the cert."""

    KIND = "web_session"
    spec: WebSessionSpec


@dataclass(frozen=True)
class SignedIn:
    """A valid web session, as one request sees it."""

    token: str  # the cookie's value: only ever in memory
    record: WebSession
    identity: Identity

    @property
    def id(self) -> str:
        return self.record.name

    @property
    def user(self) -> str:
        return self.record.spec.user

    @property
    def cert(self) -> str:
        return self.record.spec.cert

    @property
    def valid_before(self) -> datetime:
        return self.record.spec.valid_before

    @property
    def csrf_token(self) -> str:
        return csrf_token(self.token)

    def private_key(self) -> asyncssh.SSHKey:
        """The session's private key, unsealed with the token (for a terminal only)."""
        sealed = self.record.spec.sealed_key
        return asyncssh.import_private_key(unseal(self.token, self.id, sealed))


def csrf_token(token: str) -> str:
    return hmac.new(token.encode(), _CSRF_INFO, hashlib.sha256).hexdigest()


def csrf_matches(token: str, offered: str | None) -> bool:
    return bool(offered) and hmac.compare_digest(csrf_token(token), str(offered))


class WebSessions:
    """Create, find and end web sessions (who may: the facade decides)."""

    def __init__(self, ctx: AuthContext, locks: LockService) -> None:
        self.ctx = ctx
        self.locks = locks
        self.store = ResourceStore(ctx.stores.backend, WebSession, PREFIX)

    @staticmethod
    def new_key() -> asyncssh.SSHKey:
        return asyncssh.generate_private_key("ssh-ed25519", comment="limen web session")

    async def create(self, login: LoginResult, key: asyncssh.SSHKey,
                     remote_addr: str) -> SignedIn:
        """Store a session for a completed login; returns it with its new token."""
        token = secrets.token_urlsafe(32)
        name = token_hash(token)
        private = key.export_private_key("openssh")
        record = WebSession(
            metadata={"name": name, "expires": login.valid_before},
            spec=WebSessionSpec(
                user=login.user, cert=login.cert, sealed_key=seal(token, name, private),
                valid_before=login.valid_before, created=self.ctx.clock.now(),
                remote_addr=remote_addr,
            ),
        )
        record = await self.store.create(record)
        return SignedIn(token, record, await self._identity(record, remote_addr))

    async def find(self, token: str, remote_addr: str = "") -> SignedIn:
        """The session a cookie names, if it is still good; AccessDenied says why not.
        A session found no longer good is removed."""
        try:
            record = await self.store.get(token_hash(token))
        except NotFound:
            raise AccessDenied(SIGNED_OUT) from None
        if self.ctx.clock.now() >= record.spec.valid_before:
            await self.end(token)
            raise AccessDenied("your web session ended with its certificate; sign in again")
        try:
            identity = await self._identity(record, remote_addr)
        except AccessDenied:
            await self.end(token)
            raise
        return SignedIn(token, record, identity)

    async def _identity(self, record: WebSession, remote_addr: str) -> Identity:
        try:
            user = await self.ctx.stores.users.get(record.spec.user)
        except NotFound:
            raise AccessDenied(f"user {record.spec.user} no longer exists") from None
        await self.locks.check(user.name, list(user.spec.roles))
        return Identity(user=user.name, roles=list(user.spec.roles), traits=user.spec.traits,
                        expires=record.spec.valid_before, remote_addr=remote_addr)

    async def end(self, token: str) -> None:
        with contextlib.suppress(NotFound):
            await self.store.delete(token_hash(token))


def _sealing_key(token: str) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_SEAL_INFO)
    return hkdf.derive(token.encode())


def seal(token: str, name: str, data: bytes) -> str:
    nonce = os.urandom(_NONCE_BYTES)
    # The record's name is bound in as associated data: a sealed key moved to another
    # record does not open.
    sealed = AESGCM(_sealing_key(token)).encrypt(nonce, data, name.encode())
    return base64.b64encode(nonce + sealed).decode()


def unseal(token: str, name: str, text: str) -> bytes:
    raw = base64.b64decode(text)
    try:
        return AESGCM(_sealing_key(token)).decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:],
                                                   name.encode())
    except InvalidTag:
        raise AccessDenied(SIGNED_OUT) from None
