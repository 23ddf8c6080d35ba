"""The proxy's HTTPS API: ping, signup, login, and admin actions behind RBAC; the web UI
is mounted beside it at ``/web`` (limen.proxy.webui) and ``/`` leads there.

Every handler acts through an ``AuthFacade`` for its caller (limen.auth.facade), which
checks and then delegates; the handlers only translate HTTP to calls and back.
Errors are JSON ``{"error": {"kind", "message"}}`` (limen.proxy.web_errors).
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import RedirectResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

import limen
from limen.auth.facade import AuthFacade
from limen.auth.identity import Identity
from limen.auth.login import LoginResult
from limen.auth.server import AuthServer
from limen.durations import parse_duration
from limen.errors import AccessDenied
from limen.proxy import web_audit, web_cluster, web_errors, web_nodes, web_resources, web_sso
from limen.proxy.join_gate import JoinGate
from limen.proxy.ratelimit import RateLimiter
from limen.proxy.ssh_jump import JumpHost
from limen.proxy.web_errors import ANONYMOUS, SIGNED_IN, errors
from limen.proxy.webui import SecurityHeaders, WebUIState, create_webui
from limen.tunnel.registry import TunnelDirectory


@dataclass
class WebState:
    auth: AuthServer
    limiter: RateLimiter
    # The jump host's public host:port; set once it listens (it starts after this API).
    ssh_proxy_addr: str = ""
    # The tunnel server's host:port and the proxy's SSH host key, for node agents; and
    # the live tunnels, for node listings. Set once the tunnel server listens.
    tunnel_addr: str = ""
    tunnel_tls: bool = False  # the tunnel address is the multiplexed web port (TLS + ALPN)
    tunnel_host_key: str = ""
    tunnels: TunnelDirectory | None = None
    # The jump host, through which browser terminals reach nodes; set once it listens.
    jump: JumpHost | None = None
    # Every live proxy of the cluster (this one too) as node agents should dial their
    # tunnel servers; kept by the instance heartbeat (limen.auth.instances).
    tunnel_peers: list[dict[str, Any]] = field(default_factory=list)
    # The proxies (their web addresses) that hold a node's tunnel, this one included.
    proxies_of: Callable[[str], list[str]] = lambda _node_id: []
    # How many node joins run at once; the others are told when to come back.
    joins: JoinGate = field(default_factory=JoinGate)


class SignupStart(BaseModel):
    token: str = Field(max_length=256)


class SignupFinish(BaseModel):
    token: str = Field(max_length=256)
    password: str = Field(max_length=1024)
    otp: str = Field(max_length=16)


class LoginRequest(BaseModel):
    user: str = Field(max_length=256)
    password: str = Field(max_length=1024)
    otp: str = Field(max_length=16)
    public_key: str = Field(max_length=16384)
    ttl: str | None = Field(default=None, max_length=32)


class UserCreate(BaseModel):
    name: str = Field(max_length=256)
    roles: list[str] = Field(default_factory=list)
    logins: list[str] = Field(default_factory=list)
    ttl: str | None = None


class TokenTTL(BaseModel):
    ttl: str | None = None


def _remote(request: Request) -> str:
    """The client's address: the peer's, or the forwarded client's when the peer is a
    trusted proxy (limen.proxy.https resolves that before this app sees the request)."""
    return request.client.host if request.client else ""


def ttl_of(text: str | None) -> timedelta | None:
    return parse_duration(text) if text else None


def create_app(state: WebState) -> FastAPI:
    app = FastAPI(title="Limen", version=limen.__version__, docs_url=None, redoc_url=None)
    web_errors.install_error_handlers(app)
    web_errors.document_errors(app)
    bearer = HTTPBearer(auto_error=False, description="the api_token from POST /v1/login")

    def anonymous(request: Request) -> AuthFacade:
        """A caller without a login, for routes that carry their own credential."""
        remote = _remote(request)
        state.limiter.take(remote)
        return AuthFacade(state.auth, Identity(user="", remote_addr=remote))

    async def signed_in(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> AuthFacade:
        remote = _remote(request)
        if credentials is None or not credentials.credentials.strip():
            state.limiter.take(remote)  # no login: counted like any anonymous request
            raise AccessDenied("this request needs a login: run limen login")
        identity = await state.auth.identity_for_token(credentials.credentials.strip(), remote)
        return AuthFacade(state.auth, identity)

    Caller = Annotated[AuthFacade, Depends(signed_in)]
    Anonymous = Annotated[AuthFacade, Depends(anonymous)]

    @app.get("/v1/ping")
    async def ping() -> dict[str, Any]:
        trust = AuthFacade(state.auth, Identity(user="")).trust()  # public: no caller
        return {
            "cluster": trust.cluster,
            "version": limen.__version__,
            "host_ca": trust.host_ca,
            "user_ca": trust.user_ca,
            "tls_ca": trust.tls_ca,
            "ca_pin": trust.ca_pin,
            "ssh_proxy_addr": state.ssh_proxy_addr,
            "tunnel_addr": state.tunnel_addr,
            "tunnel_tls": state.tunnel_tls,
            "tunnel_host_key": state.tunnel_host_key,
            "tunnel_peers": state.tunnel_peers,
            "server_time": state.auth.ctx.clock.now().isoformat(),  # TOTP steps follow it
        }

    @app.post("/v1/signup/start", responses=errors(*ANONYMOUS))
    async def signup_start(body: SignupStart, api: Anonymous) -> dict[str, Any]:
        challenge = await api.signup_start(body.token)
        return {
            "user": challenge.user,
            "totp_secret": challenge.totp_secret,
            "otpauth_uri": challenge.otpauth_uri,
            "purpose": challenge.purpose,
            "sso_connector": challenge.sso_connector,
            "server_time": api.clock.now().isoformat(),
        }

    @app.post("/v1/signup/finish", responses=errors(*ANONYMOUS))
    async def signup_finish(body: SignupFinish, api: Anonymous) -> dict[str, Any]:
        user = await api.signup_finish(body.token, body.password, body.otp)
        return {"user": user, "cluster": api.trust().cluster}

    @app.post("/v1/login", responses=errors(*ANONYMOUS))
    async def login(body: LoginRequest, api: Anonymous) -> dict[str, Any]:
        result = await api.login(body.user, body.password, body.otp, body.public_key,
                                 ttl_of(body.ttl))
        return login_json(result)

    def login_json(result: LoginResult) -> dict[str, Any]:
        """What a login (local or single sign-on) answers."""
        return {
            "user": result.user,
            "cert": result.cert,
            "valid_before": result.valid_before.isoformat(),
            "principals": result.principals,
            "roles": result.roles,
            "host_ca": result.host_ca,
            "cluster": result.cluster,
            "api_token": result.api_token,
            "ssh_proxy_addr": state.ssh_proxy_addr,
        }

    @app.get("/v1/whoami", responses=errors(*SIGNED_IN))
    async def whoami(api: Caller) -> dict[str, Any]:
        checker = await api.whoami()
        return {
            "user": api.caller.user,
            "roles": checker.role_names,
            "logins": checker.logins(),
            "options": checker.options_summary(),
            "builtin": api.caller.builtin,
        }

    _user_routes(app, Caller)
    web_nodes.add_routes(app, Caller, Anonymous, lambda: state.tunnels,
                         lambda node_id: state.proxies_of(node_id),
                         lambda: {"tunnel_host_key": state.tunnel_host_key,
                                  "tunnel_peers": state.tunnel_peers}, state.joins)
    web_resources.add_routes(app, Caller)
    web_cluster.add_routes(app, Caller)
    web_audit.add_routes(app, Caller)
    web_sso.add_routes(app, Anonymous, login_json)
    _mount_webui(app, state)
    return app


def _mount_webui(app: FastAPI, state: WebState) -> None:
    """The web UI at /web (not in the API's schema), and the headers every response of
    this port carries (limen.proxy.webui.security)."""
    app.add_middleware(SecurityHeaders)
    app.mount("/web", create_webui(WebUIState(state.auth, state.limiter, lambda: state.jump)))

    @app.get("/", include_in_schema=False)
    async def home() -> RedirectResponse:
        return RedirectResponse("/web/", status_code=303)


def _user_routes(app: FastAPI, Caller: Any) -> None:
    @app.get("/v1/users", responses=errors(*SIGNED_IN))
    async def list_users(api: Caller) -> list[dict[str, Any]]:
        return [u.to_public() for u in await api.list_users()]

    @app.post("/v1/users", responses=errors(400, 404, 409, *SIGNED_IN))
    async def create_user(body: UserCreate, api: Caller) -> dict[str, Any]:
        issued = await api.create_user(body.name, body.roles, body.logins, ttl_of(body.ttl))
        return _token_json(issued)

    @app.delete("/v1/users/{name}", responses=errors(404, *SIGNED_IN))
    async def delete_user(name: str, api: Caller) -> dict[str, Any]:
        await api.delete_user(name)
        return {"deleted": name}

    @app.post("/v1/users/{name}/reset", responses=errors(400, 404, *SIGNED_IN))
    async def reset_user(name: str, body: TokenTTL, api: Caller) -> dict[str, Any]:
        return _token_json(await api.reset_user(name, ttl_of(body.ttl)))

    @app.post("/v1/users/{name}/unlock", responses=errors(404, *SIGNED_IN))
    async def unlock_user(name: str, api: Caller) -> dict[str, Any]:
        return (await api.unlock_user(name)).to_public()


def _token_json(issued: Any) -> dict[str, Any]:
    return {
        "user": issued.user,
        "token": issued.token,
        "purpose": issued.purpose,
        "expires": issued.expires.isoformat(),
    }
