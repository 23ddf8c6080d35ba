"""The node's SSH service settings."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import asyncssh

from limen.errors import BadParameter

DEFAULT_PORT = 3022
SFTP_SERVER = "/usr/lib/openssh/sftp-server"
SCP_PROGRAM = "/usr/bin/scp"  # run directly (no shell) for legacy scp's server side
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\*?$")


@dataclass
class NodeSettings:
    host_key: asyncssh.SSHKey
    user_ca_keys: Sequence[asyncssh.SSHKey]
    host_certs: Sequence[asyncssh.SSHCertificate] = ()
    host: str = "0.0.0.0"
    port: int = DEFAULT_PORT  # 0 picks a free port; NodeServer.port tells which
    server_id: str = ""
    server_name: str = ""
    # Names clients may set beyond LANG, LC_* and TERM; a trailing * is a prefix match.
    env_allowlist: Sequence[str] = ()
    login_grace_time: float = 60.0  # seconds to finish authentication
    sftp_server: str = SFTP_SERVER
    scp_program: str = SCP_PROGRAM
    # How long a terminated session's processes get after SIGHUP before SIGKILL.
    kill_grace_time: float = 2.0
    server_version: str = "Limen"
    extra_listen_options: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.user_ca_keys:
            raise BadParameter("the node needs at least one trusted user CA key")
        if not 0 <= self.port <= 65535:
            raise BadParameter(f"port {self.port} is out of range")
        for program in (self.sftp_server, self.scp_program):
            if not program.startswith("/"):
                raise BadParameter(f"{program!r} must be an absolute path")
        if self.login_grace_time <= 0:
            raise BadParameter("login_grace_time must be positive")
        for name in self.env_allowlist:
            if not _ENV_NAME.match(name):
                raise BadParameter(f"{name!r} is not an environment variable name")
