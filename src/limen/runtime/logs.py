"""Process logging for `limen start`: readable lines (the default) or one JSON object per
line (`log_format: json`), with the component and, where known, the request or session id.

Ids travel in context variables: code that handles one HTTP request or one session sets
them once and every line logged under it carries them, without passing them around.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from datetime import UTC, datetime
from typing import IO, Any

FORMATS = ("text", "json")
LEVELS = ("debug", "info", "warning", "error")

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id",
                                                                        default=None)
session_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("session_id",
                                                                        default=None)

# Libraries that log every channel or HTTP request at INFO: an idle joined node would
# write a line per heartbeat and feed poll. They speak at WARNING unless we debug.
CHATTY = ("asyncssh", "httpx", "httpcore", "uvicorn.access", "uvicorn.error")
# A line per SQL call, even for debugging Limen: never below WARNING.
NOISY = ("aiosqlite",)


def component(logger_name: str) -> str:
    """'limen.node.ssh.server' -> 'node.ssh.server'; other libraries keep their own name."""
    return logger_name.removeprefix("limen.")


class _ContextFilter(logging.Filter):
    """Stamp the current request and session ids on each record (explicit extras win)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, var in (("request_id", request_id), ("session_id", session_id)):
            if getattr(record, name, None) is None:
                setattr(record, name, var.get())
        return True


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "component": component(record.name),
            "message": record.getMessage(),
        }
        for name in ("request_id", "session_id"):
            value = getattr(record, name, None)
            if value:
                line[name] = value
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(component)s%(ids)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        record.component = component(record.name)
        ids = [f"{n}={v}" for n in ("request_id", "session_id")
               if (v := getattr(record, n, None))]
        record.ids = f" [{' '.join(ids)}]" if ids else ""
        return super().format(record)


def configure(level: str = "info", fmt: str = "text", stream: IO[str] | None = None) -> None:
    """Install Limen's one handler on the root logger (replacing an earlier one)."""
    root = logging.getLogger()
    for handler in list(root.handlers):  # ours from before, or the CLI's basicConfig
        root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(_ContextFilter())
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    root.addHandler(handler)
    set_level(level)


def set_level(level: str) -> None:
    """The process's level; chatty libraries stay at WARNING unless it is debug."""
    logging.getLogger().setLevel(level.upper())
    quiet = logging.DEBUG if level == "debug" else logging.WARNING
    for name in CHATTY:
        logging.getLogger(name).setLevel(quiet)
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)
