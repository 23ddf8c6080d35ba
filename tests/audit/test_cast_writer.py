"""A session's recording file: its periodic fsync runs off the event loop (a slow disk
must not stall the node's other sessions), and a failed fsync still fails the recording."""

from __future__ import annotations

import asyncio
import errno
import os
import threading
from pathlib import Path

import pytest

from limen.recording import cast
from limen.recording.cast import CastWriter


def _writer(tmp_path: Path) -> CastWriter:
    return CastWriter(tmp_path / "s.cast", 80, 24, 0)


async def test_output_does_not_wait_for_a_slow_fsync(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writer = _writer(tmp_path)
    order: list[str] = []
    entered, release = threading.Event(), threading.Event()
    real = os.fsync

    mine = (tmp_path / "s.cast").stat().st_ino

    def slow(fd: int) -> None:
        if os.fstat(fd).st_ino != mine:  # another test's thread syncing its own file
            real(fd)
            return
        entered.set()
        release.wait(10)
        order.append("synced")
        real(fd)

    monkeypatch.setattr(cast, "FSYNC_SECONDS", 0.0)  # every event is due a sync
    monkeypatch.setattr(os, "fsync", slow)
    writer.output(b"first\r\n")
    assert await asyncio.to_thread(entered.wait, 10)  # the sync runs, in another thread
    writer.output(b"second\r\n")  # a sync is still running: no second one
    order.append("written")
    release.set()
    writer.close()  # waits for the running sync, then syncs and closes
    assert order[0] == "written" and order.count("synced") == 2
    assert b"second" in (tmp_path / "s.cast").read_bytes()


async def test_a_failed_background_fsync_fails_the_next_write(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writer = _writer(tmp_path)
    tried = threading.Event()

    def broken(fd: int) -> None:
        tried.set()
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(cast, "FSYNC_SECONDS", 0.0)
    monkeypatch.setattr(os, "fsync", broken)
    writer.output(b"lost?\r\n")
    assert await asyncio.to_thread(tried.wait, 10)
    for _ in range(100):  # the worker thread records the error just after raising it
        if writer._sync_error is not None:  # noqa: SLF001 - what the next write raises
            break
        await asyncio.sleep(0.01)
    with pytest.raises(OSError, match="I/O error"):
        writer.output(b"more\r\n")
    with pytest.raises(OSError):
        writer.close()
