"""Stopping the processes a test started: ask, wait, then kill what did not listen."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess


def stop_process(proc: subprocess.Popen, *, sig: int = signal.SIGTERM, timeout: float = 10,
                 group: bool = False) -> None:
    """Send ``sig`` (to the process group the test created, with ``group``: the server and
    the children it forked), wait ``timeout`` seconds, then SIGKILL and reap."""
    if proc.poll() is not None and not group:
        return  # (a group may outlive its leader: it is signalled all the same)

    def send(which: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(proc.pid, which)
            else:
                proc.send_signal(which)

    send(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        proc.wait()
