"""What every response of the HTTPS port carries, and what every state-changing web
request must show.

Headers: every response (API and UI) gets ``nosniff``, no framing, no referrer, HSTS,
same-origin opener and resource policies, and a Content-Security-Policy. The API's is
``default-src 'none'`` (it serves no page); the UI's pages get a strict one: scripts
only from this origin (no inline script, no eval, no WebAssembly), styles only from
this origin. Pages that show a terminal also allow ``<style>`` elements carrying that
response's nonce, because xterm.js builds its character-grid rules as ``<style>``
elements; our own script stamps the nonce on them (static/js/xterm_csp.js). Inline
``style`` attributes stay forbidden everywhere.

Cross-site requests: a state-changing request (a form post, a WebSocket) is accepted
only when its ``Origin`` is this very origin (``https://`` + the Host it was sent to)
and it carries the CSRF token bound to the session (or, before sign-in, the token of
the form cookie: a double submit). SameSite=Strict cookies are a third wall.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Mapping

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SESSION_COOKIE = "__Host-limen_session"  # __Host-: Secure, Path=/, no Domain, by rule
FORM_COOKIE = "__Host-limen_form"  # the double-submit token of forms before sign-in
CSRF_FIELD = "csrf_token"

BASE_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    # Not no-referrer: with it, browsers send "Origin: null" on form posts, and the
    # same-origin check below could not tell our forms from anyone else's.
    "referrer-policy": "same-origin",
    "strict-transport-security": "max-age=31536000",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
}
API_CSP = "default-src 'none'; frame-ancestors 'none'"


def page_csp(style_nonce: str | None = None) -> str:
    """The UI's policy; ``style_nonce`` for pages whose terminal needs style elements."""
    styles = "'self'" + (f" 'nonce-{style_nonce}'" if style_nonce else "")
    return (
        "default-src 'none'; script-src 'self'; "
        f"style-src {styles}; img-src 'self'; font-src 'self'; connect-src 'self'; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    )


def new_nonce() -> str:
    return secrets.token_urlsafe(18)


class SecurityHeaders:
    """ASGI middleware: the base headers on every HTTP response, and the API's CSP
    where a response did not set its own."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in BASE_HEADERS.items():
                    headers.setdefault(name, value)
                headers.setdefault("content-security-policy", API_CSP)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def own_origin(headers: Mapping[str, str]) -> str | None:
    host = headers.get("host")
    return f"https://{host}" if host else None


def same_origin(headers: Mapping[str, str]) -> bool:
    """The request says it comes from a page of this origin (browsers always send Origin
    with form posts and WebSockets; a request without one is refused)."""
    origin, own = headers.get("origin"), own_origin(headers)
    return origin is not None and own is not None and hmac.compare_digest(origin, own)


def form_token_matches(cookie: str | None, offered: str | None) -> bool:
    return bool(cookie) and bool(offered) and hmac.compare_digest(str(cookie), str(offered))
