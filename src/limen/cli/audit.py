"""`limen audit search` and `limen audit verify`."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from limen.cli.admin import add_admin_flags, admin_client
from limen.cli.output import emit, table
from limen.config import Config, load_config

# Fields shown in their own columns; the rest go into the details column.
_COLUMNS = {"event", "code", "time", "user", "claimed_user", "server_hostname", "sid", "uid",
            "cluster_name", "log_id", "seq", "prev_hash", "hash", "server_id"}
PAGE = 1000


def register(sub: argparse._SubParsersAction) -> None:
    audit = sub.add_parser("audit", help="search and verify the audit log")
    cmds = audit.add_subparsers(dest="audit_cmd", required=True, metavar="COMMAND")

    search = cmds.add_parser("search", help="events, newest first (needs the rule on event)")
    search.add_argument("--since", help="from this time: 1h (ago), 2024-05-01, RFC 3339")
    search.add_argument("--until", help="up to this time (same forms)")
    search.add_argument("--type", action="append", help="event name, e.g. session.start "
                        "(repeat for several)")
    search.add_argument("--user", help="events of this user")
    search.add_argument("--node", help="events on this node (name or id)")
    search.add_argument("--session", help="events of this session id")
    search.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    search.add_argument("--format", choices=("text", "json"), default="text")
    add_admin_flags(search)
    search.set_defaults(func=cmd_search)

    verify = cmds.add_parser("verify", help="check the hash chain in the files and the store")
    verify.add_argument("--since", help="only events from this time on (same forms as search)")
    verify.add_argument("--format", choices=("text", "json"), default="text")
    add_admin_flags(verify)
    verify.set_defaults(func=cmd_verify)


def cmd_search(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {k: getattr(args, k) for k in ("since", "until", "user", "node",
                                                             "session") if getattr(args, k)}
    found: list[dict[str, Any]] = []
    cursor = None
    with admin_client(args) as client:
        while len(found) < args.limit:
            page = {**params, "limit": min(PAGE, args.limit - len(found))}
            if cursor:
                page["cursor"] = cursor
            query = urlencode(page) + "".join(f"&{urlencode({'type': t})}" for t in args.type or ())
            answer = client.get(f"/v1/audit/events?{query}")
            found += answer["events"]
            cursor = answer["next"]
            if not cursor:
                break
    rows = [(e.get("time", ""), e.get("event"), e.get("code"), _who(e),
             e.get("server_hostname", ""), e.get("sid", ""), _details(e)) for e in found]
    headers = ["Time", "Event", "Code", "User", "Node", "Session", "Details"]
    emit(found, args.format, table(headers, rows) if rows else "No events match.")
    return 0


def _who(event: dict[str, Any]) -> str:
    """The user, or what a node claimed when nothing backed it (never shown as a fact)."""
    if event.get("user"):
        return str(event["user"])
    return f"{event['claimed_user']} (claimed)" if event.get("claimed_user") else ""


def _details(event: dict[str, Any]) -> str:
    rest = {k: v for k, v in event.items() if k not in _COLUMNS}
    text = " ".join(f"{k}={json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else v}"
                    for k, v in rest.items())
    return text if len(text) <= 120 else text[:117] + "..."


def cmd_verify(args: argparse.Namespace) -> int:
    local = _local_config(args)
    if local is not None:
        from limen.hostadmin import verify_audit_locally

        report = asyncio.run(verify_audit_locally(local, args.since))
    else:
        with admin_client(args) as client:
            query = f"?{urlencode({'since': args.since})}" if args.since else ""
            report = client.get(f"/v1/audit/verify{query}")
    if args.format == "json":
        print(json.dumps(report, indent=2))
    else:
        print(_verify_text(report))
    return 0 if report["ok"] else 1


def _local_config(args: argparse.Namespace) -> Config | None:
    """On the auth host the files and the store are read directly (no server needed)."""
    if getattr(args, "config", None):
        return load_config(args.config)
    if getattr(args, "data_dir", None):
        return Config(data_dir=Path(args.data_dir))
    return None  # elsewhere the auth service verifies, for a user with the rule on event


def _verify_text(report: dict[str, Any]) -> str:
    lines = []
    for problem in report["problems"]:
        lines.append(f"BROKEN: {problem['kind']} at {problem['where']}: {problem['message']}"
                     + (f" (uid {problem['uid']})" if problem.get("uid") else ""))
    for note in report["notes"]:
        lines.append(f"note: {note}")
    verdict = "OK" if report["ok"] else "FAILED"
    lines.append(f"{verdict}: {report['files_checked']} events in the files and "
                 f"{report['store_checked']} in the store checked, "
                 f"{report['checkpoints']} signed checkpoints")
    return "\n".join(lines)
