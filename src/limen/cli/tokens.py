"""`limen tokens add|ls|rm`: join tokens for nodes."""

from __future__ import annotations

import argparse

from limen.cli.admin import add_admin_flags, admin_client
from limen.cli.daemon import parse_labels
from limen.cli.output import add_format_flag, emit, table
from limen.errors import BadParameter


def register(sub: argparse._SubParsersAction) -> None:
    tokens = sub.add_parser("tokens", help="manage join tokens")
    cmds = tokens.add_subparsers(dest="tokens_cmd", required=True, metavar="COMMAND")

    add = cmds.add_parser("add", help="create a join token")
    add.add_argument("--type", default="node", choices=["node"])
    add.add_argument("--ttl", help="lifetime (default 30m)")
    add.add_argument("--labels", help="labels every node joining with it gets, e.g. env=dev "
                                      "(they win over the node's own --labels)")
    uses = add.add_mutually_exclusive_group()
    uses.add_argument("--uses", type=int, default=1, metavar="N",
                      help="how many nodes may join with it (default 1: single use)")
    uses.add_argument("--reusable", action="store_true",
                      help="any number of nodes may join with it until it expires")
    add.set_defaults(func=cmd_add)

    ls = cmds.add_parser("ls", help="list join tokens")
    ls.set_defaults(func=cmd_ls)

    rm = cmds.add_parser("rm", help="delete a join token")
    rm.add_argument("token", help="the token, or the id limen tokens ls shows")
    rm.set_defaults(func=cmd_rm)

    for parser in (add, ls, rm):
        add_format_flag(parser)
        add_admin_flags(parser)


def cmd_add(args: argparse.Namespace) -> int:
    labels = parse_labels(args.labels) if args.labels else {}
    if args.uses < 1:
        raise BadParameter("--uses needs at least 1 (or --reusable)")
    body = {"type": args.type, "ttl": args.ttl, "labels": labels, "uses": args.uses,
            "reusable": args.reusable}
    with admin_client(args) as client:
        issued = client.post("/v1/tokens", body)
        proxy = client.proxy
    command = (
        f"limen start --roles node --token {issued['token']} --proxy {proxy} "
        f"--ca-pin {issued['ca_pin']}"
    )
    data = {**issued, "command": command}
    text = (
        f"The join token expires at {issued['expires']}; {_uses(issued['uses'])}.\n"
        f"Run this on the new host:\n\n  {command}\n"
    )
    emit(data, args.format, text)
    return 0


def _uses(uses: int | None) -> str:
    if uses is None:
        return "any number of nodes may join with it"
    return "one node may join with it" if uses == 1 else f"{uses} nodes may join with it"


def cmd_ls(args: argparse.Namespace) -> int:
    with admin_client(args) as client:
        tokens = client.get("/v1/tokens")
    rows = [
        (t["id"], t["type"], ",".join(f"{k}={v}" for k, v in t["labels"].items()),
         "any" if t.get("uses_left") is None else str(t["uses_left"]), t["expires"])
        for t in tokens
    ]
    emit(tokens, args.format, table(["Id", "Type", "Labels", "Uses left", "Expires"], rows))
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    with admin_client(args) as client:
        result = client.delete(f"/v1/tokens/{args.token}")
    emit(result, args.format, f"Join token {result['deleted']} deleted.")
    return 0
