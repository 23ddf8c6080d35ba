"""Signup without spending the code the first login needs.

The server accepts each TOTP step once (RFC 6238: 30 s steps) and allows one step of
clock skew either way. Signup confirms the device with a code, so a login in the same
30 s with the code the authenticator still shows would be refused as a replay. So:

- a script (the secret is known): confirm with the *previous* step's code, which the
  skew allows, leaving the current code unspent for the first login; near the end of a
  step that code could be out of the window by the time it arrives, so then the current
  one is used and the next step awaited;
- a person (typed the code the app shows): after signup, wait until the server's clock
  reaches the next step, saying so, so that the app shows a fresh code at the prompt.

Time is always the server's (from /v1/ping), so a machine with a wrong clock still works.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from limen import totp

STEP = totp.STEP_SECONDS
MARGIN_SECONDS = 5  # time left in a step below which the previous step's code is not used


def step_of(when: datetime) -> int:
    return int(when.timestamp()) // STEP


def code_for_script(secret: str, server_time: datetime) -> tuple[str, int]:
    """The code a scripted signup confirms with, and its step."""
    step = step_of(server_time)
    left = STEP - server_time.timestamp() % STEP
    if left > MARGIN_SECONDS:
        step -= 1
    return totp.code_at(secret, _start_of(step)), step


def step_of_code(secret: str, code: str, server_time: datetime) -> int | None:
    """Which step a typed code belongs to (None: none near the server's time)."""
    return totp.matching_step(secret, code, server_time)


def seconds_until_after(step: int, server_time: datetime) -> float:
    """How long until the server's clock leaves ``step`` (0 when it already has)."""
    return max(0.0, (step + 1) * STEP - server_time.timestamp())


def wait_for_next_step(used_step: int, server_now: Callable[[], datetime],
                       say: Callable[[str], None], poll_seconds: float = 1.0,
                       limit_seconds: float = 2 * STEP + 10) -> None:
    """Block until the server's time is past ``used_step``, telling the person why."""
    now = server_now()
    left = seconds_until_after(used_step, now)
    if left <= 0:
        return
    say(f"Each TOTP code works once and signup used the current one: waiting {left:.0f} s "
        "for your authenticator's next code, so that your first login works...")
    deadline = time.monotonic() + limit_seconds
    while step_of(now) <= used_step and time.monotonic() < deadline:
        time.sleep(min(poll_seconds, max(0.05, left)))
        now = server_now()
        left = seconds_until_after(used_step, now)


def _start_of(step: int) -> datetime:
    return datetime.fromtimestamp(step * STEP, UTC)
