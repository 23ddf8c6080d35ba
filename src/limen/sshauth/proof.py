"""Proof of possession outside SSH: a signature by a certificate's key over given bytes.

SSH's own public-key authentication, which asyncssh checks for every Limen SSH server,
is the usual proof. A direct connection to a node through the proxy's web port
(``limen.tls_direct``) has no SSH layer at the proxy, so the client signs the request
and the TLS connection instead, and the proxy checks the signature here, with the
signature algorithms every Limen SSH server accepts.
"""

from __future__ import annotations

from asyncssh.packet import PacketDecodeError, SSHPacket

from limen.errors import AccessDenied
from limen.sshalgs import SIGNATURE_ALGS
from limen.sshauth.cert import CertFacts


def check_signature(cert: CertFacts, data: bytes, signature: bytes) -> None:
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
