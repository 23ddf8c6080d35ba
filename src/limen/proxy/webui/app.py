"""The web UI as an ASGI app of its own, mounted on the proxy's HTTPS app at ``/web``.

Pages are rendered on the server (Jinja2) and enhanced by small ES modules; the only
third-party code is xterm.js (vendored under static/vendor, see scripts/web-assets).
Errors become pages: no session sends the person to sign in (saying why, when the
session ended), a cross-site request is refused with 403, and any other Limen error is
its sentence under its status.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from limen.errors import LimenError
from limen.proxy.webui import (
    pages_admin,
    pages_audit,
    pages_auth,
    pages_nodes,
    pages_sso,
    pages_terminal,
    security,
)
from limen.proxy.webui.context import HERE, PREFIX, CrossSite, NeedsSignIn, WebUIState, render
from limen.proxy.webui.pages_auth import login_page, safe_next


class CachedStatic(StaticFiles):
    """Static files revalidated by ETag (cheap on loopback, never stale after an
    upgrade), under the pages' policy rather than the API's."""

    def file_response(self, *args, **kwargs) -> Response:  # type: ignore[no-untyped-def]
        response = super().file_response(*args, **kwargs)
        response.headers["cache-control"] = "no-cache"
        response.headers["content-security-policy"] = security.page_csp()
        return response


def create_webui(state: WebUIState) -> FastAPI:
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", CachedStatic(directory=str(HERE / "static")), name="static")

    @app.get("/")
    async def home() -> Response:
        return RedirectResponse(f"{PREFIX}/nodes", status_code=303)

    for pages in (pages_auth, pages_sso, pages_nodes, pages_terminal, pages_audit, pages_admin):
        pages.add_routes(app, state)
    _error_pages(app, state)
    return app


def _error_pages(app: FastAPI, state: WebUIState) -> None:
    @app.exception_handler(NeedsSignIn)
    async def needs_sign_in(request: Request, exc: NeedsSignIn) -> Response:
        if not exc.reason and request.method == "GET":
            return RedirectResponse(f"{PREFIX}/login?next={safe_next(exc.next_path)}",
                                    status_code=303)
        response = await login_page(state, request, status=401, error=exc.reason,
                              next_path=exc.next_path)
        response.delete_cookie(security.SESSION_COOKIE, path="/", secure=True,
                               httponly=True, samesite="strict")
        return response

    @app.exception_handler(CrossSite)
    async def cross_site(request: Request, exc: CrossSite) -> Response:
        return render(state, request, "message.html", status=403,
                      title="Request refused", message=str(exc))

    @app.exception_handler(LimenError)
    async def limen_error(request: Request, exc: LimenError) -> Response:
        return render(state, request, "message.html", status=exc.http_status,
                      title="That did not work", message=exc.message)
