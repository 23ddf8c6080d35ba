"""Judging the host certificate a node agent logs in with at the tunnel server.

An agent proves which node it is with the host certificate its node received when it
joined: signed by the cluster's host CA, key id = node id, ``role@limen`` = node. The
SSH user name it logs in as must be that node id, so one node's certificate can never
speak for another node (a principal alone would not do: names and addresses are
principals too, and a node chooses its own name).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncssh
from asyncssh.packet import PacketDecodeError, SSHPacket

from limen.auth.ca import read_cert_extensions
from limen.errors import AccessDenied, BadParameter

CERT_TYPE_HOST = 2


@dataclass(frozen=True)
class AgentCert:
    """What the tunnel server decides with, read from the certificate's wire form."""

    key_id: str
    cert_type: int
    principals: tuple[str, ...]
    valid_after: datetime
    valid_before: datetime
    key: asyncssh.SSHKey  # the certified public key: it must sign the login
    signing_key: asyncssh.SSHKey
    extensions: dict[str, str]


def read_agent_cert(key_data: bytes) -> AgentCert:
    """Parse the key blob of a publickey login; AccessDenied unless it is a CA-signed
    OpenSSH certificate (asyncssh checks the CA's signature while parsing)."""
    try:
        algorithm = SSHPacket(key_data).get_string()
        cert = asyncssh.import_certificate(algorithm + b" " + base64.b64encode(key_data))
        if cert.is_x509 or cert.is_x509_chain:
            raise ValueError("X.509")
        extensions = read_cert_extensions(key_data)
        fields = _walk(key_data, cert.key)
    except (PacketDecodeError, ValueError, asyncssh.KeyImportError, BadParameter):
        raise AccessDenied(
            "a node agent logs in with its node's host certificate; something else was offered"
        ) from None
    key_id, cert_type, valid_after, valid_before = fields
    return AgentCert(
        key_id=key_id,
        cert_type=cert_type,
        principals=tuple(cert.principals),
        valid_after=valid_after,
        valid_before=valid_before,
        key=cert.key,
        signing_key=cert.signing_key,
        extensions=extensions,
    )


def _walk(blob: bytes, key: asyncssh.SSHKey) -> tuple[str, int, datetime, datetime]:
    # Layout: algorithm, nonce, the key's own fields, serial, type, key id, principals,
    # valid after, valid before. The key's fields are its public blob minus its name.
    packet = SSHPacket(blob)
    packet.get_string()  # algorithm
    packet.get_string()  # nonce
    plain = SSHPacket(key.public_data)
    name_length = len(plain.get_string()) + 4
    packet.get_bytes(len(key.public_data) - name_length)
    packet.get_uint64()  # serial
    cert_type = packet.get_uint32()
    key_id = packet.get_string().decode("utf-8", "replace")
    packet.get_string()  # principals: asyncssh has parsed them
    return key_id, cert_type, _time(packet.get_uint64()), _time(packet.get_uint64())


def _time(value: int) -> datetime:
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):  # "forever" is 2**64-1
        return datetime.max.replace(tzinfo=UTC)


def judge_agent_cert(
    cert: AgentCert,
    username: str,
    host_cas: Sequence[asyncssh.SSHKey],
    cluster: str,
    now: datetime,
) -> str:
    """The node id the agent may speak for; AccessDenied with a sentence otherwise."""
    if cert.cert_type != CERT_TYPE_HOST:
        raise AccessDenied("a node agent must log in with a host certificate, not a user one")
    if cert.signing_key.public_data not in {ca.public_data for ca in host_cas}:
        raise AccessDenied("the host certificate is not signed by this cluster's host CA")
    if cert.extensions.get("role@limen") != "node":
        raise AccessDenied("the host certificate is not a node's (role@limen is not 'node')")
    if cert.extensions.get("cluster@limen", cluster) != cluster:
        raise AccessDenied(f"the host certificate belongs to another cluster, not {cluster}")
    if now < cert.valid_after:
        raise AccessDenied(
            f"the host certificate is not valid before {cert.valid_after:%Y-%m-%d %H:%M:%S} UTC"
        )
    if now >= cert.valid_before:
        raise AccessDenied("the host certificate has expired; the node must join again")
    if not cert.key_id or cert.key_id not in cert.principals:
        raise AccessDenied("the host certificate names no node id")
    if username != cert.key_id:
        raise AccessDenied(
            f"node {cert.key_id} may not open a tunnel as '{username}': an agent logs in "
            "as its own node id"
        )
    return cert.key_id
