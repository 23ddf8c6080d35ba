"""Session processes started by CPython's subprocess and heard of through a pidfd, on
the standard event loop and on uvloop (what `limen start` runs)."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from limen.node.process import child_exit

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop,
}


def run(loop_name: str, coro: Coroutine[Any, Any, Any]) -> Any:
    with asyncio.Runner(loop_factory=LOOPS[loop_name]) as runner:
        return runner.run(coro)


def open_pidfds() -> list[str]:
    """This process's open pidfds (other fds may come and go with other tests' threads)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[pidfd]":
                found.append(fd)
        except FileNotFoundError:  # closed meanwhile
            pass
    return found


@pytest.mark.parametrize("loop_name", LOOPS)
def test_exit_codes_and_signals_are_heard_and_the_children_reaped(loop_name: str) -> None:
    async def scenario() -> list[tuple[int, int | None]]:
        procs = [child_exit.start(["sh", "-c", f"sleep 0.{n % 3}; exit {n}"]) for n in range(8)]
        procs.append(child_exit.start(["sh", "-c", "kill -TERM $$"]))
        codes = await asyncio.gather(*(child_exit.exit_code(p) for p in procs))
        assert open_pidfds() == []  # every pidfd closed
        for proc in procs:  # and every child reaped: no zombies left
            with pytest.raises(ChildProcessError):
                os.waitpid(proc.pid, os.WNOHANG)
        return [(code, p.returncode) for code, p in zip(codes, procs, strict=True)]

    results = run(loop_name, scenario())
    assert results == [(n, n) for n in range(8)] + [(-signal.SIGTERM, -signal.SIGTERM)]


@pytest.mark.parametrize("loop_name", LOOPS)
def test_a_child_killed_by_its_process_group_is_heard(loop_name: str) -> None:
    """The node ends a session with killpg on the group the child leads."""

    async def scenario() -> int:
        proc = child_exit.start(["sleep", "60"], start_new_session=True)
        waiting = asyncio.ensure_future(child_exit.exit_code(proc))
        await asyncio.sleep(0)
        assert not waiting.done()
        os.killpg(proc.pid, signal.SIGKILL)
        return await asyncio.wait_for(waiting, 10)

    assert run(loop_name, scenario()) == -signal.SIGKILL
