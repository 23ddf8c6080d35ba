"""Deciding what a session channel runs: authorization, account, environment, command line,
and how its file transfers are followed."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from limen.errors import AccessDenied, BadParameter
from limen.node.process.env_free import user_may_enter
from limen.node.process.environment import session_environment
from limen.node.process.executor import ProcessSpec, TermSize
from limen.node.process.users import LocalUser, lookup_user
from limen.node.ssh.transfer_gate import TransferFollower, display_path, is_directory_for
from limen.transfer.scp import ScpRequest, mentions_file_copy, parse_scp_command
from limen.transfer.scp_stream import ScpFollower
from limen.transfer.sftp import SftpFollower, sftp_server_argv

if TYPE_CHECKING:
    from limen.node.ssh.connection import NodeConnection
    from limen.node.ssh.session import SessionContext

FILE_COPY_DENIED = "file copy (scp and sftp) is not allowed for you on this node"


@dataclass
class SessionPlan:
    spec: ProcessSpec
    scp: ScpRequest | None = None  # legacy scp's server side, run directly
    sftp: bool = False  # the sftp subsystem
    scp_target_is_dir: bool = False  # an upload's target, as the user sees it
    warnings: list[str] = field(default_factory=list)  # shown to the user on stderr

    def follower(self) -> TransferFollower | None:
        """What follows this session's file transfers from the start (None: none is
        known yet; an exec may still turn out to speak SFTP, see ``sniff``)."""
        if self.sftp:
            return SftpFollower(self.spec.cwd)
        if self.scp is not None:
            return ScpFollower(self.scp.action, display_path(self.spec.cwd, self.scp.path),
                               self.scp_target_is_dir)
        return None

    @property
    def sniff(self) -> bool:
        """Whether to look for SFTP at the start of the input: a command or shell without
        a terminal (with one, the bytes pass through the terminal's line discipline)."""
        return not self.sftp and self.scp is None and self.spec.term_size is None


def _action(ctx: SessionContext) -> tuple[str, dict[str, object]]:
    detail: dict[str, object] = {"session_id": ctx.id, "interactive": ctx.interactive}
    if ctx.kind == "exec":
        detail["command"] = ctx.command
    elif ctx.kind == "subsystem":
        detail["subsystem"] = ctx.subsystem
    return ctx.kind, detail


async def plan_session(
    conn: NodeConnection,
    ctx: SessionContext,
    client_env: Mapping[str, str],
    term_type: str | None,
    agent_path: str | None,
) -> SessionPlan:
    """Authorize the session and work out what to start; raises AccessDenied or BadParameter."""
    action, detail = _action(ctx)
    ctx.permit = await conn.authorize(action, detail)
    settings = conn.settings
    sftp = ctx.kind == "subsystem" and ctx.subsystem == "sftp"
    if ctx.kind == "subsystem" and not sftp:
        raise BadParameter(f"this node has no {ctx.subsystem!r} subsystem")
    command = (ctx.command or "") if ctx.kind == "exec" else ""
    if not ctx.permit.file_copy and (sftp or mentions_file_copy(command, settings.sftp_server)):
        raise AccessDenied(FILE_COPY_DENIED)

    user, home_found, may_enter = await asyncio.to_thread(_account, conn.login)
    # Legacy scp only without a terminal: a real client never asks for one.
    scp = (parse_scp_command(command, user.home, settings.scp_program)
           if command and ctx.term_size is None else None)
    warnings = []
    cwd = user.home
    if not home_found:
        warnings.append(f"Could not chdir to home directory {cwd}: No such file or directory")
        cwd = "/"
    agent = await conn.agent_socket_for(user, ctx, agent_path) if agent_path else None
    env = session_environment(
        user, client_env,
        extra_allowlist=settings.env_allowlist,
        term=term_type,
        endpoints=conn.endpoints,
        agent_socket=agent,
        session_id=ctx.id,
    )
    if sftp:
        argv = sftp_server_argv(settings.sftp_server)
    elif scp is not None:
        argv = scp.argv(settings.scp_program)
    elif ctx.kind == "exec":
        argv = (user.shell, "-c", command)
    else:
        argv = (user.shell, "-l")  # a login shell, as sshd's "-bash"
    term_size = ctx.term_size if not (sftp or scp) else None
    spec = ProcessSpec(user, argv, env, cwd, term_size, may_enter_cwd=may_enter)
    plan = SessionPlan(spec, scp, sftp, warnings=warnings)
    if scp is not None and scp.action == "upload":
        plan.scp_target_is_dir = scp.target_must_be_directory or await is_directory_for(
            user, scp.path, cwd, env)
    return plan


def _account(login: str) -> tuple[LocalUser, bool, bool]:
    """The local user, whether their home exists, and whether they may enter the
    directory the session starts in (the home, or / without one): in a worker thread,
    since each may wait on the name service or a network file system."""
    user = lookup_user(login)
    found = os.path.isdir(user.home)
    return user, found, user_may_enter(user.home if found else "/", user)


def to_term_size(size: tuple[int, int, int, int]) -> TermSize:
    cols, rows, xpixels, ypixels = size
    return TermSize(cols or 80, rows or 24, xpixels, ypixels)
