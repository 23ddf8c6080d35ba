"""`limen users add|ls|rm|reset|unlock`: admin commands over the HTTPS API."""

from __future__ import annotations

import argparse
from typing import Any

from limen.cli.admin import add_admin_flags, admin_client
from limen.cli.output import add_format_flag, emit, table
from limen.client.api import APIClient
from limen.client.trust import pin_of


def _csv(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def register(sub: argparse._SubParsersAction) -> None:
    users = sub.add_parser("users", help="manage users")
    cmds = users.add_subparsers(dest="users_cmd", required=True, metavar="COMMAND")

    add = cmds.add_parser("add", help="create a user and print a signup token")
    add.add_argument("name")
    add.add_argument("--roles", default="access", help="comma-separated roles (default: access)")
    add.add_argument("--logins", default="", help="comma-separated OS logins")
    add.add_argument("--ttl", help="signup token lifetime (default 1h, at most 48h)")
    add.set_defaults(func=cmd_add)

    ls = cmds.add_parser("ls", help="list users")
    ls.set_defaults(func=cmd_ls)

    rm = cmds.add_parser("rm", help="delete a user")
    rm.add_argument("name")
    rm.set_defaults(func=cmd_rm)

    reset = cmds.add_parser("reset", help="new password and second factor via a reset token")
    reset.add_argument("name")
    reset.add_argument("--ttl", help="reset token lifetime (default 8h, at most 24h)")
    reset.set_defaults(func=cmd_reset)

    unlock = cmds.add_parser("unlock", help="lift a lock after failed logins")
    unlock.add_argument("name")
    unlock.set_defaults(func=cmd_unlock)

    for parser in (add, ls, rm, reset, unlock):
        add_format_flag(parser)
        add_admin_flags(parser)


def _signup_command(client: APIClient, token: str) -> str:
    return f"limen signup {token} --proxy {client.proxy} --ca-pin {pin_of(client.ca_pem)}"


def _web_link(client: APIClient, issued: dict[str, Any]) -> str:
    """The web UI's page for this token (it signs up, or resets, in a browser)."""
    page = "invite" if issued["purpose"] == "signup" else "reset"
    return f"https://{client.proxy}/web/{page}/{issued['token']}"


def _token_output(client: APIClient, issued: dict[str, Any], fmt: str, verb: str) -> None:
    command = _signup_command(client, issued["token"])
    link = _web_link(client, issued)
    data = {**issued, "command": command, "web_link": link}
    text = (
        f"User {issued['user']} {verb}. The {issued['purpose']} token expires at "
        f"{issued['expires']}.\nShare this command with them; it works once:\n\n  {command}\n"
        f"\nor this link, to do the same in a browser:\n\n  {link}\n"
    )
    emit(data, fmt, text)


def cmd_add(args: argparse.Namespace) -> int:
    with admin_client(args) as client:
        issued = client.post(
            "/v1/users",
            {
                "name": args.name,
                "roles": _csv(args.roles),
                "logins": _csv(args.logins),
                "ttl": args.ttl,
            },
        )
        _token_output(client, issued, args.format, "created")
    return 0


def cmd_reset(args: argparse.Namespace) -> int:
    with admin_client(args) as client:
        issued = client.post(f"/v1/users/{args.name}/reset", {"ttl": args.ttl})
        _token_output(
            client, issued, args.format, "reset: the old password and TOTP device no longer work"
        )
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    with admin_client(args) as client:
        users = client.get("/v1/users")
    rows = [
        (
            u["metadata"]["name"],
            ",".join(u["spec"]["roles"]),
            ",".join(u["spec"]["traits"].get("logins", [])),
            _state(u["spec"]),
            u["status"].get("locked_until") or "",
        )
        for u in users
    ]
    emit(users, args.format, table(["User", "Roles", "Logins", "State", "Locked until"], rows))
    return 0


def _state(spec: dict[str, object]) -> str:
    sso = spec.get("sso")
    if isinstance(sso, dict):  # signs in through a connector: roles are its last mapping
        return f"sso ({sso.get('connector')})"
    return "active" if spec.get("active") else "pending signup"


def cmd_rm(args: argparse.Namespace) -> int:
    with admin_client(args) as client:
        result = client.delete(f"/v1/users/{args.name}")
    emit(result, args.format, f"User {args.name} deleted.")
    return 0


def cmd_unlock(args: argparse.Namespace) -> int:
    with admin_client(args) as client:
        user = client.post(f"/v1/users/{args.name}/unlock")
    emit(user, args.format, f"User {args.name} unlocked.")
    return 0
