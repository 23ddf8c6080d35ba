"""Serve the ASGI app with uvicorn over TLS, in the caller's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
from collections.abc import Callable, Generator, Sequence
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from limen.tasks import serve_until_started

KEEP_ALIVE_SECONDS = 75


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: service.py owns the process's signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # The protocol must be named: asyncio turns Nagle's algorithm off (TCP_NODELAY) only
    # on sockets whose proto is IPPROTO_TCP, and accepted sockets inherit it. With Nagle
    # on, a response written as headers then body waits for the client's delayed ACK:
    # about 40 ms per request.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


class HTTPSServer:
    def __init__(self, app: FastAPI, sock: socket.socket, certfile: Path, keyfile: Path,
                 trusted_proxies: Sequence[str] = ()) -> None:
        config = uvicorn.Config(
            app,
            ssl_certfile=str(certfile),
            ssl_keyfile=str(keyfile),
            log_config=None,
            access_log=False,
            lifespan="off",
            # llhttp, in C: the parser of Node.js. h11, uvicorn's other choice, is pure
            # Python, and an idle proxy's work is mostly nodes' small requests.
            http="httptools",
            server_header=False,
            timeout_graceful_shutdown=5,
            # Longer than a node's heartbeat interval (60 s): its next heartbeat reuses
            # the connection instead of paying a TLS handshake (KEEP_ALIVE_SECONDS).
            timeout_keep_alive=KEEP_ALIVE_SECONDS,
            # X-Forwarded-For names the client (audit's addr.remote, the rate limit's
            # bucket) only from the configured proxies. uvicorn's default trusts it from
            # loopback, which would let anyone on the proxy's host pose as any address.
            proxy_headers=bool(trusted_proxies),
            forwarded_allow_ips=list(trusted_proxies),
        )
        self._server = _Server(config)
        self._sock = sock
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        return self._sock.getsockname()[1]

    @property
    def socket(self) -> socket.socket:
        """The bound listening socket (the multiplexed listener serves it instead)."""
        return self._sock

    def protocol_factory(self) -> Callable[[], asyncio.Protocol]:
        """HTTP connections handed over by the multiplexed listener (TLS already done)."""
        config = self._server.config
        if not config.loaded:
            config.load()
        return functools.partial(
            config.http_protocol_class,
            config=config,
            server_state=self._server.server_state,
            app_state={},
        )

    async def close_connections(self) -> None:
        """Multiplexed mode: end the HTTP connections uvicorn did not accept itself."""
        for connection in list(self._server.server_state.connections):
            connection.shutdown()

    async def start(self) -> None:
        self._task = await serve_until_started(self._server, self._sock, "HTTPS server")

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await self._task
        self._sock.close()
