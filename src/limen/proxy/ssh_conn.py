"""The jump host's SSH server connection: certificate judging and the forwarding permission.

Why a connection subclass (and our own ``create_server`` instead of asyncssh.listen,
which has no way to choose the connection class):

1. ``ssh -J`` reaches a node with a ``direct-tcpip`` channel. asyncssh refuses that
   channel in ``_process_direct_tcpip_open`` *before* any SSHServer hook runs unless
   ``check_certificate_permission('port-forwarding')`` is true, i.e. unless the
   certificate carries ``permit-port-forwarding`` (ASYNCSSH.md item 2; OpenSSH's
   sshd does the same). For this server that is the wrong question: the only
   thing a channel can reach is a node's SSH service, picked by name and checked
   by node policy, so it is node access, not port forwarding. We override that
   documented method for 'port-forwarding' only. Every other use of the
   permission is closed in the SSHServer hooks instead: ``server_requested``
   (tcpip-forward) and ``unix_connection_requested`` refuse, and the only
   ``direct-tcpip`` destinations are nodes. Nothing else changes: pty, agent
   and X11 permissions still come from the certificate.
2. asyncssh keeps the client certificate to itself after authentication; the
   proxy needs its key id, principals and validity for policy and audit.
   ``validate_public_key`` is where the raw certificate passes by, so we read
   it there and let asyncssh do the cryptography (CA match against
   ``authorized_client_keys``, validity, source-address, proof of possession).

The constructor and ``validate_public_key`` are asyncssh 2.24 internals in all but
name; pyproject pins asyncssh below 2.25, and the tests cover both paths.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import asyncssh

from limen.errors import AccessDenied
from limen.proxy.ssh_cert import UserCert, read_user_cert

# (certificate, SSH user name, peer address) -> principal for asyncssh to check
Judge = Callable[[UserCert, str, str], str]


class JumpConnection(asyncssh.SSHServerConnection):
    """An SSH server connection that knows who authenticated and with which certificate."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        options: asyncssh.SSHServerConnectionOptions,
        judge: Judge,
    ) -> None:
        super().__init__(loop, options)
        self._judge = judge
        self.cert: UserCert | None = None
        self.auth_user: str | None = None
        self.refusals: list[str] = []

    def peer_addr(self) -> str:
        peer = self.get_extra_info("peername")
        return str(peer[0]) if peer else ""

    async def validate_public_key(
        self, username: str, key_data: bytes, msg: bytes, signature: bytes
    ) -> bool:
        try:
            cert = read_user_cert(key_data)
            principal = self._judge(cert, username, self.peer_addr())
        except AccessDenied as exc:
            self._refuse(exc.message)
            return False
        # asyncssh checks the certificate against ``principal``, which our judge
        # chose: the user name, or a real principal when the user name is the key id.
        if not await super().validate_public_key(principal, key_data, msg, signature):
            self._refuse(_why_asyncssh_refused(cert))
            return False
        if msg:  # a signed request: this key is the one that authenticates
            self.cert, self.auth_user = cert, username
        return True

    def check_certificate_permission(self, permission: str) -> bool:
        # See the module docstring: reaching a node is node access, judged by policy.
        if permission == "port-forwarding":
            return True
        return super().check_certificate_permission(permission)

    def _refuse(self, reason: str) -> None:
        if reason not in self.refusals:
            self.refusals.append(reason)


def _why_asyncssh_refused(cert: UserCert) -> str:
    # asyncssh checks validity against the wall clock, ours against the injected
    # one; when only asyncssh objects, the clocks of the issuer and this proxy differ.
    now = time.time()
    if now < cert.valid_after.timestamp():
        return (
            f"the certificate is not valid yet by this proxy's clock (valid from "
            f"{cert.valid_after:%Y-%m-%d %H:%M:%S} UTC): check the clocks of auth and proxy"
        )
    if now >= cert.valid_before.timestamp():
        return "the certificate has expired by this proxy's clock"
    return "the certificate's signature or its proof of key possession did not verify"


async def create_jump_server(
    host: str,
    port: int,
    options: asyncssh.SSHServerConnectionOptions,
    judge: Judge,
) -> asyncio.Server:
    """Listen for SSH clients with JumpConnection as the protocol."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: JumpConnection(loop, options, judge),
        host or None,
        port,
        reuse_address=True,
        backlog=128,
    )
