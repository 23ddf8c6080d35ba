"""`limen ssh env=dev COMMAND`: one command on every node a label selector matches.

The nodes run at once; each complete output line is printed with the node's name in
front (``[web1] ...``), so interleaved output stays readable. Lines are written whole,
and a node's last line without a newline is still printed when it ends.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, cast

from limen.client.access import Credentials, dial, session_errors
from limen.client.ssh import close_connection, run_command
from limen.errors import BadParameter, LimenError


def parse_selector(text: str) -> dict[str, str]:
    """``k=v[,k2=v2]`` as a label selector (every pair must match)."""
    labels: dict[str, str] = {}
    for word in filter(None, text.split(",")):
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise BadParameter(f"{word!r} is not a label selector; use KEY=VALUE[,KEY=VALUE]")
        labels[key] = value
    return labels


def matches(node: dict[str, Any], selector: dict[str, str]) -> bool:
    labels = node.get("labels") or {}
    return all(labels.get(key) == value for key, value in selector.items())


class PrefixedLines:
    """A sink run_command writes to: complete lines go out as ``[name] line``."""

    def __init__(self, name: str, out: IO[bytes]) -> None:
        self.prefix = f"[{name}] ".encode()
        self.out = out
        self._partial = b""

    def write(self, data: bytes) -> None:
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        if lines:
            self.out.write(b"".join(self.prefix + line + b"\n" for line in lines))

    def flush(self) -> None:
        self.out.flush()

    def close(self) -> None:
        if self._partial:
            self.out.write(self.prefix + self._partial + b"\n")
            self._partial = b""
        self.out.flush()


@dataclass
class NodeResult:
    name: str
    code: int
    error: str = ""


async def run_on_nodes(
    creds: Credentials,
    nodes: list[dict[str, Any]],
    login: str,
    command: str,
    exit_code: Callable[[Any], int],
) -> list[NodeResult]:
    """Run ``command`` on each node (dialed by id; printed by name) at the same time."""
    out, err = sys.stdout.buffer, sys.stderr.buffer
    jobs = [_run_one(creds, node, login, command, out, err, exit_code) for node in nodes]
    return list(await asyncio.gather(*jobs))


async def _run_one(
    creds: Credentials, node: dict[str, Any], login: str, command: str,
    out: IO[bytes], err: IO[bytes], exit_code: Callable[[Any], int],
) -> NodeResult:
    name = str(node["name"])
    stdout, stderr = PrefixedLines(name, out), PrefixedLines(name, err)
    try:
        conn = await dial(creds, str(node["id"]), login)
    except LimenError as exc:
        return NodeResult(name, 255, exc.message)
    try:
        with session_errors(name):
            result = await run_command(
                conn, command, stdout=cast(IO[bytes], stdout), stderr=cast(IO[bytes], stderr)
            )
        return NodeResult(name, exit_code(result))
    except LimenError as exc:
        return NodeResult(name, 255, exc.message)
    finally:
        stdout.close()
        stderr.close()
        await close_connection(conn)
