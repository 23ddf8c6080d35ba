"""The proxy's HTTPS API: ping, signup, login, and admin actions behind RBAC.

Errors are JSON `{"error": {"kind", "message"}}` with the status from errors.py;
never a stack trace.
"""

import logging
from dataclasses import dataclass
from typing import Annotated, Any

from cryptography.hazmat.primitives.serialization import Encoding
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError

import limen
from limen.auth.ca import authorized_keys_line, known_hosts_line, spki_pin
from limen.auth.identity import Identity
from limen.auth.server import AuthServer
from limen.durations import parse_duration
from limen.errors import AccessDenied, LimenError
from limen.proxy import web_audit, web_nodes, web_resources
from limen.proxy.ratelimit import RateLimiter
from limen.tunnel.registry import TunnelDirectory

log = logging.getLogger(__name__)


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
    return request.client.host if request.client else ""


def create_app(state: WebState) -> FastAPI:
    app = FastAPI(title="Limen", version=limen.__version__, docs_url=None, redoc_url=None)
    _install_error_handlers(app)

    def unauthenticated(request: Request) -> None:
        state.limiter.take(_remote(request))

    async def identity(request: Request) -> Identity:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            state.limiter.take(_remote(request))
            raise AccessDenied("this request needs a login: run limen login")
        return await state.auth.identity_for_token(token.strip(), _remote(request))

    Caller = Annotated[Identity, Depends(identity)]
    Limited = Depends(unauthenticated)

    @app.get("/v1/ping")
    async def ping() -> dict[str, Any]:
        cas = state.auth.ctx.cas
        return {
            "cluster": state.auth.cluster_name,
            "version": limen.__version__,
            "host_ca": known_hosts_line(cas.host_ca),
            "user_ca": authorized_keys_line(cas.user_ca),
            "tls_ca": cas.tls_ca_cert.public_bytes(Encoding.PEM).decode(),
            "ca_pin": spki_pin(cas.tls_ca_cert),
            "ssh_proxy_addr": state.ssh_proxy_addr,
            "tunnel_addr": state.tunnel_addr,
            "tunnel_tls": state.tunnel_tls,
            "tunnel_host_key": state.tunnel_host_key,
            "server_time": state.auth.ctx.clock.now().isoformat(),  # TOTP steps follow it
        }

    @app.post("/v1/signup/start", dependencies=[Limited])
    async def signup_start(body: SignupStart, request: Request) -> dict[str, Any]:
        challenge = await state.auth.users.signup_start(body.token, _remote(request))
        return {
            "user": challenge.user,
            "totp_secret": challenge.totp_secret,
            "otpauth_uri": challenge.otpauth_uri,
            "purpose": challenge.purpose,
            "server_time": state.auth.ctx.clock.now().isoformat(),
        }

    @app.post("/v1/signup/finish", dependencies=[Limited])
    async def signup_finish(body: SignupFinish, request: Request) -> dict[str, Any]:
        user = await state.auth.users.signup_finish(
            body.token, body.password, body.otp, _remote(request)
        )
        return {"user": user, "cluster": state.auth.cluster_name}

    @app.post("/v1/login", dependencies=[Limited])
    async def login(body: LoginRequest, request: Request) -> dict[str, Any]:
        ttl = parse_duration(body.ttl) if body.ttl else None
        result = await state.auth.login_service.login(
            body.user, body.password, body.otp, body.public_key, ttl, _remote(request)
        )
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

    @app.get("/v1/whoami")
    async def whoami(caller: Caller) -> dict[str, Any]:
        checker = await state.auth.checker_for(caller)
        return {
            "user": caller.user,
            "roles": checker.role_names,
            "logins": checker.logins(),
            "options": checker.options_summary(),
            "builtin": caller.builtin,
        }

    _user_routes(app, state, Caller)
    web_nodes.add_routes(app, state.auth, identity, Limited, lambda: state.tunnels)
    web_resources.add_routes(app, state.auth, identity)
    web_audit.add_routes(app, state.auth, identity)
    return app


def _user_routes(app: FastAPI, state: WebState, Caller: Any) -> None:
    auth = state.auth

    @app.get("/v1/users")
    async def list_users(caller: Caller) -> list[dict[str, Any]]:
        await auth.authorize(caller, "user", "list")
        return [u.to_public() for u in await auth.users.list()]

    @app.post("/v1/users")
    async def create_user(body: UserCreate, caller: Caller) -> dict[str, Any]:
        await auth.authorize(caller, "user", "create")
        ttl = parse_duration(body.ttl) if body.ttl else None
        issued = await auth.users.create(caller, body.name, body.roles, body.logins, ttl)
        return _token_json(issued)

    @app.delete("/v1/users/{name}")
    async def delete_user(name: str, caller: Caller) -> dict[str, Any]:
        await auth.authorize(caller, "user", "delete")
        await auth.users.delete(caller, name)
        return {"deleted": name}

    @app.post("/v1/users/{name}/reset")
    async def reset_user(name: str, body: TokenTTL, caller: Caller) -> dict[str, Any]:
        await auth.authorize(caller, "user", "update")
        ttl = parse_duration(body.ttl) if body.ttl else None
        return _token_json(await auth.users.reset(caller, name, ttl))

    @app.post("/v1/users/{name}/unlock")
    async def unlock_user(name: str, caller: Caller) -> dict[str, Any]:
        await auth.authorize(caller, "user", "update")
        return (await auth.users.unlock(caller, name)).to_public()


def _token_json(issued: Any) -> dict[str, Any]:
    return {
        "user": issued.user,
        "token": issued.token,
        "purpose": issued.purpose,
        "expires": issued.expires.isoformat(),
    }


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(LimenError)
    async def limen_error(_request: Request, exc: LimenError) -> JSONResponse:
        return JSONResponse(exc.to_json(), status_code=exc.http_status)

    @app.exception_handler(RequestValidationError)
    async def bad_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        field = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        message = f"invalid request: field '{field}': {first.get('msg', 'is not valid')}"
        return JSONResponse(
            {"error": {"kind": "bad_parameter", "message": message}}, status_code=400
        )

    @app.exception_handler(ValidationError)
    async def invalid_model(_request: Request, exc: ValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        field = ".".join(str(p) for p in first.get("loc", ()))
        message = f"invalid {exc.title}: field '{field}': {first.get('msg', 'is not valid')}"
        return JSONResponse(
            {"error": {"kind": "bad_parameter", "message": message}}, status_code=400
        )

    @app.exception_handler(Exception)
    async def internal(_request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error: %s", type(exc).__name__, exc_info=exc)
        return JSONResponse(
            {"error": {"kind": "error", "message": "internal error; see the server log"}},
            status_code=500,
        )
