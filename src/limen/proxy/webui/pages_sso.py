"""Single sign-on from the sign-in page: a button per connector (limen.auth.web_sso).

OpenID Connect: ``/web/sso/oidc/NAME`` starts a sign-in and sends the browser to the
provider with a flow cookie; the provider's redirect comes back through the API's
callback to ``/web/sso/finish``. The flow cookie is SameSite=Lax, not Strict: it must
travel on that cross-site redirect from the provider, and it is useless alone (it opens
one sign-in's sealed key, once). For the same reason the finish page does not redirect:
a Strict session cookie set at the end of a cross-site redirect chain would not be sent
on its next hop, so the page moves on by a same-site refresh.

LDAP: ``/web/sso/ldap/NAME`` is a form for the directory's user name and password (and a
TOTP code when the connector asks for one), CSRF-protected like the password sign-in.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response

from limen.errors import LimenError
from limen.proxy.webui.context import PREFIX, WebUIState, anonymous, check_form, public, render
from limen.proxy.webui.pages_auth import Code, Text, Token, login_page, start_session

FLOW_COOKIE = "__Host-limen_sso"
FLOW_SECONDS = 600  # as long as the auth service keeps the sign-in


def _end_flow(response: Response) -> Response:
    response.delete_cookie(FLOW_COOKIE, path="/", secure=True, httponly=True, samesite="lax")
    return response


def add_routes(app: FastAPI, state: WebUIState) -> None:
    @app.get("/sso/oidc/{name}")
    async def oidc_start(request: Request, name: str) -> Response:
        flow = await anonymous(state, request).web_sso_oidc_start(name[:256],
                                                                   f"{PREFIX}/sso/finish")
        response = RedirectResponse(flow.auth_url, status_code=303)
        response.set_cookie(FLOW_COOKIE, flow.cookie, max_age=FLOW_SECONDS, httponly=True,
                            secure=True, samesite="lax", path="/")
        return response

    @app.get("/sso/finish")
    async def oidc_finish(request: Request, code: str = "") -> Response:
        api, cookie = anonymous(state, request), request.cookies.get(FLOW_COOKIE, "")
        try:
            if not code:  # refused: the reason is kept for the browser holding the cookie
                reason = await api.web_sso_oidc_refusal(cookie)
                return _end_flow(await login_page(state, request, status=403, error=reason))
            session = await api.web_sso_oidc_finish(cookie, code[:256])
        except LimenError as exc:
            page = await login_page(state, request, status=exc.http_status, error=exc.message)
            return _end_flow(page)
        page = render(state, request, "sso_done.html", title="Signed in",
                      target=f"{PREFIX}/nodes")
        return _end_flow(start_session(page, session.token))

    async def ldap_page(request: Request, name: str, *, status: int = 200, error: str = "",
                        user: str = "") -> Response:
        connector = await public(state, request).login_connector(name[:256], "ldap")
        return render(state, request, "sso_ldap.html", status=status, error=error,
                      username=user, connector=connector,
                      title=f"Sign in with {connector.display}")

    @app.get("/sso/ldap/{name}")
    async def ldap_form(request: Request, name: str) -> Response:
        return await ldap_page(request, name)

    @app.post("/sso/ldap/{name}")
    async def ldap_sign_in(request: Request, name: str, username: Text, password: Text,
                           otp: Code = "", csrf_token: Token = "") -> Response:
        await check_form(state, request, None, csrf_token)
        try:
            session = await anonymous(state, request).web_sso_ldap_sign_in(
                name[:256], username.strip(), password, otp.strip())
        except LimenError as exc:
            return await ldap_page(request, name, status=exc.http_status, error=exc.message,
                                   user=username)
        return start_session(RedirectResponse(f"{PREFIX}/nodes", status_code=303),
                             session.token)


