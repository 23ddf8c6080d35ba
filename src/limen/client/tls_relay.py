"""`limen proxy tls HOST:PORT`: this process's stdin and stdout, carried inside TLS to the
proxy's web port (ALPN limen-ssh), for OpenSSH's own jump to run through.

`limen config --tls-routing` makes this the ProxyCommand of the hop to the proxy and
lets ssh make that hop itself (ProxyJump, that is `ssh -W`). Both SSH layers are then
OpenSSH's, in C, and the only Python on the way is this copy loop. Through
`limen proxy ssh`, which makes the outer SSH layer in asyncssh, the client side spends
more CPU per GB and each connection waits for asyncssh to import (bench/one_port.py).

The loop is a poll over three descriptors, not asyncio, on purpose:

- the TLS is an SSLSocket, so OpenSSL reads and writes the socket itself; asyncio's
  TLS passes every record through a memory BIO, one more copy each way. (A memory BIO
  driven from here, sending a read of stdin's records in one send where the socket
  writes each 16 KiB record on its own, cost more: 1.17 s of CPU per GB against 1.08);
- each direction has one buffer, reused, and the loop moves up to CHUNK at a time;
- nothing heavy is imported (no asyncio, asyncssh or cryptography): ssh waits for
  this process before its first byte.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import ssl

from limen.errors import ConnectionProblem

ALPN_SSH = "limen-ssh"  # the proxy's listener routes it to SSH (also client/tls_tunnel.py)
CHUNK = 256 * 1024  # one read of stdin; what TLS reads gather before one write to stdout
_IN, _OUT = select.POLLIN, select.POLLOUT


def open_tls(host: str, port: int, ctx: ssl.SSLContext, where: str,
             timeout: float = 10.0, alpn: str = ALPN_SSH) -> ssl.SSLSocket:
    """TCP, then the TLS handshake, verified through the cluster's CA (``ctx``), with
    ``alpn`` agreed; every failure is a sentence naming ``where``. The socket is left
    blocking, with ``timeout``."""
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except ConnectionRefusedError:
        raise ConnectionProblem(f"{where} refused the connection; is it running?") from None
    except TimeoutError:
        raise ConnectionProblem(f"timed out connecting to {where}") from None
    except OSError as exc:
        raise ConnectionProblem(f"could not reach {where}: {exc.strerror or exc}") from None
    try:
        tls = ctx.wrap_socket(raw, server_hostname=host)
    except ssl.SSLCertVerificationError as exc:
        raw.close()
        raise ConnectionProblem(
            f"{where} could not be verified: its TLS certificate is not signed by the "
            f"cluster's CA ({exc.verify_message}); refusing to continue") from None
    except (ssl.SSLError, OSError) as exc:
        raw.close()
        raise ConnectionProblem(
            f"the TLS handshake with {where} failed ({_reason(exc)}); is that address "
            "the proxy's web port?") from None
    if tls.selected_alpn_protocol() != alpn:
        tls.close()
        raise ConnectionProblem(
            f"{where} does not carry SSH inside TLS (it did not agree to ALPN {alpn}); "
            "is that address a Limen proxy's web port?")
    tls.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # keystrokes go at once
    return tls


def _waits_for(exc: ssl.SSLError) -> int:
    """What the TLS socket must become before the operation that raised can go on."""
    return _IN if isinstance(exc, ssl.SSLWantReadError) else _OUT


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or exc.__class__.__name__
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    return getattr(exc, "strerror", None) or str(exc) or exc.__class__.__name__


class Relay:
    """Copies stdin to the TLS socket and the TLS socket to stdout until either side
    ends. Back pressure is the descriptors' own: a direction whose output is full stops
    reading its input until the output drains."""

    def __init__(self, tls: ssl.SSLSocket, stdin: int, stdout: int, where: str,
                 first: bytes = b"") -> None:
        self.tls, self.stdin, self.stdout, self.where = tls, stdin, stdout, where
        self.up = b""  # read from stdin, not yet taken by TLS
        self.down_buf = bytearray(CHUNK)
        self.down = memoryview(first)  # read from TLS (in down_buf), not yet on stdout
        self.stdin_open = self.tls_open = self.stdout_open = True
        self.send_waits = _OUT  # what the TLS socket must become before a send can go on
        self.recv_waits = _IN  # ... and before a receive can (a TLS read may need to write)
        self.broken: str | None = None  # why the TLS connection ended, if not cleanly

    def run(self) -> None:
        """Relay until either side is done; raises when the connection broke."""
        while not self._finished():
            for fd, events in self._poll():
                self._handle(fd, events)
        if self.broken:
            raise ConnectionProblem(f"the connection to {self.where} broke: {self.broken}")

    def _finished(self) -> bool:
        received_all = not self.tls_open and not self.down
        return received_all or not self.stdout_open or self.broken is not None

    def _poll(self) -> list[tuple[int, int]]:
        wanted: dict[int, int] = {}  # by descriptor: stdin and stdout may be one socket

        def want(fd: int, mask: int) -> None:
            wanted[fd] = wanted.get(fd, 0) | mask

        if self.stdin_open and not self.up:
            want(self.stdin, _IN)
        # Always watched: poll reports an error on it once ssh has closed its end.
        want(self.stdout, _OUT if self.down else 0)
        if self.up:
            want(self.tls.fileno(), self.send_waits)
        if self.tls_open and not self.down:
            want(self.tls.fileno(), self.recv_waits)
        poller = select.poll()
        for fd, mask in wanted.items():
            poller.register(fd, mask)
        return poller.poll()

    def _handle(self, fd: int, events: int) -> None:
        """Each operation finds out for itself what it can do (a TLS socket that polls
        readable may hold only part of a record)."""
        if fd == self.tls.fileno():
            if self.up:
                self._send()
            if self.tls_open and not self.down:
                self._pump_down()
            return
        if fd == self.stdout and not self.down and events & (select.POLLERR | select.POLLHUP):
            self.stdout_open = False  # ssh is gone: nobody to deliver to
        if fd == self.stdout and self.down:
            self._flush_down()
            if not self.down:
                self._pump_down()  # TLS may hold decrypted bytes that poll cannot see
        if fd == self.stdin and self.stdin_open and not self.up:
            self._read_stdin()

    # stdin to TLS

    def _read_stdin(self) -> None:
        try:
            data = os.read(self.stdin, CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.stdin_open = False
            self._end_sending()
            return
        self.up = data
        self._send()

    def _send(self) -> None:
        try:
            # Whole or not at all: Python's TLS sockets do not write partially, and a
            # send that must wait is retried later with the very same bytes.
            sent = self.tls.send(self.up)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError) as exc:
            self.send_waits = _waits_for(exc)
            return
        except (ssl.SSLError, OSError) as exc:
            self.broken = _reason(exc)
            return
        self.up = self.up[sent:]
        if not self.up and not self.stdin_open:
            self._end_sending()

    def _end_sending(self) -> None:
        """stdin ended and all of it went out: half-close the TCP connection, as the
        proxy's end of the relay reads that as the end of the stream, and go on
        delivering what the proxy still sends until it closes.

        The half-close is TCP's, under the TLS: Python's TLS socket has no way to send
        close_notify and go on reading (its shutdown() and unwrap() end the TLS, and a
        second SSL_shutdown may discard data still arriving)."""
        with contextlib.suppress(OSError):
            socket.socket.shutdown(self.tls, socket.SHUT_WR)

    # TLS to stdout

    def _pump_down(self) -> None:
        """Gather what TLS has ready into down_buf, write it, and go on while the buffer
        keeps filling up and stdout keeps taking it all."""
        while self.tls_open and not self.down and self.broken is None:
            filled = self._gather()
            self.down = memoryview(self.down_buf)[:filled]
            self._flush_down()
            if filled < len(self.down_buf):
                return  # TLS had no more ready

    def _gather(self) -> int:
        view, filled = memoryview(self.down_buf), 0
        while filled < len(view):
            try:
                got = self.tls.recv_into(view[filled:])
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError) as exc:
                self.recv_waits = _waits_for(exc)
                break
            except (ssl.SSLError, OSError) as exc:
                if self.stdin_open:
                    self.broken = _reason(exc)
                else:  # after our half-close: some TLS stacks answer it with an alert
                    self.tls_open = False
                break
            if not got:
                self.tls_open = False  # the proxy closed the connection
                break
            filled += got
        return filled

    def _flush_down(self) -> None:
        while self.down:
            try:
                written = os.write(self.stdout, self.down)
            except BlockingIOError:
                return
            except OSError:  # ssh went away: nobody to deliver to
                self.stdout_open = False
                self.down = memoryview(b"")
                return
            self.down = self.down[written:]


def relay_stdio(tls: ssl.SSLSocket, where: str, stdin: int = 0, stdout: int = 1,
                first: bytes = b"") -> None:
    """Relay this process's stdin and stdout through ``tls``, ``first`` (already read from
    it) going out first; the descriptors are made non-blocking for the loop and put back
    as they were (a terminal is shared)."""
    before = {fd: os.get_blocking(fd) for fd in (stdin, stdout)}
    tls.setblocking(False)
    try:
        for fd in before:
            os.set_blocking(fd, False)
        Relay(tls, stdin, stdout, where, first).run()
    finally:
        for fd, blocking in before.items():
            os.set_blocking(fd, blocking)
