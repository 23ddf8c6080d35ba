"""Before the proxy splices a user to a direct node, the node's address must prove it is
that node.

A node reports its own address, so on its own word the proxy could be sent anywhere:
its own ports, a metadata service, another node, an internal database. Two checks stand
between a registered address and a user's bytes:

1. ``AddressGuard``: the address (a name is resolved once, and that IP is what gets
   dialed) is never one of the proxy's own listeners, whatever the config says, and is
   not loopback, link-local, unspecified or multicast unless ``proxy.node_networks``
   allows it.
2. ``NodeVerifier``: an SSH handshake as a client to that address. The key exchange
   proves the server holds the private key of the host certificate it presents, and
   ``judge_host`` checks that certificate: this cluster's host CA, role node, valid now,
   key id = the node's id, and the node neither removed, locked nor renewed past it. The
   answer is cached per (node id, address) for a few minutes (never beyond the
   certificate's validity), so a user's connection usually costs nothing extra.

Whatever fails, the user is told why and the address receives nothing of theirs.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import asyncssh

from limen.clock import Clock
from limen.errors import AccessDenied, BadParameter, ConnectionProblem
from limen.netpolicy import IPAddress, IPNetwork, parse_ip, refusal
from limen.proxy.ssh_routes import NODE_DIAL_TIMEOUT, NodeRoute, dial_failure
from limen.sshalgs import HOST_KEY_ALGS, hardened_options
from limen.sshauth import TrustedKeys, judge_host, read_certificate
from limen.sshauth.judge import Revoked

PROVEN_FOR = timedelta(minutes=5)
MAX_REMEMBERED = 4096
PROBE_VERSION = "Limen_node_check"  # the probe's SSH banner: SSH-2.0-Limen_node_check
CERT_ALGS = [alg for alg in HOST_KEY_ALGS if "-cert-v01@" in alg]
_WILDCARDS = {"", "0.0.0.0", "::"}


def _refused(route: NodeRoute, why: str) -> AccessDenied:
    return AccessDenied(
        f"the proxy will not connect you to node '{route.name}': its registered address "
        f"{route.host}:{route.port} {why}"
    )


@dataclass
class AddressGuard:
    """Where the proxy may dial a node at all."""

    allowed: tuple[IPNetwork, ...] = ()
    listeners: list[tuple[str, int]] = field(default_factory=list)  # (bind host, port)
    _local: dict[IPAddress, bool] = field(default_factory=dict)

    def add_listener(self, host: str, port: int) -> None:
        self.listeners.append((host, port))

    async def dialable(self, route: NodeRoute) -> NodeRoute:
        """The route with the IP to dial, or AccessDenied saying why not."""
        ip = parse_ip(route.host) or await self._resolve(route)
        if self._is_own(ip, route.port):
            raise _refused(route, "is one of the proxy's own listeners")
        reason = refusal(ip, self.allowed)
        if reason is not None:
            raise _refused(route, f"is not allowed: {reason}")
        return replace(route, host=str(ip))

    async def _resolve(self, route: NodeRoute) -> IPAddress:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(route.host, route.port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise ConnectionProblem(
                f"node '{route.name}' has the address {route.host}, which does not resolve: "
                f"{exc.strerror or exc}"
            ) from None
        ip = parse_ip(str(infos[0][4][0]))
        if ip is None:
            raise ConnectionProblem(f"node '{route.name}''s address {route.host} did not resolve")
        return ip

    def _is_own(self, ip: IPAddress, port: int) -> bool:
        for host, own_port in self.listeners:
            if port != own_port:
                continue
            if host in _WILDCARDS:
                if ip.is_loopback or ip.is_unspecified or self._is_local(ip):
                    return True
            elif parse_ip(host) == ip:
                return True
        return False

    def _is_local(self, ip: IPAddress) -> bool:
        """Whether ``ip`` is one of this machine's addresses (only those can be bound)."""
        if ip not in self._local:
            family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                try:
                    probe.bind((str(ip), 0))
                    self._local[ip] = True
                except OSError:
                    self._local[ip] = False
        return self._local[ip]


class _CertificateCatcher(asyncssh.SSHClient):
    """Keeps the host key blob the server sends in the key exchange (its certificate)."""

    def __init__(self, caught: list[bytes]) -> None:
        self._caught = caught

    def connection_made(self, conn: asyncssh.SSHClientConnection) -> None:
        validate = conn.validate_server_host_key

        def catch(key_data: bytes) -> asyncssh.SSHKey:
            self._caught.append(bytes(key_data))
            return validate(key_data)

        conn.validate_server_host_key = catch  # type: ignore[method-assign]


async def fetch_host_certificate(route: NodeRoute, timeout: float) -> bytes:
    """The host certificate served at the route's address, after a completed key exchange
    (the server signed the exchange with the certified key). Sends nothing but SSH's own
    handshake; ConnectionProblem or AccessDenied say what went wrong."""
    ip = ipaddress.ip_address(route.host)
    sock = socket.socket(socket.AF_INET6 if ip.version == 6 else socket.AF_INET)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(
            asyncio.get_running_loop().sock_connect(sock, (route.host, route.port)), timeout)
    except (TimeoutError, OSError) as exc:
        sock.close()
        raise dial_failure(route, exc, timeout) from None
    caught: list[bytes] = []
    algs = hardened_options()
    options = asyncssh.SSHClientConnectionOptions(
        client_factory=lambda: _CertificateCatcher(caught),
        encryption_algs=algs["encryption_algs"], mac_algs=algs["mac_algs"],
        compression_algs=algs["compression_algs"],
    )
    try:
        await asyncio.wait_for(asyncssh.get_server_host_key(
            sock=sock, options=options, config=None, client_version=PROBE_VERSION,
            kex_algs=algs["kex_algs"], server_host_key_algs=CERT_ALGS,
        ), timeout)
    except TimeoutError:
        raise _refused(route, f"gave no SSH answer within {timeout:g} s") from None
    except (asyncssh.Error, OSError, ValueError) as exc:
        raise _refused(route, f"does not serve a Limen node's SSH ({_describe(exc)})") from None
    finally:
        sock.close()
    if not caught:
        raise _refused(route, "presented no host certificate")
    return caught[-1]


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncssh.KeyExchangeFailed):
        return "it offers no host certificate"
    return str(getattr(exc, "reason", "") or exc) or type(exc).__name__


class NodeVerifier:
    """Proves, and remembers for a while, that an address serves a given node."""

    def __init__(self, host_cas: TrustedKeys, cluster: str, clock: Clock, *,
                 timeout: float = NODE_DIAL_TIMEOUT, proven_for: timedelta = PROVEN_FOR) -> None:
        self.host_cas = host_cas
        self.cluster = cluster
        self.clock = clock
        self.timeout = timeout
        self.proven_for = proven_for
        self._proven: dict[tuple[str, str, int], datetime] = {}
        self._checks: dict[tuple[str, str, int], asyncio.Future[datetime]] = {}
        # Bumped by forget(): a handshake that began before is not remembered after.
        self._epochs: dict[str, int] = {}
        self.probes = 0  # how many handshakes were made (the rest came from the cache)

    def proven(self, route: NodeRoute) -> bool:
        until = self._proven.get(_key(route))
        return until is not None and self.clock.now() < until

    def forget(self, node_id: str, _reason: str = "") -> None:
        """Drop what is known about a node (removed, locked): the next dial checks again."""
        for key in [k for k in self._proven if k[0] == node_id]:
            del self._proven[key]
        for key in [k for k in self._checks if k[0] == node_id]:
            del self._checks[key]  # the next dial starts its own handshake
        self._epochs[node_id] = self._epochs.get(node_id, 0) + 1

    async def verify(self, route: NodeRoute, revoked: Revoked | None = None) -> None:
        """Return once ``route`` (an IP address) is proven to serve ``route.node_id``."""
        if self.proven(route):
            return
        key = _key(route)
        check = self._checks.get(key)
        if check is None:  # one handshake for every user waiting on the same address
            check = asyncio.ensure_future(self._prove(route, revoked))
            self._checks[key] = check
            check.add_done_callback(lambda done: self._check_done(key, done))
        epoch = self._epochs.get(route.node_id, 0)
        until = await asyncio.shield(check)
        if self._epochs.get(route.node_id, 0) == epoch:
            self._proven[key] = until
        if len(self._proven) > MAX_REMEMBERED:  # addresses nodes left long ago
            now = self.clock.now()
            self._proven = {k: until for k, until in self._proven.items() if until > now}

    def _check_done(self, key: tuple[str, str, int], done: asyncio.Future[datetime]) -> None:
        if self._checks.get(key) is done:  # not a newer check, after a forget()
            del self._checks[key]
        if not done.cancelled():
            done.exception()  # retrieved: every waiter may have given up already

    async def _prove(self, route: NodeRoute, revoked: Revoked | None) -> datetime:
        self.probes += 1
        blob = await fetch_host_certificate(route, self.timeout)
        now = self.clock.now()
        try:
            facts = read_certificate(blob)
            judge_host(facts, self.host_cas, now, cluster=self.cluster, role="node",
                       expected_id=route.node_id, revoked=revoked)
        except (AccessDenied, BadParameter) as exc:
            raise _refused(route, f"did not prove it is that node: {exc.message}") from None
        return min(now + self.proven_for, facts.valid_before)


def _key(route: NodeRoute) -> tuple[str, str, int]:
    return route.node_id, route.host, route.port

