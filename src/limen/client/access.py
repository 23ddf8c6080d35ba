"""What `limen ssh`, `scp` and `config` need from a login: credentials, logins, targets, dialing.

Everything is checked here before a packet leaves, so the common mistakes get a
sentence instead of an SSH refusal: an expired certificate ("run limen login"), a
login the certificate does not name, a profile from before the proxy reported its
SSH address. The proxy and the node still decide; this only explains early.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import asyncssh
from asyncssh.public_key import CERT_TYPE_USER  # not re-exported by asyncssh

from limen.client import profile as profiles
from limen.client.login_checks import RELOGIN, choose_login, validity_message
from limen.client.ssh import (
    client_algs,
    connect_via_proxy,
    host_ca_known_hosts,
    translate_error,
)
from limen.errors import AccessDenied, BadParameter, ConnectionProblem, NotFound
from limen.hostport import split_host_port

if TYPE_CHECKING:
    from limen.client.api import APIClient

@dataclass
class Credentials:
    """A logged-in profile's key, certificate and the cluster's host CA, ready to dial."""

    profile: profiles.Profile
    key: asyncssh.SSHKey
    cert: asyncssh.SSHCertificate
    host_ca: asyncssh.SSHKey

    @property
    def principals(self) -> list[str]:
        return list(self.cert.principals)

    def permits(self, extension: str) -> bool:
        return bool(self.cert.options.get(extension))

    @property
    def proxy_addr(self) -> tuple[str, int]:
        return split_host_port(self.profile.require_ssh_proxy())

    def choose_login(self, wanted: str | None) -> str:
        return choose_login(self.principals, wanted)

    def api(self) -> APIClient:
        from limen.client.api import APIClient  # HTTP only for the commands that need it

        ca = self.profile.trusted_ca()
        if ca is None:
            raise NotFound(f"no cluster CA is stored for {self.profile.proxy}; {RELOGIN}")
        return APIClient(self.profile.proxy, ca, self.profile.token())


def load_credentials(profile: profiles.Profile | None = None) -> Credentials:
    """The current profile's credentials; AccessDenied when they are missing or expired."""
    profile = profile or profiles.current()
    try:
        key = asyncssh.read_private_key(str(profile.key_path))
        cert = asyncssh.read_certificate(str(profile.cert_path))
    except (OSError, ValueError, asyncssh.KeyImportError) as exc:
        raise AccessDenied(f"your key or certificate cannot be read ({exc}); {RELOGIN}") from None
    try:
        cert.validate(CERT_TYPE_USER, None)
    except ValueError as exc:
        raise AccessDenied(validity_message(str(exc), profile.proxy)) from None
    return Credentials(profile, key, cert, _host_ca(profile))


def _host_ca(profile: profiles.Profile) -> asyncssh.SSHKey:
    """The cluster's host CA: from the profile, else the only CA line in known_hosts."""
    line = profile.host_ca
    if not line:
        path = profiles.Profile.known_hosts_path()
        lines = path.read_text().splitlines() if path.exists() else []
        cas = [entry for entry in lines if entry.startswith("@cert-authority ")]
        if len(cas) != 1:
            raise NotFound(f"cannot tell which host CA belongs to {profile.proxy}; {RELOGIN}")
        line = cas[0]
    parts = line.split()
    try:
        return asyncssh.import_public_key(f"{parts[2]} {parts[3]}")
    except (IndexError, asyncssh.KeyImportError) as exc:
        raise BadParameter(f"the stored host CA line is damaged ({exc}); {RELOGIN}") from None


async def dial(
    creds: Credentials, node: str, login: str, *, agent_path: str | None = None
) -> asyncssh.SSHClientConnection:
    """``login@node`` through the proxy; with ``agent_path``, the session may forward
    that ssh-agent (connect_via_proxy has no agent option, so that case dials here)."""
    host, port = creds.proxy_addr
    if agent_path is None:
        return await connect_via_proxy(
            proxy_host=host, proxy_port=port, jump_user=login, node=node, login=login,
            key=creds.key, cert=creds.cert, host_ca=creds.host_ca,
            cluster_name=creds.profile.cluster,
        )
    return await _dial_with_agent(creds, host, port, node, login, agent_path)


async def _dial_with_agent(
    creds: Credentials, host: str, port: int, node: str, login: str, agent_path: str
) -> asyncssh.SSHClientConnection:
    common = {
        "client_keys": [(creds.key, creds.cert)],
        "known_hosts": host_ca_known_hosts(creds.host_ca),
        "config": [],
        "preferred_auth": "publickey",
        "connect_timeout": 10,
        **client_algs(),
    }
    cluster = creds.profile.cluster
    try:
        jump = await asyncssh.connect(host, port, username=login, agent_path=None, **common)
    except (OSError, asyncssh.Error, TimeoutError) as exc:
        raise translate_error(exc, "proxy", f"the proxy at {host}:{port}", cluster) from exc
    try:
        conn = await asyncssh.connect(
            node, 3022, tunnel=jump, username=login, agent_path=agent_path,
            agent_forwarding=True, **common,
        )
    except (OSError, asyncssh.Error, TimeoutError) as exc:
        jump.close()
        await jump.wait_closed()
        raise translate_error(exc, "node", f"node '{node}'", cluster) from exc
    conn.set_extra_info(limen_jump=jump)  # close_connection() closes both
    return conn


@contextlib.contextmanager
def session_errors(node: str) -> Iterator[None]:
    """Once connected, a dropped connection is a sentence, not an asyncssh traceback."""
    try:
        yield
    except (asyncssh.Error, OSError) as exc:
        reason = getattr(exc, "reason", "") or getattr(exc, "strerror", "") or str(exc)
        raise ConnectionProblem(
            f"the connection to node '{node}' was lost: {reason or type(exc).__name__}"
        ) from None
