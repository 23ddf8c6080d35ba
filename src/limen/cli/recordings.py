"""`limen recordings ls|search` and `limen play`."""

from __future__ import annotations

import argparse
import sys
from typing import Any
from urllib.parse import quote, urlencode

from limen.cli.admin import add_admin_flags, admin_client
from limen.cli.output import emit, table
from limen.errors import BadParameter
from limen.recording import asciicast


def register(sub: argparse._SubParsersAction) -> None:
    recordings = sub.add_parser("recordings", help="session recordings (the rule on recording)")
    cmds = recordings.add_subparsers(dest="recordings_cmd", required=True, metavar="COMMAND")

    ls = cmds.add_parser("ls", help="list recordings, newest first")
    ls.add_argument("--since", help="only sessions that ended after: 1h (ago), 2024-05-01")
    ls.add_argument("--limit", type=int, default=100)
    ls.add_argument("--format", choices=("text", "json"), default="text")
    add_admin_flags(ls)
    ls.set_defaults(func=cmd_ls)

    search = cmds.add_parser("search", help="recordings whose terminal printed TEXT")
    search.add_argument("text")
    search.add_argument("--limit", type=int, default=100)
    search.add_argument("--format", choices=("text", "json"), default="text")
    add_admin_flags(search)
    search.set_defaults(func=cmd_search)

    play = sub.add_parser("play", help="replay a recorded session, or export it")
    play.add_argument("session_id")
    play.add_argument("--speed", type=float, default=1.0, help="2 plays twice as fast")
    play.add_argument("--skip-idle", action="store_true", help="cut pauses to at most 1 s")
    play.add_argument("--format", choices=("pty", "asciicast", "text"), default="pty",
                      help="pty replays; asciicast exports the file; text prints what was shown")
    add_admin_flags(play)
    play.set_defaults(func=cmd_play)


def _rows(recordings: list[dict[str, Any]]) -> str:
    rows = [(r["session_id"], r["user"], r["login"], r["node"], r["kind"] or "",
             r["start"] or "", r["end"] or "", r["size"], _state(r)) for r in recordings]
    headers = ["Session", "User", "Login", "Node", "Kind", "Start", "End", "Size", "State"]
    return table(headers, rows)


def _state(recording: dict[str, Any]) -> str:
    if recording["complete"]:
        return "complete"
    return "interrupted" if recording["interrupted"] else "in progress"


def cmd_ls(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"limit": args.limit}
    if args.since:
        params["since"] = args.since
    with admin_client(args) as client:
        found = client.get(f"/v1/recordings?{urlencode(params)}")
    emit(found, args.format, _rows(found) if found else "No recordings.")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    with admin_client(args) as client:
        query = urlencode({"text": args.text, "limit": args.limit})
        found = client.get(f"/v1/recordings/search?{query}")
    emit(found, args.format, _rows(found) if found else "No recording printed that text.")
    return 0


def cmd_play(args: argparse.Namespace) -> int:
    if args.speed <= 0:
        raise BadParameter("--speed must be greater than zero")
    with admin_client(args) as client:
        lines = client.stream_lines(f"/v1/recordings/{quote(args.session_id)}/cast")
        if args.format == "asciicast":
            for line in lines:
                sys.stdout.write(line + "\n")
        elif args.format == "text":
            for _, code, data in asciicast.events(lines):
                if code == "o":
                    sys.stdout.write(asciicast.plain_text(data))
        else:
            asciicast.play(lines, sys.stdout, args.speed, args.skip_idle)
    sys.stdout.flush()
    return 0
