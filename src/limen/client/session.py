"""One `limen ssh` session on the local terminal, with OpenSSH's pty rules and exit codes.

- No command and a local terminal, or -t with a local terminal: a remote pty, the local
  terminal in raw mode, window changes forwarded. -tt forces a pty without a local
  terminal; -T never asks for one.
- Exit code (what ssh does): the remote exit status; 255 when the remote command was
  killed by a signal (ssh ignores exit-signal; we also say which signal on stderr) or
  when the session ended without a status.

The copy loops, raw mode and resize forwarding are client/ssh.py's; this module only
picks which to use. (run_interactive there decides the pty from isatty() alone and
returns a shell-style 128+N, so it cannot express -T, -tt or ssh's 255.)
"""

from __future__ import annotations

import os
import sys

import asyncssh

from limen.client import ssh as sshlib
from limen.client.ssh import RemoteExit, run_command

SIGNAL_EXIT = 255  # OpenSSH's ssh exits 255 when the remote side reports a signal


def wants_pty(tty_flags: int, no_tty: bool, command: str | None, local_tty: bool) -> bool:
    """ssh's rule: -T never; -tt always; -t or no command only with a local terminal."""
    if no_tty:
        return False
    if tty_flags >= 2:
        return True
    return local_tty and (tty_flags == 1 or command is None)


def exit_code(result: RemoteExit) -> int:
    if result.status is not None:
        return result.status
    if result.signal:
        print(f"limen: the remote command was killed by signal {result.signal}",
              file=sys.stderr, flush=True)
    return SIGNAL_EXIT


async def run_session(
    conn: asyncssh.SSHClientConnection, command: str | None, pty: bool
) -> RemoteExit:
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    in_fd = stdin.fileno()
    if not pty or not os.isatty(in_fd):
        return await run_command(
            conn, command, stdin=stdin, stdout=stdout, stderr=sys.stderr.buffer, pty=pty
        )
    size = sshlib._terminal_size(in_fd)
    proc = await sshlib._start(conn, command, True, size, None)
    with sshlib._raw_mode(in_fd, True), sshlib._forward_resizes(proc, in_fd, True):
        return await sshlib._pump(proc, stdin, stdout, stdout)
