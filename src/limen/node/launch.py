"""Deciding what a session channel runs: authorization, account, environment, command line."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from limen.errors import AccessDenied, BadParameter
from limen.node.environment import session_environment
from limen.node.executor import ProcessSpec, TermSize
from limen.node.scp import ScpRequest, parse_scp_command
from limen.node.sftp import sftp_server_argv
from limen.node.users import lookup_user

if TYPE_CHECKING:
    from limen.node.connection import NodeConnection
    from limen.node.session import SessionContext


@dataclass
class SessionPlan:
    spec: ProcessSpec
    scp: ScpRequest | None = None
    sftp: bool = False
    warnings: list[str] = field(default_factory=list)  # shown to the user on stderr

    @property
    def record(self) -> bool:
        """File transfers are audited as operations, not recorded byte by byte."""
        return not (self.sftp or self.scp)


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
    scp = parse_scp_command(ctx.command) if ctx.kind == "exec" and ctx.command else None
    sftp = ctx.kind == "subsystem" and ctx.subsystem == "sftp"
    if ctx.kind == "subsystem" and not sftp:
        raise BadParameter(f"this node has no {ctx.subsystem!r} subsystem")
    if (sftp or scp) and not ctx.permit.file_copy:
        raise AccessDenied("file copy (scp and sftp) is not allowed for you on this node")

    user = await asyncio.to_thread(lookup_user, conn.login)
    warnings = []
    cwd = user.home
    if not os.path.isdir(cwd):
        warnings.append(f"Could not chdir to home directory {cwd}: No such file or directory")
        cwd = "/"
    agent = await conn.agent_socket_for(user, ctx, agent_path) if agent_path else None
    env = session_environment(
        user, client_env,
        extra_allowlist=conn.settings.env_allowlist,
        term=term_type,
        endpoints=conn.endpoints,
        agent_socket=agent,
        session_id=ctx.id,
    )
    if sftp:
        argv = sftp_server_argv(conn.settings.sftp_server)
    elif ctx.kind == "exec":
        argv = (user.shell, "-c", ctx.command or "")
    else:
        argv = (user.shell, "-l")  # a login shell, as sshd's "-bash"
    spec = ProcessSpec(user, argv, env, cwd, ctx.term_size if not sftp else None)
    return SessionPlan(spec, scp, sftp, warnings)


def to_term_size(size: tuple[int, int, int, int]) -> TermSize:
    cols, rows, xpixels, ypixels = size
    return TermSize(cols or 80, rows or 24, xpixels, ypixels)
