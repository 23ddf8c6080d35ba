"""asciicast v2 helpers: the printed text without escapes, and replay timing."""

from __future__ import annotations

import io
import json

from limen.recording import asciicast


def test_printed_text_drops_escapes_and_keeps_lines() -> None:
    lines = [
        asciicast.header_line(80, 24, 0),
        asciicast.event_line(0.1, "o", "\x1b]0;title\x07\x1b[1;32mgreen\x1b[0m\r\n"),
        asciicast.event_line(0.2, "r", "100x30"),
        asciicast.event_line(0.3, "o", "tab\there\x07\r\n"),
    ]
    assert asciicast.printed_text("".join(lines).encode()) == "green\ntab\there\n"
    assert json.loads(lines[0]) == {"version": 2, "width": 80, "height": 24, "timestamp": 0}


def test_play_follows_speed_and_skips_idle_time() -> None:
    lines = [asciicast.header_line(80, 24, 0), asciicast.event_line(1.0, "o", "a"),
             asciicast.event_line(1.0, "r", "90x20"), asciicast.event_line(11.0, "o", "b")]
    pauses: list[float] = []
    out = io.StringIO()
    asciicast.play(lines, out, speed=2, sleep=pauses.append)
    assert out.getvalue() == "ab" and pauses == [0.5, 5.0]
    pauses.clear()
    asciicast.play(lines, io.StringIO(), speed=1, skip_idle=True, sleep=pauses.append)
    assert pauses == [1.0, 1.0]
