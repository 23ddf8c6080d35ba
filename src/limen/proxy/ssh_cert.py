"""Read and judge the user certificate a client presents to the jump host.

asyncssh verifies a certificate's signature and proof of possession, but keeps the
key id, serial and validity window private. The jump host needs them for the
identity it hands to policy and audit, so this module reads them from the wire
form (PROTOCOL.certkeys) itself, after asyncssh has parsed and verified it.
"""

from __future__ import annotations

import base64
import ipaddress
import struct
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncssh

from limen.errors import AccessDenied

# Extensions asyncssh understands; others are dropped when it parses (ASYNCSSH.md item 1).
_PERMITS = ("X11-forwarding", "agent-forwarding", "port-forwarding", "pty", "user-rc")


@dataclass(frozen=True)
class UserCert:
    """The parts of an OpenSSH user certificate the proxy decides with."""

    key_id: str
    serial: int
    principals: tuple[str, ...]
    valid_after: datetime
    valid_before: datetime
    permits: frozenset[str]
    source_addresses: tuple[str, ...]
    signing_key: asyncssh.SSHKey
    fingerprint: str


class _Wire:
    """Just enough of the SSH wire format to walk a certificate blob."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def take(self, size: int) -> bytes:
        end = self._pos + size
        if end > len(self._data):
            raise ValueError("truncated certificate")
        chunk, self._pos = self._data[self._pos : end], end
        return chunk

    def more(self) -> bool:
        return self._pos < len(self._data)

    def uint32(self) -> int:
        return struct.unpack(">I", self.take(4))[0]

    def uint64(self) -> int:
        return struct.unpack(">Q", self.take(8))[0]

    def string(self) -> bytes:
        return self.take(self.uint32())


def _timestamp(value: int) -> datetime:
    # "forever" is 2**64-1 on the wire; datetime stops at year 9999.
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        return datetime.max.replace(tzinfo=UTC)


def read_user_cert(key_data: bytes) -> UserCert:
    """Parse a certificate blob from a publickey auth request; AccessDenied if it is none."""
    wire = _Wire(key_data)
    try:
        alg = wire.string()
        text = alg + b" " + base64.b64encode(key_data)
        cert = asyncssh.import_certificate(text)  # checks the CA's signature
    except (ValueError, asyncssh.KeyImportError):
        raise AccessDenied(
            "only certificates issued by this cluster are accepted; sign in with limen login "
            "to get one (a plain key was offered)"
        ) from None
    if cert.is_x509 or cert.is_x509_chain:
        raise AccessDenied("only OpenSSH certificates are accepted (an X.509 chain was offered)")
    return _walk(wire, cert)


def _walk(wire: _Wire, cert: asyncssh.SSHCertificate) -> UserCert:
    # Layout: alg, nonce, the key's own fields, serial, type, key id, principals,
    # valid after, valid before, ... The key's fields are exactly its public blob
    # minus the algorithm name, which makes the walk independent of the key type.
    wire.string()  # nonce
    plain = cert.key.public_data
    wire.take(len(plain) - 4 - struct.unpack(">I", plain[:4])[0])
    serial, cert_type = wire.uint64(), wire.uint32()
    if cert_type != 1:
        raise AccessDenied("a host certificate was offered where a user certificate belongs")
    key_id = wire.string().decode("utf-8", "replace")
    packed = _Wire(wire.string())
    principals: list[str] = []
    while packed.more():
        principals.append(packed.string().decode("utf-8", "replace"))
    valid_after, valid_before = _timestamp(wire.uint64()), _timestamp(wire.uint64())
    sources = cert.options.get("source-address") or []
    return UserCert(
        key_id=key_id,
        serial=serial,
        principals=tuple(principals),
        valid_after=valid_after,
        valid_before=valid_before,
        permits=frozenset(p for p in _PERMITS if cert.options.get("permit-" + p)),
        source_addresses=tuple(str(net) for net in sources),
        signing_key=cert.signing_key,
        fingerprint=cert.key.get_fingerprint(),
    )


def check_user_cert(
    cert: UserCert,
    username: str,
    trusted_cas: list[asyncssh.SSHKey],
    now: datetime,
    peer_addr: str,
) -> str:
    """Judge a certificate for an SSH user name at the jump hop.

    Returns the principal asyncssh should check the certificate against: the user
    name itself when it is a principal, else (user name == key id) the first
    principal. Raises AccessDenied with a sentence for the person otherwise.
    """
    trusted = {ca.public_data for ca in trusted_cas}
    if cert.signing_key.public_data not in trusted:
        raise AccessDenied("the certificate is not signed by this cluster's user CA")
    if now < cert.valid_after:
        raise AccessDenied(
            f"the certificate is not valid before {cert.valid_after:%Y-%m-%d %H:%M:%S} UTC"
        )
    if now >= cert.valid_before:
        raise AccessDenied(
            f"the certificate expired at {cert.valid_before:%Y-%m-%d %H:%M:%S} UTC; "
            "sign in again with limen login"
        )
    # An empty principal list would let the certificate pass as anyone: refuse it,
    # as OpenSSH's sshd does.
    if not cert.principals:
        raise AccessDenied("the certificate names no principals")
    if cert.source_addresses and not _source_allowed(cert.source_addresses, peer_addr):
        raise AccessDenied(f"the certificate may not be used from {peer_addr}")
    if username in cert.principals:
        return username
    if username == cert.key_id:
        return cert.principals[0]
    raise AccessDenied(
        f"'{username}' is neither the certificate's user ({cert.key_id}) nor one of its "
        f"logins ({', '.join(cert.principals)})"
    )


def _source_allowed(networks: tuple[str, ...], peer_addr: str) -> bool:
    try:
        addr = ipaddress.ip_address(peer_addr)
    except ValueError:
        return False
    return any(addr in ipaddress.ip_network(net, strict=False) for net in networks)
