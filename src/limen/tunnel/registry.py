"""The proxy's live reverse tunnels, by node id, and how to reach a node through one: a
data connection the node dials back when its agent offers them, else a channel.

One tunnel per node: when an agent reconnects while its old connection still looks
alive (a broken network is noticed only by keepalives), the newer one wins and the
older one is closed. The directory also remembers when a node's tunnel went down, so
listings can say "offline since".
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import asyncssh

from limen.clock import Clock
from limen.diag import metrics
from limen.errors import ConnectionProblem
from limen.tunnel.data_gate import DataGate, DialBackFailed
from limen.tunnel.stream import stream_session, writer_for

log = logging.getLogger(__name__)

# The (host, port) an agent asks the proxy to "listen" on is (node id, NODE_PORT):
# nothing listens anywhere; the pair only names the node's SSH service in the
# forwarded-tcpip channels the proxy opens back.
NODE_PORT = 3022
OPEN_TIMEOUT = 5.0  # like a direct dial: never keep a user waiting on a dead tunnel
CHANNEL_WINDOW = 8 * 1024 * 1024  # bulk copies: the jump host's channels use the same
# What the agent may put in one packet towards the proxy. The channel carries SSH
# packets of the user's own connection, up to 32 KiB of payload plus framing, and the
# agent gathers those written in one turn of its loop into one write (up to 256 KiB,
# node.ssh.tunnel_channels): each packet costs both ends the same work whatever its size.
CHANNEL_MAX_PACKET = 256 * 1024
# After a failed dial-back (limen.tunnel.data_gate), how long a tunnel's sessions go
# through channels without asking again: a node whose data connections cannot get
# through makes one user wait, once.
DATA_PAUSE_SECONDS = 300.0


@dataclass(frozen=True)
class TunnelStatus:
    online: bool
    since: datetime  # when the tunnel came up (online) or went down (offline)
    peer: str = ""


@dataclass(eq=False)
class Tunnel:
    """One agent's authenticated SSH connection to this proxy."""

    node_id: str
    conn: asyncssh.SSHServerConnection
    since: datetime
    peer: str = ""
    channels_opened: int = 0
    # Set when the agent offered data connections (limen.tunnel.data_link).
    gate: DataGate | None = None
    data_connections: int = 0
    data_paused_until: float = 0.0  # time.monotonic()

    async def open_stream(
        self, name: str, timeout: float = OPEN_TIMEOUT
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A byte stream to the node's SSH service: a data connection the node dials
        back when it offers them (the fast path), else a channel through the agent."""
        if self.gate is not None and time.monotonic() >= self.data_paused_until:
            try:
                stream = await self.gate.dial_back(self.conn, self.node_id, self.peer_host,
                                                   self._local_host())
            except DialBackFailed as exc:
                self.data_paused_until = time.monotonic() + DATA_PAUSE_SECONDS
                log.warning("node %s gave no data connection (%s); its sessions go "
                            "through its tunnel for %d minutes", self.node_id, exc.reason,
                            DATA_PAUSE_SECONDS // 60)
            else:
                self.data_connections += 1
                metrics.tunnel_stream("data")
                return stream
        return await self._open_channel(name, timeout)

    async def _open_channel(
        self, name: str, timeout: float
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        session, reader, protocol = stream_session(
            {"peername": (self.peer_host, 0), "limen_tunnel": self.node_id}
        )
        # The node sees the proxy's end of the tunnel as the client address, as it
        # would see the proxy's address on a direct dial.
        orig_host = self._local_host()
        try:
            async with asyncio.timeout(timeout):
                await self.conn.create_connection(
                    lambda: session, self.node_id, NODE_PORT, orig_host, 0,
                    window=CHANNEL_WINDOW, max_pktsize=CHANNEL_MAX_PACKET,
                )
        except TimeoutError:
            raise ConnectionProblem(
                f"node '{name}' is offline: its tunnel did not answer within {timeout:g} s"
            ) from None
        except asyncssh.ChannelOpenError as exc:
            raise ConnectionProblem(
                f"node '{name}' refused the connection through its tunnel: {exc.reason}"
            ) from None
        except (asyncssh.Error, OSError) as exc:
            raise ConnectionProblem(
                f"node '{name}' is offline: its tunnel closed ({exc})"
            ) from None
        self.channels_opened += 1
        metrics.tunnel_stream("channel")
        return reader, writer_for(session, reader, protocol)

    @property
    def peer_host(self) -> str:
        return self.peer.rsplit(":", 1)[0].strip("[]")

    def _local_host(self) -> str:
        sock = self.conn.get_extra_info("sockname")
        return str(sock[0]) if sock else "127.0.0.1"

    def close(self, reason: str = "") -> None:
        if reason:  # the agent logs it: say why, it is not a network failure
            self.conn.disconnect(asyncssh.DISC_BY_APPLICATION, reason)
        else:
            self.conn.close()


class TunnelDirectory:
    """Which nodes have a live tunnel to this proxy."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._tunnels: dict[str, Tunnel] = {}
        self._down_since: dict[str, datetime] = {}
        # Told when a node's tunnel comes or goes (the instance heartbeat publishes the set).
        self.on_change: list[Callable[[], None]] = []

    def node_ids(self) -> list[str]:
        return sorted(self._tunnels)

    def _changed(self) -> None:
        for listener in self.on_change:
            listener()

    def __len__(self) -> int:
        return len(self._tunnels)

    def get(self, node_id: str) -> Tunnel | None:
        return self._tunnels.get(node_id)

    def status(self, node_id: str) -> TunnelStatus | None:
        """Online since when, offline since when, or None if it never had a tunnel here."""
        tunnel = self._tunnels.get(node_id)
        if tunnel is not None:
            return TunnelStatus(True, tunnel.since, tunnel.peer)
        down = self._down_since.get(node_id)
        return TunnelStatus(False, down) if down is not None else None

    def add(self, tunnel: Tunnel) -> None:
        old = self._tunnels.get(tunnel.node_id)
        self._tunnels[tunnel.node_id] = tunnel
        self._down_since.pop(tunnel.node_id, None)
        self._changed()
        if old is not None and old is not tunnel:
            log.warning("node %s opened a new tunnel from %s; closing the one from %s",
                        tunnel.node_id, tunnel.peer, old.peer)
            old.close("a newer tunnel for this node replaced this one (is the node's "
                      "identity used by two processes?)")

    def remove(self, tunnel: Tunnel) -> bool:
        """Forget ``tunnel`` if it is still the node's current one."""
        if self._tunnels.get(tunnel.node_id) is not tunnel:
            return False
        del self._tunnels[tunnel.node_id]
        self._down_since[tunnel.node_id] = self.clock.now()
        self._changed()
        return True

