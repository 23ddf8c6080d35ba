"""Proof of possession outside SSH: a signature by a certificate's key over given bytes.

SSH's own public-key authentication, which asyncssh checks for every Limen SSH server,
is the usual proof. A direct connection to a node through the proxy's web port
(``limen.tls_direct``) has no SSH layer at the proxy, so the client signs the request
and the TLS connection instead, with `ssh-keygen -Y sign` (OpenSSH's SSHSIG format,
PROTOCOL.sshsig), and the proxy checks it here: the certificate's own key, the expected
namespace, and the signature algorithms every Limen SSH server accepts.

asyncssh's ``validate_sshsig`` answers for an allowed-signers file and a principal; here
the signer is a certificate the judge has already accepted, so the few fields are read
directly.
"""

from __future__ import annotations

import hashlib

from asyncssh.packet import PacketDecodeError, SSHPacket, String

from limen.errors import AccessDenied
from limen.sshalgs import SIGNATURE_ALGS
from limen.sshauth.cert import CertFacts

SSHSIG_MAGIC = b"SSHSIG"
SSHSIG_VERSION = 1
SSHSIG_HASHES = (b"sha512", b"sha256")


def check_sshsig(cert: CertFacts, data: bytes, sshsig: bytes, namespace: str) -> None:
    """AccessDenied unless ``sshsig`` is an SSHSIG by the certificate's key over ``data``
    in ``namespace``."""
    try:
        packet = SSHPacket(sshsig)
        magic, version = packet.get_bytes(len(SSHSIG_MAGIC)), packet.get_uint32()
        public, signed_in = packet.get_string(), packet.get_string()
        packet.get_string()  # reserved
        hash_name, signature = packet.get_string(), packet.get_string()
        packet.check_end()
    except PacketDecodeError:
        raise AccessDenied("the signature is malformed") from None
    if magic != SSHSIG_MAGIC or version != SSHSIG_VERSION:
        raise AccessDenied("the signature is not an SSH signature (SSHSIG version 1)")
    if public != bytes(cert.key.public_data):
        raise AccessDenied("the signature was not made by the certificate's key")
    if signed_in != namespace.encode():
        made_for = signed_in[:64].decode(errors="replace")
        raise AccessDenied(f"the signature was made for {made_for!r}, not {namespace!r}")
    if hash_name not in SSHSIG_HASHES:
        raise AccessDenied("the signature's hash is not sha512 or sha256")
    digest = hashlib.new(hash_name.decode(), data).digest()
    _check_signature(cert, b"".join((SSHSIG_MAGIC, String(signed_in), String(b""),
                                    String(hash_name), String(digest))), signature)


def _check_signature(cert: CertFacts, data: bytes, signature: bytes) -> None:
    """AccessDenied unless ``signature`` (an SSH signature blob) is the certificate's
    key's signature over ``data``, by an algorithm on the hardened list."""
    try:
        algorithm = SSHPacket(signature).get_string().decode("ascii")
    except (PacketDecodeError, UnicodeDecodeError):
        raise AccessDenied("the signature is malformed") from None
    if algorithm not in SIGNATURE_ALGS:
        raise AccessDenied(f"the signature algorithm {algorithm[:64]!r} is not accepted")
    try:
        valid = cert.key.verify(data, signature)
    except (PacketDecodeError, ValueError):
        valid = False
    if not valid:
        raise AccessDenied("the signature was not made by the certificate's key for this "
                           "connection")
