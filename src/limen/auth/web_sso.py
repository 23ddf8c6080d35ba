"""Single sign-on for a browser: the sign-in page's connector buttons, done by the proxy.

The browser cannot hold an SSH key or sign a redeem request, so the proxy does what
`limen login --auth` does on the person's behalf, as it does for a password sign-in
(``limen.auth.web_sessions``):

- OpenID Connect: the proxy makes a key pair and a client nonce, seals both under a
  random flow token and stores them with the sign-in; the browser gets the flow token
  (and the state) in a short-lived cookie and goes to the provider. The provider sends
  it back through ``/v1/sso/oidc/callback``, which sends it on to the web's finish page
  with a one-time exchange code. Only a browser holding the cookie of that very sign-in
  can open the sealed key and redeem: a callback URL lured into someone else's browser
  (login CSRF) or replayed does nothing.
- LDAP: the directory password (and TOTP when the connector asks for one) on a form.

Either way the certificate says ``origin@limen: web`` and becomes a web session.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
from dataclasses import dataclass

import asyncssh

from limen.auth.connectors.service import SSOService, redeem_message
from limen.auth.login import ORIGIN_WEB
from limen.auth.web_sessions import SignedIn, WebSessions, seal, unseal
from limen.errors import AccessDenied, NotFound
from limen.resources import SSORequest
from limen.resources.token import token_hash

_SEAL_NAME = "limen web sso"
FOREIGN_FLOW = ("this sign-in was not started in this browser (or has expired); start it "
                "again from the sign-in page")


@dataclass(frozen=True)
class WebFlow:
    """A started web sign-in: where to send the browser, and its cookie's value."""

    auth_url: str
    cookie: str  # "STATE.FLOW_TOKEN": both are URL-safe base64, without dots


class WebSSO:
    def __init__(self, sso: SSOService, sessions: WebSessions) -> None:
        self.sso = sso
        self.sessions = sessions

    async def start_oidc(self, connector: str, finish_url: str, remote: str) -> WebFlow:
        """``finish_url``: the web UI's page the provider's callback sends the browser on to."""
        key = WebSessions.new_key()
        flow_token, client_nonce = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        secret = json.dumps({"key": key.export_private_key("openssh").decode(),
                             "nonce": client_nonce}).encode()
        started = await self.sso.oidc_begin(
            connector, key.export_public_key("openssh").decode(), finish_url,
            hashlib.sha256(client_nonce.encode()).hexdigest(), None, remote,
            web_seal=seal(flow_token, _SEAL_NAME, secret))
        return WebFlow(started.auth_url, f"{started.state}.{flow_token}")

    async def finish_oidc(self, cookie: str, code: str, remote: str) -> SignedIn:
        """Redeem the sign-in this browser started, as the CLI would; a web session."""
        state, _, flow_token = (cookie or "").partition(".")
        _request, opened = await self._open_flow(state, flow_token)
        key, client_nonce = asyncssh.import_private_key(opened["key"]), opened["nonce"]
        signature = key.sign(redeem_message(state, code), key.sig_algorithms[0]).hex()
        result = await self.sso.redeem(state, code, client_nonce, signature, remote,
                                       origin=ORIGIN_WEB, api_token=False)
        return await self.sessions.create(result, key, remote)

    async def refusal(self, cookie: str) -> str:
        """Why the sign-in this browser started was refused (told once)."""
        state, _, flow_token = (cookie or "").partition(".")
        request, _opened = await self._open_flow(state, flow_token)
        with contextlib.suppress(NotFound):
            await self.sso.requests.delete(request.name)
        return str((request.spec.result or {}).get("error") or FOREIGN_FLOW)

    async def _open_flow(self, state: str, flow_token: str) -> tuple[SSORequest, dict[str, str]]:
        """The sign-in this cookie started, and its sealed secrets; anything else is
        refused alike, without saying which part was wrong."""
        if not state or not flow_token:
            raise AccessDenied(FOREIGN_FLOW)
        try:
            request = await self.sso.requests.get(token_hash(state))
        except NotFound:
            raise AccessDenied(FOREIGN_FLOW) from None
        if not request.spec.web_seal:  # a CLI's sign-in: its key is not the proxy's
            raise AccessDenied(FOREIGN_FLOW)
        try:
            opened = json.loads(unseal(flow_token, _SEAL_NAME, request.spec.web_seal))
        except (AccessDenied, ValueError):
            raise AccessDenied(FOREIGN_FLOW) from None
        return request, opened

    async def ldap(self, connector: str, user: str, password: str, otp: str,
                   remote: str) -> SignedIn:
        key = WebSessions.new_key()
        result = await self.sso.ldap_login(
            connector, user, password, otp, key.export_public_key("openssh").decode(), None,
            remote, origin=ORIGIN_WEB, api_token=False)
        return await self.sessions.create(result, key, remote)
