"""The event loop of Limen's long-running processes: uvloop, unless told otherwise.

uvloop runs asyncio's loop on libuv, with its sockets, timers and TLS in C. It is a
dependency on purpose: measured on the 2-core reference machine in one afternoon against
the standard library's loop, an idle proxy holding 300 tunneled nodes used 4.2 to 4.4% of
a core instead of 5.0 to 5.1%, 220 to 255 kB per tunnel instead of 330 to 360 kB, and the
proxy and the node used 13 to 19% less CPU per GB uploaded (bench/tunnels.py,
bench/one_port.py; the README's Benchmarks section has the runs).

``LIMEN_EVENT_LOOP=asyncio`` runs the standard library's loop instead: a way out if a
problem is ever traced to uvloop. Any other value is refused, so a typo is not silently
ignored.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from limen.errors import BadParameter

T = TypeVar("T")

ENV = "LIMEN_EVENT_LOOP"
CHOICES = ("uvloop", "asyncio")


def chosen() -> str:
    """The loop ``LIMEN_EVENT_LOOP`` asks for (uvloop when unset)."""
    name = os.environ.get(ENV, "").strip().lower() or "uvloop"
    if name not in CHOICES:
        raise BadParameter(f"{ENV}={name!r} is not one of {', '.join(CHOICES)}")
    return name


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    if chosen() == "asyncio":
        return asyncio.new_event_loop
    import uvloop  # only the commands that run a loop pay for the import

    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T],
        factory: Callable[[], asyncio.AbstractEventLoop] | None = None) -> T:
    """``asyncio.run(main)`` on the chosen loop (or on ``factory``'s)."""
    try:
        factory = factory or loop_factory()
    except BaseException:
        main.close()  # never awaited: say nothing about it
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def running() -> str:
    """The running loop's name, for the start-up log line: "uvloop" or "asyncio"."""
    module = type(asyncio.get_running_loop()).__module__
    return "uvloop" if module.startswith("uvloop") else "asyncio"
