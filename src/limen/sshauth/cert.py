"""Read an OpenSSH certificate once, into one facts record.

asyncssh parses certificates and checks the CA's signature, but it keeps the serial,
type, key id and validity window in private attributes and drops every extension it
does not know (Limen's ``role@limen``, ``cluster@limen``, ``roles@limen``...). So this
module lets asyncssh check the signature and then walks the same wire bytes itself,
following OpenSSH's PROTOCOL.certkeys: key algorithm, nonce, the key's own fields,
serial, type, key id, principals, valid after, valid before, critical options,
extensions. Everything Limen decides about a certificate is decided from ``CertFacts``.
"""

from __future__ import annotations

import base64
import binascii
import functools
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncssh
from asyncssh.packet import PacketDecodeError, SSHPacket
from asyncssh.public_key import decode_ssh_certificate, decode_ssh_public_key

from limen.errors import BadParameter

CERT_TYPE_USER = 1
CERT_TYPE_HOST = 2
_FOREVER = datetime.max.replace(tzinfo=UTC)  # OpenSSH writes "forever" as 2**64-1
_PERMITS = ("X11-forwarding", "agent-forwarding", "port-forwarding", "pty", "user-rc")


class NotACertificate(BadParameter):
    """A plain public key (or garbage) where a certificate belongs."""


@dataclass(frozen=True)
class CertFacts:
    """Everything a certificate says, read from bytes whose CA signature checked out."""

    cert_type: int
    serial: int
    key_id: str
    principals: tuple[str, ...]
    valid_after: datetime
    valid_before: datetime
    critical_options: dict[str, str]
    extensions: dict[str, str]  # flags such as permit-pty map to ""
    key: asyncssh.SSHKey  # the certified public key
    signing_key: asyncssh.SSHKey  # the CA that signed it
    blob: bytes = field(repr=False)  # the wire form, as offered

    @property
    def is_user(self) -> bool:
        return self.cert_type == CERT_TYPE_USER

    @property
    def is_host(self) -> bool:
        return self.cert_type == CERT_TYPE_HOST

    @property
    def fingerprint(self) -> str:
        return self.key.get_fingerprint("sha256")

    @property
    def ca_fingerprint(self) -> str:
        return self.signing_key.get_fingerprint("sha256")

    @property
    def permits(self) -> frozenset[str]:
        """The permit-* extensions present, without their prefix ("pty", ...)."""
        return frozenset(p for p in _PERMITS if f"permit-{p}" in self.extensions)

    @property
    def source_addresses(self) -> tuple[str, ...]:
        text = self.critical_options.get("source-address", "")
        return tuple(part.strip() for part in text.split(",") if part.strip())

    @property
    def force_command(self) -> str | None:
        return self.critical_options.get("force-command")

    @property
    def role(self) -> str | None:
        """What a host certificate is for: "node" or "proxy" (``role@limen``)."""
        return self.extensions.get("role@limen")

    @property
    def cluster(self) -> str | None:
        return self.extensions.get("cluster@limen")


class TrustedKeys:
    """CA public keys, compared by their wire encoding (several during a rotation)."""

    def __init__(self, keys: Iterable[asyncssh.SSHKey]) -> None:
        self._blobs = {bytes(key.public_data) for key in keys}

    def __contains__(self, key: asyncssh.SSHKey) -> bool:
        return bytes(key.public_data) in self._blobs

    def __bool__(self) -> bool:
        return bool(self._blobs)


def read_certificate(data: bytes | str | asyncssh.SSHCertificate) -> CertFacts:
    """Facts of a certificate given as wire bytes, an OpenSSH line or an asyncssh object.

    Raises ``NotACertificate`` for a plain key and ``BadParameter`` for anything that
    is not a validly signed OpenSSH certificate, each with a sentence for a person.
    """
    return _read_blob(bytes(_blob(data)))


# A user's certificate is read at every login to a node or the jump host (twice: OpenSSH
# asks about a key before it signs with it) and for every event a node reports about
# their sessions, each time checking the CA's signature and walking the bytes. What a
# blob says never changes, so the facts of blobs that checked out are kept, by blob;
# whether the CA is the cluster's and the certificate still valid, each caller decides
# again every time. Failures are not kept.
@functools.lru_cache(maxsize=1024)
def _read_blob(blob: bytes) -> CertFacts:
    try:
        cert = decode_ssh_certificate(blob)  # checks the CA's signature
    except asyncssh.KeyImportError as exc:
        raise _not_a_certificate(blob, exc) from None
    if cert.is_x509 or cert.is_x509_chain:
        raise NotACertificate("an X.509 certificate was offered; only OpenSSH ones are accepted")
    try:
        return _walk(blob, cert)
    except (PacketDecodeError, UnicodeDecodeError, ValueError) as exc:
        raise BadParameter(f"the certificate is malformed ({exc})") from None


def fingerprint(key: asyncssh.SSHKey) -> str:
    return key.get_fingerprint("sha256")


def _blob(data: bytes | str | asyncssh.SSHCertificate) -> bytes:
    if isinstance(data, asyncssh.SSHCertificate):
        return bytes(data.public_data)
    raw = data.encode("ascii", "replace") if isinstance(data, str) else bytes(data)
    if raw[:1] == b"\x00":  # wire bytes start with the algorithm name's length
        return raw
    fields = raw.split()
    if len(fields) < 2:
        raise NotACertificate("this is not an SSH certificate")
    try:
        return base64.b64decode(fields[1], validate=True)
    except binascii.Error:
        raise NotACertificate("the certificate's base64 is invalid") from None


def _not_a_certificate(blob: bytes, exc: Exception) -> BadParameter:
    try:
        key = decode_ssh_public_key(blob)
    except asyncssh.KeyImportError:
        return BadParameter(f"the offered key could not be read ({exc})")
    return NotACertificate(
        f"plain public keys are not accepted (a plain key was offered: {fingerprint(key)})"
    )


def _walk(blob: bytes, cert: asyncssh.SSHCertificate) -> CertFacts:
    packet = SSHPacket(blob)
    packet.get_string()  # certificate algorithm
    packet.get_string()  # nonce
    # The key's fields are exactly its public blob minus the algorithm name, whatever
    # the key type, so the walk does not need to know key types.
    plain = SSHPacket(cert.key.public_data)
    name_length = len(plain.get_string()) + 4
    packet.get_bytes(len(cert.key.public_data) - name_length)
    serial = packet.get_uint64()
    cert_type = packet.get_uint32()
    key_id = packet.get_string().decode("utf-8")
    packet.get_string()  # principals: asyncssh has decoded them
    valid_after = _time(packet.get_uint64())
    valid_before = _time(packet.get_uint64())
    options = _tuples(packet.get_string())
    extensions = _tuples(packet.get_string())
    return CertFacts(
        cert_type=cert_type,
        serial=serial,
        key_id=key_id,
        principals=tuple(cert.principals),
        valid_after=valid_after,
        valid_before=valid_before,
        critical_options=options,
        extensions=extensions,
        key=cert.key,
        signing_key=cert.signing_key,
        blob=blob,
    )


def _tuples(data: bytes) -> dict[str, str]:
    """Options and extensions: name, then a string holding the value's string (or empty)."""
    packet = SSHPacket(data)
    result: dict[str, str] = {}
    while packet:
        name = packet.get_string().decode("utf-8")
        inner = packet.get_string()
        if inner:
            value_packet = SSHPacket(inner)
            value = value_packet.get_string().decode("utf-8")
            value_packet.check_end()
        else:
            value = ""
        result[name] = value
    return result


def _time(value: int) -> datetime:
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        return _FOREVER
