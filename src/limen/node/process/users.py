"""Local accounts that sessions run as."""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass

from limen.errors import AccessDenied

DEFAULT_SHELL = "/bin/sh"


@dataclass(frozen=True)
class LocalUser:
    name: str
    uid: int
    gid: int
    home: str
    shell: str
    groups: tuple[int, ...]  # supplementary groups, as initgroups() would set them


def lookup_user(login: str) -> LocalUser:
    """Resolve ``login`` and check this node may run processes as it.

    Running as root, any local account will do. Otherwise only the node's own
    account: switching users needs privileges the node does not have.
    """
    try:
        entry = pwd.getpwnam(login)
    except KeyError:
        raise AccessDenied(f"there is no local user {login!r} on this node") from None
    if os.geteuid() != 0 and entry.pw_uid != os.geteuid():
        raise AccessDenied(
            f"this node runs without root privileges and can only start sessions as "
            f"{pwd.getpwuid(os.geteuid()).pw_name!r}, not {login!r}"
        )
    return LocalUser(
        name=entry.pw_name,
        uid=entry.pw_uid,
        gid=entry.pw_gid,
        home=entry.pw_dir or "/",
        shell=entry.pw_shell or DEFAULT_SHELL,
        groups=tuple(os.getgrouplist(entry.pw_name, entry.pw_gid)),
    )
