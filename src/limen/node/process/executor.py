"""Start a session's process as the login user: pipes or a real pty, exit status and signals.

The child is set up entirely in C and by small standard tools, never by Python code
running between fork and exec (unsafe with threads):

- ``setpriv`` switches supplementary groups, gid and uid (when the node is root; it
  sets the saved ids too, and the kernel clears root's capabilities with the uid).
  Done by a tool rather than by ``subprocess``'s user/group arguments: without them
  CPython forks with vfork (``child_exit`` says why that matters);
- ``subprocess`` starts a new session (setsid) for non-pty sessions;
- for a pty, ``setsid --ctty`` makes the pty the controlling terminal, so the kernel
  delivers Ctrl-C and SIGWINCH to the foreground process group;
- ``env --default-signal -C HOME`` resets every signal disposition to default (a node
  started from a non-interactive shell inherits ignored SIGINT/SIGQUIT, and so would
  its users' shells, where Ctrl-C would then do nothing) and changes to the home
  directory with the user's own permissions. Only where it must (env_free.py says when):
  otherwise ``subprocess`` changes directory, and no signal needs resetting.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import grp
import os
import shutil
import signal
import struct
import subprocess
import termios
from dataclasses import dataclass
from typing import Any

from limen.errors import BadParameter
from limen.node.process import child_exit, env_free
from limen.node.process.fdstream import FdStream
from limen.node.process.users import LocalUser

# Signals a client may send with a "signal" channel request (RFC 4254 6.9, as sshd).
CLIENT_SIGNALS = frozenset(
    {"ABRT", "ALRM", "FPE", "HUP", "ILL", "INT", "KILL", "PIPE", "QUIT", "SEGV", "TERM",
     "USR1", "USR2"}
)


@dataclass(frozen=True)
class TermSize:
    cols: int
    rows: int
    xpixels: int = 0
    ypixels: int = 0

    def __str__(self) -> str:
        return f"{self.cols}:{self.rows}"


@dataclass(frozen=True)
class ProcessSpec:
    user: LocalUser
    argv: tuple[str, ...]
    env: dict[str, str]
    cwd: str
    term_size: TermSize | None = None  # set: run on a new pty of this size
    # The user may change to ``cwd`` themself (env_free.user_may_enter, found off the
    # event loop: it stats the directories); unknown counts as no.
    may_enter_cwd: bool = False


@dataclass(frozen=True)
class ExitStatus:
    code: int | None  # exit code, or None when killed by a signal
    signal: str | None = None  # "TERM", "KILL", ... (no SIG prefix, as SSH sends it)

    @classmethod
    def from_returncode(cls, returncode: int) -> ExitStatus:
        if returncode >= 0:
            return cls(returncode)
        try:
            name = signal.Signals(-returncode).name.removeprefix("SIG")
        except ValueError:
            name = str(-returncode)
        return cls(None, name)

    @property
    def as_int(self) -> int:
        """Exit code as a shell reports it (128 + signal number when killed)."""
        if self.code is not None:
            return self.code
        try:
            return 128 + signal.Signals["SIG" + (self.signal or "")].value
        except KeyError:
            return 255


def _tool(name: str) -> str:
    path = shutil.which(name, path="/usr/bin:/bin")
    if not path:
        raise BadParameter(f"the node needs {name!r} (util-linux/coreutils) in /usr/bin or /bin")
    return path


def launcher(spec: ProcessSpec, *, with_env: bool = True) -> list[str]:
    """The command line that starts ``spec``; without ``env`` the caller changes to
    ``spec.cwd`` itself (``needs_env`` says when it may)."""
    if "=" in spec.argv[0]:  # env would take it for an assignment
        raise BadParameter(f"cannot run a program whose path contains '=': {spec.argv[0]}")
    chain = list(spec.argv)
    if with_env:
        chain = [_tool("env"), "--default-signal", "-C", spec.cwd, "--", *chain]
    if spec.term_size is not None:
        chain = [_tool("setsid"), "--ctty", *chain]
    return [*_privileges(spec.user), *chain]


def needs_env(spec: ProcessSpec) -> bool:
    """Whether ``env`` must reset signals or change directory as the user (env_free)."""
    if env_free.ignored_signals():
        return True
    return os.geteuid() == 0 and not spec.may_enter_cwd


def _start(spec: ProcessSpec, **popen: Any) -> subprocess.Popen[bytes]:
    """The session's process, started without ``env`` where it may be."""
    if not needs_env(spec):
        try:
            return child_exit.start(launcher(spec, with_env=False), cwd=spec.cwd, **popen)
        except OSError as exc:
            if exc.filename != spec.cwd:
                raise
            # The directory could not be entered after all (gone meanwhile; root not let
            # into a network file system's home): env tries as the user and says why.
    return child_exit.start(launcher(spec), **popen)


def set_winsize(fd: int, size: TermSize) -> None:
    packed = struct.pack("HHHH", size.rows, size.cols, size.xpixels, size.ypixels)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, packed)


def _tty_group() -> int:
    try:
        return grp.getgrnam("tty").gr_gid
    except KeyError:
        return -1


def _privileges(user: LocalUser) -> list[str]:
    """The ``setpriv`` prefix that becomes ``user``: groups first, then gid, then uid."""
    if os.geteuid() != 0:
        return []  # users.lookup_user only lets the node's own account through
    groups = (["--groups", ",".join(map(str, user.groups))] if user.groups
              else ["--clear-groups"])
    return [_tool("setpriv"), f"--regid={user.gid}", f"--reuid={user.uid}", *groups, "--"]


class Child:
    """A running session process and the parent's ends of its stdio."""

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        stdin: FdStream,
        stdout: FdStream,
        stderr: FdStream | None,
        tty_name: str | None,
    ) -> None:
        self._proc = proc
        self.pid = proc.pid
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr  # None on a pty: stderr is merged into the terminal
        self.tty_name = tty_name
        self.exited: asyncio.Future[ExitStatus] = asyncio.get_running_loop().create_future()
        self._waiter = asyncio.ensure_future(self._wait())

    @property
    def has_pty(self) -> bool:
        return self.tty_name is not None

    async def _wait(self) -> None:
        returncode = await child_exit.exit_code(self._proc)
        self.exited.set_result(ExitStatus.from_returncode(returncode))

    async def wait(self) -> ExitStatus:
        return await asyncio.shield(self.exited)

    def resize(self, size: TermSize) -> None:
        """Apply a window change; the kernel sends SIGWINCH to the foreground group."""
        if self.has_pty and not self.stdout.closed:
            set_winsize(self.stdout.fd, size)

    def send_signal(self, name: str) -> bool:
        """Deliver a client "signal" request to the session's process group."""
        if name not in CLIENT_SIGNALS:
            return False
        return self.signal_group(signal.Signals["SIG" + name])

    def signal_group(self, sig: int) -> bool:
        if self.exited.done():
            return False
        try:
            os.killpg(self.pid, sig)  # the child leads its own session and process group
        except ProcessLookupError:
            return False
        return True

    def close_stdin(self) -> None:
        if not self.has_pty:  # a pty has one fd for both directions; closing it ends the output
            self.stdin.close()

    def close(self) -> None:
        for stream in (self.stdin, self.stdout, self.stderr):
            if stream is not None:
                stream.close()


async def spawn(spec: ProcessSpec) -> Child:
    if spec.term_size is not None:
        return await _spawn_pty(spec)
    return await _spawn_pipes(spec)


# Session pipes hold this much (Linux's default is 64 KiB): a bulk copy through
# stdin or stdout then wakes the node and the process a sixteenth as often.
PIPE_SIZE = 1024 * 1024


def _big_pipe() -> tuple[int, int]:
    read_end, write_end = os.pipe()
    with contextlib.suppress(OSError):  # above fs.pipe-max-size for this user: keep the default
        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    return read_end, write_end


async def _spawn_pipes(spec: ProcessSpec) -> Child:
    in_r, in_w = _big_pipe()
    out_r, out_w = _big_pipe()
    err_r, err_w = os.pipe()
    try:
        proc = _start(spec, stdin=in_r, stdout=out_w, stderr=err_w, env=spec.env,
                      start_new_session=True)
    except BaseException:
        for fd in (in_w, out_r, err_r):
            os.close(fd)
        raise
    finally:
        for fd in (in_r, out_w, err_w):
            os.close(fd)
    return Child(proc, FdStream(in_w), FdStream(out_r), FdStream(err_r), None)


async def _spawn_pty(spec: ProcessSpec) -> Child:
    assert spec.term_size is not None
    master, slave = os.openpty()
    try:
        tty_name = os.ttyname(slave)
        set_winsize(slave, spec.term_size)
        if os.geteuid() == 0:  # as sshd: the user owns their terminal, group tty, mode 0620
            os.fchown(slave, spec.user.uid, _tty_group())
            os.fchmod(slave, 0o620)
        proc = _start(spec, stdin=slave, stdout=slave, stderr=slave,
                      env={**spec.env, "SSH_TTY": tty_name})
    except BaseException:
        os.close(master)
        raise
    finally:
        os.close(slave)
    stream = FdStream(master)
    return Child(proc, stream, stream, None, tty_name)
