"""One SSH session channel: runs the session's process and copies bytes both ways.

asyncssh calls the ``SSHServerSession`` hooks; everything slow happens in one task per
channel (``_run``). Output is read from the process, recorded, written to the channel,
and the next read waits until the channel has room (pause_writing/resume_writing); input
is queued with back pressure (inbox.py). No asyncssh redirect() is involved.

Before the process starts, its recording is opened: under ``record_session: strict`` a
session that cannot be recorded is refused and its process never runs. File transfers
(the sftp subsystem, legacy scp, or any command whose input begins with SFTP) pass
through a TransferGate (transfer.py) that follows their protocol for the audit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import asyncssh

from limen.errors import AccessDenied, LimenError
from limen.node.process.executor import Child, ExitStatus, TermSize, spawn
from limen.node.process.fdstream import FdStream
from limen.node.process.inbox import InputQueue
from limen.node.ssh.join import JoinChannel, parse_join
from limen.node.ssh.launch import FILE_COPY_DENIED, SessionPlan, plan_session, to_term_size
from limen.node.ssh.session import SessionContext
from limen.node.ssh.sharing import SharedSession
from limen.node.ssh.transfer_gate import TransferFollower, TransferGate
from limen.resources.session_policy import RequireSessionJoin
from limen.transfer.sftp import SftpFollower

if TYPE_CHECKING:
    from limen.node.ssh.connection import NodeConnection

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
STDERR = asyncssh.EXTENDED_DATA_STDERR
# A command, scp or sftp has no terminal to watch: under require_session_join it would
# run unseen, so it does not run (as in Teleport).
UNMODERATABLE = ("your roles require a moderator in your sessions (require_session_join), "
                 "and only a session with a terminal can be moderated: use ssh -t")
UNRECORDABLE = ("this session cannot be recorded, and your role requires recording "
                "(record_session: strict)")


class SessionChannel(asyncssh.SSHServerSession[bytes]):
    def __init__(self, conn: NodeConnection) -> None:
        self._conn = conn
        self._chan: asyncssh.SSHServerChannel[bytes] | None = None
        self._term_type: str | None = None
        self._term_size: TermSize | None = None
        self._kind = "shell"
        self._command: str | None = None
        self._subsystem: str | None = None
        self.ctx: SessionContext | None = None
        self._child: Child | None = None
        self._plan: SessionPlan | None = None
        self._gate: TransferGate | None = None
        self._join: JoinChannel | None = None  # this channel joins another session
        self._inbox = InputQueue(self._pause_input, self._resume_input)
        self._can_write = asyncio.Event()
        self._can_write.set()
        self._lost = False
        self._ending = False  # terminate() was called
        self._stop_output: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._tasks: set[asyncio.Future[None]] = set()

    # -- asyncssh hooks: requests ------------------------------------------------

    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        self._chan = chan

    def pty_requested(self, term_type: str, term_size: tuple[int, int, int, int],
                      term_modes: object) -> bool:
        self._term_type = term_type
        self._term_size = to_term_size(term_size)
        return True

    def shell_requested(self) -> bool:
        self._kind = "shell"
        return True

    def exec_requested(self, command: str) -> bool:
        self._kind, self._command = "exec", command
        return True

    def subsystem_requested(self, subsystem: str) -> bool:
        self._kind, self._subsystem = "subsystem", subsystem
        return True

    def session_started(self) -> None:
        self.ctx = self._conn.new_session_context(
            kind=self._kind, command=self._command, subsystem=self._subsystem,
            term_size=self._term_size,
        )
        self._spawn_task(self._run())

    # -- asyncssh hooks: traffic ---------------------------------------------------

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if self._join is not None:
            self._join.data_received(data)
            return
        if self.ctx is not None:
            self.ctx.touch(rx=len(data))
            if self.ctx.shared is not None and self.ctx.shared.paused:
                return  # nothing runs unseen while moderators are awaited
        self._inbox.put(data)

    def eof_received(self) -> bool:
        self._inbox.put_eof()
        return True  # half close: output keeps flowing until the process is done

    def terminal_size_changed(self, width: int, height: int, pixwidth: int,
                              pixheight: int) -> None:
        if self._join is not None:
            return  # a joiner sees the session at its own size; theirs changes nothing
        size = to_term_size((width, height, pixwidth, pixheight))
        self._term_size = size
        if self.ctx is not None:
            self.ctx.term_size = size
            self._spawn_task(self._conn.node.emit("resize", self.ctx.fields(size=str(size))))
            if self.ctx.shared is not None:  # joiners see it at the session's size
                self.ctx.shared.tell_parties(
                    f"limen: the session's terminal is now {size.cols}x{size.rows}")
        if self._child is not None:
            self._child.resize(size)

    def signal_received(self, signal: str) -> None:
        if self._child is not None:
            self._child.send_signal(signal)

    def break_received(self, msec: int) -> bool:
        return False

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    def connection_lost(self, exc: Exception | None) -> None:
        """The channel is gone (client left): stop the session's processes."""
        self._lost = True
        if self._join is not None:
            self._join.lost()
        self._can_write.set()
        self._conn.channel_closed(self)
        self._inbox.discard()
        self._stop_output_now()
        if self._child is not None:
            self._hang_up(self._child)

    # -- the session -------------------------------------------------------------------

    async def _run(self) -> None:
        assert self.ctx is not None and self._chan is not None
        ctx = self.ctx
        request = parse_join(ctx.kind, ctx.command)
        if request is not None:
            self._join = JoinChannel(self._conn, self._chan, self._term_type, request)
            await self._join.run()
            return
        try:
            self._plan = await plan_session(
                self._conn, ctx, self._chan.get_environment(), self._term_type,
                self._chan.get_agent_path(),
            )
            moderation = await self._conn.node.policy.moderation(ctx.identity)
            if moderation and not ctx.interactive:
                raise AccessDenied(UNMODERATABLE)
        except LimenError as exc:
            await self._refuse(exc)
            return
        except Exception as exc:  # a policy bug: refuse this session, keep the connection
            log.exception("planning session %s failed", ctx.id)
            await self._refuse(exc)
            return
        if not await self._recording_ready(ctx):
            return
        # session.start is on record before the user's process can do anything.
        if ctx.interactive:
            ctx.shared = self._shared(ctx, moderation)
        await ctx.start(self._terminate)
        self._conn.node.session_started(ctx)
        status: ExitStatus | None = None
        try:
            if ctx.shared is not None and not await self._moderators_present(ctx, ctx.shared):
                return
            status = await self._execute(self._plan)
            self._close(status)
            await self._emit_command_events(status)
        finally:
            if self._child is not None:
                self._child.close()
            self._conn.node.session_ended(ctx)
            if ctx.shared is not None:
                ctx.shared.close("limen: the session has ended")
            await ctx.finish(status)

    def _shared(self, ctx: SessionContext,
                moderation: list[RequireSessionJoin]) -> SharedSession:
        node = self._conn.node
        return SharedSession(ctx.identity.user, self._write_line, self._inbox.put, moderation,
                             ctx.terminate, node.spawn,
                             lambda state: node.session_state(ctx.id, state))

    async def _moderators_present(self, ctx: SessionContext, shared: SharedSession) -> bool:
        """Wait until the owner's roles' moderators have joined (require_session_join);
        False when the session ended meanwhile."""
        if shared.paused:
            self._write_line(shared.waiting_line())
            self._conn.node.session_state(ctx.id, "waiting for moderators")
        # Again after each wake: a moderator may have left before this task ran.
        while shared.paused and not (self._lost or self._ending or self._stop_output.done()):
            await self._until(shared.wait_running())
        if self._lost or self._ending or shared.paused:
            self._close(ExitStatus(1))
            return False
        shared.started = True
        if shared.requirements:
            self._write_line("limen: moderated session; it starts now")
        return True

    async def _until(self, coro: Coroutine[Any, Any, None]) -> None:
        """Await ``coro`` unless the session is ended or abandoned first."""
        waiter = asyncio.ensure_future(coro)
        try:
            await asyncio.wait({waiter, self._stop_output}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()

    async def _recording_ready(self, ctx: SessionContext) -> bool:
        """Open the recording; False when the session was refused for want of one."""
        problem = await self._conn.node.open_recording(ctx.id, ctx.fields(
            session_kind=ctx.kind, interactive=ctx.interactive,
            terminal_size=str(ctx.term_size) if ctx.term_size else None,
            command=ctx.command, subsystem=ctx.subsystem,
        ))
        if problem is not None and ctx.permit.record == "strict":
            await self._refuse(AccessDenied(UNRECORDABLE))
            return False
        return True  # with best effort, the recorder has reported its failure

    async def _execute(self, plan: SessionPlan) -> ExitStatus:
        for warning in plan.warnings:
            self._write_line(warning)
        try:
            self._child = await spawn(plan.spec)
        except OSError as exc:
            self._write_line(f"limen: cannot start the session: {exc.strerror or exc}")
            return ExitStatus(1)
        if self._lost or self._ending:  # the client left, or someone ended it, meanwhile
            self._hang_up(self._child)
        return await self._supervise(self._child)

    async def _refuse(self, exc: Exception) -> None:
        assert self.ctx is not None
        if isinstance(exc, LimenError):
            reason = exc.message
        else:
            reason = "cannot start the session: internal error"
        self._write_line(f"limen: {reason}")
        await self._conn.node.emit("session.rejected", self.ctx.fields(
            reason=reason, session_kind=self.ctx.kind, command=self.ctx.command,
            subsystem=self.ctx.subsystem,
        ))
        self._close(ExitStatus(1))

    async def _supervise(self, child: Child) -> ExitStatus:
        assert self._plan is not None
        follower = self._plan.follower()
        if follower is not None or self._plan.sniff:
            self._gate = TransferGate(follower, self._plan.sniff, self)
        pumps = [self._spawn_task(self._pump(child.stdout, None, "stdout"))]
        if child.stderr is not None:
            pumps.append(self._spawn_task(self._pump(child.stderr, STDERR, "stderr")))
        feeder = self._spawn_task(self._inbox.feed(
            child.stdin, close_at_eof=not child.has_pty, gate=self._gate))
        if self._term_size is not None:
            child.resize(self._term_size)  # a window change may have raced the spawn
        status = await child.wait()
        if child.has_pty:
            # Output written before the exit is already in the pty; a background job
            # holding the terminal open must not keep the session alive (as sshd).
            self._stop_output_now()
        await asyncio.gather(*pumps)
        feeder.cancel()
        self._inbox.discard()
        if self._gate is not None:
            await self._gate.finish()
        return status

    async def _pump(self, stream: FdStream, datatype: int | None, name: str) -> None:
        """Copy one output stream to the channel, one read per drained write. Every
        chunk is recorded before the user gets it; a transfer's is followed first."""
        ctx, gate = self.ctx, self._gate if name == "stdout" else None
        assert ctx is not None and self._chan is not None
        while not self._lost:
            try:
                data = await stream.read(CHUNK, self._stop_output)
            except OSError:
                return
            if not data:
                return
            ctx.touch(tx=len(data))
            if ctx.shared is not None and ctx.shared.paused:
                await self._until(ctx.shared.wait_running())  # on_leave: pause
            kind = name
            if gate is not None and gate.following:
                if not await gate.from_process(data):
                    return
                kind = "transfer"
            await self._conn.node.record_output(ctx.id, data, kind)
            try:
                self._chan.write(data, datatype)
            except OSError:  # channel already closed
                return
            if ctx.shared is not None:
                ctx.shared.output(data)  # the same bytes, recorded once, to every party
            await self._writable()

    async def _writable(self) -> None:
        """Wait for room in the channel, unless output is being abandoned (a user who
        stopped reading must not keep a terminated session alive)."""
        if self._can_write.is_set() or self._stop_output.done():
            return
        waiter = asyncio.ensure_future(self._can_write.wait())
        try:
            await asyncio.wait({waiter, self._stop_output}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()

    # -- file transfers (TransferGate's hooks) ---------------------------------------------

    async def emit(self, name: str, fields: dict[str, object]) -> None:
        assert self.ctx is not None
        await self._conn.node.emit(name, self.ctx.fields(**fields))

    async def sftp_started(self) -> TransferFollower | None:
        """A command's input began with SFTP: a file copy, followed as one if allowed."""
        ctx, plan = self.ctx, self._plan
        assert ctx is not None and plan is not None
        if ctx.permit.file_copy:
            return SftpFollower(plan.spec.cwd)
        ctx.end_reason = "file copy refused"
        await self._conn.node.emit("session.rejected", ctx.fields(
            reason=FILE_COPY_DENIED, session_kind=ctx.kind, command=ctx.command,
            subsystem=ctx.subsystem,
        ))
        await self._terminate(f"limen: {FILE_COPY_DENIED}")
        return None

    async def broken(self, name: str, reason: str) -> None:
        """Nothing the node cannot follow is relayed: end the session."""
        assert self.ctx is not None
        await self.emit(name, {"action": "protocol_error", "error": reason, "success": False})
        self._spawn_task(self.ctx.terminate(
            f"limen: the {name} stream broke its protocol ({reason}); ending the session",
            "transfer protocol error",
        ))

    async def _emit_command_events(self, status: ExitStatus) -> None:
        """An exec event for a command; legacy scp has had its per-file events."""
        ctx, plan = self.ctx, self._plan
        assert ctx is not None and plan is not None
        if ctx.kind == "exec" and plan.scp is None:
            await self._conn.node.emit("exec", ctx.fields(
                command=ctx.command, exit_code=status.as_int, exit_signal=status.signal,
            ))

    # -- ending ------------------------------------------------------------------------

    async def _terminate(self, message: str) -> None:
        """SessionContext's closer: tell the user, hang up, kill what lingers."""
        self._ending = True
        self._write_line(message)
        if self.ctx is not None and self.ctx.shared is not None:
            self.ctx.shared.close(message)
        if self._child is not None:
            self._hang_up(self._child)
        else:
            self._stop_output_now()  # not started (waiting for moderators): stop waiting

    def _hang_up(self, child: Child) -> None:
        child.signal_group(signal.SIGHUP)
        grace = self._conn.settings.kill_grace_time
        asyncio.get_running_loop().call_later(grace, self._kill, child)

    def _kill(self, child: Child) -> None:
        child.signal_group(signal.SIGKILL)
        self._stop_output_now()  # something outside the process group may hold the pipes

    def _close(self, status: ExitStatus) -> None:
        if self._lost or self._chan is None:
            return
        try:
            self._chan.write_eof()
            if status.signal is not None:
                self._chan.exit_with_signal(status.signal)
            else:
                self._chan.exit(status.code or 0)
        except OSError:
            self._chan.close()

    # -- helpers -------------------------------------------------------------------------

    def _write_line(self, text: str) -> None:
        if self._lost or self._chan is None:
            return
        eol = "\r\n" if self._term_type is not None else "\n"
        prefix = eol if self._term_type is not None else ""  # start on a fresh line
        with contextlib.suppress(OSError):
            self._chan.write((prefix + text + eol).encode(), STDERR)

    def _pause_input(self) -> None:
        if self._chan is not None and not self._lost:
            self._chan.pause_reading()

    def _resume_input(self) -> None:
        if self._chan is not None and not self._lost:
            self._chan.resume_reading()

    def _stop_output_now(self) -> None:
        if not self._stop_output.done():
            self._stop_output.set_result(None)

    def _spawn_task(self, coro: Coroutine[Any, Any, None]) -> asyncio.Future[None]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Future[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("session channel task failed", exc_info=task.exception())
            if self._chan is not None and not self._lost:
                self._chan.close()

