"""SIGHUP: read the configuration again and apply what is safe to change while running.

Safe: `log_level` and `log_format` (logging only). Everything else (listen addresses,
storage, roles, TTLs...) is wired into running servers: a change is logged as needing a
restart, and the running values stay in force, so a reload never half-applies a change.
A configuration that no longer loads is refused as a whole, with the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from limen.config import Config
from limen.errors import LimenError
from limen.runtime import logs

log = logging.getLogger(__name__)

RELOADABLE = ("log_level", "log_format")


def changed_keys(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted names of the settings that differ between two config dumps."""
    keys: list[str] = []
    for name in sorted(set(old) | set(new)):
        before, after = old.get(name), new.get(name)
        if isinstance(before, dict) and isinstance(after, dict):
            keys += changed_keys(before, after, f"{prefix}{name}.")
        elif before != after:
            keys.append(f"{prefix}{name}")
    return keys


def reload(running: Config, load: Callable[[], Config]) -> Config:
    """Apply the reloadable settings of a fresh load; returns the config now in force."""
    try:
        fresh = load()
    except LimenError as exc:
        log.error("configuration not reloaded: %s", exc.message)
        return running
    changed = changed_keys(running.model_dump(mode="json"), fresh.model_dump(mode="json"))
    if not changed:
        log.info("configuration reloaded: nothing changed")
        return running
    applied = [key for key in changed if key in RELOADABLE]
    if applied:
        logs.configure(fresh.log_level, fresh.log_format)
        running = running.model_copy(update={k: getattr(fresh, k) for k in applied})
        log.info("configuration reloaded: %s",
                 ", ".join(f"{k} is now {getattr(fresh, k)}" for k in applied))
    pending = [key for key in changed if key not in RELOADABLE]
    if pending:
        log.warning("configuration changes that need a restart of limen start (not applied): "
                    "%s", ", ".join(pending))
    return running
