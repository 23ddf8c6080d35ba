"""Sign in, sign out, and signing up (or resetting) from an invite link.

The same path as ``limen login`` and ``limen signup``: the facade's login and signup,
with their lockout, rate limit and audit events. A successful sign-in sets the session
cookie (HttpOnly, Secure, SameSite=Strict, ``__Host-`` prefixed, no lifetime of its own:
the server-side session ends with the certificate) and goes where the person was going.
"""

from __future__ import annotations

from typing import Annotated

import qrcode
import qrcode.image.svg
from fastapi import FastAPI, Form, Request
from fastapi.responses import RedirectResponse, Response

from limen.errors import BadParameter, LimenError
from limen.proxy.webui import security
from limen.proxy.webui.context import (
    PREFIX,
    NeedsSignIn,
    WebUIState,
    anonymous,
    check_form,
    find_visitor,
    public,
    render,
)
from limen.proxy.webui.terminals import end_web_session_terminals

NOTICES = {
    "signed_out": "You are signed out.",
    "signed_up": "Your account is ready. Sign in with the next code your authenticator "
                 "app shows (each code works once).",
}
Text = Annotated[str, Form(max_length=1024)]
Code = Annotated[str, Form(max_length=16)]
Token = Annotated[str, Form(max_length=256)]


def safe_next(path: str | None) -> str:
    """Only a page of this UI: never another site (no open redirect)."""
    if path and path.startswith(PREFIX + "/") and not path.startswith("//") and "\\" not in path:
        return path
    return PREFIX + "/nodes"


def qr_svg(uri: str) -> str:
    """The otpauth URI as an inline SVG (presentation attributes only: CSP allows it)."""
    image = qrcode.make(uri, image_factory=qrcode.image.svg.SvgPathImage, border=2)
    svg = image.to_string(encoding="unicode")
    start = svg.index("<svg")
    return svg[start:].replace(
        "<svg ", '<svg role="img" aria-label="QR code for your authenticator app" '
                 'class="qr" ', 1)


async def login_page(state: WebUIState, request: Request, *, status: int = 200,
                     error: str = "", user: str = "", notice: str = "",
                     next_path: str = "") -> Response:
    """The sign-in form; ``connectors`` are other ways to sign in (single sign-on), one
    button each, as the facade lists them."""
    return render(state, request, "login.html", status=status, error=error, username=user,
                  notice=notice, next=safe_next(next_path or None),
                  connectors=await public(state, request).list_connectors(),
                  title="Sign in")


def start_session(response: Response, token: str) -> Response:
    """The session cookie on a response that ends a sign-in (the form's token is spent)."""
    response.set_cookie(security.SESSION_COOKIE, token, httponly=True, secure=True,
                        samesite="strict", path="/")
    response.delete_cookie(security.FORM_COOKIE, path="/", secure=True, httponly=True,
                           samesite="strict")
    return response


def add_routes(app: FastAPI, state: WebUIState) -> None:
    @app.get("/login")
    async def login_form(request: Request, next: str = "", notice: str = "",
                         user: str = "") -> Response:
        if request.cookies.get(security.SESSION_COOKIE):
            try:
                await find_visitor(state, request)
                return RedirectResponse(safe_next(next), status_code=303)
            except NeedsSignIn:
                pass  # no good session: the form
        return await login_page(state, request, notice=NOTICES.get(notice, ""), user=user[:256],
                          next_path=next)

    @app.post("/login")
    async def login(request: Request, username: Text, password: Text, otp: Code,
                    csrf_token: Token = "", next: Text = "") -> Response:
        await check_form(state, request, None, csrf_token)
        try:
            session = await anonymous(state, request).web_sign_in(
                username.strip(), password, otp.strip())
        except LimenError as exc:
            return await login_page(state, request, status=exc.http_status, error=exc.message,
                              user=username, next_path=next)
        return start_session(RedirectResponse(safe_next(next), status_code=303),
                             session.token)

    @app.post("/logout")
    async def logout(request: Request, csrf_token: Token = "") -> Response:
        visitor = await find_visitor(state, request)
        await check_form(state, request, visitor, csrf_token)
        await visitor.api.web_sign_out(visitor.session.token)
        end_web_session_terminals(state.jump(), visitor.session.id, "limen: you signed out")
        response = RedirectResponse(f"{PREFIX}/login?notice=signed_out", status_code=303)
        response.delete_cookie(security.SESSION_COOKIE, path="/", secure=True, httponly=True,
                               samesite="strict")
        return response

    async def invite_page(request: Request, token: str, *, status: int = 200,
                          error: str = "") -> Response:
        try:
            challenge = await anonymous(state, request).signup_start(token)
        except LimenError as exc:
            return render(state, request, "message.html", status=exc.http_status,
                          title="This link does not work", message=exc.message)
        return render(state, request, "invite.html", status=status, error=error,
                      title="Set up your account" if challenge.purpose == "signup"
                      else "Reset your password",
                      challenge=challenge, qr=qr_svg(challenge.otpauth_uri), token=token)

    @app.get("/invite/{token}")
    async def invite(request: Request, token: str) -> Response:
        return await invite_page(request, token)

    @app.get("/reset/{token}")
    async def reset(request: Request, token: str) -> Response:
        return await invite_page(request, token)

    async def finish_signup(request: Request, token: str, password: str, password2: str,
                            otp: str, csrf_token: str) -> Response:
        await check_form(state, request, None, csrf_token)
        try:
            if password != password2:
                raise BadParameter("the two passwords differ; type the same one twice")
            user = await anonymous(state, request).signup_finish(token, password, otp.strip())
        except LimenError as exc:
            return await invite_page(request, token, status=exc.http_status, error=exc.message)
        return RedirectResponse(f"{PREFIX}/login?notice=signed_up&user={user}",
                                status_code=303)

    @app.post("/invite/{token}")
    async def invite_finish(request: Request, token: str, password: Text, password2: Text,
                            otp: Code, csrf_token: Token = "") -> Response:
        return await finish_signup(request, token, password, password2, otp, csrf_token)

    @app.post("/reset/{token}")
    async def reset_finish(request: Request, token: str, password: Text, password2: Text,
                           otp: Code, csrf_token: Token = "") -> Response:
        return await finish_signup(request, token, password, password2, otp, csrf_token)
