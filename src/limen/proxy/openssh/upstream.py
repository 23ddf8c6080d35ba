"""The proxy's SSH client connection to an OpenSSH node's sshd.

The host key is judged inside the key exchange, before the proxy authenticates: the
sshd must present a host certificate (certificate algorithms are offered first; a plain
key is offered for too, only so that the refusal can say what it was) from the
cluster's host CA, ``role@limen: openssh``, key id = the node's id, for the host key the
node's registration names, valid now. Anything else ends the connection with a sentence
for the user, and the sshd never sees the session's certificate.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from datetime import datetime

import asyncssh

from limen.clock import Clock
from limen.errors import AccessDenied, BadParameter, ConnectionProblem
from limen.proxy.node_verify import AddressGuard
from limen.proxy.ssh_routes import NODE_DIAL_TIMEOUT, NodeRoute, dial_failure
from limen.resources import Node
from limen.sshalgs import HOST_KEY_ALGS, hardened_options
from limen.sshauth import CertFacts, TrustedKeys, judge_host, read_certificate

ROLE = "openssh"


def judge_sshd(blob: bytes, node: Node, host_cas: TrustedKeys, cluster: str,
               now: datetime) -> CertFacts:
    """The sshd's host certificate, if it proves it is ``node``; AccessDenied says why."""
    try:
        facts = read_certificate(blob)
    except BadParameter:
        raise AccessDenied("its sshd presents no host certificate, only a plain host key "
                           "(install the one limen nodes add or limen nodes cert printed)"
                           ) from None
    registered = node.spec.host_key.split()[:2]

    def revoked(cert: CertFacts) -> str | None:
        offered = cert.key.export_public_key("openssh").decode().split()[:2]
        if offered != registered:
            return "its host certificate is for a key other than the one registered"
        return None

    judge_host(facts, host_cas, now, cluster=cluster, role=ROLE, expected_id=node.name,
               revoked=revoked)
    return facts


class _Judged(asyncssh.SSHClient):
    def __init__(self, check) -> None:
        self._check = check
        self.refusal: str | None = None

    def connection_made(self, conn: asyncssh.SSHClientConnection) -> None:
        validate = conn.validate_server_host_key

        def judged(key_data: bytes) -> asyncssh.SSHKey:
            try:
                self._check(bytes(key_data))
            except AccessDenied as exc:
                self.refusal = exc.message
                raise asyncssh.HostKeyNotVerifiable(exc.message) from None
            return validate(key_data)

        conn.validate_server_host_key = judged  # type: ignore[method-assign]


def refused(route: NodeRoute, why: str) -> AccessDenied:
    return AccessDenied(f"the proxy will not connect you to OpenSSH node '{route.name}' at "
                        f"{route.host}:{route.port}: {why}")


async def dial_sshd(route: NodeRoute, node: Node, guard: AddressGuard, host_cas: TrustedKeys,
                    cluster: str, clock: Clock, login: str, key: asyncssh.SSHKey,
                    cert: asyncssh.SSHCertificate,
                    timeout: float = NODE_DIAL_TIMEOUT) -> asyncssh.SSHClientConnection:
    """Log in to the node's sshd as ``login`` once it proved it is that node."""
    target = await guard.dialable(route)
    client = _Judged(lambda blob: judge_sshd(blob, node, host_cas, cluster, clock.now()))
    algs = hardened_options()
    with _explained(route, target, client, timeout):
        return await asyncio.wait_for(asyncssh.connect(
            target.host, target.port, username=login, client_keys=[(key, cert)],
            known_hosts=None, agent_path=None, config=[], preferred_auth="publickey",
            client_factory=lambda: client, server_host_key_algs=HOST_KEY_ALGS,
            kex_algs=algs["kex_algs"], encryption_algs=algs["encryption_algs"],
            mac_algs=algs["mac_algs"], compression_algs=algs["compression_algs"],
        ), timeout)


async def probe_sshd(route: NodeRoute, node: Node, guard: AddressGuard, host_cas: TrustedKeys,
                     cluster: str, clock: Clock, timeout: float = NODE_DIAL_TIMEOUT) -> None:
    """The key exchange alone (no authentication): does the sshd prove it is the node?"""
    target = await guard.dialable(route)
    client = _Judged(lambda blob: judge_sshd(blob, node, host_cas, cluster, clock.now()))
    algs = hardened_options()
    options = asyncssh.SSHClientConnectionOptions(
        client_factory=lambda: client, encryption_algs=algs["encryption_algs"],
        mac_algs=algs["mac_algs"], compression_algs=algs["compression_algs"])
    with _explained(route, target, client, timeout):
        await asyncio.wait_for(asyncssh.get_server_host_key(
            target.host, target.port, options=options, config=None,
            kex_algs=algs["kex_algs"], server_host_key_algs=HOST_KEY_ALGS), timeout)


@contextlib.contextmanager
def _explained(route: NodeRoute, target: NodeRoute, client: _Judged,
               timeout: float) -> Iterator[None]:
    """asyncssh's and the network's failures as sentences for the user."""
    try:
        yield
    except TimeoutError:
        raise refused(route, f"its sshd gave no SSH answer within {timeout:g} s") from None
    except asyncssh.PermissionDenied:
        raise refused(route, "its sshd refused the session's certificate (are the "
                             "sshd_config lines limen nodes add printed in place?)") from None
    except asyncssh.KeyExchangeFailed:
        raise refused(route, "its sshd presents no host certificate (install the one "
                             "limen nodes add or limen nodes cert printed)") from None
    except asyncssh.HostKeyNotVerifiable:
        why = client.refusal or "its host key could not be verified"
        if "presents no host certificate" not in why:
            why = f"its sshd did not prove it is that node: {why}"
        raise refused(route, why) from None
    except asyncssh.Error as exc:
        raise ConnectionProblem(f"OpenSSH node '{route.name}': {exc.reason or exc}") from None
    except OSError as exc:
        raise dial_failure(target, exc, timeout) from None
