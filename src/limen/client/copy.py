"""`limen scp [-r] SRC... DST`: copy files to or from a node with SFTP through the proxy.

A path is remote when it looks like scp's ``[LOGIN@]NODE:PATH`` (a ':' before any
'/'); an empty remote path is the login's home directory. One side is local and the
other remote; the remote sources must all be on one node. asyncssh's SFTP client
keeps many requests in flight, so the copy is not one round trip per block.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

import asyncssh

from limen.client.access import Credentials, dial
from limen.client.login_checks import Target
from limen.client.ssh import close_connection
from limen.errors import AccessDenied, BadParameter, ConnectionProblem, LimenError, NotFound

T = TypeVar("T")


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
    """One source at a time, so that an error names the file it is about (as scp does)."""
    node = job.target.node
    if len(job.sources) > 1:  # as with scp, several sources need a directory to go into
        if job.upload:
            remote = f"{node}:{job.destination}"
            is_dir = await _one(sftp.isdir(job.destination), remote, f"reading {remote}")
        else:
            remote, is_dir = job.destination, os.path.isdir(job.destination)
        if not is_dir:
            raise BadParameter(f"{remote} is not a directory; several files go into one")
    for source in job.sources:
        if job.upload:
            remote = f"{node}:{job.destination}"
            await _one(sftp.put(source, job.destination, recurse=recursive, preserve=preserve),
                       remote, f"copying {source} to {remote}")
            continue
        remote = f"{node}:{source}"
        if not recursive and await _one(sftp.isdir(source), remote, f"reading {remote}"):
            raise BadParameter(f"{remote} is a directory on the node; use -r to copy it")
        await _one(sftp.get(source, job.destination, recurse=recursive, preserve=preserve),
                   remote, f"copying {remote} to {job.destination}")


async def _one(operation: Awaitable[T], remote: str, doing: str) -> T:
    """Await an SFTP operation, turning its errors into sentences that name the path."""
    try:
        return await operation
    except LimenError:
        raise
    except asyncssh.SFTPNoSuchFile as exc:
        raise NotFound(f"{remote}: {_reason(exc, 'no such file or directory')} ({doing})"
                       ) from None
    except asyncssh.SFTPPermissionDenied as exc:
        raise AccessDenied(f"{remote}: {_reason(exc, 'permission denied')} ({doing})") from None
    except asyncssh.SFTPError as exc:
        raise ConnectionProblem(f"{remote}: {_reason(exc, 'the copy failed')} ({doing})"
                                ) from None
    except asyncssh.Error as exc:  # the connection itself went away
        raise ConnectionProblem(f"the copy stopped: the connection was lost ({exc.reason})"
                                ) from None
    except OSError as exc:  # a local file
        where = f"{exc.filename}: " if exc.filename else ""
        raise ConnectionProblem(f"{where}{exc.strerror or exc} ({doing})") from None


def _reason(exc: asyncssh.SFTPError, default: str) -> str:
    return (exc.reason or default).rstrip(".").lower()
