"""asciicast v2: the recording format (a JSON header line, then one JSON array per event:
``[seconds, "o", text]`` for output, ``[seconds, "r", "COLSxROWS"]`` for a resize).

What the node writes, the auth service indexes (the printed text, for search) and
``limen play`` replays all go through here.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO

# CSI (colours, cursor moves), OSC (titles, ended by BEL or ST), and two-byte escapes.
_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]|\x1b."
)
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def header_line(width: int, height: int, timestamp: int, **extra: Any) -> str:
    header: dict[str, Any] = {"version": 2, "width": width, "height": height,
                              "timestamp": timestamp}
    header.update({k: v for k, v in extra.items() if v})
    return json.dumps(header, ensure_ascii=False) + "\n"


def event_line(elapsed: float, code: str, data: str) -> str:
    return json.dumps([round(elapsed, 6), code, data], ensure_ascii=False) + "\n"


def plain_text(output: str) -> str:
    """What a person saw, without escape sequences: for searching recordings."""
    text = _ESCAPES.sub("", output).replace("\r\n", "\n")
    return _CONTROLS.sub("", text)


def printed_text(data: bytes) -> str:
    """The printed text of a run of complete asciicast lines (the header is skipped)."""
    parts = []
    for raw in data.decode("utf-8", "replace").splitlines():
        event = _event(raw)
        if event is not None and event[1] == "o":
            parts.append(plain_text(event[2]))
    return "".join(parts)


def _event(raw: str) -> tuple[float, str, str] | None:
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    if (isinstance(value, list) and len(value) == 3 and isinstance(value[0], int | float)
            and isinstance(value[1], str) and isinstance(value[2], str)):
        return float(value[0]), value[1], value[2]
    return None


def events(lines: Iterable[str]) -> Iterator[tuple[float, str, str]]:
    for raw in lines:
        event = _event(raw)
        if event is not None:
            yield event


def play(lines: Iterable[str], out: TextIO, speed: float = 1.0, skip_idle: bool = False,
         sleep: Callable[[float], None] = time.sleep, max_idle: float = 1.0) -> None:
    """Replay output with its timing: ``speed`` 2 is twice as fast; ``skip_idle`` cuts
    every pause to at most ``max_idle`` seconds."""
    last = 0.0
    for elapsed, code, data in events(lines):
        pause = max(0.0, elapsed - last) / speed
        if skip_idle:
            pause = min(pause, max_idle)
        last = elapsed
        if code != "o":
            continue  # a resize cannot be applied to the viewer's terminal
        if pause > 0:
            out.flush()
            sleep(pause)
        out.write(data)
    out.flush()
