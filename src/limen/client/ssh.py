"""Dialing nodes through the proxy's jump host, and running commands on them.

``connect_via_proxy`` opens two SSH connections: one to the proxy's jump host
(port 3023) and one to the node, carried inside a ``direct-tcpip`` channel of the
first. Both hosts are verified through the cluster's host CA alone: known_hosts is
a single ``@cert-authority *`` line, so there is never a trust-on-first-use prompt.

``run_command`` and ``run_interactive`` copy stdin/stdout/stderr with their own
loops; asyncssh's redirect() loses data under flow control (a second feed task starts
while the first waits, and asyncssh closes the connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import selectors
import signal
import stat
import sys
import termios
import tty
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import IO, Any

import asyncssh

from limen.client.tls_tunnel import TLSTunnel
from limen.errors import AccessDenied, ConnectionProblem, LimenError, NotFound
from limen.sshalgs import HOST_KEY_ALGS, hardened_options
from limen.tasks import cancel_and_wait

NODE_PORT = 3022  # ignored by the jump host: a node's SSH service is all it reaches
CHUNK = 256 * 1024

Source = bytes | IO[bytes] | asyncio.StreamReader | None
Sink = IO[bytes] | asyncio.StreamWriter | None


# connecting


def client_algs() -> dict[str, Any]:
    """hardened_options() in asyncssh's terms for a client, plus the host key types it
    accepts: certificates first, so hosts prove themselves with their CA-signed
    certificate (known_hosts holds only the host CA)."""
    options = hardened_options()
    options["server_host_key_algs"] = list(HOST_KEY_ALGS)
    return options


def host_ca_known_hosts(host_ca: asyncssh.SSHKey) -> asyncssh.SSHKnownHosts:
    line = host_ca.export_public_key("openssh").decode("ascii").strip()
    return asyncssh.import_known_hosts(f"@cert-authority * {line}\n")


class _NodeClient(asyncssh.SSHClient):
    """Closes the jump connection when the node connection ends."""

    def __init__(self, jump: asyncssh.SSHClientConnection) -> None:
        self._jump = jump

    def connection_lost(self, exc: Exception | None) -> None:
        self._jump.close()


async def connect_via_proxy(
    *,
    proxy_host: str,
    proxy_port: int,
    jump_user: str,
    node: str,
    login: str,
    key: asyncssh.SSHKey,
    cert: asyncssh.SSHCertificate,
    host_ca: asyncssh.SSHKey,
    cluster_name: str,
    connect_timeout: float = 10,
    tls_ca: str | None = None,
) -> asyncssh.SSHClientConnection:
    """An SSH connection to ``login@node``, tunneled through the proxy's jump host.

    ``node`` is a name, ``name.cluster`` or node id, and must be one of the
    principals of the node's host certificate. Closing the returned connection
    closes the jump connection too. Raises AccessDenied, NotFound or
    ConnectionProblem with a sentence for the person. With ``tls_ca`` the jump hop
    runs inside TLS to the proxy's web port (ALPN limen-ssh), verified by that CA.
    """
    common: dict[str, Any] = {
        "client_keys": [(key, cert)],
        "known_hosts": host_ca_known_hosts(host_ca),
        "agent_path": None,
        "config": [],  # no ~/.ssh/config: this dialer decides everything
        "preferred_auth": "publickey",
        "connect_timeout": connect_timeout,
        **client_algs(),
    }
    tunnel = TLSTunnel(tls_ca) if tls_ca else None
    try:
        jump = await asyncssh.connect(
            proxy_host, proxy_port, username=jump_user, tunnel=tunnel, **common
        )
    except (OSError, asyncssh.Error, TimeoutError) as exc:
        where = f"the proxy at {proxy_host}:{proxy_port}"
        raise translate_error(exc, "proxy", where, cluster_name) from exc
    try:
        conn = await asyncssh.connect(
            node, NODE_PORT, tunnel=jump, username=login,
            client_factory=lambda: _NodeClient(jump), **common,
        )
    except (OSError, asyncssh.Error, TimeoutError) as exc:
        jump.close()
        await jump.wait_closed()
        raise translate_error(exc, "node", f"node '{node}'", cluster_name) from exc
    conn.set_extra_info(limen_jump=jump)
    return conn


async def close_connection(conn: asyncssh.SSHClientConnection) -> None:
    """Close a node connection and wait until it and its jump connection are down."""
    conn.close()
    await conn.wait_closed()
    jump = conn.get_extra_info("limen_jump")
    if jump is not None:
        jump.close()
        await jump.wait_closed()


def translate_error(exc: BaseException, hop: str, where: str, cluster_name: str) -> LimenError:
    """asyncssh and socket errors as Limen errors.

    ``hop`` is "proxy" or "node": which connection failed; ``where`` names it for
    the person ("the proxy at host:3023", "node 'web1'").
    """
    if isinstance(exc, asyncssh.PermissionDenied):
        return AccessDenied(f"the {hop} refused your certificate: {exc.reason} ({where})")
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        return ConnectionProblem(
            f"{where} could not be verified: its host certificate is not signed by the host "
            f"CA of cluster '{cluster_name}' ({exc.reason}); refusing to continue"
        )
    if isinstance(exc, asyncssh.ChannelOpenError):
        return _channel_error(exc, where)
    if isinstance(exc, asyncssh.DisconnectError):
        return ConnectionProblem(f"{where} closed the connection: {exc.reason}")
    if isinstance(exc, TimeoutError):
        return ConnectionProblem(f"timed out connecting to {where}")
    if isinstance(exc, ConnectionRefusedError):
        return ConnectionProblem(f"{where} refused the connection; is it running?")
    if isinstance(exc, OSError):
        return ConnectionProblem(f"could not reach {where}: {exc.strerror or exc}")
    return ConnectionProblem(f"could not connect to {where}: {exc}")


def _channel_error(exc: asyncssh.ChannelOpenError, where: str) -> LimenError:
    # The jump host puts its sentence in the reason; the code says which kind.
    if exc.code == asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED:
        return AccessDenied(f"the proxy refused access to {where}: {exc.reason}")
    if "is not known" in exc.reason:
        return NotFound(exc.reason)
    return ConnectionProblem(f"the proxy could not connect to {where}: {exc.reason}")


# running commands


@dataclass(frozen=True)
class RemoteExit:
    status: int | None  # the exit status, when the command exited
    signal: str | None  # the signal name ("TERM"), when it was killed

    @property
    def code(self) -> int:
        """A shell-style exit code: the status, 128 + signal number, or 255 when unknown."""
        if self.status is not None:
            return self.status
        if self.signal:
            number = getattr(signal, "SIG" + self.signal, None)
            return 128 + int(number) if number is not None else 255
        return 255


async def run_command(
    conn: asyncssh.SSHClientConnection,
    command: str | None,
    *,
    stdin: Source = None,
    stdout: Sink = None,
    stderr: Sink = None,
    pty: bool = False,
    term_size: tuple[int, int] | None = None,
    term_type: str | None = None,
) -> RemoteExit:
    """Run ``command`` (None: the login shell) and copy its streams until it ends.

    stdin is bytes, a binary file, an asyncio StreamReader or None (end of input
    at once); stdout/stderr are binary files, StreamWriters or None (discarded).
    With ``pty`` the remote side merges stderr into stdout.
    """
    proc = await _start(conn, command, pty, term_size, term_type)
    return await _pump(proc, stdin, stdout, stderr)


async def run_interactive(
    conn: asyncssh.SSHClientConnection,
    command: str | None = None,
    *,
    stdin: IO[bytes] | None = None,
    stdout: IO[bytes] | None = None,
) -> int:
    """Run a shell or command on the local terminal; returns the remote exit code.

    When stdin is a terminal it is put in raw mode (keys go to the remote pty as
    typed) and restored afterwards; window size changes (SIGWINCH) are forwarded.
    """
    stdin = stdin or sys.stdin.buffer
    stdout = stdout or sys.stdout.buffer
    in_fd, out_fd = stdin.fileno(), stdout.fileno()
    is_tty = os.isatty(in_fd)
    size = _terminal_size(out_fd) if is_tty else None
    proc = await _start(conn, command, is_tty, size, None)
    with _raw_mode(in_fd, is_tty), _forward_resizes(proc, out_fd, is_tty):
        result = await _pump(proc, stdin, stdout, stdout)
    return result.code


async def _start(
    conn: asyncssh.SSHClientConnection,
    command: str | None,
    pty: bool,
    term_size: tuple[int, int] | None,
    term_type: str | None,
) -> asyncssh.SSHClientProcess[bytes]:
    if not pty:
        return await conn.create_process(command, encoding=None, request_pty=False)
    return await conn.create_process(
        command,
        encoding=None,
        request_pty="force",
        term_type=term_type or os.environ.get("TERM") or "xterm-256color",
        term_size=term_size or (80, 24),
    )


async def _pump(
    proc: asyncssh.SSHClientProcess[bytes], stdin: Source, stdout: Sink, stderr: Sink
) -> RemoteExit:
    feeder = asyncio.create_task(_feed(proc, stdin))
    try:
        await asyncio.gather(_copy_out(proc.stdout, stdout), _copy_out(proc.stderr, stderr))
        await proc.wait_closed()
    finally:
        await cancel_and_wait(feeder)
        proc.close()
    sig = proc.exit_signal
    return RemoteExit(proc.exit_status if sig is None else None, sig[0] if sig else None)


async def _feed(proc: asyncssh.SSHClientProcess[bytes], source: Source) -> None:
    try:
        async for chunk in _chunks(source):
            proc.stdin.write(chunk)
            await proc.stdin.drain()
        proc.stdin.write_eof()
    except (BrokenPipeError, ConnectionError, asyncssh.Error):
        pass  # the command stopped reading or ended; its exit status tells the rest


async def _copy_out(stream: asyncssh.SSHReader[bytes], sink: Sink) -> None:
    while True:
        data = await stream.read(CHUNK)
        if not data:
            return
        if isinstance(sink, asyncio.StreamWriter):
            sink.write(data)
            await sink.drain()
        elif sink is not None:
            sink.write(data)
            sink.flush()


async def _chunks(source: Source) -> AsyncIterator[bytes]:
    if source is None:
        return
    if isinstance(source, bytes | bytearray | memoryview):
        for start in range(0, len(source), CHUNK):
            yield bytes(source[start : start + CHUNK])
        return
    if isinstance(source, asyncio.StreamReader):
        while data := await source.read(CHUNK):
            yield data
        return
    fd = _selectable_fd(source)
    if fd is not None:
        async for data in _fd_chunks(fd):
            yield data
        return
    read = getattr(source, "read1", source.read)
    while data := await asyncio.to_thread(read, CHUNK):
        yield data


def _selectable_fd(source: IO[bytes]) -> int | None:
    """The fd of a terminal, pipe or socket (which epoll can watch), else None."""
    try:
        fd = source.fileno()
        mode = os.fstat(fd).st_mode
    except (AttributeError, OSError, ValueError):
        return None
    if not (stat.S_ISCHR(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
        return None
    return fd if _pollable(fd) else None


def _pollable(fd: int) -> bool:
    # Some character devices (/dev/null, what `< /dev/null` and daemons give) are
    # refused by epoll with EPERM; those are read in a thread instead.
    with selectors.DefaultSelector() as probe:
        try:
            probe.register(fd, selectors.EVENT_READ)
        except (OSError, ValueError):
            return False
    return True


async def _fd_chunks(fd: int) -> AsyncIterator[bytes]:
    # Wait for readability, then one os.read: the fd stays blocking (it is often
    # the terminal that stdout shares, and O_NONBLOCK there breaks stdout writes).
    loop = asyncio.get_running_loop()
    while True:
        ready = loop.create_future()
        loop.add_reader(fd, lambda f=ready: f.done() or f.set_result(None))
        try:
            await ready
        finally:
            loop.remove_reader(fd)
        try:
            data = os.read(fd, CHUNK)
        except OSError:  # EIO: the terminal went away
            return
        if not data:
            return
        yield data


# the local terminal


def _terminal_size(fd: int) -> tuple[int, int]:
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return (80, 24)
    return (size.columns, size.lines)


@contextlib.contextmanager
def _raw_mode(fd: int, enabled: bool) -> Iterator[None]:
    if not enabled:
        yield
        return
    saved = termios.tcgetattr(fd)
    tty.setraw(fd, termios.TCSANOW)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


@contextlib.contextmanager
def _forward_resizes(
    proc: asyncssh.SSHClientProcess[bytes], fd: int, enabled: bool
) -> Iterator[None]:
    if not enabled:
        yield
        return
    loop = asyncio.get_running_loop()

    def resized() -> None:
        with contextlib.suppress(OSError, asyncssh.Error):
            proc.change_terminal_size(*_terminal_size(fd))

    loop.add_signal_handler(signal.SIGWINCH, resized)
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGWINCH)
