"""Durations as people write them: 90s, 30m, 12h, 2d, 1h30m."""

from __future__ import annotations

import re
from datetime import timedelta

from limen.errors import BadParameter

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
# Longer than anything Limen keeps or issues; past it, adding the duration to a date
# would overflow Python's datetime (year 9999) and fail far from the input.
MAX_DURATION = timedelta(days=100 * 365)


def parse_duration(text: str | int | float) -> timedelta:
    """Parse '1h30m' (or a number of seconds) into a positive timedelta."""
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        value = text.strip().lower()
        if not value or _PART.sub("", value):
            raise BadParameter(f"{text!r} is not a duration; write it like 90s, 30m, 12h or 1h30m")
        seconds = sum(float(num) * _UNITS[unit] for num, unit in _PART.findall(value))
    if seconds <= 0:
        raise BadParameter(f"duration {text!r} must be greater than zero")
    if seconds > MAX_DURATION.total_seconds():
        raise BadParameter(f"duration {text!r} is longer than 100 years")
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta) -> str:
    """The short form back: 3600 s -> '1h', 5400 s -> '1h30m'."""
    total = int(delta.total_seconds())
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if total >= size:
            parts.append(f"{total // size}{unit}")
            total %= size
    return "".join(parts) or "0s"
