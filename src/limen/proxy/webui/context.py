"""What every page handler needs: who is asking (through the facade), and how to answer.

A page is served to a ``Visitor`` (a valid web session, its ``AuthFacade`` and current
roles) or, for sign-in and signup, to an anonymous caller whose requests count against
the same rate limit as the API's unauthenticated routes. Every action goes through the
facade, exactly as the HTTPS API's handlers do: the UI adds no checks of its own and
skips none.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

import limen
from limen.audit import schema
from limen.auth.facade import AuthFacade
from limen.auth.identity import Identity
from limen.auth.server import AuthServer
from limen.auth.web_sessions import SignedIn, csrf_matches
from limen.errors import AccessDenied
from limen.proxy.ratelimit import RateLimiter
from limen.proxy.ssh_jump import JumpHost
from limen.proxy.webui import security
from limen.rbac import AccessChecker

PREFIX = "/web"
HERE = Path(__file__).parent
CROSS_SITE = ("this request did not come from a page of this site, or the page is out of "
              "date; reload the page and try again")


@dataclass
class WebUIState:
    auth: AuthServer
    limiter: RateLimiter
    # The proxy's jump host, once it listens (it starts after the HTTPS app is built).
    jump: Callable[[], JumpHost | None]
    templates: Jinja2Templates = field(init=False)

    def __post_init__(self) -> None:
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        self.templates.env.globals.update(prefix=PREFIX, version=limen.__version__)


# Pages in the navigation bar, and the rule that shows each (None: everyone signed in).
NAV: list[tuple[str, str, tuple[str, str] | None]] = [
    ("Nodes", "/nodes", None),
    ("Sessions", "/sessions", None),
    ("Audit", "/audit", ("event", "list")),
    ("Recordings", "/recordings", ("recording", "list")),
    ("Users", "/users", ("user", "list")),
    ("Roles", "/roles", ("role", "list")),
    ("Tokens", "/tokens", ("token", "list")),
    ("Locks", "/locks", ("lock", "list")),
]


@dataclass
class Visitor:
    """A signed-in person, for one request."""

    session: SignedIn
    api: AuthFacade
    checker: AccessChecker

    @property
    def user(self) -> str:
        return self.session.user

    def may(self, kind: str, verb: str) -> bool:
        try:
            self.checker.check_rule(kind, verb)
        except AccessDenied:
            return False
        return True

    def nav(self) -> list[tuple[str, str]]:
        return [(label, PREFIX + path) for label, path, rule in NAV
                if rule is None or self.may(*rule)]


class NeedsSignIn(Exception):  # noqa: N818 - a signal to the handler, not an error
    """No valid web session: show the sign-in page (with ``reason`` when it ended)."""

    def __init__(self, next_path: str, reason: str = "") -> None:
        super().__init__(reason)
        self.next_path = next_path
        self.reason = reason


class CrossSite(Exception):  # noqa: N818
    """A state-changing request without this origin's Origin or the right CSRF token."""


def remote_of(request: Any) -> str:
    """The client's address (a trusted proxy's X-Forwarded-For is resolved by uvicorn)."""
    return request.client.host if request.client else ""


def public(state: WebUIState, request: Any) -> AuthFacade:
    """A caller without a session (what it may do, it proves itself: a cookie, a token)."""
    return AuthFacade(state.auth, Identity(user="", remote_addr=remote_of(request)))


def anonymous(state: WebUIState, request: Any) -> AuthFacade:
    """A caller without a session acting (signing in, signing up): counted by the
    unauthenticated rate limit, as the API's anonymous routes are."""
    state.limiter.take(remote_of(request))
    return public(state, request)


async def find_visitor(state: WebUIState, request: Any) -> Visitor:
    """The visitor a session cookie names; NeedsSignIn when there is none (any longer).
    A cookie that names no good session counts against the rate limit, as a wrong
    bearer token does on the API; a good one does not."""
    token = request.cookies.get(security.SESSION_COOKIE)
    path = request.url.path
    if not token:
        raise NeedsSignIn(path)
    try:
        session = await public(state, request).web_session(token)
    except AccessDenied as exc:
        state.limiter.take(remote_of(request))
        raise NeedsSignIn(path, exc.message) from None
    api = AuthFacade(state.auth, session.identity)
    return Visitor(session, api, await api.checker())


async def check_form(state: WebUIState, request: Request, visitor: Visitor | None,
                     offered: str | None) -> None:
    """Origin and CSRF token of a state-changing request; refusals are audited."""
    if visitor is not None:
        good = csrf_matches(visitor.session.token, offered)
    else:
        good = security.form_token_matches(request.cookies.get(security.FORM_COOKIE), offered)
    if security.same_origin(request.headers) and good:
        return
    why = "no CSRF token, or a wrong one" if security.same_origin(request.headers) else (
        f"Origin {request.headers.get('origin')!r} is not this site")
    await state.auth.ctx.audit.emit(schema.AccessRefused(
        user=visitor.user if visitor else "", resource="web", verb=request.method.lower(),
        error=f"cross-site request to {request.url.path} refused: {why}",
        addr_remote=remote_of(request) or None,
    ))
    raise CrossSite(CROSS_SITE)


def render(state: WebUIState, request: Request, template: str, *, status: int = 200,
           visitor: Visitor | None = None, terminal: bool = False,
           **values: Any) -> HTMLResponse:
    """A page, with its Content-Security-Policy (a style nonce for terminal pages)."""
    nonce = security.new_nonce() if terminal else None
    form_token = request.cookies.get(security.FORM_COOKIE) or security.new_nonce()
    context = {
        "visitor": visitor,
        "nav": visitor.nav() if visitor else [],
        "csrf": visitor.session.csrf_token if visitor else form_token,
        "style_nonce": nonce,
        "path": request.url.path,
        **values,
    }
    response = state.templates.TemplateResponse(request, template, context, status_code=status)
    response.headers["content-security-policy"] = security.page_csp(nonce)
    response.headers["cache-control"] = "no-store"
    if visitor is None and request.cookies.get(security.FORM_COOKIE) != form_token:
        response.set_cookie(security.FORM_COOKIE, form_token, httponly=True, secure=True,
                            samesite="strict", path="/")
    return response

