"""The terminal page and its WebSocket (``/web/ws/terminal``).

The WebSocket is a state-changing request like a form post: its handshake must come
from this origin and carry the session cookie (else it is refused before it opens:
HTTP 403), and its first message must carry the session's CSRF token. Then the node is
dialed as the jump host dials it for ``ssh -J`` (limen.proxy.webui.node_dial), and the
session runs until either side ends it (limen.proxy.webui.terminals). ``join`` opens a
terminal that runs ``join SESSION_ID --mode MODE`` on the node of that session: the
node's session-sharing side decides whether and how the person joins.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from typing import Any

import asyncssh
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import Response
from starlette.websockets import WebSocketDisconnect

from limen.audit import schema
from limen.auth.web_sessions import csrf_matches
from limen.errors import AccessDenied, BadParameter, LimenError, NotFound
from limen.proxy.ssh_routes import JumpIdentity
from limen.proxy.webui import security
from limen.proxy.webui.context import (
    NeedsSignIn,
    Visitor,
    WebUIState,
    find_visitor,
    public,
    remote_of,
    render,
)
from limen.proxy.webui.node_dial import connect_node
from limen.proxy.webui.terminals import (
    FAILED,
    REFUSED,
    SIGNED_OUT,
    WebTerminal,
    close_reason,
    size_of,
)
from limen.resources import Session
from limen.sshauth import read_certificate

log = logging.getLogger(__name__)

JOIN_MODES = ("observer", "peer", "moderator")
HELLO_SECONDS = 10.0


def join_command(session_id: str, mode: str) -> str:
    """The agreed contract with the node's session sharing: an exec command."""
    try:
        sid = str(uuid.UUID(session_id))
    except ValueError:
        raise BadParameter("a session id is a UUID") from None
    if mode not in JOIN_MODES:
        raise BadParameter(f"the mode must be one of {', '.join(JOIN_MODES)}")
    return f"join {sid} --mode {mode}"


async def visible_session(visitor: Visitor, session_id: str) -> Session:
    """A live session the visitor may see (their own, or any with the rule to list)."""
    for session in await visitor.api.list_sessions():
        if session.name == session_id:
            return session
    raise NotFound(f"session {session_id} is not running, or you may not see it")


def add_routes(app: FastAPI, state: WebUIState) -> None:
    @app.get("/terminal")
    async def terminal_page(request: Request, node: str = "", login: str = "",
                            join: str = "", mode: str = "observer") -> Response:
        visitor = await find_visitor(state, request)
        target = node
        if join:
            join_command(join, mode)  # a malformed link fails here, with its reason
            target = (await visible_session(visitor, join)).spec.node_name
        if not target or not login:
            raise BadParameter("choose a node and a login on the nodes page")
        return render(state, request, "terminal.html", visitor=visitor, terminal=True,
                      title=f"{login}@{target}", node=node, login=login, join=join,
                      mode=mode, target=target)

    @app.websocket("/ws/terminal")
    async def terminal_socket(ws: WebSocket, node: str = "", login: str = "", join: str = "",
                              mode: str = "observer") -> None:
        visitor = await _handshake(state, ws)
        if visitor is None:
            return
        await ws.accept()
        try:
            size = await _hello(ws, visitor)
            command, target = None, node
            if join:
                command = join_command(join, mode)
                target = (await visible_session(visitor, join)).spec.node_id
            if not target or not login:
                raise BadParameter("a terminal needs a node and a login")
        except WebSocketDisconnect:
            return  # the browser left before saying hello
        except LimenError as exc:
            await _refuse(ws, REFUSED if isinstance(exc, AccessDenied) else FAILED, exc.message)
            return
        await _open_terminal(state, ws, visitor, target, login, command, size)


async def _handshake(state: WebUIState, ws: WebSocket) -> Visitor | None:
    """Same origin and a good session, or the handshake is refused (HTTP 403)."""
    if not security.same_origin(ws.headers):
        await state.auth.ctx.audit.emit(schema.AccessRefused(
            user="", resource="web", verb="terminal",
            error=f"cross-site WebSocket refused: Origin {ws.headers.get('origin')!r} is "
                  "not this site", addr_remote=remote_of(ws) or None,
        ))
        await ws.close(REFUSED)
        return None
    try:
        return await find_visitor(state, ws)
    except NeedsSignIn:
        await ws.close(SIGNED_OUT)
    except LimenError:  # the rate limit of wrong cookies
        await ws.close(REFUSED)
    return None


async def _session_ended(state: WebUIState, ws: WebSocket, token: str) -> str | None:
    """Why the terminal's web session is no longer good, or None while it is."""
    try:
        await public(state, ws).web_session(token)
    except AccessDenied as exc:
        return exc.message
    return None


async def _hello(ws: WebSocket, visitor: Visitor) -> tuple[int, int]:
    """The first message: the CSRF token and the window size."""
    try:
        text = await asyncio.wait_for(ws.receive_text(), HELLO_SECONDS)
        message = json.loads(text)
    except WebSocketDisconnect:
        raise
    except (TimeoutError, ValueError, KeyError, RuntimeError):
        raise BadParameter("the terminal did not start properly; reload the page") from None
    if not isinstance(message, dict) or not csrf_matches(visitor.session.token,
                                                         message.get("csrf")):
        raise AccessDenied("this terminal was not opened from a page of this site; "
                           "reload the page")
    return size_of(message)


async def _refuse(ws: WebSocket, code: int, message: str) -> None:
    with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):  # already gone
        await ws.send_text(json.dumps({"type": "closed", "code": code, "message": message}))
        await ws.close(code, close_reason(message))


async def _open_terminal(state: WebUIState, ws: WebSocket, visitor: Visitor, target: str,
                         login: str, command: str | None, size: tuple[int, int]) -> None:
    jump = state.jump()
    if jump is None:
        await _refuse(ws, FAILED, "this proxy does not reach nodes (no jump host runs here)")
        return
    cert = read_certificate(visitor.session.cert)
    peer = (remote_of(ws), ws.client.port if ws.client else 0)
    identity = JumpIdentity.from_cert(cert, login, peer)
    fields: dict[str, Any] = {"server_hostname": target, "user": identity.user,
                              "login": login, "addr.remote": identity.remote_addr}
    try:
        if jump.clock.now() >= identity.valid_before:
            raise AccessDenied("your web session's certificate has expired; sign in again")
        route, conn = await connect_node(
            jump, identity, target, visitor.session.private_key(),
            asyncssh.import_certificate(visitor.session.cert),
            state.auth.ctx.cas.host_ca.convert_to_public())
    except LimenError as exc:
        await jump.notify("proxy.connect", {**fields, "allowed": False, "reason": exc.message})
        await _refuse(ws, REFUSED if isinstance(exc, AccessDenied) else FAILED, exc.message)
        return
    except Exception as exc:  # a bug must still close the terminal with a sentence
        log.exception("opening a web terminal to %r failed", target)
        await jump.notify("proxy.connect", {**fields, "allowed": False, "reason": repr(exc)})
        await _refuse(ws, FAILED, f"the proxy could not reach node '{target}'")
        return
    fields.update(server_hostname=route.name, server_id=route.node_id)
    await jump.notify("proxy.connect", {**fields, "allowed": True})
    terminal = WebTerminal(jump, ws, identity, visitor.session.id)
    terminal.watch(lambda: _session_ended(state, ws, visitor.session.token))
    try:
        await terminal.run(conn, route, command, size)
    finally:
        jump.emit("proxy.disconnect", {**fields, "bytes_up": terminal.bytes_up,
                                       "bytes_down": terminal.bytes_down})

