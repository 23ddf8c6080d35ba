"""The web port's socket: Nagle's algorithm off on every connection it accepts.

With Nagle on, a response written in two pieces (headers, then body) waits for the
client's delayed ACK, some 40 ms per request; asyncio turns it off only on sockets
whose protocol is IPPROTO_TCP, so ``bind`` must name it.
"""

from __future__ import annotations

import asyncio
import socket

from limen.proxy.https import bind


def _nodelay(sock: socket.socket) -> bool:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


async def test_connections_served_from_the_bound_socket_have_nagle_off() -> None:
    accepted: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            accepted.set_result(_nodelay(transport.get_extra_info("socket")))
            transport.close()

    listening = bind("127.0.0.1", 0)
    server = await asyncio.get_running_loop().create_server(Probe, sock=listening)
    try:
        port = listening.getsockname()[1]
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        async with asyncio.timeout(10):
            assert await accepted
        writer.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_sockets_the_multiplexer_accepts_itself_get_nagle_off() -> None:
    """The multiplexed listener accepts with sock_accept, then hands the socket to asyncio."""
    loop = asyncio.get_running_loop()
    listening = bind("127.0.0.1", 0)
    try:
        port = listening.getsockname()[1]
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        async with asyncio.timeout(10):
            conn, _ = await loop.sock_accept(listening)
        transport, _protocol = await loop.connect_accepted_socket(asyncio.Protocol, conn)
        assert _nodelay(transport.get_extra_info("socket"))
        transport.close()
        writer.close()
    finally:
        listening.close()
