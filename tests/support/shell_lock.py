"""A guard against this machine's shell start-up, not against anything in Limen.

The tests' sessions run root's shell, as sshd would, and root's ``~/.bashrc`` on the
reference image runs ``pyenv init``, whose ``pyenv rehash`` takes a lock by creating
``$PYENV_ROOT/shims/.pyenv-shim``. When a session's shell is killed while holding it (the
tests end many sessions on purpose: locks, expiry, kills), the file stays behind and every
later root shell waits 60 s for it, so unrelated tests time out waiting for output. A
rehash holds the lock for well under a second; one older than ``STALE_AFTER`` seconds has
no holder and is removed.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

STALE_AFTER = 10.0
LOCK = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "shims" / ".pyenv-shim"


def _remove_if_stale(now: float) -> None:
    with contextlib.suppress(OSError):
        if now - LOCK.stat().st_mtime > STALE_AFTER:
            LOCK.unlink()


@contextlib.contextmanager
def stale_shell_locks_removed(every: float = 1.0) -> Iterator[None]:
    """While the tests run: check for a stale lock every ``every`` seconds."""
    if not LOCK.parent.is_dir():
        yield  # no pyenv on this machine: nothing to guard
        return
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(every):
            _remove_if_stale(time.time())

    thread = threading.Thread(target=watch, name="stale-shell-lock", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
