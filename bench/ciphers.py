"""Benchmark: what each hardened SSH cipher costs in asyncssh (every Limen endpoint).

Run from the repository root:

    .venv/bin/python bench/ciphers.py [--packets 3000] [--size 32768]

Encrypts --packets SSH packets of --size bytes with each cipher of sshalgs.ENCRYPTION_ALGS
(CTR with its encrypt-then-MAC), as asyncssh does per packet, and prints MB/s, the
time per packet and the ratio to ChaCha20-Poly1305 (OpenSSH's default choice). Decides
the order of sshalgs.ENCRYPTION_ALGS: fastest safe cipher first.
"""

from __future__ import annotations

import argparse
import os
import time

from asyncssh.encryption import get_encryption, get_encryption_params

from limen.sshalgs import ENCRYPTION_ALGS, MAC_ALGS

BASELINE = "chacha20-poly1305@openssh.com"


def rate(cipher: str, packets: int, size: int) -> float:
    """MB/s of encrypt_packet for ``cipher``."""
    mac = MAC_ALGS[0].encode()
    keysize, ivsize, _, mac_keysize, _, etm = get_encryption_params(cipher.encode(), mac)
    aead = cipher.endswith(("-gcm@openssh.com", "-poly1305@openssh.com"))
    enc = get_encryption(cipher.encode(), os.urandom(keysize), os.urandom(ivsize),
                         b"" if aead else mac, os.urandom(mac_keysize), etm)
    data = os.urandom(size)
    started = time.perf_counter()
    for seq in range(packets):
        enc.encrypt_packet(seq, b"\0\0\0\0", data)
    return packets * size / (time.perf_counter() - started) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--packets", type=int, default=3000)
    parser.add_argument("--size", type=int, default=32768, help="packet payload bytes")
    args = parser.parse_args()
    rates = {cipher: rate(cipher, args.packets, args.size) for cipher in ENCRYPTION_ALGS}
    print(f"{args.packets} packets of {args.size} bytes, one core")
    print(f"{'cipher':<32}{'MB/s':>9}{'us/packet':>11}{'ratio':>8}")
    for cipher, mb_s in rates.items():
        print(f"{cipher:<32}{mb_s:>9.0f}{args.size / mb_s:>11.1f}"
              f"{mb_s / rates[BASELINE]:>8.2f}   (/ {BASELINE})")


if __name__ == "__main__":
    main()
