"""Following a legacy scp transfer from its two streams: one ``scp`` event per file.

The source sends records, one line each: ``T<mtime> 0 <atime> 0`` (times, with -p),
``C<mode> <size> <name>`` (a file: its bytes follow, then one status byte), ``D<mode> 0
<name>`` (enter a directory), ``E`` (leave it), or ``\\x01``/``\\x02`` and a message (an
error; \\x02 is fatal). The sink answers the start, each record and each file's bytes
with ``\\0``, or ``\\x01``/``\\x02`` and a message. Whether a file's bytes follow its C
record depends on the sink's answer, so records are read in lock step with the answers,
as OpenSSH's scp reads them (scp.c ``sink()``, ``source()`` and ``response()``: lines of
at most 2047 bytes, a name ends at a NUL, the same checks of a C or D record, the same
cases in which scp gives up and exits).

Upload (``scp -t``): the user is the source and the node's scp the sink. Download (``scp
-f``): the node's scp is the source and the user answers. An upload's bytes go on to
scp only once they are understood (``take_input``); while some wait for scp's answer to
a record, ``holding`` is true, and scp's output (``to_user``) lets them through.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any

from limen.errors import BadParameter

LINE_MAX = 2047  # scp reads a record or an answer into char buf[2048]
MAX_HELD = 1024 * 1024  # bytes that may wait for the other side (records, answers)
OFF_T_MAX = 2**63 - 1
_FILE_RECORD = re.compile(rb"[CD]([0-7]{4}) ([0-9]+) (.*)", re.DOTALL)
_REFUSED_NAMES = (b"", b".", b"..")

Event = dict[str, Any]

# What the follower reads next
RECORD, DATA, DATA_STATUS, ANSWER, DONE = "record", "data", "data-status", "answer", "done"


@dataclass
class _File:
    path: str
    size: int
    mode: str
    sha: Any = field(default_factory=hashlib.sha256)
    length: int = 0
    source_error: str = ""

    def event(self, action: str, error: str) -> Event:
        event: Event = {"action": action, "path": self.path, "len": self.length,
                        "size": self.size, "mode": self.mode, "sha256": self.sha.hexdigest()}
        return _outcome(event, error or self.source_error)


def _outcome(event: Event, error: str) -> Event:
    event["success"] = not error
    if error:
        event["error"] = error
    return event


def _text(raw: bytes | bytearray) -> str:
    return bytes(raw).decode("utf-8", "replace")


def _line(buffer: bytearray, start: int, limit: int) -> int | None:
    """End of the line that starts at ``start``: after its newline, or ``limit`` bytes
    on if it has none by then; None while incomplete."""
    newline = buffer.find(b"\n", start, start + limit)
    if newline >= 0:
        return newline + 1
    return start + limit if len(buffer) - start >= limit else None


class ScpFollower:
    event = "scp"

    def __init__(self, action: str, base: str, target_is_dir: bool) -> None:
        self.action = action  # "upload" or "download"
        self._base = base  # the operand, absolute
        self._target_is_dir = target_is_dir
        self._source = bytearray()  # source bytes not understood yet
        self._answers = bytearray()
        self._state = ANSWER
        self._awaiting = "start"  # what the next answer is for
        self._file: _File | None = None
        self._dir_path = ""  # a D record's path, until its answer
        self._dirs: list[str] = []
        self._remaining = 0
        self._events: list[Event] = []
        self._passed: list[bytes] = []  # user bytes understood, not yet taken

    # -- the interface the session uses ------------------------------------------------------

    @property
    def _user_sends(self) -> bool:
        return self.action == "upload"

    @property
    def holding(self) -> bool:
        return self._user_sends and self._state == ANSWER and bool(self._source)

    def from_user(self, data: bytes) -> None:
        if self._user_sends:
            self._from_source(data, passing=True)
        else:
            self._answers += data
            self._passed.append(data)
            self._advance(passing=False)
            if len(self._answers) > MAX_HELD:  # scp reads one answer at a time
                raise BadParameter("too many scp answers ahead of the transfer")

    def to_user(self, data: bytes) -> None:
        if self._user_sends:
            self._answers += data
            self._advance(passing=True)
        else:
            self._from_source(data, passing=False)

    def take_input(self) -> bytes:
        passed, self._passed = self._passed, []
        return passed[0] if len(passed) == 1 else b"".join(passed)

    def take_events(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    def finish(self) -> list[Event]:
        if self._file is not None and self._state in (DATA, DATA_STATUS):
            self._file_done("the transfer ended before the whole file was sent")
        elif self._file is not None and self._state == ANSWER:
            self._file_done("the receiver never confirmed the file")
        self._state = DONE
        return self.take_events()

    # -- the source's bytes ---------------------------------------------------------------------

    def _from_source(self, data: bytes, passing: bool) -> None:
        if self._state == DONE:  # scp has given up: nothing it reads means anything now
            if passing:
                self._passed.append(data)
            return
        direct = 0
        if self._state == DATA and not self._source:  # file bytes: hashed where they are
            direct = min(self._remaining, len(data))
            with memoryview(data) as view:
                self._file_bytes(view, 0, direct)
            if passing:
                self._passed.append(data if direct == len(data) else data[:direct])
        if direct < len(data):
            self._source += data[direct:] if direct else data
            self._advance(passing)
        if self._user_sends and len(self._source) > MAX_HELD:
            raise BadParameter("scp data is waiting too long for the receiver's answer")

    def _file_bytes(self, view: memoryview, start: int, count: int) -> None:
        assert self._file is not None
        if count:
            self._file.sha.update(view[start:start + count])
            self._file.length += count
            self._remaining -= count
        if not self._remaining:
            self._state = DATA_STATUS

    # -- the state machine ------------------------------------------------------------------------

    def _advance(self, passing: bool) -> None:
        used = 0
        try:
            while self._state != DONE:
                if self._state == ANSWER:
                    if not self._next_answer():
                        break
                    continue
                step = self._source_step(used)
                if step is None:
                    break
                used = step
        finally:
            if used:
                if passing:
                    self._passed.append(bytes(self._source[:used]))
                del self._source[:used]
        if self._state == DONE and passing and self._source:
            self._passed.append(bytes(self._source))  # scp exits: let it read what it will
            self._source.clear()

    def _source_step(self, used: int) -> int | None:
        """Read one record, file chunk or status from the source; the new offset, or None
        when more bytes are needed."""
        source = self._source
        if self._state == DATA:
            count = min(self._remaining, len(source) - used)
            if not count:
                return None
            with memoryview(source) as view:
                self._file_bytes(view, used, count)
            return used + count
        if used >= len(source):
            return None
        if self._state == DATA_STATUS:
            if source[used] == 0:
                self._await("data")
                return used + 1
            end = _line(source, used + 1, LINE_MAX)
            if end is None:
                return None
            self._file_status(source[used], _text(source[used + 1:end]).rstrip("\n"))
            return end
        end = _line(source, used, LINE_MAX)
        if end is None:
            return None
        self._record(bytes(source[used:end]))
        return end

    def _file_status(self, code: int, message: str) -> None:
        """The source's word after a file's bytes; anything but \\x01 makes scp exit."""
        assert self._file is not None
        if code == 1:
            self._file.source_error = message
            self._await("data")
        else:
            self._file_done(message or "scp gave up")
            self._state = DONE

    def _record(self, line: bytes) -> None:
        kind = line[:1]
        if kind == b"\n":  # scp: "unexpected <newline>", and it exits
            self._state = DONE
        elif kind in (b"\x01", b"\x02"):
            self._events.append(_outcome({"action": self.action, "path": self._where()},
                                         _text(line[1:]).rstrip("\n")))
            self._state = DONE if kind == b"\x02" else RECORD
        elif kind == b"E":
            self._await("E")
        elif kind == b"T":
            self._await("T")  # scp checks the times; its answer says what it made of them
        elif kind in (b"C", b"D"):
            self._file_record(line)
        else:  # scp: "expected control record", and it exits
            self._state = DONE

    def _file_record(self, line: bytes) -> None:
        record = line[:-1] if line.endswith(b"\n") else line
        record = record.split(b"\0", 1)[0]  # scp's buffer is a C string
        match = _FILE_RECORD.fullmatch(record)
        if match is None or int(match[2]) > OFF_T_MAX:
            self._state = DONE  # scp: "protocol error", and it exits
            return
        name = match[3]
        path = self._path_of(_text(name))
        if name in _REFUSED_NAMES or b"/" in name:
            self._events.append(_outcome({"action": self.action, "path": path},
                                         f"scp refused the file name {_text(name)!r}"))
            self._state = DONE
        elif record[:1] == b"C":
            self._file = _File(path, int(match[2]), match[1].decode())
            self._await("C")
        else:
            self._dir_path = path
            self._await("D")

    # -- the sink's answers -----------------------------------------------------------------------

    def _await(self, what: str) -> None:
        self._state, self._awaiting = ANSWER, what

    def _next_answer(self) -> bool:
        """Read one answer and act on it; False when it is not complete yet."""
        answers = self._answers
        if not answers:
            return False
        code = answers[0]
        if code == 0:
            end, message = 1, ""
        else:
            start = 1
            end_or_none = _line(answers, start, LINE_MAX if code in (1, 2) else LINE_MAX - 1)
            if end_or_none is None:
                return False
            end = end_or_none
            text = answers[start:end] if code in (1, 2) else answers[:end]
            message = _text(text).rstrip("\n")
        del answers[:end]
        self._answered("ok" if code == 0 else "error" if code == 1 else "fatal", message)
        return True

    def _answered(self, outcome: str, message: str) -> None:
        awaiting, self._state = self._awaiting, RECORD
        if awaiting == "C" and outcome == "ok":
            self._state = DATA if self._file and self._file.size else DATA_STATUS
            self._remaining = self._file.size if self._file else 0
        elif awaiting in ("C", "data"):
            self._file_done(message if outcome != "ok" else "")
        elif awaiting == "D":
            if outcome == "ok":
                self._dirs.append(self._dir_path)
            else:
                self._events.append(_outcome({"action": self.action, "path": self._dir_path},
                                             message or "refused"))
        elif awaiting == "E":
            if not self._dirs:
                self._state = DONE  # the end of the outermost directory: scp is done
            else:
                self._dirs.pop()
        if outcome == "fatal":
            self._state = DONE

    # -- paths and events ---------------------------------------------------------------------

    def _where(self) -> str:
        return self._dirs[-1] if self._dirs else self._base

    def _path_of(self, name: str) -> str:
        if self._dirs:
            return posixpath.join(self._dirs[-1], name)
        if self.action == "upload" and self._target_is_dir:
            return posixpath.join(self._base, name)
        return self._base

    def _file_done(self, error: str) -> None:
        if self._file is not None:
            self._events.append(self._file.event(self.action, error))
            self._file = None
