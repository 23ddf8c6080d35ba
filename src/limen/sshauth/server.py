"""The one way Limen hooks asyncssh's public-key authentication.

asyncssh's own certificate check answers only yes or no and keeps the certificate to
itself, while every Limen server needs the certificate (who, which logins, until when)
and, on refusal, a reason for the audit log. ``validate_public_key(username, key_data,
msg, signature)`` on the connection is the one method asyncssh's public-key auth calls,
and the raw certificate passes through it; ``CertAuthServer.connection_made`` puts
Limen's check in front of it:

1. ``read_certificate`` turns the bytes into ``CertFacts`` (CA signature checked);
2. the server's ``judge`` decides, or raises ``AccessDenied`` with the reason;
3. asyncssh then does the cryptography it is good at: the proof of possession of the
   key, and for user certificates the principal, validity and source-address checks
   and the enforcement of permit-* extensions later on. It trusts exactly the CA (or,
   for host certificates, exactly the certified key) the judge approved, answered by
   ``validate_ca_key`` / ``validate_public_key`` below.

asyncssh accepts only *user* certificates from clients. A node agent logs in with its
*host* certificate, so for those the judge asks asyncssh to check the login signature
with the certificate's plain key (``Accepted.plain_key``): the signature covers the
certificate blob the agent sent, so nothing is weakened.

The jump host reaches nodes with ``direct-tcpip`` channels, which asyncssh refuses
before any hook runs unless the certificate carries ``permit-port-forwarding``. A server
whose channels mean something else overrides ``certificate_permission``; the hook
installs it in front of the connection's ``check_certificate_permission``.

The patched methods are asyncssh 2.24 internals in all but name (pyproject pins
asyncssh below 2.25) and the node, jump host and tunnel tests cover them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncssh

from limen.errors import AccessDenied, LimenError
from limen.sshauth.cert import CertFacts, NotACertificate, read_certificate

log = logging.getLogger(__name__)

Validate = Callable[[str, bytes, bytes, bytes], Awaitable[bool]]


@dataclass(frozen=True)
class Accepted:
    """What the judge lets asyncssh check.

    ``principal``: the SSH user name asyncssh checks a user certificate against.
    ``plain_key``: a host certificate; asyncssh checks the login signature with the
    certified key instead.
    """

    principal: str
    plain_key: bool = False


def peer_address(conn: asyncssh.SSHServerConnection) -> tuple[str, int] | None:
    info = conn.get_extra_info("peername")
    if isinstance(info, tuple) and len(info) >= 2:
        return str(info[0]), int(info[1])
    return None


class CertAuthServer(asyncssh.SSHServer):
    """Base of every Limen SSH server's per-connection hooks (node, jump host, tunnel)."""

    #: What to tell a client that offered a plain key or no key at all.
    not_a_certificate_hint = "log in with limen login to get a certificate from this cluster"

    def __init__(self) -> None:
        self.conn: asyncssh.SSHServerConnection | None = None
        self.remote_addr: tuple[str, int] | None = None
        self.cert: CertFacts | None = None  # the certificate that authenticated
        self.username = ""  # the SSH user name it authenticated as
        self.refusals: list[str] = []  # why offered keys were refused, once each
        self._judged: CertFacts | None = None
        self._reported: set[tuple[bytes, str]] = set()

    # -- what subclasses decide ----------------------------------------------------------

    def judge(self, cert: CertFacts, username: str) -> Accepted:
        """Decide about a certificate offered for ``username``; AccessDenied says why not."""
        raise AccessDenied("this server accepts no certificates")

    async def on_refused(self, reason: str, cert: CertFacts | None, username: str) -> None:
        """One refused key (each distinct key and reason once): audit it if you like."""

    def certificate_permission(self, permission: str) -> bool | None:
        """Override a permit-* answer (None: ask the certificate, as asyncssh does)."""
        return None

    # -- the hook ----------------------------------------------------------------------------

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        self.remote_addr = peer_address(conn)
        original: Validate = conn.validate_public_key

        async def validate(username: str, key_data: bytes, msg: bytes, signature: bytes) -> bool:
            return await self._validate(original, username, key_data, msg, signature)

        conn.validate_public_key = validate  # type: ignore[method-assign]
        if type(self).certificate_permission is not CertAuthServer.certificate_permission:
            from_cert = conn.check_certificate_permission

            def permission(name: str) -> bool:
                answer = self.certificate_permission(name)
                return from_cert(name) if answer is None else answer

            conn.check_certificate_permission = permission  # type: ignore[method-assign]

    async def _validate(self, original: Validate, username: str, key_data: bytes,
                        msg: bytes, signature: bytes) -> bool:
        cert: CertFacts | None = None
        try:
            cert = read_certificate(key_data)
            accepted = self.judge(cert, username)
        except NotACertificate as exc:
            return await self._refuse(key_data, f"{exc.message}; {self.not_a_certificate_hint}",
                                      None, username)
        except LimenError as exc:
            return await self._refuse(key_data, exc.message, cert, username)
        except Exception:  # an exception here would tear down the whole connection
            log.exception("checking an offered key failed")
            return await self._refuse(key_data, "the offered key could not be checked",
                                      cert, username)
        self._judged = cert
        blob = bytes(cert.key.public_data) if accepted.plain_key else key_data
        if not await original(accepted.principal, blob, msg, signature):
            return await self._refuse(key_data, _why_asyncssh_refused(cert), cert, username)
        if msg:  # a signed request: this is the key that logs in
            self.cert, self.username = cert, username
        return True

    async def _refuse(self, key_data: bytes, reason: str, cert: CertFacts | None,
                      username: str) -> bool:
        # OpenSSH asks about a key before signing with it: report each refusal once.
        if (key_data, reason) not in self._reported:
            self._reported.add((key_data, reason))
            if reason not in self.refusals:
                self.refusals.append(reason)
            try:
                await self.on_refused(reason, cert, username)
            except Exception:
                log.exception("reporting a refused key failed")
        return False

    # -- asyncssh's questions, answered from what the judge approved ---------------------

    def begin_auth(self, username: str) -> bool:
        return True  # there is no anonymous access anywhere

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_ca_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        judged = self._judged
        return judged is not None and key.public_data == judged.signing_key.public_data

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        judged = self._judged
        return judged is not None and key.public_data == judged.key.public_data


def _why_asyncssh_refused(cert: CertFacts) -> str:
    # asyncssh checks validity against the wall clock, the judge against the service's
    # clock; when only asyncssh objects, the two disagree.
    now = time.time()
    if now < cert.valid_after.timestamp():
        return (
            f"the certificate is not valid yet by this server's clock (valid from "
            f"{cert.valid_after:%Y-%m-%d %H:%M:%S} UTC): check the clocks of auth and here"
        )
    if now >= cert.valid_before.timestamp():
        return "the certificate has expired by this server's clock"
    return (
        "the certificate was refused: its signature or proof of key possession did not "
        "verify, or the source address is not allowed by it"
    )



def connection_factory(
    options: asyncssh.SSHServerConnectionOptions,
) -> Callable[[], asyncio.Protocol]:
    """Protocol factory for a server's own listener, or for connections another listener
    (the multiplexed web port) hands over. ``options.server_factory`` makes the hooks."""
    loop = asyncio.get_running_loop()
    return lambda: asyncssh.SSHServerConnection(loop, options)


async def listen(host: str, port: int,
                 options: asyncssh.SSHServerConnectionOptions) -> asyncio.Server:
    """A TCP listener for SSH connections with ``options`` (host "" = every address)."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        connection_factory(options), host or None, port, reuse_address=True, backlog=128,
    )
