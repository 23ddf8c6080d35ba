"""Writing secrets and state to disk: atomically, with the mode set before any byte lands."""

from __future__ import annotations

import os
from pathlib import Path


def write_private(path: Path, data: str | bytes, mode: int = 0o600) -> None:
    """Write `data` to `path` via a temporary file, fsync, and rename into place.

    A crash leaves either the old file or the new one, never half of either; the file
    never exists with a wider mode than asked for.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data.encode() if isinstance(data, str) else data)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(tmp, mode)
    tmp.replace(path)
