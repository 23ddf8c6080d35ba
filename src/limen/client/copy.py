"""`limen scp [-r] SRC... DST`: copy files to or from a node with SFTP through the proxy.

A path is remote when it looks like scp's ``[LOGIN@]NODE:PATH`` (a ':' before any
'/'); an empty remote path is the login's home directory. One side is local and the
other remote; the remote sources must all be on one node. asyncssh's SFTP client
keeps many requests in flight, so the copy is not one round trip per block.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import asyncssh

from limen.client.access import Credentials, Target, dial
from limen.client.ssh import close_connection
from limen.errors import AccessDenied, BadParameter, ConnectionProblem, LimenError, NotFound


@dataclass(frozen=True)
class Location:
    path: str
    target: Target | None = None  # None: a local path

    @classmethod
    def parse(cls, text: str) -> Location:
        head, sep, tail = text.partition(":")
        if sep and head and "/" not in head:
            return cls(tail or ".", Target.parse(head))
        return cls(text)

    @property
    def remote(self) -> bool:
        return self.target is not None


@dataclass(frozen=True)
class CopyPlan:
    sources: list[str]
    destination: str
    target: Target
    upload: bool


def plan(sources: list[str], destination: str) -> CopyPlan:
    """Which way the copy goes and to which node; BadParameter when it makes no sense."""
    srcs = [Location.parse(s) for s in sources]
    dst = Location.parse(destination)
    remote_srcs = {s.target for s in srcs if s.target is not None}
    if dst.target is not None:
        if remote_srcs:
            raise BadParameter("copying between two remote paths is not supported; "
                               "one side must be local")
        return CopyPlan([s.path for s in srcs], dst.path, dst.target, upload=True)
    if len(remote_srcs) != 1 or any(not s.remote for s in srcs):
        raise BadParameter("give remote sources as [LOGIN@]NODE:PATH, all on one node, "
                           "or a remote destination")
    return CopyPlan([s.path for s in srcs], dst.path, remote_srcs.pop(), upload=False)


def _check_local_sources(paths: list[str], recursive: bool) -> None:
    for path in paths:
        if not os.path.exists(path):
            raise NotFound(f"{path}: no such file or directory")
        if os.path.isdir(path) and not recursive:
            raise BadParameter(f"{path} is a directory; use -r to copy it")


async def copy(creds: Credentials, job: CopyPlan, login: str, recursive: bool,
               preserve: bool) -> None:
    if job.upload:
        _check_local_sources(job.sources, recursive)
    conn = await dial(creds, job.target.node, login)
    try:
        sftp = await _start_sftp(conn, job.target.node)
        async with sftp:
            await _transfer(sftp, job, recursive, preserve)
    finally:
        await close_connection(conn)


async def _start_sftp(conn: asyncssh.SSHClientConnection, node: str) -> asyncssh.SFTPClient:
    try:
        return await conn.start_sftp_client()
    except asyncssh.ChannelOpenError as exc:
        raise AccessDenied(f"node '{node}' refused file copy: {exc.reason}") from None
    except (asyncssh.Error, OSError) as exc:
        reason = getattr(exc, "reason", "") or str(exc)
        raise AccessDenied(f"node '{node}' refused file copy (SFTP): {reason}") from None


async def _transfer(sftp: asyncssh.SFTPClient, job: CopyPlan, recursive: bool,
                    preserve: bool) -> None:
    try:
        if job.upload:
            await sftp.put(job.sources, job.destination, recurse=recursive, preserve=preserve)
            return
        for source in job.sources:
            if not recursive and await sftp.isdir(source):
                raise BadParameter(f"{source} is a directory on the node; use -r to copy it")
        await sftp.get(job.sources, job.destination, recurse=recursive, preserve=preserve)
    except LimenError:
        raise
    except asyncssh.SFTPNoSuchFile as exc:
        raise NotFound(f"{exc.reason or 'no such file or directory'}") from None
    except asyncssh.SFTPPermissionDenied as exc:
        raise AccessDenied(f"permission denied: {exc.reason}") from None
    except asyncssh.SFTPError as exc:
        raise ConnectionProblem(f"the copy failed: {exc.reason}") from None
    except asyncssh.Error as exc:  # the connection itself went away
        raise ConnectionProblem(f"the copy stopped: the connection was lost ({exc.reason})"
                                ) from None
    except OSError as exc:
        raise ConnectionProblem(f"the copy failed: {exc.strerror or exc}"
                                f"{': ' + exc.filename if exc.filename else ''}") from None
