"""Benchmark: user certificates signed per second by one auth instance's CA code, against
the bare Ed25519 signatures per second the same core makes.

Run from the repository root:

    .venv/bin/python bench/certs.py [--count 5000]

Signs --count user certificates with ``limen.auth.ca.sign_user_cert`` (what a login
issues once the password and TOTP are checked: the body built field by field, signed by
the user CA, parsed back into an asyncssh certificate) for fresh Ed25519 keys, and as the
baseline --count bare Ed25519 signatures over a body of the same size with cryptography.
Password hashing, TOTP and the database are left out (the issue's goal 8: >= 10,000
certificates/s "password hashing aside"). Prints both rates, the ratio and where a
certificate's time goes (cProfile, top functions).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import time
from datetime import UTC, datetime, timedelta

import asyncssh
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from limen.auth.ca import sign_user_cert


def certificates(ca: asyncssh.SSHKey, keys: list[asyncssh.SSHKey]) -> float:
    now = datetime.now(UTC)
    started = time.perf_counter()
    for i, key in enumerate(keys):
        sign_user_cert(ca, key, key_id=f"user{i}", principals=["root", "alice"],
                       valid_after=now, valid_before=now + timedelta(hours=12),
                       permit_port_forwarding=True, serial=i + 1)
    return len(keys) / (time.perf_counter() - started)


def signatures(count: int) -> float:
    key = Ed25519PrivateKey.generate()
    body = os.urandom(300)  # about a user certificate's signed body
    started = time.perf_counter()
    for _ in range(count):
        key.sign(body)
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=5000)
    args = parser.parse_args()
    ca = asyncssh.generate_private_key("ssh-ed25519")
    keys = [asyncssh.generate_private_key("ssh-ed25519").convert_to_public()
            for _ in range(args.count)]
    certs = certificates(ca, keys)
    bare = signatures(args.count)
    print(f"{args.count} user certificates, one core")
    print(f"sign_user_cert:        {certs:>9,.0f} certificates/s")
    print(f"bare Ed25519 signing:  {bare:>9,.0f} signatures/s (baseline)")
    print(f"ratio: {certs / bare:.2f}; goal >= 10,000 certificates/s: "
          f"{'met' if certs >= 10_000 else 'not met'}")
    profile = cProfile.Profile()
    profile.enable()
    certificates(ca, keys[:1000])
    profile.disable()
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(8)
    print("where the time goes (1000 certificates, by own time):")
    print("\n".join(line for line in out.getvalue().splitlines()[6:] if line.strip()))


if __name__ == "__main__":
    main()
