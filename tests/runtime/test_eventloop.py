"""Which event loop `limen start` and `limen proxy ssh` run on: uvloop unless told."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from limen.errors import BadParameter
from limen.runtime import eventloop


async def _loop_name() -> str:
    await asyncio.sleep(0)
    return eventloop.running()


@pytest.mark.parametrize(("value", "expected"), [
    (None, "uvloop"), ("", "uvloop"), ("uvloop", "uvloop"), ("asyncio", "asyncio"),
    (" AsyncIO ", "asyncio"),
])
def test_the_loop_is_uvloop_unless_the_environment_asks_for_asyncio(
    monkeypatch: pytest.MonkeyPatch, value: str | None, expected: str
) -> None:
    if value is None:
        monkeypatch.delenv(eventloop.ENV, raising=False)
    else:
        monkeypatch.setenv(eventloop.ENV, value)
    assert eventloop.run(_loop_name()) == expected


def test_the_default_loop_is_uvloops_own_class(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(eventloop.ENV, raising=False)

    async def loop_type() -> type:
        return type(asyncio.get_running_loop())

    assert eventloop.run(loop_type()) is uvloop.Loop


def test_an_unknown_loop_is_refused_and_the_coroutine_is_not_left_unawaited(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """Warnings are errors here: a coroutine never awaited would fail this test too."""
    monkeypatch.setenv(eventloop.ENV, "trio")
    with pytest.raises(BadParameter, match="LIMEN_EVENT_LOOP='trio' is not one of uvloop, "
                                           "asyncio"):
        eventloop.run(_loop_name())
