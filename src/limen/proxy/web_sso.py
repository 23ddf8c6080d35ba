"""HTTPS routes for single sign-on: the connectors, the OIDC flow, the LDAP sign-in.

``GET /v1/sso/oidc/callback`` is the redirect URI to register with an OpenID Connect
provider (``https://PROXY:3080/v1/sso/oidc/callback``); the browser arrives there from the
provider and leaves for the CLI's one-time localhost listener. Every other route is
called by the CLI (or a sign-in page) and answers JSON.
"""

from typing import Any

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, Field

from limen.durations import parse_duration
from limen.proxy.web_errors import ANONYMOUS, errors


class ConnectorOut(BaseModel):
    name: str
    kind: str
    display: str
    default: bool
    second_factor: str  # none, or totp


class OIDCStartRequest(BaseModel):
    connector: str | None = Field(default=None, max_length=256)
    public_key: str = Field(max_length=16384)
    # The CLI's listener: http://127.0.0.1:PORT/PATH (or [::1], localhost).
    client_callback: str = Field(max_length=512)
    # SHA-256 (hex) of a secret the CLI keeps until it redeems.
    client_nonce_hash: str = Field(min_length=64, max_length=64)
    ttl: str | None = Field(default=None, max_length=32)


class OIDCStartOut(BaseModel):
    auth_url: str
    state: str
    expires: str


class RedeemRequest(BaseModel):
    state: str = Field(max_length=256)
    code: str = Field(max_length=256)
    client_nonce: str = Field(max_length=256)
    # Hex of an SSH signature, by the key the certificate is for, over
    # "limen-sso-redeem" NUL state NUL code.
    signature: str = Field(max_length=4096)


class LDAPLoginRequest(BaseModel):
    connector: str | None = Field(default=None, max_length=256)
    user: str = Field(max_length=256)
    password: str = Field(max_length=1024)
    otp: str = Field(default="", max_length=16)
    public_key: str = Field(max_length=16384)
    ttl: str | None = Field(default=None, max_length=32)


def add_routes(app: FastAPI, Anonymous: Any, login_json: Any) -> None:  # noqa: N803
    @app.get("/v1/sso/connectors", responses=errors(429))
    async def list_connectors(api: Anonymous) -> list[ConnectorOut]:
        return [ConnectorOut(name=c.name, kind=c.kind, display=c.display, default=c.default,
                             second_factor=c.second_factor)
                for c in await api.list_connectors()]

    @app.post("/v1/sso/oidc/start", responses=errors(*ANONYMOUS, 404, 502))
    async def oidc_start(body: OIDCStartRequest, api: Anonymous) -> OIDCStartOut:
        started = await api.sso_oidc_start(body.connector, body.public_key,
                                           body.client_callback, body.client_nonce_hash,
                                           body.ttl)
        return OIDCStartOut(auth_url=started.auth_url, state=started.state,
                            expires=started.expires.isoformat())

    @app.get("/v1/sso/oidc/callback", response_class=RedirectResponse, status_code=303,
             responses={303: {"description": "On to the CLI's callback, with a one-time "
                                             "code or the reason the sign-in failed."},
                        **errors(403, 429)})
    async def oidc_callback(api: Anonymous, state: str = "", code: str = "",
                            error: str = "", error_description: str = "") -> RedirectResponse:
        reason = f"{error} ({error_description})" if error and error_description else error
        target = await api.sso_oidc_callback(state[:256], code[:2048], reason[:500])
        return RedirectResponse(target, status_code=303)

    @app.post("/v1/sso/redeem", responses=errors(*ANONYMOUS))
    async def redeem(body: RedeemRequest, api: Anonymous) -> dict[str, Any]:
        result = await api.sso_redeem(body.state, body.code, body.client_nonce, body.signature)
        return login_json(result)

    @app.post("/v1/sso/ldap/login", responses=errors(*ANONYMOUS, 404, 502))
    async def ldap_login(body: LDAPLoginRequest, api: Anonymous) -> dict[str, Any]:
        result = await api.sso_ldap_login(body.connector, body.user, body.password, body.otp,
                                          body.public_key,
                                          parse_duration(body.ttl) if body.ttl else None)
        return login_json(result)
