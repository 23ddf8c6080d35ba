"""A browser terminal: a WebSocket on one side, an SSH session on a node on the other.

Frames: the browser sends its keystrokes (and pastes) as binary frames of UTF-8 and
control messages as JSON text frames (``hello`` with the CSRF token and the window
size first, then ``resize``); the proxy sends the session's output as binary frames
(xterm.js decodes UTF-8 itself, also across frame boundaries) and JSON text frames for
``ready`` and ``closed`` (with the reason the person is shown).

Each terminal is registered among the jump host's connections, with the identity its
certificate gives, so what ends ``ssh -J`` connections ends it too: a lock (the proxy
acts a second after the node, which has already told the person why), the removal of
its node, and the proxy's shutdown. It also ends with the web session: at the
certificate's expiry, when the person signs out here, and within ``RECHECK`` of
anything else that ends the session (the user deleted, a sign-out served by another
proxy), which a check every few seconds finds. Closing the tab closes the WebSocket,
which closes the SSH connection: the node ends the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import asyncssh
from starlette.websockets import WebSocket, WebSocketDisconnect

from limen.proxy.ssh_jump import JumpHost
from limen.proxy.ssh_routes import JumpIdentity, NodeRoute
from limen.tasks import cancel_and_wait
from limen.timers import TimerHandle

log = logging.getLogger(__name__)

TERM_TYPE = "xterm-256color"
RECHECK = timedelta(seconds=5)  # how often a terminal asks whether its session is good
HIGH_WATER = 1024 * 1024  # output queued for the browser before the node is paused
LOW_WATER = 256 * 1024
MAX_REASON = 120  # a WebSocket close reason is at most 123 bytes
# Close codes the page understands (4000-4999 are the application's own).
CLOSED_NORMALLY = 1000
CLOSED_BY_PROXY = 4000  # a lock, sign-out, certificate expiry, node removal, shutdown
REFUSED = 4403  # access denied: roles, locks, a cross-site request
SIGNED_OUT = 4401  # no valid web session
FAILED = 4502  # the node could not be reached


def close_reason(text: str) -> str:
    """A close reason fits 123 bytes of UTF-8; the full text goes in the closed frame."""
    data = text.encode()[:MAX_REASON]
    return data.decode("utf-8", "ignore")


class _Output(asyncssh.SSHClientSession[bytes]):
    """The node's side of the terminal: output in, end of session out."""

    def __init__(self, terminal: WebTerminal) -> None:
        self._terminal = terminal
        self.exit_status: int | None = None
        self.exit_signal: str | None = None
        self.notice = ""  # the node's last "limen: ..." line (why it ended the session)

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if datatype == asyncssh.EXTENDED_DATA_STDERR:
            self._remember_notice(data)
        self._terminal.output(data)

    def _remember_notice(self, data: bytes) -> None:
        for line in data.decode("utf-8", "replace").splitlines():
            if line.strip().startswith("limen: "):
                self.notice = line.strip()

    def exit_status_received(self, status: int) -> None:
        self.exit_status = status

    def exit_signal_received(self, signal: str, core_dumped: bool, msg: str,
                             lang: str) -> None:
        self.exit_signal = signal

    def connection_lost(self, exc: Exception | None) -> None:
        self._terminal.node_closed()


class WebTerminal:
    """One live browser terminal (registered in ``JumpHost.connections``)."""

    def __init__(self, jump: JumpHost, ws: WebSocket, identity: JumpIdentity,
                 web_session: str) -> None:
        self._jump = jump
        self._ws = ws
        self.identity = identity
        self.web_session = web_session
        self.route: NodeRoute | None = None
        self.bytes_up = 0
        self.bytes_down = 0
        self._conn: asyncssh.SSHClientConnection | None = None
        self._chan: asyncssh.SSHClientChannel[bytes] | None = None
        self._session: _Output | None = None
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._queued = 0
        self._paused = False
        self._ended = asyncio.Event()
        self._reason: tuple[int, str] | None = None
        self._expiry: TimerHandle | None = None
        self._recheck: TimerHandle | None = None
        self._still_good: Callable[[], Awaitable[str | None]] | None = None
        self._checking: asyncio.Task[None] | None = None

    # -- the jump host's view (JumpHost.connections) -------------------------------------

    def end(self, message: str) -> None:
        """End the terminal, telling the person why (a lock, expiry, sign-out, ...)."""
        self._finish(CLOSED_BY_PROXY, message)

    def end_channels_to(self, applies: Callable[[NodeRoute], bool]) -> int:
        if self.route is not None and applies(self.route):
            self.end(f"limen: the connection to node '{self.route.name}' was ended "
                     "(the node was removed or locked)")
            return 1
        return 0

    def close(self) -> None:
        self.end("limen: the proxy is shutting down")

    async def wait_closed(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ended.wait(), 10)

    # -- running ------------------------------------------------------------------------

    def watch(self, still_good: Callable[[], Awaitable[str | None]]) -> None:
        """Ask ``still_good`` every RECHECK whether the web session holds; a reason
        (its user deleted, signed out elsewhere, ...) ends the terminal with it."""
        self._still_good = still_good

    async def run(self, conn: asyncssh.SSHClientConnection, route: NodeRoute,
                  command: str | None, size: tuple[int, int]) -> None:
        """Open the session, copy both ways until either side ends, then close both."""
        self._conn, self.route = conn, route
        self._jump.connections.add(self)
        self._expiry = self._jump.timers.call_at(self.identity.valid_before, self._expired)
        self._arm_recheck()
        try:
            if await self._open(conn, route, command, size) and await self._send_json(
                    {"type": "ready", "node": route.name, "login": self.identity.login}):
                reader = asyncio.get_running_loop().create_task(self._browser_to_node())
                try:
                    await self._node_to_browser()
                finally:
                    await cancel_and_wait(reader)
        finally:
            self._jump.connections.discard(self)
            for timer in (self._expiry, self._recheck):
                if timer is not None:
                    timer.cancel()
            if self._checking is not None:
                self._checking.cancel()
            conn.close()
            self._ended.set()

    async def _open(self, conn: asyncssh.SSHClientConnection, route: NodeRoute,
                    command: str | None, size: tuple[int, int]) -> bool:
        try:
            self._chan, self._session = await conn.create_session(
                lambda: _Output(self), command, term_type=TERM_TYPE,
                term_size=(size[0], size[1]), encoding=None,
            )
        except asyncssh.ChannelOpenError as exc:
            code = REFUSED if exc.code == asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED else FAILED
            self._finish(code, f"limen: node '{route.name}' refused the session: {exc.reason}")
        except (asyncssh.Error, OSError) as exc:
            reason = getattr(exc, "reason", "") or str(exc) or type(exc).__name__
            self._finish(FAILED, f"limen: the connection to node '{route.name}' failed: "
                                 f"{reason}")
        else:
            return True
        await self._close_browser()
        return False

    def output(self, data: bytes) -> None:
        self.bytes_down += len(data)
        self._queued += len(data)
        self._queue.put_nowait(data)
        if self._queued > HIGH_WATER and not self._paused and self._chan is not None:
            self._paused = True
            self._chan.pause_reading()

    def node_closed(self) -> None:
        session = self._session
        if session is not None and session.notice:
            self._finish(CLOSED_NORMALLY, session.notice)
        elif session is not None and session.exit_signal:
            self._finish(CLOSED_NORMALLY, f"the session ended (signal {session.exit_signal})")
        elif session is not None and session.exit_status is not None:
            self._finish(CLOSED_NORMALLY, f"the session ended (exit status "
                                          f"{session.exit_status})")
        else:
            self._finish(CLOSED_NORMALLY, "the session ended")

    def _arm_recheck(self) -> None:
        if self._still_good is not None and self._reason is None:
            when = self._jump.clock.now() + RECHECK
            self._recheck = self._jump.timers.call_at(when, self._recheck_due)

    def _recheck_due(self) -> None:
        self._checking = asyncio.get_running_loop().create_task(self._check_session())

    async def _check_session(self) -> None:
        assert self._still_good is not None
        try:
            reason = await self._still_good()
        except Exception:  # a failed lookup ends nothing; the next check asks again
            log.exception("checking a web terminal's session failed")
            reason = None
        if reason:
            self.end(f"limen: {reason}")
        else:
            self._arm_recheck()

    def _expired(self) -> None:
        self.end(f"limen: your web session's certificate expired at "
                 f"{self.identity.valid_before:%Y-%m-%d %H:%M:%S} UTC; sign in again")

    def _finish(self, code: int, reason: str) -> None:
        if self._reason is None:
            self._reason = (code, reason)
        self._queue.put_nowait(None)  # after the output already queued
        if code != CLOSED_NORMALLY and self._chan is not None:
            self._chan.close()

    async def _node_to_browser(self) -> None:
        while True:
            data = await self._queue.get()
            if data is None:
                break
            chunks = [data]
            while not self._queue.empty():  # coalesce: fewer, larger frames
                more = self._queue.get_nowait()
                if more is None:
                    self._queue.put_nowait(None)
                    break
                chunks.append(more)
            joined = b"".join(chunks)
            self._queued -= len(joined)
            try:
                await self._ws.send_bytes(joined)
            except (WebSocketDisconnect, RuntimeError, OSError):
                break
            if self._paused and self._queued < LOW_WATER and self._chan is not None:
                self._paused = False
                self._chan.resume_reading()
        await self._close_browser()

    async def _browser_to_node(self) -> None:
        try:
            while self._reason is None:
                message = await self._ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                if message.get("bytes") is not None:
                    self._input(message["bytes"])
                elif message.get("text") is not None:
                    self._control(message["text"])
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass
        # The tab closed: closing the channel makes the node end the session.
        self._finish(CLOSED_NORMALLY, "the browser closed the terminal")
        if self._chan is not None:
            self._chan.close()

    def _input(self, data: bytes) -> None:
        if self._chan is not None and data:
            self.bytes_up += len(data)
            self._chan.write(data)

    def _control(self, text: str) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            return
        if not isinstance(message, dict) or self._chan is None:
            return
        if message.get("type") == "resize":
            cols, rows = _size(message)
            self._chan.change_terminal_size(cols, rows)

    async def _send_json(self, message: dict[str, Any]) -> bool:
        """Send a control message; False when the browser has gone."""
        try:
            await self._ws.send_text(json.dumps(message))
        except (WebSocketDisconnect, RuntimeError, OSError):
            return False
        return True

    async def _close_browser(self) -> None:
        code, reason = self._reason or (CLOSED_NORMALLY, "the session ended")
        if await self._send_json({"type": "closed", "code": code, "message": reason}):
            with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
                await self._ws.close(code, close_reason(reason))


def _size(message: dict[str, Any]) -> tuple[int, int]:
    """Columns and rows from a message, bounded to what a screen can show."""
    def bounded(value: Any, default: int) -> int:
        return min(max(value, 2), 1000) if isinstance(value, int) else default

    return bounded(message.get("cols"), 80), bounded(message.get("rows"), 24)


def size_of(message: dict[str, Any]) -> tuple[int, int]:
    return _size(message)


def end_web_session_terminals(jump: JumpHost | None, web_session: str, message: str) -> int:
    """End every terminal of one web session (the person signed out)."""
    if jump is None:
        return 0
    ended = [t for t in list(jump.connections)
             if isinstance(t, WebTerminal) and t.web_session == web_session]
    for terminal in ended:
        terminal.end(message)
    return len(ended)
