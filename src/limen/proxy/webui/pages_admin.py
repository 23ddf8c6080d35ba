"""Users, roles, join tokens and locks, for those whose roles allow it.

Every action is the facade's, as for the CLI (``limen users``, ``limen create -f``,
``limen tokens``, ``limen lock``): the rule on the kind is checked there, and a refusal
is an ``access.denied`` event. Roles and locks are created from YAML with the CLI's own
validation (limen.resources.documents): each problem names the field and its line, and
a bad document saves nothing. A page shows the outcome of its form at once (an invite
link, a join command, or the sentence that says what was wrong).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import yaml
from fastapi import FastAPI, Form, Request
from fastapi.responses import Response

from limen.durations import parse_duration
from limen.errors import AlreadyExists, BadParameter, LimenError, NotFound
from limen.proxy.webui.context import (
    PREFIX,
    Visitor,
    WebUIState,
    check_form,
    find_visitor,
    render,
)
from limen.resources.documents import validate_documents

Field = Annotated[str, Form(max_length=1024)]
Token = Annotated[str, Form(max_length=256)]
Document = Annotated[str, Form(max_length=256 * 1024)]
Outcome = tuple[str, str]  # ("ok" | "error", sentence)


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _labels(text: str) -> dict[str, str]:
    labels = {}
    for part in _csv(text):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise BadParameter(f"labels are key=value pairs separated by commas, not {part!r}")
        labels[key.strip()] = value.strip()
    return labels


def _ttl(text: str) -> Any:
    return parse_duration(text.strip()) if text.strip() else None


def web_link(request: Request, purpose: str, token: str) -> str:
    """The page a person opens to sign up (or reset) with this token."""
    page = "invite" if purpose == "signup" else "reset"
    return f"https://{request.headers.get('host', '')}{PREFIX}/{page}/{token}"


async def save_documents(visitor: Visitor, text: str, kind: str, replace: bool) -> str:
    """Validate every document, refuse existing ones unless ``replace``, then save."""
    documents = validate_documents(text, f"the {kind} YAML")
    for doc in documents:
        if doc["kind"] != kind:
            raise BadParameter(f"the {kind} YAML: field 'kind': this page saves {kind}s, "
                               f"not {doc['kind']}s")
        if not replace:
            await _refuse_existing(visitor, doc)
    saved = [await visitor.api.put_resource(doc, replace) for doc in documents]
    return ", ".join(f"{s['kind']} {s['metadata']['name']}" for s in saved) + " saved."


async def _refuse_existing(visitor: Visitor, doc: dict[str, Any]) -> None:
    try:
        await visitor.api.get_resources(doc["kind"], doc["metadata"]["name"])
    except NotFound:
        return
    raise AlreadyExists(f"{doc['kind']} {doc['metadata']['name']!r} already exists; nothing "
                        "was saved (tick \u201cReplace\u201d to replace it)")


def add_routes(app: FastAPI, state: WebUIState) -> None:
    async def act(request: Request, csrf_token: str,
                  action: Callable[[Visitor], Awaitable[str]]) -> tuple[Visitor, Outcome]:
        """A form's action through the visitor's facade; its outcome as a sentence."""
        visitor = await find_visitor(state, request)
        await check_form(state, request, visitor, csrf_token)
        try:
            return visitor, ("ok", await action(visitor))
        except LimenError as exc:
            return visitor, ("error", exc.message)

    # -- users -------------------------------------------------------------------------

    async def users_page(request: Request, visitor: Visitor, outcome: Outcome | None = None,
                         link: str = "") -> Response:
        users = await visitor.api.list_users()
        status = 200 if outcome is None or outcome[0] == "ok" else 400
        return render(state, request, "users.html", visitor=visitor, title="Users",
                      users=sorted(users, key=lambda u: u.name), outcome=outcome, link=link,
                      now=state.auth.ctx.clock.now(), status=status)

    @app.get("/users")
    async def users(request: Request) -> Response:
        visitor = await find_visitor(state, request)
        return await users_page(request, visitor)

    @app.post("/users")
    async def add_user(request: Request, name: Field, roles: Field = "", logins: Field = "",
                       ttl: Field = "", csrf_token: Token = "") -> Response:
        link = ""

        async def create(visitor: Visitor) -> str:
            nonlocal link
            issued = await visitor.api.create_user(name.strip(), _csv(roles), _csv(logins),
                                                   _ttl(ttl))
            link = web_link(request, issued.purpose, issued.token)
            return (f"User {issued.user} created. Send them this link; it works once, until "
                    f"{issued.expires:%Y-%m-%d %H:%M} UTC:")

        visitor, outcome = await act(request, csrf_token, create)
        return await users_page(request, visitor, outcome, link)

    @app.post("/users/{name}/reset")
    async def reset_user(request: Request, name: str, csrf_token: Token = "") -> Response:
        link = ""

        async def reset(visitor: Visitor) -> str:
            nonlocal link
            issued = await visitor.api.reset_user(name, None)
            link = web_link(request, issued.purpose, issued.token)
            return (f"User {name} reset: the old password and authenticator no longer work. "
                    "Send them this link; it works once:")

        visitor, outcome = await act(request, csrf_token, reset)
        return await users_page(request, visitor, outcome, link)

    @app.post("/users/{name}/unlock")
    async def unlock_user(request: Request, name: str, csrf_token: Token = "") -> Response:
        async def unlock(visitor: Visitor) -> str:
            await visitor.api.unlock_user(name)
            return f"User {name} may sign in again."

        visitor, outcome = await act(request, csrf_token, unlock)
        return await users_page(request, visitor, outcome)

    @app.post("/users/{name}/delete")
    async def delete_user(request: Request, name: str, csrf_token: Token = "") -> Response:
        async def delete(visitor: Visitor) -> str:
            await visitor.api.delete_user(name)
            return f"User {name} deleted."

        visitor, outcome = await act(request, csrf_token, delete)
        return await users_page(request, visitor, outcome)

    # -- roles -------------------------------------------------------------------------

    async def roles_page(request: Request, visitor: Visitor, outcome: Outcome | None = None,
                         draft: str = "") -> Response:
        roles = await visitor.api.get_resources("role", None)
        shown = [(r["metadata"]["name"], _yaml(r)) for r in roles]
        status = 200 if outcome is None or outcome[0] == "ok" else 400
        return render(state, request, "roles.html", visitor=visitor, title="Roles",
                      roles=sorted(shown), outcome=outcome, draft=draft, status=status)

    @app.get("/roles")
    async def roles(request: Request) -> Response:
        return await roles_page(request, await find_visitor(state, request))

    @app.post("/roles")
    async def save_roles(request: Request, document: Document, replace: Field = "",
                         csrf_token: Token = "") -> Response:
        async def save(visitor: Visitor) -> str:
            return await save_documents(visitor, document, "role", replace == "on")

        visitor, outcome = await act(request, csrf_token, save)
        return await roles_page(request, visitor, outcome,
                                document if outcome[0] == "error" else "")

    @app.post("/roles/{name}/delete")
    async def delete_role(request: Request, name: str, csrf_token: Token = "") -> Response:
        async def delete(visitor: Visitor) -> str:
            await visitor.api.delete_resource("role", name)
            return f"Role {name} deleted."

        visitor, outcome = await act(request, csrf_token, delete)
        return await roles_page(request, visitor, outcome)

    # -- join tokens ---------------------------------------------------------------------

    async def tokens_page(request: Request, visitor: Visitor, outcome: Outcome | None = None,
                          command: str = "") -> Response:
        tokens = await visitor.api.list_join_tokens()
        status = 200 if outcome is None or outcome[0] == "ok" else 400
        return render(state, request, "tokens.html", visitor=visitor, title="Join tokens",
                      tokens=tokens, outcome=outcome, command=command, status=status)

    @app.get("/tokens")
    async def tokens(request: Request) -> Response:
        return await tokens_page(request, await find_visitor(state, request))

    @app.post("/tokens")
    async def add_token(request: Request, ttl: Field = "", labels: Field = "",
                        uses: Field = "1", csrf_token: Token = "") -> Response:
        command = ""

        async def create(visitor: Visitor) -> str:
            nonlocal command
            count: int | None
            if uses.strip() == "unlimited":
                count = None
            elif uses.strip().isdigit() and int(uses) >= 1:
                count = int(uses)
            else:
                raise BadParameter("uses is a number of nodes (1 or more) or unlimited")
            issued = await visitor.api.create_join_token(_ttl(ttl), _labels(labels), count)
            host = request.headers.get("host", "")
            command = (f"limen start --roles node --token {issued.token} --proxy {host} "
                       f"--ca-pin {issued.ca_pin}")
            return (f"Join token created; it expires at {issued.expires}. Run this on the "
                    "new node:")

        visitor, outcome = await act(request, csrf_token, create)
        return await tokens_page(request, visitor, outcome, command)

    @app.post("/tokens/{token_id}/delete")
    async def delete_token(request: Request, token_id: str, csrf_token: Token = "") -> Response:
        async def delete(visitor: Visitor) -> str:
            return f"Join token {await visitor.api.delete_join_token(token_id)} deleted."

        visitor, outcome = await act(request, csrf_token, delete)
        return await tokens_page(request, visitor, outcome)

    # -- locks ---------------------------------------------------------------------------

    async def locks_page(request: Request, visitor: Visitor, outcome: Outcome | None = None,
                         draft: str = "") -> Response:
        locks = await visitor.api.get_resources("lock", None)
        status = 200 if outcome is None or outcome[0] == "ok" else 400
        return render(state, request, "locks.html", visitor=visitor, title="Locks",
                      locks=locks, outcome=outcome, draft=draft, status=status,
                      target_kinds=("user", "role", "login", "node"))

    @app.get("/locks")
    async def locks(request: Request) -> Response:
        return await locks_page(request, await find_visitor(state, request))

    @app.post("/locks")
    async def add_lock(request: Request, target_kind: Field, target: Field,
                       message: Field = "", ttl: Field = "", csrf_token: Token = "") -> Response:
        async def create(visitor: Visitor) -> str:
            if target_kind not in ("user", "role", "login", "node") or not target.strip():
                raise BadParameter("a lock needs a target: a user, role, login or node")
            lock = await visitor.api.create_lock({target_kind: target.strip()},
                                                 message.strip(), _ttl(ttl), None)
            return f"Locked: {lock.spec.target.describe()}."

        visitor, outcome = await act(request, csrf_token, create)
        return await locks_page(request, visitor, outcome)

    @app.post("/locks/yaml")
    async def add_locks_yaml(request: Request, document: Document, replace: Field = "",
                             csrf_token: Token = "") -> Response:
        async def save(visitor: Visitor) -> str:
            return await save_documents(visitor, document, "lock", replace == "on")

        visitor, outcome = await act(request, csrf_token, save)
        return await locks_page(request, visitor, outcome,
                                document if outcome[0] == "error" else "")

    @app.post("/locks/{name}/delete")
    async def delete_lock(request: Request, name: str, csrf_token: Token = "") -> Response:
        async def delete(visitor: Visitor) -> str:
            await visitor.api.delete_resource("lock", name)
            return f"Lock {name} removed."

        visitor, outcome = await act(request, csrf_token, delete)
        return await locks_page(request, visitor, outcome)


def _yaml(resource: dict[str, Any]) -> str:
    shown = dict(resource)
    shown["metadata"] = {k: v for k, v in resource.get("metadata", {}).items()
                         if k != "revision"}
    return yaml.safe_dump(shown, sort_keys=False).rstrip()

