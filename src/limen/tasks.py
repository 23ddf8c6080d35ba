"""Background asyncio tasks: the one way to stop them, and to start a server in one."""

from __future__ import annotations

import asyncio
import socket
from typing import Any


async def cancel_and_wait(task: asyncio.Future[Any] | None) -> None:
    """Cancel a background task (if any) and wait until it has unwound, so that what it
    held is released before the caller goes on."""
    if task is None:
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise  # the caller itself is being cancelled: that must not be swallowed


async def serve_until_started(server: Any, sock: socket.socket, what: str) -> asyncio.Task[None]:
    """Run a uvicorn ``server`` on ``sock`` in the background; return its task once it
    accepts connections. A start-up error is raised here, not left in the task."""
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            await task  # surfaces the start-up error
            raise RuntimeError(f"the {what} stopped while starting")
        await asyncio.sleep(0.01)
    return task
