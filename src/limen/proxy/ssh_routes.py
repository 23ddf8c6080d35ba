"""What the jump host needs from the cluster: routes to nodes, node policy, an observer.

The cluster glue implements these protocols (nodes from heartbeats, reverse
tunnels, roles and locks, the audit log); ``StaticRouter`` and ``open_tcp_stream``
are the simple versions for tests and fixed set-ups.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from limen.errors import ConnectionProblem, NotFound
from limen.sshauth import CertFacts

NODE_DIAL_TIMEOUT = 5.0
STREAM_LIMIT = 1024 * 1024  # node reader buffer: big reads, few wake-ups


@dataclass
class NodeRoute:
    """Where a node's SSH service listens."""

    node_id: str
    name: str
    host: str
    port: int
    kind: str = ""  # "openssh": an agentless node, whose SSH the proxy ends (proxy/openssh)


@dataclass(frozen=True)
class JumpIdentity:
    """Who is on the other end of a jump connection, from their certificate."""

    user: str  # the certificate's key id: the Limen user
    login: str  # the SSH user name given at the jump hop
    principals: tuple[str, ...]
    valid_after: datetime
    valid_before: datetime
    serial: int
    permits: frozenset[str]
    fingerprint: str
    remote_addr: str
    remote_port: int

    @classmethod
    def from_cert(cls, cert: CertFacts, login: str, peer: Any) -> JumpIdentity:
        addr, port = (str(peer[0]), int(peer[1])) if peer else ("", 0)
        return cls(
            user=cert.key_id,
            login=login,
            principals=cert.principals,
            valid_after=cert.valid_after,
            valid_before=cert.valid_before,
            serial=cert.serial,
            permits=cert.permits,
            fingerprint=cert.fingerprint,
            remote_addr=addr,
            remote_port=port,
        )


class JumpConnection(Protocol):
    """What the jump host can do with each live connection it hands on to nodes (an SSH
    connection, a direct connection inside TLS, a browser terminal): locks and expiry
    end them, node removals end their streams, shutdown closes them."""

    @property
    def identity(self) -> JumpIdentity | None: ...

    def end(self, message: str) -> None: ...

    def end_channels_to(self, applies: Callable[[NodeRoute], bool]) -> int: ...

    def close(self) -> None: ...

    async def wait_closed(self) -> None: ...


class NodeRouter(Protocol):
    async def resolve(self, target: str) -> NodeRoute:
        """Find a node by name or id (the jump host strips ".CLUSTER" first).

        Raises NotFound("node 'x' is not known") or ConnectionProblem("node 'x' is offline").
        """
        ...

    async def open_stream(
        self, route: NodeRoute
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A byte stream to the node's SSH service (TCP, or a reverse tunnel's channel)."""
        ...


class JumpPolicy(Protocol):
    async def check_node_access(self, identity: JumpIdentity, route: NodeRoute) -> None:
        """Raise AccessDenied("a clear sentence") when the identity may not reach the node."""
        ...

    async def connection_deadline(self, identity: JumpIdentity) -> datetime | None:
        """When the identity's connections end by themselves (None: they do not)."""
        ...


class NodeOpener(Protocol):
    async def open(self, identity: JumpIdentity, route: NodeRoute,
                   ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A stream to an SSH server the proxy runs for an agentless node."""
        ...

    def end_sessions(self, applies: Callable[[JumpIdentity, NodeRoute, str], bool],
                     message: str, reason: str) -> int:
        """End the sessions it relays whose (identity, node, login) ``applies``."""
        ...


class JumpObserver(Protocol):
    async def on_event(self, name: str, fields: dict[str, Any]) -> None: ...


async def open_tcp_stream(
    route: NodeRoute, timeout: float = NODE_DIAL_TIMEOUT
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Dial a node directly over TCP: the default ``NodeRouter.open_stream``."""
    try:
        # asyncio.timeout, not wait_for: on Python 3.11, wait_for cancelled just as the
        # connection is made drops the stream without closing it.
        async with asyncio.timeout(timeout):
            return await asyncio.open_connection(route.host, route.port, limit=STREAM_LIMIT)
    except (TimeoutError, OSError) as exc:
        raise dial_failure(route, exc, timeout) from None


def dial_failure(route: NodeRoute, exc: BaseException, timeout: float) -> ConnectionProblem:
    """What to tell a user whose node could not be dialed."""
    where = f"{route.host}:{route.port}"
    if isinstance(exc, TimeoutError):
        return ConnectionProblem(
            f"node '{route.name}' did not answer at {where} within {timeout:g} s"
        )
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return ConnectionProblem(f"node '{route.name}' could not be reached at {where}: {reason}")


def strip_cluster(target: str, cluster_name: str) -> str:
    """'node1.CLUSTER' -> 'node1'; anything else unchanged."""
    suffix = "." + cluster_name.lower()
    if cluster_name and target.lower().endswith(suffix) and len(target) > len(suffix):
        return target[: -len(suffix)]
    return target


@dataclass
class StaticRouter:
    """A fixed table of nodes, dialed over TCP: for tests and static set-ups."""

    routes: list[NodeRoute] = field(default_factory=list)
    offline: set[str] = field(default_factory=set)  # node ids

    async def resolve(self, target: str) -> NodeRoute:
        for route in self.routes:
            if target in (route.name, route.node_id):
                if route.node_id in self.offline:
                    raise ConnectionProblem(f"node '{target}' is offline")
                return route
        raise NotFound(f"node '{target}' is not known")

    async def open_stream(
        self, route: NodeRoute
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await open_tcp_stream(route)
