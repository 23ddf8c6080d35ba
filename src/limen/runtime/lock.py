"""One `limen start` per data dir: an exclusive lock taken before anything else.

A second instance on the same data dir would fight over the database, the audit chain
and run.json (and, on its way out, delete the running instance's run.json). The lock is
`flock` on DATA_DIR/limen.lock: the kernel releases it when the process dies, so a crash
never leaves a stale lock behind. The file holds the owner's pid, for the message.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from limen.errors import AlreadyExists

LOCK_FILE = "limen.lock"


class DataDirLock:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock, or raise AlreadyExists naming the instance that holds it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _read_pid(fd)
            os.close(fd)
            who = f" (pid {owner})" if owner else ""
            raise AlreadyExists(
                f"another limen start{who} is already using the data dir {self.path.parent}; "
                "stop it first, or give this one another --data-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        os.close(self._fd)  # closing the descriptor releases the flock
        self._fd = None


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None
