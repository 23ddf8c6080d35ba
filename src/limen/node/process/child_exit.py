"""Start a session's process with CPython's subprocess, and hear of its exit on any loop.

Why not ``asyncio.create_subprocess_exec``: the node runs on uvloop, whose
subprocess_exec is libuv's ``fork()`` of the whole node. In a node of 130 MB that
took 7.6 ms of CPU and held the event loop (and the GIL) for 17 ms per session
(py-spy: a third of the node's busy time under bench/sessions.py). CPython's
subprocess uses ``vfork()``: 0.15 ms. The exit is then heard through a pidfd, which
any event loop can watch like a socket, as asyncio's own PidfdChildWatcher does.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from typing import Any


def start(argv: list[str], **popen: Any) -> subprocess.Popen[bytes]:
    """The process, started; the caller keeps its own ends of the stdio fds."""
    return subprocess.Popen(argv, close_fds=True, **popen)


async def exit_code(proc: subprocess.Popen[bytes]) -> int:
    """Wait for ``proc`` to end and reap it: its exit code, or -N if signal N ended it
    (as asyncio's Process.returncode)."""
    try:
        pidfd = os.pidfd_open(proc.pid)
    except OSError:  # a kernel before 5.3: a thread waits instead
        return await asyncio.to_thread(proc.wait)
    loop = asyncio.get_running_loop()
    ended: asyncio.Future[None] = loop.create_future()
    loop.add_reader(pidfd, lambda: ended.done() or ended.set_result(None))
    try:
        await ended
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
    # It has exited (the pidfd said so): this does not block. Nobody else reaps it.
    return proc.wait()
