"""A tunneled node's heartbeat, inside its tunnel instead of an HTTPS request.

Over HTTPS each beat of an idle tunneled node cost its proxy a TCP connection, a TLS
handshake and a request through the web stack, every 5 minutes for each of thousands
of nodes (bench/tunnels.py). The tunnel is already an SSH connection that logged in
with the node's host certificate, so the agent opens a session channel on it for the
``heartbeat@limen`` subsystem and reads one JSON answer: the same answer as
``POST /v1/nodes/heartbeat`` (the node as listings show it, and the cluster's proxies).

The request has no body. Which node beats is the node the connection logged in as, and
how it is connected is "tunnel": there is no field to forge. The proxy judges the
node's certificate again before each beat (a node removed or locked since it logged in
is refused, and its tunnel is closed by then anyway). One beat at a time per connection.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import asyncssh

from limen.errors import ConnectionProblem, from_json
from limen.tunnel.subsystems import NodeSubsystem

SUBSYSTEM = "heartbeat@limen"
MAX_ANSWER = 1024 * 1024  # a listing of the cluster's proxies; far more than it takes
ANSWER_TIMEOUT = 30.0

# (node id, the agent's address) -> the answer; raises LimenError to refuse.
BeatHandler = Callable[[str, str], Awaitable[dict[str, Any]]]


class HeartbeatSession(NodeSubsystem):
    """The proxy's side of one beat: the handler's answer, one JSON line."""

    subsystem = SUBSYSTEM
    what = "the heartbeat"

    def __init__(self, node_id: str, peer: str, handler: BeatHandler,
                 done: Callable[[NodeSubsystem], None]) -> None:
        super().__init__(node_id, peer, done)
        self._handler = handler

    async def serve(self, chan: asyncssh.SSHServerChannel[str]) -> None:
        body = await self.ask(chan, self._handler(self.node_id, self.peer))
        if body is None:
            return
        try:
            chan.write(json.dumps(body) + "\n")
            chan.exit(0)
        except Exception:  # noqa: BLE001 - the agent went away; it beats again later
            chan.close()


async def beat_through(conn: asyncssh.SSHClientConnection,
                       timeout: float = ANSWER_TIMEOUT) -> dict[str, Any]:
    """The agent's side: one beat on the tunnel's connection; the proxy's answer, or its
    refusal raised as the LimenError it was. ConnectionProblem when the tunnel could not
    carry it (the node then beats over HTTPS)."""
    try:
        async with asyncio.timeout(timeout):
            process = await conn.create_process(subsystem=SUBSYSTEM, encoding=None,
                                                stdin=asyncssh.DEVNULL)
            async with process:
                raw = await _read_to_end(process.stdout)
                await process.wait_closed()
    except asyncssh.ChannelOpenError as exc:
        raise ConnectionProblem(f"the proxy took no heartbeat in the tunnel ({exc.reason})"
                                ) from None
    except (TimeoutError, OSError, asyncssh.Error) as exc:
        raise ConnectionProblem(f"the heartbeat in the tunnel failed ({exc or 'no answer'})"
                                ) from None
    try:
        answer = json.loads(raw) if len(raw) <= MAX_ANSWER else None
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise ConnectionProblem("the proxy's answer to a heartbeat in the tunnel is malformed")
    if process.exit_status != 0:
        raise from_json(answer, "the proxy refused the heartbeat")
    return answer


async def _read_to_end(stream: asyncssh.SSHReader[bytes]) -> bytes:
    """The whole answer, however the channel split it; no more than MAX_ANSWER + 1."""
    chunks: list[bytes] = []
    size = 0
    while size <= MAX_ANSWER and (chunk := await stream.read(MAX_ANSWER + 1 - size)):
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)
