"""Agentless nodes: stock OpenSSH servers registered by an admin, reached through the proxy.

An OpenSSH node runs no Limen code, so it has no join token, heartbeat or API token.
Its registration (``/nodes/ID``, ``spec.kind: openssh``) is made by an admin with the
address to dial and its labels, and lasts until ``limen rm node/X``. Its presence
(``/node_presence/ID``, ``connection: openssh``) says where it is and what the proxy's
health check last saw.

Two kinds of certificate are signed here:

- the sshd's host certificate (``role@limen: openssh``, key id = node id, principals:
  id, name, NAME.CLUSTER and the address's host), for a key whose public half the admin
  hands over; the registration keeps that key, so the proxy accepts only a certificate
  for it (a renewal over the same key, or a new key certified with ``limen nodes cert``);
- a user certificate for one session, asked for by the proxy (never by a person): valid
  ``SESSION_CERT_TTL``, key id = the Limen user, one principal ``limen-openssh/ID/LOGIN``.
  The sshd is configured to accept exactly that principal for LOGIN
  (``AuthorizedPrincipalsCommand /bin/echo limen-openssh/ID/%u``), so a person's own
  login certificate (principals: their logins) opens nothing there, and a certificate
  the proxy obtained for one node opens no other.
"""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass
from datetime import timedelta

import asyncssh

from limen import __version__
from limen.audit import events
from limen.auth import node_credentials as creds
from limen.auth.ca import authorized_keys_line, sign_user_cert
from limen.auth.context import AuthContext
from limen.auth.identity import Identity
from limen.auth.join import JoinService
from limen.auth.locks import LockService
from limen.auth.node_registry import NodeRegistry
from limen.errors import AccessDenied, BadParameter, LimenError, NotFound
from limen.hostport import split_host_port
from limen.netpolicy import check_advertised
from limen.resources import Node, NodePresence
from limen.services.node_names import NameTaken

KIND = "openssh"
ROLE = "openssh"  # role@limen of an OpenSSH node's host certificate
DEFAULT_HOST_CERT_TTL = timedelta(days=30)
MAX_HOST_CERT_TTL = timedelta(days=365)
SESSION_CERT_TTL = timedelta(minutes=2)  # only needed while the proxy logs in


def principal(node_id: str, login: str) -> str:
    """The one principal of a session certificate for ``login`` on this node."""
    return f"limen-openssh/{node_id}/{login}"


@dataclass(frozen=True)
class OpenSSHCert:
    node_id: str
    name: str
    addr: str
    labels: dict[str, str]
    host_cert: str  # OpenSSH certificate line
    host_key: str  # the certified public key (OpenSSH line)
    user_ca: str  # the user CA's public key (for TrustedUserCAKeys)
    principal_prefix: str  # limen-openssh/ID/ : then the login
    expires: str


class OpenSSHNodes:
    def __init__(self, ctx: AuthContext, nodes: NodeRegistry, join: JoinService,
                 locks: LockService, checker_for_user) -> None:
        self.ctx = ctx
        self.nodes = nodes
        self.join = join
        self.locks = locks
        self.checker_for_user = checker_for_user

    # -- registering (an admin) ---------------------------------------------------------

    async def add(self, actor: Identity, name: str, addr: str, labels: dict[str, str],
                  public_key: str, ttl: timedelta | None) -> OpenSSHCert:
        _check_addr(addr)
        # Every client trusts the host CA for any name: the same names and addresses a
        # joining node may not have certified (the proxy's, loopback, ids) are refused.
        self.join.check_host_claims(name, addr, public_key)
        check_advertised(addr, self.ctx.settings.node_networks)
        key = creds.import_host_key(public_key)
        ttl = _ttl(ttl)
        holder = await self.nodes.names.holder(name)
        if holder is not None:
            raise NameTaken(name, holder)
        node_id = str(uuid.uuid4())
        principals = self._principals(node_id, name, addr)
        serial = creds.new_serial()
        cert = creds.sign_host_certificate(self.ctx, node_id, principals, key, ttl,
                                           role=ROLE, serial=serial)
        now = self.ctx.clock.now()
        node = Node.model_validate({
            "metadata": {"name": node_id, "labels": labels},
            "spec": {"hostname": name, "kind": KIND, "addr": addr,
                     "host_key": _openssh(key), "cert_serial": serial,
                     "principals": principals, "credentials_expire": now + ttl,
                     "version": __version__, "joined": now},
        })
        await self.ctx.stores.nodes.upsert(node)
        try:
            await self.nodes.names.claim(name, node_id)
        except LimenError:
            with contextlib.suppress(NotFound):
                await self.ctx.stores.nodes.delete(node_id)
            raise
        await self.ctx.stores.node_presence.upsert(NodePresence.model_validate({
            "metadata": {"name": node_id},
            "spec": {"addr": addr, "connection": KIND, "since": now, "state": "unchecked"},
        }))
        await self.ctx.audit.emit(
            events.NODE_JOIN, server_id=node_id, server_hostname=name, server_addr=addr,
            labels=labels, addr_remote=actor.remote_addr, cert_serial=serial,
            expires=(now + ttl).isoformat(),
        )
        return self._issued(node, cert)

    async def certify(self, actor: Identity, name_or_id: str, public_key: str,
                      ttl: timedelta | None) -> OpenSSHCert:
        """A new host certificate for the sshd (renewal, or a key it already has)."""
        node = await self.find(name_or_id)
        key = creds.import_host_key(public_key)
        ttl = _ttl(ttl)
        serial = creds.new_serial()
        cert = creds.sign_host_certificate(self.ctx, node.name, node.spec.principals, key,
                                           ttl, role=ROLE, serial=serial)
        now = self.ctx.clock.now()
        node.spec.host_key = _openssh(key)
        node.spec.cert_serial = serial
        node.spec.credentials_expire = now + ttl
        await self.ctx.stores.nodes.upsert(node)
        await self.ctx.audit.emit(
            events.NODE_RENEW, success=True, server_id=node.name,
            server_hostname=node.spec.hostname, server_addr=node.spec.addr,
            addr_remote=actor.remote_addr, cert_serial=serial,
            expires=(now + ttl).isoformat(),
        )
        return self._issued(node, cert)

    async def find(self, name_or_id: str) -> Node:
        node = await self.nodes.find(name_or_id)
        if node.spec.kind != KIND:
            raise BadParameter(f"node {node.spec.hostname} is not an OpenSSH node; it runs "
                               "Limen and gets its certificates by itself")
        return node

    def _principals(self, node_id: str, name: str, addr: str) -> list[str]:
        cluster = self.ctx.settings.cluster_name
        principals = [node_id, name, f"{name}.{cluster}"]
        if self.join.claimable_addr(addr):  # never loopback or the proxy's names
            principals.append(split_host_port(addr, 22)[0])
        return list(dict.fromkeys(principals))

    def _issued(self, node: Node, cert: asyncssh.SSHCertificate) -> OpenSSHCert:
        expires = node.spec.credentials_expire
        return OpenSSHCert(
            node_id=node.name, name=node.spec.hostname, addr=node.spec.addr,
            labels=dict(node.metadata.labels),
            host_cert=cert.export_certificate("openssh").decode().strip(),
            host_key=node.spec.host_key,
            user_ca=authorized_keys_line(self.ctx.cas.user_ca).removeprefix(
                "cert-authority ").strip(),
            principal_prefix=principal(node.name, ""),
            expires=expires.isoformat() if expires else "",
        )

    # -- a session's certificate (the proxy) --------------------------------------------

    async def session_cert(self, user_name: str, login: str, node_id: str,
                           public_key: str) -> asyncssh.SSHCertificate:
        """A certificate for ``login`` on an OpenSSH node, for a user whose current roles
        and locks allow it there; AccessDenied says why not."""
        try:
            user = await self.ctx.stores.users.get(user_name)
        except NotFound:
            raise AccessDenied(f"user {user_name} no longer exists") from None
        try:
            node = await self.ctx.stores.nodes.get(node_id)
        except NotFound:
            raise AccessDenied(f"node {node_id} is not registered") from None
        if node.spec.kind != KIND:
            raise AccessDenied(f"node {node.spec.hostname} is not an OpenSSH node")
        await self.locks.check(user.name, list(user.spec.roles), login=login,
                               node_names=(node.name, node.spec.hostname))
        checker = await self.checker_for_user(user)
        checker.check_node_login(node.spec.hostname, node.metadata.labels, login)
        now = self.ctx.clock.now()
        return sign_user_cert(
            self.ctx.cas.user_ca, public_key, key_id=user.name,
            principals=[principal(node.name, login)],
            valid_after=now - timedelta(minutes=1), valid_before=now + SESSION_CERT_TTL,
            permit_pty=True, serial=creds.new_serial(),
        )


def _openssh(key: asyncssh.SSHKey) -> str:
    return key.export_public_key("openssh").decode().strip()


def _check_addr(addr: str) -> None:
    try:
        host, port = split_host_port(addr)
    except (BadParameter, ValueError):
        raise BadParameter(f"--addr {addr!r} is not HOST:PORT") from None
    if not host or not 0 < port < 65536:
        raise BadParameter(f"--addr {addr!r} is not HOST:PORT")


def _ttl(ttl: timedelta | None) -> timedelta:
    if ttl is None:
        return DEFAULT_HOST_CERT_TTL
    if ttl <= timedelta(0) or ttl > MAX_HOST_CERT_TTL:
        raise BadParameter("a host certificate lives more than 0 s and at most 365 days")
    return ttl
