"""When a session's process may start without ``env --default-signal -C HOME`` in front.

``env`` does two things for a session (executor.py): it gives every signal its default
disposition, and it changes to the home directory as the user. Each is needed only
sometimes, and ``env`` costs an exec and a dynamic link, about 0.8 ms of the node's CPU
per session (a tenth of what the node spends on a short command under
`bench/sessions.py`). Without it, ``subprocess`` changes directory in the child before
``setpriv`` runs, so as root; the result must then be what the user would have got:

- *Signals.* An exec resets caught signals, and ``subprocess`` restores the two that
  CPython ignores (SIGPIPE, SIGXFSZ). Any other ignored signal would reach the user's
  shell ignored (a node started by ``nohup``, or from a non-interactive shell: Ctrl-C
  would do nothing). Read from the kernel at every start, not from Python's table: a
  library may change a disposition behind Python's back.
- *The directory.* Root enters any directory; the user only one where they may search
  it and every directory above it. Checked by the mode bits, the way the kernel checks
  them; a home behind a symbolic link, a directory with an access ACL, or anything the
  check cannot read, goes the slow way, where ``env`` tries as the user and says why it
  could not.
"""

from __future__ import annotations

import errno
import os
import signal
import stat

from limen.node.process.users import LocalUser

# Signals subprocess gives back their default disposition in the child (restore_signals).
_RESTORED = (1 << (signal.SIGPIPE - 1)) | (1 << (signal.SIGXFSZ - 1))
_NO_ACL = frozenset({errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP})


def ignored_signals() -> int:
    """The mask of signals this process ignores that a child would keep ignoring (bit
    N-1 for signal N); all of them when the kernel cannot be asked."""
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"SigIgn:"):
                    return int(line.split()[1], 16) & ~_RESTORED
    except (OSError, ValueError, IndexError):
        pass
    return ~_RESTORED


def user_may_enter(path: str, user: LocalUser) -> bool:
    """Whether ``user`` could change to ``path`` themself (search permission on it and
    on every directory above it). False when unsure: the caller then lets ``env`` try."""
    if user.uid == 0:
        return True
    if not os.path.isabs(path) or os.path.realpath(path) != os.path.normpath(path):
        return False  # relative, or through a symbolic link: the kernel's walk differs
    groups = {user.gid, *user.groups}
    parts = os.path.normpath(path).strip("/").split("/")
    directories = ["/"] + ["/" + "/".join(parts[:at]) for at in range(1, len(parts) + 1)
                           if parts[0]]
    return all(_searchable(directory, user.uid, groups) for directory in directories)


def _searchable(directory: str, uid: int, groups: set[int]) -> bool:
    try:
        info = os.stat(directory)
        if _has_access_acl(directory):
            return False
    except OSError:
        return False
    if not stat.S_ISDIR(info.st_mode):
        return False
    if info.st_uid == uid:
        return bool(info.st_mode & stat.S_IXUSR)
    if info.st_gid in groups:
        return bool(info.st_mode & stat.S_IXGRP)
    return bool(info.st_mode & stat.S_IXOTH)


def _has_access_acl(directory: str) -> bool:
    try:
        os.getxattr(directory, "system.posix_acl_access")
    except OSError as exc:
        if exc.errno in _NO_ACL:
            return False
        raise
    return True
