"""Agent forwarding (``ssh -A``).

asyncssh opens the listening socket when the client asks and the certificate allows
it (permit-agent-forwarding); it is root's, in a private temporary directory. The
session then decides: if the policy allows, the socket is handed to the login user;
otherwise it is removed so no process on the node can reach the user's agent.
"""

from __future__ import annotations

import contextlib
import os

from limen.node.process.users import LocalUser


def grant_agent_socket(path: str, user: LocalUser) -> None:
    """Let the login user, and only them, use the forwarded agent socket."""
    directory = os.path.dirname(path)
    if os.geteuid() == 0:
        os.chown(directory, user.uid, user.gid)
        os.chown(path, user.uid, user.gid)
    os.chmod(directory, 0o700)
    os.chmod(path, 0o600)


def revoke_agent_socket(path: str) -> None:
    """Remove the socket: asyncssh keeps listening, but nothing can connect any more."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
