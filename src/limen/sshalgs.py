"""The SSH algorithms every Limen endpoint offers: what a hardened OpenSSH offers.

Post-quantum hybrid key exchange first (used when the peer has it too), then
curve25519. No NIST-curve key exchange, nothing with SHA-1, no small groups.
Ciphers are AEAD or CTR; MACs are encrypt-then-MAC only.

AES-GCM comes first among the ciphers, unlike OpenSSH's default order: the client's
order decides, and in asyncssh (every Limen endpoint, Python) ChaCha20-Poly1305 costs
three cipher set-ups per packet, about 27 us per 32 KiB packet against 5 us for AES-GCM
on AES-NI (measured by bench/ciphers.py). Both are AEAD; a peer without AES-GCM still
gets ChaCha20. OpenSSH clients get the same order from `limen config` (CIPHERS_OPENSSH).
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: importing typing costs `limen ssh` ~4 ms
if TYPE_CHECKING:
    from typing import Any

KEX_ALGS = [
    "mlkem768x25519-sha256",
    "curve25519-sha256",
    "curve25519-sha256@libssh.org",
    "diffie-hellman-group16-sha512",
    "diffie-hellman-group18-sha512",
]

ENCRYPTION_ALGS = [
    "aes256-gcm@openssh.com",
    "aes128-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes256-ctr",
    "aes192-ctr",
    "aes128-ctr",
]

# The `Ciphers` line of `limen config`: the AEAD ciphers, AES-GCM first (see above).
CIPHERS_OPENSSH = "aes256-gcm@openssh.com,aes128-gcm@openssh.com,chacha20-poly1305@openssh.com"

MAC_ALGS = [
    "hmac-sha2-256-etm@openssh.com",
    "hmac-sha2-512-etm@openssh.com",
    "umac-128-etm@openssh.com",
]

# Signature algorithms (asyncssh's signature_algs takes plain ones only)...
SIGNATURE_ALGS = [
    "ssh-ed25519",
    "rsa-sha2-512",
    "rsa-sha2-256",
]

# ...and the host key types a client accepts: certificates first, so hosts are
# verified through the cluster's host CA.
HOST_KEY_ALGS = [
    "ssh-ed25519-cert-v01@openssh.com",
    "rsa-sha2-512-cert-v01@openssh.com",
    "rsa-sha2-256-cert-v01@openssh.com",
    *SIGNATURE_ALGS,
]


def hardened_options() -> dict[str, Any]:
    """Keyword arguments for asyncssh.listen()/connect() that restrict the algorithms.

    Clients add ``server_host_key_algs=HOST_KEY_ALGS``. No cipher here is CBC, so the
    empty SSH_MSG_IGNORE asyncssh sends before every packet goes; and asyncssh parses
    what it reads a packet's size at a time (limen.sshpackets).
    """
    from limen import sshpackets  # here, not at the top: `limen ssh` starts without asyncssh

    sshpackets.install()
    return {
        "kex_algs": KEX_ALGS,
        "encryption_algs": ENCRYPTION_ALGS,
        "mac_algs": MAC_ALGS,
        "signature_algs": SIGNATURE_ALGS,
        "compression_algs": ["none"],
    }
