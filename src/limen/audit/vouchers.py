"""Which audit signing keys a verifier trusts: its own, and those the cluster's CA vouches for.

Every auth service signs its chain's checkpoints with an audit key of its own (chain.py),
and several auth services may share one store. Anyone who can write to the store could
also register a key of their own and a made-up chain signed with it, so a key found in
the store is trusted only with a voucher: the cluster's host CA (an Ed25519 key only the
auth role holds) signing ``(log_id, public key)`` when the auth service registers it. The
verifier checks the voucher against the host CA's public key; a log whose key has none,
or a wrong one, is reported by name and its events are not trusted.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

import asyncssh
from asyncssh.packet import PacketDecodeError

from limen.audit.chain import log_id_for
from limen.audit.store import RegisteredKey

HOST_CA_FILE = "host_ca"  # DATA_DIR/ca/host_ca, the cluster's host CA (auth.ca.CAStore)


def voucher_message(log_id: str, public_b64: str) -> bytes:
    return f"limen-audit-key:{log_id}:{public_b64}".encode()


def vouch(ca: asyncssh.SSHKey, log_id: str, public_b64: str) -> str:
    """The CA's signature over a log's key (base64 of the SSH signature blob)."""
    algorithm = ca.sig_algorithms[-1]  # Ed25519 has one; an RSA CA signs with SHA-512
    return base64.b64encode(ca.sign(voucher_message(log_id, public_b64), algorithm)).decode()


def vouched(ca_public: asyncssh.SSHKey, log_id: str, key: RegisteredKey) -> bool:
    if key.voucher is None or log_id != log_id_for(key.public_key):
        return False
    try:
        signature = base64.b64decode(key.voucher, validate=True)
        return bool(ca_public.verify(voucher_message(log_id, key.public_key), signature))
    except (binascii.Error, ValueError, PacketDecodeError):
        return False


def trusted_keys(
    registered: dict[str, RegisteredKey],
    ca_public: asyncssh.SSHKey | None,
    own: dict[str, str],
) -> dict[str, str]:
    """Log id -> public key for every log whose key may be believed: ``own`` (this auth
    service's key, read from its own files) and the registered ones the CA vouched for."""
    trusted = {}
    if ca_public is not None:
        ca_public = ca_public.convert_to_public()  # asyncssh verifies with public keys only
        trusted = {log_id: key.public_key for log_id, key in registered.items()
                   if vouched(ca_public, log_id, key)}
    return {**trusted, **own}


def read_host_ca_public(ca_dir: Path) -> asyncssh.SSHKey | None:
    """The host CA's public key from the auth host's data dir (None when there is none)."""
    path = ca_dir / HOST_CA_FILE
    if not path.exists():
        return None
    try:
        return asyncssh.import_private_key(path.read_bytes()).convert_to_public()
    except (asyncssh.KeyImportError, ValueError):
        return None
