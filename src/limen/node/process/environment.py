"""The environment a session's processes start with.

Client-sent variables pass only through an allow-list (as sshd's AcceptEnv): a client
must not be able to set LD_PRELOAD, PATH or BASH_ENV for a process started by root.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from limen.node.process.users import LocalUser

BASE_ALLOWLIST = ("LANG", "LC_*", "TERM")
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/games"
ROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Endpoints:
    """Addresses for SSH_CLIENT / SSH_CONNECTION."""

    client_host: str
    client_port: int
    server_host: str
    server_port: int


def allowed_name(name: str, allowlist: Iterable[str]) -> bool:
    for pattern in allowlist:
        if pattern.endswith("*") and name.startswith(pattern[:-1]):
            return True
        if name == pattern:
            return True
    return False


def filter_client_env(
    client_env: Mapping[str, str], extra_allowlist: Iterable[str]
) -> tuple[dict[str, str], list[str]]:
    """Split what the client sent into accepted variables and refused names."""
    allowlist = (*BASE_ALLOWLIST, *extra_allowlist)
    accepted: dict[str, str] = {}
    refused: list[str] = []
    for name, value in client_env.items():
        if "\0" not in name + value and allowed_name(name, allowlist):
            accepted[name] = value
        else:
            refused.append(name)
    return accepted, refused


def session_environment(
    user: LocalUser,
    client_env: Mapping[str, str],
    *,
    extra_allowlist: Iterable[str] = (),
    term: str | None = None,
    endpoints: Endpoints | None = None,
    tty_name: str | None = None,
    agent_socket: str | None = None,
    session_id: str | None = None,
) -> dict[str, str]:
    accepted, _ = filter_client_env(client_env, extra_allowlist)
    env = dict(accepted)
    env.update(
        HOME=user.home,
        USER=user.name,
        LOGNAME=user.name,
        SHELL=user.shell,
        PATH=ROOT_PATH if user.uid == 0 else DEFAULT_PATH,
    )
    if term:
        env["TERM"] = term  # the pty request's terminal type wins over an env request
    if endpoints:
        client = f"{endpoints.client_host} {endpoints.client_port}"
        env["SSH_CLIENT"] = f"{client} {endpoints.server_port}"
        env["SSH_CONNECTION"] = f"{client} {endpoints.server_host} {endpoints.server_port}"
    if tty_name:
        env["SSH_TTY"] = tty_name
    if agent_socket:
        env["SSH_AUTH_SOCK"] = agent_socket
    if session_id:
        env["LIMEN_SESSION_ID"] = session_id
    return env
