"""`limen ls` (the nodes you may reach) and `limen sessions ls` (live sessions)."""

from __future__ import annotations

import argparse
from typing import Any

from limen.cli.output import add_format_flag, emit, table
from limen.client import profile as profiles
from limen.client.api import APIClient
from limen.errors import AccessDenied


def register(sub: argparse._SubParsersAction) -> None:
    ls = sub.add_parser("ls", help="list the nodes you may reach")
    nodes = sub.add_parser("nodes", help="nodes: limen nodes ls is limen ls")
    nodes_cmds = nodes.add_subparsers(dest="nodes_cmd", required=True, metavar="COMMAND")
    nodes_ls = nodes_cmds.add_parser("ls", help="list the nodes you may reach")
    for parser in (ls, nodes_ls):
        parser.add_argument("labels", nargs="*", metavar="LABEL=VALUE",
                            help="only nodes with these")
        add_format_flag(parser)
        parser.set_defaults(func=cmd_ls)
    from limen.cli import openssh_nodes

    openssh_nodes.register(nodes_cmds)

    sessions = sub.add_parser("sessions", help="live sessions")
    cmds = sessions.add_subparsers(dest="sessions_cmd", required=True, metavar="COMMAND")
    sessions_ls = cmds.add_parser("ls", help="list live sessions")
    add_format_flag(sessions_ls)
    sessions_ls.set_defaults(func=cmd_sessions_ls)
    kill = cmds.add_parser("kill", help="end a live session (as a moderator of it)")
    kill.add_argument("session_id", metavar="SESSION_ID")
    kill.add_argument("-l", dest="login", help="your login on that node (default as ssh)")
    kill.set_defaults(func=cmd_sessions_kill)


def _client() -> APIClient:
    profile = profiles.current()
    ca = profile.trusted_ca()
    if ca is None:
        raise AccessDenied(f"no cluster CA is stored for {profile.proxy}; run limen login")
    return APIClient(profile.proxy, ca, profile.token())


def cmd_ls(args: argparse.Namespace) -> int:
    from limen.client.fanout import matches, parse_selector

    selector = parse_selector(",".join(args.labels))
    with _client() as client:
        nodes = [n for n in client.get("/v1/nodes") if matches(n, selector)]
    rows = [
        (n["name"], n["id"], n["addr"], _labels(n["labels"]), _connection(n),
         n.get("since", ""), n.get("last_heartbeat", "") or n.get("state", ""))
        for n in nodes
    ]
    headers = ["Node", "Id", "Address", "Labels", "Connection", "Since",
               "Last heartbeat / state"]
    if any(n.get("proxies") for n in nodes):  # tunnels to several proxies: through which
        rows = [(*row, ", ".join(n.get("proxies") or [])) for row, n in zip(rows, nodes,
                                                                          strict=True)]
        headers.append("Proxies")
    emit(nodes, args.format, table(headers, rows) if rows else "No nodes match.")
    return 0


def cmd_sessions_ls(args: argparse.Namespace) -> int:
    with _client() as client:
        sessions = client.get("/v1/sessions")
    rows = [
        (s["id"], s["user"], s["login"], s["node"], _kind(s), s["started"], s["remote_addr"],
         ", ".join(s.get("parties") or []), s.get("state", ""))
        for s in sessions
    ]
    headers = ["Id", "User", "Login", "Node", "Kind", "Started", "From", "Parties", "State"]
    emit(sessions, args.format, table(headers, rows) if rows else "No live sessions.")
    return 0


def cmd_sessions_kill(args: argparse.Namespace) -> int:
    from limen.cli.sharing import cmd_kill

    return cmd_kill(args)


def _connection(node: dict[str, Any]) -> str:
    """direct, tunnel, openssh, or "tunnel (offline)" while a tunnel node's tunnel is
    down (and "openssh (offline)" while the proxy's health check fails)."""
    text = str(node.get("connection", ""))
    return f"{text} (offline)" if node.get("online") is False else text


def _labels(labels: dict[str, Any]) -> str:
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))


def _kind(session: dict[str, Any]) -> str:
    if session.get("interactive"):
        return "shell"
    return f"exec: {session['command']}" if session.get("command") else "exec"
