"""A tunneled node's access feed, inside its tunnel instead of an HTTPS stream.

Over HTTPS the feed cost each tunneled node a TLS connection of its own to the proxy,
held open for good and made again after every proxy restart, when thousands of nodes
come back at once (bench/tunnels.py: a fifth of the simulated fleet's CPU, and the
proxy's web stack and TLS, while the nodes returned). The tunnel is already an SSH
connection that logged in with the node's host certificate, so the agent opens a
session channel on it for the ``access-feed@limen`` subsystem and reads the same
newline-delimited JSON as ``GET /v1/watch/access`` sends (limen.auth.feed), pings
included.

Whose feed it is comes from the connection's login: the request has no body, and the
node is judged again before its feed starts. A removal or lock ends the feed (and the
tunnel) at once. One feed per connection: a new one replaces the one before, whose end
the node may not have told the proxy yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import asyncssh

from limen.errors import ConnectionProblem, from_json
from limen.tunnel.agent import TunnelAgent
from limen.tunnel.subsystems import NodeSubsystem

log = logging.getLogger(__name__)

SUBSYSTEM = "access-feed@limen"
# The proxy pings a quiet feed this often; a node that hears nothing for READ_TIMEOUT
# takes the feed for broken (a proxy process that holds the tunnel but is stuck).
PING_SECONDS = 300
READ_TIMEOUT = 330.0
OPEN_TIMEOUT = 30.0
MAX_LINE = 4 * 1024 * 1024  # one role, user or lock a line: far more than any takes

# (node id, the agent's address) -> the feed's lines; raises LimenError to refuse.
FeedHandler = Callable[[str, str], Awaitable[AsyncIterator[bytes]]]


class FeedSession(NodeSubsystem):
    """The proxy's side: streams one node's feed into the channel, at the node's pace."""

    subsystem = SUBSYSTEM
    what = "the access feed"

    def __init__(self, node_id: str, peer: str, handler: FeedHandler,
                 done: Callable[[NodeSubsystem], None]) -> None:
        super().__init__(node_id, peer, done)
        self._handler = handler
        self._writable = asyncio.Event()
        self._writable.set()

    def pause_writing(self) -> None:  # the node's window is full: wait for it
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def close(self) -> None:
        """Replaced by a newer feed on the same connection."""
        if self._chan is not None:
            self._chan.close()

    async def serve(self, chan: asyncssh.SSHServerChannel[str]) -> None:
        lines = await self.ask(chan, self._handler(self.node_id, self.peer))
        if lines is None:
            return
        try:
            async with contextlib.aclosing(lines):  # type: ignore[type-var]
                async for line in lines:
                    await self._writable.wait()
                    chan.write(line.decode())  # ASCII JSON: the session's channel takes text
            chan.exit(0)  # revoked, or the watch broke: the node syncs afresh
        except Exception:  # noqa: BLE001 - the node went away; it opens another
            chan.close()


class FeedUnavailable(ConnectionProblem):
    """The proxy takes no feed in its tunnels (an earlier version): use HTTPS."""


async def feed_through(conn: asyncssh.SSHClientConnection, *,
                       read_timeout: float = READ_TIMEOUT) -> AsyncIterator[dict[str, Any]]:
    """The node's side: the feed's messages (pings left out) until it breaks, which is
    always an error: ConnectionProblem, or the proxy's refusal as the LimenError it was."""
    try:
        async with asyncio.timeout(OPEN_TIMEOUT):
            process = await conn.create_process(subsystem=SUBSYSTEM, encoding=None,
                                                stdin=asyncssh.DEVNULL)
    except asyncssh.ChannelOpenError as exc:
        if conn.is_closed():  # the tunnel went down: wait for one, not HTTPS for good
            raise ConnectionProblem("the tunnel closed as the access feed opened") from None
        raise FeedUnavailable(f"the proxy takes no access feed in the tunnel ({exc.reason})"
                              ) from None
    except (TimeoutError, OSError, asyncssh.Error) as exc:
        raise ConnectionProblem(f"the access feed in the tunnel failed ({exc or 'no answer'})"
                                ) from None
    async with process:
        async for line in _lines(process.stdout, read_timeout):
            message = _message(line)
            if message.get("op") == "ping":
                continue
            yield message
    raise ConnectionProblem("the access feed in the tunnel ended")


def _message(line: bytes) -> dict[str, Any]:
    try:
        message = json.loads(line)
    except ValueError:
        message = None
    if not isinstance(message, dict):
        raise ConnectionProblem("the access feed in the tunnel sent a malformed line")
    if "op" not in message:  # the proxy's refusal, its last line
        raise from_json(message, "the proxy refused the access feed")
    return message


async def _lines(stream: asyncssh.SSHReader[bytes], read_timeout: float
                 ) -> AsyncIterator[bytes]:
    """Each line as the channel brings it, however split; none longer than MAX_LINE."""
    pending = bytearray()
    while True:
        try:
            async with asyncio.timeout(read_timeout):
                chunk = await stream.read(65536)
        except TimeoutError:
            raise ConnectionProblem("the access feed in the tunnel fell silent") from None
        except (OSError, asyncssh.Error) as exc:
            raise ConnectionProblem(f"the access feed in the tunnel broke ({exc})") from None
        if not chunk:
            return
        pending += chunk
        while (end := pending.find(b"\n")) >= 0:
            if end:
                yield bytes(pending[:end])
            del pending[:end + 1]
        if len(pending) > MAX_LINE:
            raise ConnectionProblem("the access feed in the tunnel sent an overlong line")


# How often a node waiting for a tunnel looks again at which agents it has (an agent
# for another proxy of the cluster may have started meanwhile).
RECHECK_SECONDS = 5.0


class TunnelFeed:
    """A tunnel-only node's access feed: through whichever of its tunnels is up.

    With no tunnel up it waits for one rather than opening HTTPS: such a node takes
    sessions only through its tunnels, and its live sessions end with them, so a feed
    is needed exactly while a tunnel is up; and after a proxy restart every node would
    otherwise dial the proxy's web port for its feed while the tunnels come back. A
    proxy that takes no feed in its tunnels gets the node's HTTPS feed instead."""

    def __init__(self, agents: Callable[[], Sequence[TunnelAgent]],
                 over_https: Callable[[], AsyncIterator[dict[str, Any]]]) -> None:
        self._agents = agents
        self._over_https = over_https

    async def __call__(self) -> AsyncIterator[dict[str, Any]]:
        conn = await self._tunnel()
        try:
            async for message in feed_through(conn):
                yield message
        except FeedUnavailable as exc:
            log.info("%s; the access feed goes over HTTPS", exc.message)
            async for message in self._over_https():
                yield message

    async def _tunnel(self) -> asyncssh.SSHClientConnection:
        while True:
            agents = self._agents()
            for agent in agents:
                if agent.connected and agent.conn is not None:
                    return agent.conn
            await _any_up(agents, RECHECK_SECONDS)


async def _any_up(agents: Sequence[TunnelAgent], timeout: float) -> None:
    """Until one of ``agents`` is up, or ``timeout`` passed."""
    waits = [asyncio.ensure_future(agent.wait_up()) for agent in agents]
    try:
        if waits:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        else:
            await asyncio.sleep(timeout)
    finally:
        for wait in waits:
            wait.cancel()
