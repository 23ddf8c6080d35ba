"""`limen proxy ssh` and `limen proxy tls` widen the pipes ssh gives them, so that each
read and write moves more than 64 KiB; on anything that is not a pipe it changes nothing
and never fails."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from limen.client.pipes import PIPE_SIZE, widen_pipe


def test_a_pipe_is_widened_to_pipe_size() -> None:
    read_end, write_end = os.pipe()
    try:
        assert fcntl.fcntl(read_end, fcntl.F_GETPIPE_SZ) < PIPE_SIZE
        widen_pipe(read_end)
        assert fcntl.fcntl(read_end, fcntl.F_GETPIPE_SZ) >= PIPE_SIZE
        os.write(write_end, b"x" * (PIPE_SIZE // 2))  # more than 64 KiB, without blocking
        assert len(os.read(read_end, PIPE_SIZE)) == PIPE_SIZE // 2
    finally:
        os.close(read_end)
        os.close(write_end)


def test_a_file_or_a_closed_descriptor_is_left_alone(tmp_path: Path) -> None:
    with (tmp_path / "f").open("wb") as fh:
        widen_pipe(fh.fileno())  # not a pipe: EBADF from the kernel, ignored
        fh.write(b"still writable")
    assert (tmp_path / "f").read_bytes() == b"still writable"
    read_end, write_end = os.pipe()
    os.close(read_end)
    os.close(write_end)
    widen_pipe(read_end)  # closed: nothing to widen, no error
