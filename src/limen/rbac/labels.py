"""Label selectors: exact values, '*', globs (web-*) and regular expressions (^db-[0-9]+$)."""

from __future__ import annotations

import fnmatch
import re
from functools import lru_cache


@lru_cache(maxsize=1024)
def _regex(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(pattern)
    except re.error:
        return None


def value_matches(pattern: str, value: str) -> bool:
    if pattern == "*":
        return True
    if pattern.startswith("^") and pattern.endswith("$"):
        compiled = _regex(pattern)
        return bool(compiled and compiled.fullmatch(value))
    if any(ch in pattern for ch in "*?["):
        return fnmatch.fnmatchcase(value, pattern)
    return pattern == value


def selector_matches(selector: dict[str, str | list[str]], labels: dict[str, str]) -> bool:
    """Every key must match (AND); within a key, any listed value may (OR).

    An empty selector matches nothing: access is never granted by omission.
    """
    if not selector:
        return False
    for key, wanted in selector.items():
        options = wanted if isinstance(wanted, list) else [wanted]
        if key == "*":  # only '*': '*' is meaningful for the wildcard key
            if "*" not in options:
                return False
            continue
        if key not in labels:
            return False
        if not any(value_matches(option, labels[key]) for option in options):
            return False
    return True
