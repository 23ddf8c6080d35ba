"""`limen join SESSION_ID` and `limen sessions kill SESSION_ID`: session sharing.

Both ask the node the session runs on, through the proxy, with the agreed command
``join SID --mode MODE`` (``--end`` to end it as a moderator); the node decides from
both users' roles. Stock OpenSSH does the same: ``ssh -t NODE join SID --mode peer``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

from limen.errors import NotFound

MODES = ("observer", "peer", "moderator")


def register(sub: argparse._SubParsersAction) -> None:
    join = sub.add_parser("join", help="join a live session (see limen sessions ls)")
    join.add_argument("session_id", metavar="SESSION_ID")
    join.add_argument("--mode", choices=MODES, default="observer",
                      help="observer watches; peer also types; moderator watches and can "
                           "end it (t) (default: observer)")
    join.add_argument("-l", dest="login", help="your login on that node (default as ssh)")
    join.set_defaults(func=cmd_join)


def cmd_join(args: argparse.Namespace) -> int:
    return _run(args.session_id, f"--mode {args.mode}", args.login)


def cmd_kill(args: argparse.Namespace) -> int:
    return _run(args.session_id, "--mode moderator --end", args.login)


def _run(session_id: str, flags: str, login: str | None) -> int:
    from limen.cli.ssh import SSH_FAILURE
    from limen.client.access import load_credentials
    from limen.errors import LimenError

    try:
        creds = load_credentials()
        session = _find(creds, session_id)
        chosen = creds.choose_login(login)
        return asyncio.run(_join(creds, session["node_id"], chosen,
                                 f"join {session['id']} {flags}"))
    except LimenError as exc:
        print(f"ERROR: {exc.message}", file=sys.stderr)
        return SSH_FAILURE


def _find(creds: Any, session_id: str) -> dict[str, Any]:
    with creds.api() as api:
        for session in api.get("/v1/sessions"):
            if session["id"] == session_id:
                return dict(session)
    raise NotFound(f"session {session_id} is not running, or you may not see it "
                   "(see limen sessions ls)")


async def _join(creds: Any, node: str, login: str, command: str) -> int:
    from limen.client.access import dial, session_errors
    from limen.client.session import exit_code, run_session
    from limen.client.ssh import close_connection

    conn = await dial(creds, node, login)
    try:
        with session_errors(node):
            return exit_code(await run_session(conn, command, os.isatty(sys.stdin.fileno())))
    finally:
        await close_connection(conn)
