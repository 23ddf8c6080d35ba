"""`limen ssh -L [BIND:]LPORT:HOST:RPORT`: local port forwarding over the node connection.

Each local connection opens a ``direct-tcpip`` channel to HOST:RPORT from the node,
and two copy loops of our own move the bytes (asyncssh's stock forwarder can lose
the first bytes before its channel side is connected). A refused channel is reported on stderr with
the node's reason, as ssh does, and the local connection is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from dataclasses import dataclass
from typing import Any

import asyncssh

from limen.errors import BadParameter, ConnectionProblem

CHUNK = 256 * 1024


@dataclass(frozen=True)
class LocalForward:
    bind: str
    port: int
    host: str
    remote_port: int

    @classmethod
    def parse(cls, spec: str) -> LocalForward:
        parts = spec.split(":")
        if len(parts) == 3:
            parts = ["127.0.0.1", *parts]
        if len(parts) != 4 or not all(parts[1:]):
            raise BadParameter(f"-L {spec!r} should look like [BIND:]LPORT:HOST:RPORT")
        bind, port, host, remote = parts
        try:
            return cls(bind or "127.0.0.1", int(port), host, int(remote))
        except ValueError:
            raise BadParameter(f"-L {spec!r}: the ports must be numbers") from None

    def __str__(self) -> str:
        return f"{self.bind}:{self.port} -> {self.host}:{self.remote_port}"


class Forwarder:
    """Listens for every -L and carries each connection to the node; stop() ends them."""

    def __init__(self, conn: asyncssh.SSHClientConnection) -> None:
        self.conn = conn
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, forwards: list[LocalForward]) -> None:
        for spec in forwards:
            try:
                server = await asyncio.start_server(
                    lambda r, w, s=spec: self._accepted(r, w, s), spec.bind, spec.port
                )
            except OSError as exc:
                await self.stop()
                raise ConnectionProblem(
                    f"cannot listen on {spec.bind}:{spec.port} for -L: {exc.strerror or exc}"
                ) from None
            self._servers.append(server)

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()

    def _accepted(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, spec: LocalForward
    ) -> None:
        task = asyncio.get_running_loop().create_task(self._carry(reader, writer, spec))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _carry(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, spec: LocalForward
    ) -> None:
        try:
            try:
                chan_reader, chan_writer = await self.conn.open_connection(
                    spec.host, spec.remote_port
                )
            except (asyncssh.Error, OSError) as exc:
                reason = getattr(exc, "reason", "") or str(exc)
                print(f"limen: port forwarding {spec} refused: {reason}", file=sys.stderr,
                      flush=True)
                return
            try:
                await asyncio.gather(
                    _copy(reader, chan_writer), _copy(chan_reader, writer)
                )
            finally:
                chan_writer.close()
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def _copy(reader: Any, writer: Any) -> None:
    """Copy until end of input, then pass the EOF on (a half-close, not a close)."""
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (OSError, asyncssh.Error):
        pass  # the other side went away; the finally blocks close ours
