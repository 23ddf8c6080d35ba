"""TOTP (RFC 6238: SHA-1, 6 digits, 30 s steps) with one step of clock skew either way."""

from __future__ import annotations

import hmac
from datetime import datetime

import pyotp

STEP_SECONDS = 30
DIGITS = 6
SKEW_STEPS = 1


def new_secret() -> str:
    return pyotp.random_base32(32)  # 160 bits, as RFC 4226 recommends


def provisioning_uri(secret: str, user: str, issuer: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=user, issuer_name=issuer)


def code_at(secret: str, when: datetime) -> str:
    return pyotp.TOTP(secret).at(when)


def matching_step(secret: str, code: str, now: datetime) -> int | None:
    """The step whose code equals `code` within the skew window, or None."""
    code = code.strip()
    if len(code) != DIGITS or not code.isdigit():
        return None
    totp = pyotp.TOTP(secret)
    current = int(now.timestamp()) // STEP_SECONDS
    for step in range(current - SKEW_STEPS, current + SKEW_STEPS + 1):
        if hmac.compare_digest(totp.at(step * STEP_SECONDS), code):
            return step
    return None
