"""Password rules and hashing (bcrypt).

bcrypt reads only the first 72 bytes, and passwords here may be 128 characters,
so the password is first reduced with SHA-256 (base64, 44 bytes): every
character counts and no NUL byte reaches bcrypt.
"""

from __future__ import annotations

import base64
import functools
import hashlib

import bcrypt

from limen.errors import BadParameter

MIN_LENGTH = 12
MAX_LENGTH = 128
ROUNDS = 12


@functools.cache
def dummy_hash() -> bytes:
    """Compared against when the user does not exist (or has no password yet), so that
    such a login does the same work as a wrong password: one bcrypt verification at the
    cost real hashes have. A cheaper dummy would tell by timing which users exist.
    Made on first use, not at import: the CLI imports this module too."""
    return bcrypt.hashpw(b"limen-dummy-password-hash", bcrypt.gensalt(ROUNDS))


def check_rules(user: str, password: str) -> None:
    if len(password) < MIN_LENGTH:
        raise BadParameter(f"the password must be at least {MIN_LENGTH} characters long")
    if len(password) > MAX_LENGTH:
        raise BadParameter(f"the password must be at most {MAX_LENGTH} characters long")
    if password.strip().lower() == user.lower():
        raise BadParameter("the password must not be the user name")


def _prehash(password: str) -> bytes:
    return base64.b64encode(hashlib.sha256(password.encode()).digest())


def hash_password(password: str) -> bytes:
    return bcrypt.hashpw(_prehash(password), bcrypt.gensalt(ROUNDS))


def verify_password(password: str, hashed: bytes | None) -> bool:
    if hashed is None:
        bcrypt.checkpw(_prehash(password), dummy_hash())
        return False
    try:
        return bcrypt.checkpw(_prehash(password), hashed)
    except ValueError:
        return False
