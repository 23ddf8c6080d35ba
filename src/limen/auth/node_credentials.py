"""A node's credentials: a host certificate and an API token, both short-lived.

The auth service issues them when a node joins and again when the node renews them.
A renewal must prove possession of the host key the node registered with: the node
signs a statement naming itself, the API token it renews and the time, so a token
copied off a node is not enough to keep a node's identity alive.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncssh
from asyncssh.packet import PacketDecodeError, SSHPacket

from limen.auth.ca import sign_host_cert
from limen.auth.context import AuthContext
from limen.errors import AccessDenied, BadParameter
from limen.resources.token import token_hash
from limen.sshalgs import SIGNATURE_ALGS

# How far a renewal's signed time may be from the auth service's clock.
PROOF_WINDOW = timedelta(minutes=5)
_PROOF_CONTEXT = "limen-node-renewal-v1"
_JOIN_CONTEXT = "limen-node-join-v1"


def token_id(token: str) -> str:
    """A token's short id, as the node's registration remembers it."""
    return token_hash(token)[:16]


def session_token_id(session_name: str) -> str:
    """The same id from a stored API session (whose name is the token's SHA-256)."""
    return session_name[:16]


def import_host_key(public_key: str) -> asyncssh.SSHKey:
    try:
        return asyncssh.import_public_key(public_key)
    except (asyncssh.KeyImportError, ValueError) as exc:
        raise BadParameter("the host public key is not a valid OpenSSH public key") from exc


def new_serial() -> int:
    return secrets.randbits(63) + 1  # never 0: 0 is what unserialised certificates say


def sign_host_certificate(
    ctx: AuthContext, host_id: str, principals: list[str], key: asyncssh.SSHKey,
    ttl: timedelta, role: str = "node", serial: int = 0,
) -> asyncssh.SSHCertificate:
    """A host certificate of this cluster: key id = host id, role and cluster extensions."""
    now = ctx.clock.now()
    cluster = ctx.settings.cluster_name
    return sign_host_cert(
        ctx.cas.host_ca,
        key,
        key_id=host_id,
        principals=list(dict.fromkeys(principals)),
        valid_after=now - timedelta(minutes=1),
        valid_before=now + ttl,
        extensions={"role@limen": role, "cluster@limen": cluster},
        serial=serial,
    )


@dataclass(frozen=True)
class NodeCredentials:
    """What a join or a renewal hands the node (api_token empty for the in-process node)."""

    host_cert: asyncssh.SSHCertificate
    serial: int
    api_token: str
    expires: datetime

    def cert_line(self) -> str:
        return self.host_cert.export_certificate("openssh").decode().strip()


async def issue(ctx: AuthContext, node_id: str, principals: list[str], key: asyncssh.SSHKey,
                with_token: bool) -> NodeCredentials:
    ttl = ctx.settings.node_credential_ttl
    serial = new_serial()
    cert = sign_host_certificate(ctx, node_id, principals, key, ttl, serial=serial)
    expires = ctx.clock.now() + ttl
    token = ""
    if with_token:
        token = await ctx.stores.api_sessions.issue(node_id, expires, builtin="node")
    return NodeCredentials(cert, serial, token, expires)


# -- the proof of possession -----------------------------------------------------------

def _statement(node_id: str, renewed_token_id: str, stamp: str) -> bytes:
    return f"{_PROOF_CONTEXT}\n{node_id}\n{renewed_token_id}\n{stamp}".encode()


def _join_statement(name: str, join_token: str, stamp: str) -> bytes:
    return f"{_JOIN_CONTEXT}\n{name.lower()}\n{token_hash(join_token)}\n{stamp}".encode()


def _signed(key: asyncssh.SSHKey, statement: bytes, stamp: str) -> dict[str, str]:
    algorithm = next(
        (alg for alg in key.sig_algorithms if alg.decode() in SIGNATURE_ALGS),
        key.sig_algorithms[0],
    )
    signature = key.sign(statement, algorithm)
    return {"time": stamp, "signature": base64.b64encode(signature).decode()}


def sign_renewal(key: asyncssh.SSHKey, node_id: str, api_token: str,
                 now: datetime) -> dict[str, str]:
    """The node's side: a signed statement for POST /v1/nodes/renew."""
    stamp = now.isoformat()
    return _signed(key, _statement(node_id, token_id(api_token), stamp), stamp)


def sign_join(key: asyncssh.SSHKey, name: str, join_token: str,
              now: datetime) -> dict[str, str]:
    """The joining node's side: that it holds the host key it presents (POST /v1/join)."""
    stamp = now.isoformat()
    return _signed(key, _join_statement(name, join_token, stamp), stamp)


def check_renewal(public_key: str, node_id: str, renewed_token_id: str, stamp: str,
                  signature: str, now: datetime) -> None:
    """The auth service's side: AccessDenied unless the registered host key signed it now."""
    _check_proof(public_key, stamp, signature, now, "renewal",
                 lambda: _statement(node_id, renewed_token_id, stamp))


def check_join(public_key: str, name: str, join_token: str, proof: dict[str, str] | None,
               now: datetime) -> None:
    """A join that claims a registered node's host key must be signed by that key, now:
    the public key alone is no secret (ssh-keyscan shows it)."""
    if not proof:
        raise AccessDenied("the join's proof of the host key is missing")
    stamp = str(proof.get("time", ""))
    _check_proof(public_key, stamp, str(proof.get("signature", "")), now, "join",
                 lambda: _join_statement(name, join_token, stamp))


def _check_proof(public_key: str, stamp: str, signature: str, now: datetime, what: str,
                 statement: Callable[[], bytes]) -> None:
    try:
        when = datetime.fromisoformat(stamp)
        raw = base64.b64decode(signature, validate=True)
    except (ValueError, binascii.Error):
        raise AccessDenied(f"the {what}'s proof is malformed") from None
    if when.tzinfo is None or abs(now - when) > PROOF_WINDOW:
        raise AccessDenied(
            f"the {what}'s proof is not from now: check the node's clock against the "
            "auth service's"
        )
    if _algorithm(raw) not in SIGNATURE_ALGS:  # no SHA-1 RSA signatures
        raise AccessDenied(f"the {what}'s proof uses a signature algorithm not accepted here")
    key = import_host_key(public_key)
    if not key.verify(statement(), raw):
        raise AccessDenied(
            f"the {what} was not signed with the host key this node registered with"
        )


def _algorithm(signature: bytes) -> str:
    try:
        return SSHPacket(signature).get_string().decode("ascii")
    except (PacketDecodeError, UnicodeDecodeError):
        return ""
