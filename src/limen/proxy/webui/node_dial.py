"""The proxy as an SSH client of a node, for a browser terminal.

The node is reached exactly as ``ssh -J`` reaches it: the jump host resolves it and asks
its policy (the user exists, a current role reaches the node's labels, no lock), then
its router opens the stream (through the node's reverse tunnel, or to an address that
proved in a handshake that it is that node). Over that stream runs an ordinary SSH
client connection that logs in with the web session's certificate and verifies the node
through the cluster's host CA, so the node applies roles, locks, recording, idle timeout
and audit as for any SSH session.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import asyncssh

from limen.errors import AccessDenied, ConnectionProblem, LimenError
from limen.proxy.ssh_jump import JumpHost
from limen.proxy.ssh_routes import JumpIdentity, NodeRoute
from limen.sshalgs import HOST_KEY_ALGS, hardened_options

CONNECT_TIMEOUT = 10.0
CHUNK = 64 * 1024


class _StreamTransport(asyncio.Transport):
    """The writing half of a node stream, as the transport asyncssh writes to."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        super().__init__({"peername": writer.get_extra_info("peername"),
                          "sockname": writer.get_extra_info("sockname")})
        self._writer = writer

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._writer.is_closing():
            self._writer.write(bytes(data))

    def is_closing(self) -> bool:
        return self._writer.is_closing()

    def close(self) -> None:
        self._writer.close()

    def abort(self) -> None:
        transport = self._writer.transport
        if transport is not None:
            transport.abort()


class StreamTunnel:
    """asyncssh's ``tunnel`` over a (reader, writer) pair: the node stream the router
    opened. asyncssh calls ``create_connection`` once, with its connection factory."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._pump: asyncio.Task[None] | None = None

    async def create_connection(self, session_factory: Any, _host: str,
                                _port: int) -> tuple[asyncio.Transport, Any]:
        protocol = session_factory()
        transport = _StreamTransport(self._writer)
        protocol.connection_made(transport)
        self._pump = asyncio.get_running_loop().create_task(self._feed(protocol))
        return transport, protocol

    async def _feed(self, protocol: Any) -> None:
        error: Exception | None = None
        try:
            while data := await self._reader.read(CHUNK):
                protocol.data_received(data)
            protocol.eof_received()
        except (ConnectionError, OSError) as exc:
            error = exc
        finally:
            protocol.connection_lost(error)

    def close(self) -> None:
        self._writer.close()

    async def wait_closed(self) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            await self._writer.wait_closed()


def _client_options(key: asyncssh.SSHKey, cert: asyncssh.SSHCertificate,
                    host_ca: asyncssh.SSHKey) -> dict[str, Any]:
    options = hardened_options()
    options["server_host_key_algs"] = list(HOST_KEY_ALGS)  # certificates first
    line = host_ca.export_public_key("openssh").decode("ascii").strip()
    return {
        "client_keys": [(key, cert)],
        "known_hosts": asyncssh.import_known_hosts(f"@cert-authority * {line}\n"),
        "agent_path": None,
        "config": [],
        "preferred_auth": "publickey",
        "connect_timeout": CONNECT_TIMEOUT,
        **options,
    }


async def connect_node(jump: JumpHost, identity: JumpIdentity, target: str,
                       key: asyncssh.SSHKey, cert: asyncssh.SSHCertificate,
                       host_ca: asyncssh.SSHKey) -> tuple[NodeRoute, asyncssh.SSHClientConnection]:
    """Dial ``target`` as the jump host would for ``identity`` and log in as
    ``identity.login``; LimenError (AccessDenied, NotFound, ConnectionProblem) says why not."""
    route, reader, writer = await jump.dial(identity, target)
    try:
        conn = await asyncssh.connect(
            route.node_id, 0, tunnel=StreamTunnel(reader, writer), username=identity.login,
            **_client_options(key, cert, host_ca),
        )
    except BaseException as exc:  # a cancelled login too: the stream goes with it
        writer.close()
        problem = _login_problem(route, exc)
        if problem is None:
            raise
        raise problem from None
    return route, conn


def _login_problem(route: NodeRoute, exc: BaseException) -> LimenError | None:
    """What to tell the user whose login at the node failed (None: raise ``exc``)."""
    if isinstance(exc, asyncssh.PermissionDenied):
        return AccessDenied(f"node '{route.name}' refused the login: {exc.reason}")
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        return ConnectionProblem(
            f"node '{route.name}' could not be verified through the cluster's host CA "
            f"({exc.reason})")
    if isinstance(exc, (OSError, asyncssh.Error, TimeoutError)):
        reason = getattr(exc, "reason", "") or str(exc) or type(exc).__name__
        return ConnectionProblem(f"node '{route.name}' could not be reached: {reason}")
    return None
