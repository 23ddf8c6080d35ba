"""A listen address that cannot be bound, said as a sentence: which address, for what,
and (when this machine can tell) which process holds it.

Who holds a port comes from `ss -ltnp` (iproute2) when it is installed, else from
/proc/net/tcp{,6} and the /proc/PID/fd links to the listening socket's inode. Other
users' processes are visible only to root; then the message just says the port is taken.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from limen.errors import AlreadyExists, BadParameter

_SS_USER = re.compile(r'users:\(\("([^"]*)",pid=(\d+)')
_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp


@contextlib.contextmanager
def binding(what: str, addr: str) -> Iterator[None]:
    """Turn a failure to listen on `addr` (used for `what`) into a clear LimenError."""
    try:
        yield
    except OSError as exc:
        if exc.filename is not None or _errno(exc) not in _BIND_ERRORS:
            raise  # not about the address (a key file, say): the error says it best
        raise bind_error(what, addr, exc) from None


_BIND_ERRORS = (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL)


def _errno(exc: OSError) -> int | None:
    if exc.errno is not None:
        return exc.errno
    return exc.args[0] if exc.args and isinstance(exc.args[0], int) else None


def bind_error(what: str, addr: str, exc: OSError) -> Exception:
    code = _errno(exc)
    if code == errno.EADDRINUSE:
        port = _port_of(addr)
        holder = listener_owner(port) if port else None
        by = f" by {holder}" if holder else " by another process"
        return AlreadyExists(
            f"cannot listen on {addr} for {what}: the address is already in use{by}; "
            "stop it or choose another address"
        )
    if code == errno.EACCES:
        return BadParameter(
            f"cannot listen on {addr} for {what}: permission denied (ports below 1024 need "
            "root or CAP_NET_BIND_SERVICE)"
        )
    if code == errno.EADDRNOTAVAIL:
        return BadParameter(
            f"cannot listen on {addr} for {what}: that is not an address of this machine"
        )
    return BadParameter(f"cannot listen on {addr} for {what}: {exc.strerror or exc}")


def _port_of(addr: str) -> int | None:
    text = addr.rpartition(":")[2]
    return int(text) if text.isdigit() else None


def listener_owner(port: int) -> str | None:
    """'python3 (pid 1234)' for the process listening on TCP `port`. Not its command line:
    that may carry a secret (`--token ...`), and this goes into logs."""
    pid_name = _from_ss(port) or _from_proc(port)
    if pid_name is None:
        return None
    pid, name = pid_name
    return f"{name} (pid {pid})"


def _from_ss(port: int) -> tuple[int, str] | None:
    ss = shutil.which("ss")
    if ss is None:
        return None
    try:
        out = subprocess.run([ss, "-Hltnp", f"sport = :{port}"], capture_output=True,
                             text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = _SS_USER.search(out)
    return (int(match.group(2)), match.group(1)) if match else None


def _from_proc(port: int) -> tuple[int, str] | None:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) > 9 and fields[3] == _LISTEN and \
                        int(fields[1].rpartition(":")[2], 16) == port:
                    inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return None
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (pid_dir / "fd").iterdir():
                if os.readlink(fd) in inodes:
                    name = (pid_dir / "comm").read_text().strip()
                    return int(pid_dir.name), name
    return None
