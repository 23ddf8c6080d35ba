"""SFTP: the stock OpenSSH sftp-server, run as the login user, audited from its own log.

Why not asyncssh's in-process SFTPServer: it would run with the node's privileges
(root), so every permission check would be ours to get right. sftp-server started
through the executor runs with the user's uid, gid and groups, so the kernel enforces
permissions and users get OpenSSH's exact semantics (and modern ``scp``, which speaks
SFTP). Started with ``-e -l INFO`` it logs each operation to stderr; the node reads
those lines instead of showing them to the user and turns them into "sftp" events.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterator
from typing import Any

MAX_LINE = 64 * 1024  # a longer log line is cut (sftp-server lines are short)


def sftp_server_argv(path: str) -> tuple[str, ...]:
    return (path, "-e", "-l", "INFO")


# sftp-server's INFO lines; names are logged raw between double quotes.
_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r'^close "(?P<path>.*)" bytes read (?P<read>\d+) written (?P<written>\d+)$'),
     "close"),
    (re.compile(r'^remove name "(?P<path>.*)"$'), "remove"),
    (re.compile(r'^mkdir name "(?P<path>.*)" mode \S+$'), "mkdir"),
    (re.compile(r'^rmdir name "(?P<path>.*)"$'), "rmdir"),
    (re.compile(r'^(?:posix-)?rename old "(?P<path>.*)" new "(?P<target>.*)"$'), "rename"),
    (re.compile(r'^symlink old "(?P<target>.*)" new "(?P<path>.*)"$'), "symlink"),
    (re.compile(r'^set "(?P<path>.*)" (?P<attr>mode|owner|modtime|size) .*$'), "setstat"),
]


def parse_log_line(line: str, cwd: str) -> dict[str, Any] | None:
    """Turn one sftp-server log line into event fields, or None if it is not an operation."""
    for pattern, action in _PATTERNS:
        match = pattern.match(line)
        if not match:
            continue
        found = match.groupdict()
        fields: dict[str, Any] = {"action": action, "path": posixpath.join(cwd, found["path"])}
        if "target" in found:
            fields["target"] = posixpath.join(cwd, found["target"])
        if action == "close":
            read, written = int(found["read"]), int(found["written"])
            if not read and not written:
                return None  # opened and closed without moving data: not worth an event
            fields["action"] = "upload" if written else "download"
            fields["bytes_read"] = read
            fields["bytes_written"] = written
            fields["len"] = written or read
        return fields
    return None


class LogLines:
    """Splits a byte stream into complete text lines (sftp-server ends them with CRLF)."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> Iterator[str]:
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        if len(self._buffer) > MAX_LINE:
            lines.append(self._buffer[:MAX_LINE])
            self._buffer = b""
        for raw in lines:
            yield raw.rstrip(b"\r").decode("utf-8", "replace")
