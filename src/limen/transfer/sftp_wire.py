"""SFTP version 3 on the wire: packet framing and field decoding (draft-ietf-secsh-filexfer-02,
with OpenSSH's extensions).

A packet is ``uint32 length`` then ``length`` bytes: ``byte type``, then (except INIT and
VERSION) ``uint32 request-id`` and the type's fields. Nothing here trusts a length: a
packet longer than the limit, or a field that runs past the end of its packet, is a
``BadParameter``. (OpenSSH's sftp-server refuses a request longer than 256 KiB and exits;
one whose fields overrun it would make it exit after acting on it, which is why the
node passes on only requests it has read in full.)
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from limen.errors import BadParameter

MAX_REQUEST = 256 * 1024  # sftp-server's SFTP_MAX_MSG_LENGTH
MAX_REPLY = 4 * 1024 * 1024

INIT, VERSION = 1, 2
OPEN, CLOSE, READ, WRITE = 3, 4, 5, 6
LSTAT, FSTAT, SETSTAT, FSETSTAT = 7, 8, 9, 10
OPENDIR, READDIR, REMOVE, MKDIR, RMDIR = 11, 12, 13, 14, 15
REALPATH, STAT, RENAME, READLINK, SYMLINK = 16, 17, 18, 19, 20
STATUS, HANDLE, DATA, NAME, ATTRS = 101, 102, 103, 104, 105
EXTENDED, EXTENDED_REPLY = 200, 201

# OPEN's pflags
FXF_READ, FXF_WRITE, FXF_APPEND, FXF_CREAT, FXF_TRUNC, FXF_EXCL = 1, 2, 4, 8, 16, 32

STATUS_NAMES = ("ok", "eof", "no_such_file", "permission_denied", "failure", "bad_message",
                "no_connection", "connection_lost", "op_unsupported")
OK = 0

_ATTR_SIZE, _ATTR_UIDGID, _ATTR_PERMISSIONS, _ATTR_ACMODTIME = 0x1, 0x2, 0x4, 0x8
_ATTR_EXTENDED = 0x80000000
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


def status_name(code: int) -> str:
    return STATUS_NAMES[code] if 0 <= code < len(STATUS_NAMES) else f"status_{code}"


class Fields:
    """Reads one packet's fields in order; every read checks the packet's bounds."""

    def __init__(self, packet: memoryview) -> None:
        self._view = packet
        self._pos = 0

    def _take(self, size: int) -> int:
        start = self._pos
        if size < 0 or start + size > len(self._view):
            raise BadParameter("an SFTP packet ends inside one of its fields")
        self._pos = start + size
        return start

    @property
    def left(self) -> int:
        return len(self._view) - self._pos

    def byte(self) -> int:
        return self._view[self._take(1)]

    def u32(self) -> int:
        return int(_U32.unpack_from(self._view, self._take(4))[0])

    def u64(self) -> int:
        return int(_U64.unpack_from(self._view, self._take(8))[0])

    def data(self) -> memoryview:
        """A string field without copying it (valid only while the packet is)."""
        size = self.u32()
        start = self._take(size)
        return self._view[start:start + size]

    def string(self) -> bytes:
        return bytes(self.data())

    def attrs(self) -> dict[str, int | str]:
        """ATTRS, as the audit shows them (mode in octal)."""
        flags = self.u32()
        shown: dict[str, int | str] = {}
        if flags & _ATTR_SIZE:
            shown["size"] = self.u64()
        if flags & _ATTR_UIDGID:
            shown["uid"], shown["gid"] = self.u32(), self.u32()
        if flags & _ATTR_PERMISSIONS:
            shown["mode"] = f"{self.u32() & 0o7777:04o}"
        if flags & _ATTR_ACMODTIME:
            shown["atime"], shown["mtime"] = self.u32(), self.u32()
        if flags & _ATTR_EXTENDED:
            for _ in range(self.u32()):
                self.data(), self.data()
        return shown


PacketHandler = Callable[[memoryview], None]


class Framer:
    """Cuts a byte stream into packets, however the stream was split.

    ``feed`` hands each complete packet (type and fields, without the length) to the
    handler as a memoryview that is valid only during the call, and returns how many of
    the bytes fed so far were whole packets the handler accepted. A partial packet
    waits for the rest; nothing is copied when a chunk holds whole packets only.
    """

    def __init__(self, limit: int, keep: bool = True) -> None:
        self.limit = limit
        self.keep = keep  # False: nobody takes the handled packets
        self._partial = bytearray()
        self._chunks: list[bytes | bytearray] = []

    def feed(self, data: bytes, handle: PacketHandler) -> None:
        if self._partial:
            self._partial += data
            source: bytes | bytearray = self._partial
        else:
            source = data
        done = self._packets(source, handle)
        if done and self.keep:
            if source is data and done == len(data):
                self._chunks.append(data)
            else:
                with memoryview(source) as view:
                    self._chunks.append(bytes(view[:done]))
        if source is not data:
            del self._partial[:done]  # cheap: a bytearray drops its front in place
        elif done < len(data):
            with memoryview(data) as view:
                self._partial = bytearray(view[done:])

    def _packets(self, source: bytes | bytearray, handle: PacketHandler) -> int:
        done, end = 0, len(source)
        with memoryview(source) as view:
            while end - done >= 4:
                length = int(_U32.unpack_from(view, done)[0])
                if not 1 <= length <= self.limit:
                    raise BadParameter(
                        f"an SFTP packet of {length} bytes (at most {self.limit} are allowed)"
                    )
                if end - done - 4 < length:
                    break
                packet = view[done + 4:done + 4 + length]
                try:
                    handle(packet)
                finally:
                    packet.release()
                done += 4 + length
        return done

    def take_passed(self) -> bytes:
        """The whole packets handled since the last call, as one byte string."""
        chunks, self._chunks = self._chunks, []
        if len(chunks) == 1 and isinstance(chunks[0], bytes):
            return chunks[0]
        return b"".join(chunks)

    @property
    def pending(self) -> int:
        """Bytes of a packet not complete yet."""
        return len(self._partial)
