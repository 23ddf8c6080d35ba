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
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import asyncssh

from limen.errors import ConnectionProblem, LimenError, from_json

log = logging.getLogger(__name__)

SUBSYSTEM = "heartbeat@limen"
MAX_ANSWER = 1024 * 1024  # a listing of the cluster's proxies; far more than it takes
ANSWER_TIMEOUT = 30.0

# (node id, the agent's address) -> the answer; raises LimenError to refuse.
BeatHandler = Callable[[str, str], Awaitable[dict[str, Any]]]


class HeartbeatSession(asyncssh.SSHServerSession):  # type: ignore[type-arg]
    """The proxy's side of one beat: answers the heartbeat subsystem and nothing else
    (asyncssh refuses shells and commands for a session that does not accept them)."""

    def __init__(self, node_id: str, peer: str, handler: BeatHandler,
                 done: Callable[[], None]) -> None:
        self._node_id = node_id
        self._peer = peer
        self._handler = handler
        self._done = done
        self._chan: asyncssh.SSHServerChannel[bytes] | None = None
        self._task: asyncio.Task[None] | None = None

    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        self._chan = chan

    def subsystem_requested(self, subsystem: str) -> bool:
        return subsystem == SUBSYSTEM

    def eof_received(self) -> bool:
        return True  # the agent sends nothing; keep the channel open for the answer

    def session_started(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._answer())

    def connection_lost(self, exc: Exception | None) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._done()

    async def _answer(self) -> None:
        chan = self._chan
        assert chan is not None
        try:
            body: dict[str, Any] = await self._handler(self._node_id, self._peer)
            status = 0
        except LimenError as exc:
            body, status = exc.to_json(), 1
        except Exception:  # never into asyncssh: that would end the whole tunnel
            log.exception("heartbeat of node %s through its tunnel failed", self._node_id)
            body, status = ConnectionProblem("the proxy could not take the heartbeat").to_json(), 1
        try:  # ASCII JSON: the session's channel takes text
            chan.write(json.dumps(body) + "\n")
            chan.exit(status)
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
