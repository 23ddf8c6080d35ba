"""The file-transfer followers without a server: legacy scp's command line, the SFTP and
scp protocol parsers (any split of the stream, huge lengths, garbage), the digest in
offset order, and the SFTP sniffer."""

from __future__ import annotations

import hashlib
import random
import struct
from collections.abc import Callable

import pytest

from limen.errors import BadParameter
from limen.node.ssh.transfer_gate import SftpSniffer
from limen.transfer import sftp_wire as wire
from limen.transfer.digest import MAX_WAITING, OffsetDigest
from limen.transfer.scp import mentions_file_copy, parse_scp_command
from limen.transfer.scp_stream import MAX_HELD, ScpFollower
from limen.transfer.sftp import SftpFollower

HOME = "/home/u"
SCP = "/usr/bin/scp"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- legacy scp's command line --------------------------------------------------------------


@pytest.mark.parametrize(("command", "action", "path", "argv"), [
    ("scp -t /tmp/x", "upload", "/tmp/x", (SCP, "-t", "--", "/tmp/x")),
    ("scp -r -p -d -t -- '/tmp/a b'", "upload", "/tmp/a b",
     (SCP, "-r", "-p", "-d", "-t", "--", "/tmp/a b")),
    (f"{SCP} -f ~/x", "download", f"{HOME}/x", (SCP, "-f", "--", f"{HOME}/x")),
    ("scp -f -- -weird", "download", "-weird", (SCP, "-f", "--", "-weird")),
    ("scp -vf \"dir with space\"", "download", "dir with space",
     (SCP, "-v", "-f", "--", "dir with space")),
    ("scp -f a\\ b", "download", "a b", (SCP, "-f", "--", "a b")),
    ("scp -t .", "upload", ".", (SCP, "-t", "--", ".")),
])
def test_scp_is_recognised_when_it_can_be_nothing_else(
    command: str, action: str, path: str, argv: tuple[str, ...]
) -> None:
    request = parse_scp_command(command, HOME, SCP)
    assert request is not None
    assert (request.action, request.path, request.argv(SCP)) == (action, path, argv)


@pytest.mark.parametrize("command", [
    "scp -f /dev/null; echo MARK-1",
    "scp -t x </dev/null; exec bash -i",
    "scp -f /tmp/*.txt",
    "scp -f $HOME/x",
    "scp -f \"$HOME\"",
    "scp -f `id`",
    "scp -f \"$(id)\"",
    "scp -t a b",
    "scp -t",
    "scp -x -t a",
    "scp -t -f a",
    "scp -r a",
    "/tmp/scp -t a",
    "echo scp -t x",
    "scp -t x &",
    "scp -t x|cat",
    "scp -f ~other/x",
    "scp -f 'a\nb'",
    "scp -f 'unbalanced",
    "scp -t x # comment",
    "scp -t {a,b}",
    "scp -t x\\\ny",
])
def test_anything_else_is_a_plain_command(command: str) -> None:
    assert parse_scp_command(command, HOME, SCP) is None


@pytest.mark.parametrize(("command", "copies"), [
    ("scp -f /dev/null; echo MARK", True),
    ("echo hi && /usr/bin/scp -rt x", True),
    (SFTP_SERVER, True),
    ("cd /; exec sftp-server -e", True),
    ("sh -c 'sftp-server'", True),  # quoted words count too
    ("echo scp", False),
    ("scp file other-host:", False),
    ("cat /var/log/sftp-server.log", False),
    ("scp -f 'unbalanced", True),
])
def test_file_copy_by_name(command: str, copies: bool) -> None:
    assert mentions_file_copy(command, SFTP_SERVER) is copies


# -- the digest in offset order --------------------------------------------------------------


def test_digest_in_offset_order() -> None:
    data = bytes(range(256)) * 40
    digest = OffsetDigest()
    digest.add(0, data[:1000])
    digest.add(3000, data[3000:])  # after a gap (a short read, re-asked later)
    digest.add(1000, data[1000:3000])
    assert digest.fields() == {"sha256": sha(data)} and digest.length == len(data)

    resumed = OffsetDigest()
    resumed.add(500, data[500:])
    assert resumed.fields() == {"sha256": sha(data[500:]), "offset": 500}

    for pieces in ([(0, data[:100]), (50, data[50:150])],  # overlap
                   [(0, data[:100]), (200, data[200:300])],  # a gap never filled
                   [(0, b"x"), (2, b"y" * (MAX_WAITING + 1))]):  # too much waiting
        digest = OffsetDigest()
        for offset, piece in pieces:
            digest.add(offset, piece)
        assert digest.fields() == {"sha256_skipped": "non-sequential"}


# -- SFTP -------------------------------------------------------------------------------------


def string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def packet(kind: int, *fields: bytes) -> bytes:
    body = bytes([kind]) + b"".join(fields)
    return struct.pack(">I", len(body)) + body


def u32(value: int) -> bytes:
    return struct.pack(">I", value)


def u64(value: int) -> bytes:
    return struct.pack(">Q", value)


NO_ATTRS = u32(0)
INIT = packet(wire.INIT, u32(3))
VERSION = packet(wire.VERSION, u32(3))
WRITE_NEW = wire.FXF_WRITE | wire.FXF_CREAT | wire.FXF_TRUNC


def status(request_id: int, code: int = 0, message: bytes = b"") -> bytes:
    return packet(wire.STATUS, u32(request_id), u32(code), string(message), string(b""))


def upload_conversation(name: bytes, data: bytes, block: int = 7) -> tuple[bytes, bytes]:
    """Requests and replies of one upload, as OpenSSH's sftp sends them."""
    requests = [INIT, packet(wire.OPEN, u32(1), string(name), u32(WRITE_NEW), NO_ATTRS)]
    replies = [VERSION, packet(wire.HANDLE, u32(1), string(b"\0\0\0\0"))]
    request_id = 2
    for offset in range(0, len(data), block):
        requests.append(packet(wire.WRITE, u32(request_id), string(b"\0\0\0\0"), u64(offset),
                               string(data[offset:offset + block])))
        replies.append(status(request_id))
        request_id += 1
    requests.append(packet(wire.CLOSE, u32(request_id), string(b"\0\0\0\0")))
    replies.append(status(request_id))
    return b"".join(requests), b"".join(replies)


def follow_sftp(requests: bytes, replies: bytes, cut: int | None = None) -> tuple[list, bytes]:
    """Feed all requests (in two pieces at ``cut``), then all replies."""
    follower = SftpFollower("/home/u")
    passed = b""
    pieces = [requests] if cut is None else [requests[:cut], requests[cut:]]
    for piece in pieces:
        follower.from_user(piece)
        passed += follower.take_input()
    follower.to_user(replies)
    return follower.take_events() + follower.finish(), passed


def test_sftp_upload_split_at_every_byte_boundary() -> None:
    data = b"the bytes of the file, in order" * 3
    requests, replies = upload_conversation(b"up.txt", data)
    want = [{"action": "upload", "path": "/home/u/up.txt", "len": len(data), "sha256": sha(data),
             "status": "ok", "success": True}]
    for cut in range(len(requests) + 1):
        events, passed = follow_sftp(requests, replies, cut)
        assert events == want, cut
        assert passed == requests  # every request reaches sftp-server, once, whole
    follower = SftpFollower("/home/u")
    follower.from_user(requests)
    for cut in range(len(replies)):  # replies split byte by byte
        follower.to_user(replies[cut:cut + 1])
    assert follower.take_events() == want


def test_sftp_download_with_a_short_read_and_a_refused_open() -> None:
    data = bytes(range(200))
    requests = INIT + b"".join([
        packet(wire.OPEN, u32(1), string(b"/etc/shadow"), u32(wire.FXF_READ), NO_ATTRS),
        packet(wire.OPEN, u32(2), string(b"data.bin"), u32(wire.FXF_READ), NO_ATTRS),
        packet(wire.READ, u32(3), string(b"h"), u64(0), u32(100)),
        packet(wire.READ, u32(4), string(b"h"), u64(100), u32(100)),
        packet(wire.READ, u32(5), string(b"h"), u64(60), u32(40)),  # the rest of a short read
        packet(wire.READ, u32(6), string(b"h"), u64(200), u32(100)),
        packet(wire.CLOSE, u32(7), string(b"h")),
    ])
    replies = VERSION + b"".join([
        status(1, 3, b"Permission denied"),
        packet(wire.HANDLE, u32(2), string(b"h")),
        packet(wire.DATA, u32(3), string(data[:60])),
        packet(wire.DATA, u32(4), string(data[100:])),
        packet(wire.DATA, u32(5), string(data[60:100])),
        status(6, 1, b"EOF"),
        status(7),
    ])
    events, _ = follow_sftp(requests, replies)
    assert events == [
        {"action": "download", "path": "/etc/shadow", "len": 0, "sha256": sha(b""),
         "status": "permission_denied", "success": False, "error": "Permission denied"},
        {"action": "download", "path": "/home/u/data.bin", "len": 200, "sha256": sha(data),
         "status": "ok", "success": True},
    ]


def test_sftp_changes_and_names_are_literal() -> None:
    forged = b'a"\nclose "/etc/shadow" bytes read 1 written 0'
    requests = INIT + b"".join([
        packet(wire.REMOVE, u32(1), string(forged)),
        packet(wire.RENAME, u32(2), string(b"a"), string(b"/tmp/b")),
        packet(wire.EXTENDED, u32(3), string(b"posix-rename@openssh.com"), string(b"c"),
               string(b"d")),
        packet(wire.MKDIR, u32(4), string(b"dir"), NO_ATTRS),
        packet(wire.RMDIR, u32(5), string(b"dir")),
        packet(wire.SYMLINK, u32(6), string(b"/etc/passwd"), string(b"link")),
        packet(wire.SETSTAT, u32(7), string(b"f"), u32(0x4), u32(0o100600)),
        packet(wire.EXTENDED, u32(8), string(b"hardlink@openssh.com"), string(b"f"),
               string(b"g")),
        packet(wire.STAT, u32(9), string(b"f")),
        packet(99, u32(10)),  # unknown: sftp-server does not answer it
    ])
    replies = VERSION + b"".join(
        [status(i) for i in range(1, 6)] + [status(6, 4, b"Failure"), status(7), status(8)]
        + [packet(wire.ATTRS, u32(9), NO_ATTRS)])
    events, _ = follow_sftp(requests, replies)
    assert [(e["action"], e["path"], e.get("target"), e["status"]) for e in events] == [
        ("remove", "/home/u/" + forged.decode(), None, "ok"),
        ("rename", "/home/u/a", "/tmp/b", "ok"),
        ("rename", "/home/u/c", "/home/u/d", "ok"),
        ("mkdir", "/home/u/dir", None, "ok"),
        ("rmdir", "/home/u/dir", None, "ok"),
        ("symlink", "/home/u/link", "/etc/passwd", "failure"),
        ("setstat", "/home/u/f", None, "ok"),
        ("link", "/home/u/g", "/home/u/f", "ok"),
    ]
    assert events[6]["attributes"] == {"mode": "0600"}
    assert "/etc/shadow" not in [e["path"] for e in events]


def test_sftp_write_to_a_handle_guessed_before_its_reply_still_counts() -> None:
    requests = INIT + b"".join([
        packet(wire.OPEN, u32(1), string(b"x"), u32(WRITE_NEW), NO_ATTRS),
        packet(wire.WRITE, u32(2), string(b"\0\0\0\0"), u64(0), string(b"sneaky")),
        packet(wire.CLOSE, u32(3), string(b"\0\0\0\0")),
    ])
    replies = VERSION + packet(wire.HANDLE, u32(1), string(b"\0\0\0\0")) + status(2) + status(3)
    events, _ = follow_sftp(requests, replies)
    assert [(e["path"], e["len"], e["sha256"]) for e in events] == [
        ("/home/u/x", 6, sha(b"sneaky"))]


def test_sftp_files_left_open_and_requests_left_unanswered_are_reported() -> None:
    requests = INIT + b"".join([
        packet(wire.OPEN, u32(1), string(b"x"), u32(WRITE_NEW), NO_ATTRS),
        packet(wire.WRITE, u32(2), string(b"h"), u64(0), string(b"abc")),
        packet(wire.REMOVE, u32(3), string(b"y")),
    ])
    events, _ = follow_sftp(requests, VERSION + packet(wire.HANDLE, u32(1), string(b"h")))
    assert [(e["action"], e["status"], e.get("len")) for e in events] == [
        ("remove", "no_reply", None), ("upload", "not_closed", 3)]


@pytest.mark.parametrize("bad", [
    struct.pack(">I", wire.MAX_REQUEST + 1) + b"\x06",  # longer than sftp-server takes
    struct.pack(">I", 0xFFFFFFFF),
    struct.pack(">I", 0),
    packet(wire.WRITE, u32(1), string(b"h"), u64(0), u32(1000) + b"short"),  # overruns
    packet(wire.OPEN, u32(1), u32(50) + b"x"),
])
def test_sftp_refuses_what_it_cannot_follow_and_passes_none_of_it(bad: bytes) -> None:
    follower = SftpFollower("/")
    follower.from_user(INIT)
    assert follower.take_input() == INIT
    with pytest.raises(BadParameter):
        follower.from_user(bad + INIT)
    assert follower.take_input() == b""


def fuzz(feed: Callable[[bytes], None], seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(20):
        chunk = rng.randbytes(rng.randrange(1, 64))
        if rng.random() < 0.5:  # plausible lengths reach deeper into the parser
            chunk = struct.pack(">I", rng.randrange(1, 40)) + chunk
        try:
            feed(chunk)
        except BadParameter:
            return


@pytest.mark.parametrize("seed", range(200))
def test_garbage_raises_nothing_but_bad_parameter(seed: int) -> None:
    sftp = SftpFollower("/")
    fuzz(sftp.from_user, seed)
    fuzz(SftpFollower("/").to_user, seed)
    fuzz(ScpFollower("upload", "/t", True).from_user, seed)
    fuzz(ScpFollower("upload", "/t", True).to_user, seed)
    fuzz(ScpFollower("download", "/t", False).from_user, seed)
    fuzz(ScpFollower("download", "/t", False).to_user, seed)


# -- legacy scp's protocol --------------------------------------------------------------------

TREE = [b"D0755 0 tree\n", b"C0644 3 top\n", b"abc", b"\0", b"D0700 0 sub\n",
        b"C0600 0 empty\n", b"\0", b"E\n", b"E\n"]
TREE_ANSWERS = b"\0" * 9  # start, D, C, data, D, C, data, E, E


def tree_events(top: str, base: str) -> list[dict]:
    def event(path: str, data: bytes, mode: str) -> dict:
        return {"action": top, "path": path, "len": len(data), "size": len(data), "mode": mode,
                "sha256": sha(data), "success": True}
    return [event(f"{base}/top", b"abc", "0644"), event(f"{base}/sub/empty", b"", "0600")]


def test_scp_upload_split_at_every_byte_boundary() -> None:
    source = b"".join(TREE)
    want = tree_events("upload", "/tmp/x/tree")
    for cut in range(len(source) + 1):
        follower = ScpFollower("upload", "/tmp/x", target_is_dir=True)
        follower.to_user(TREE_ANSWERS)
        passed = b""
        for piece in (source[:cut], source[cut:]):
            follower.from_user(piece)
            passed += follower.take_input()
        assert follower.take_events() + follower.finish() == want, cut
        assert passed == source


def test_scp_upload_bytes_wait_for_scps_answer() -> None:
    follower = ScpFollower("upload", "/tmp/x", target_is_dir=True)
    source = b"".join(TREE)
    follower.from_user(source)  # a client that does not wait
    assert follower.take_input() == b"" and follower.holding
    passed = b""
    for answer in TREE_ANSWERS:
        follower.to_user(bytes([answer]))
        passed += follower.take_input()
    assert passed == source and not follower.holding
    assert follower.take_events() == tree_events("upload", "/tmp/x/tree")
    flood = ScpFollower("upload", "/tmp/x", target_is_dir=False)
    with pytest.raises(BadParameter):
        flood.from_user(b"x" * (MAX_HELD + 1))
    answers = ScpFollower("download", "/tmp/x", target_is_dir=False)
    with pytest.raises(BadParameter):  # far more answers than scp could have asked for
        answers.from_user(b"\0" * (MAX_HELD + 2))


def test_scp_download_split_at_every_byte_boundary() -> None:
    source = b"".join(TREE)
    for cut in range(len(source) + 1):
        follower = ScpFollower("download", "/home/u/tree", target_is_dir=False)
        follower.from_user(TREE_ANSWERS)
        assert follower.take_input() == TREE_ANSWERS  # answers go on at once
        follower.to_user(source[:cut])
        follower.to_user(source[cut:])
        assert follower.take_events() == tree_events("download", "/home/u/tree"), cut


def test_scp_refusals_and_errors_are_events() -> None:
    follower = ScpFollower("upload", "/tmp/file", target_is_dir=False)
    follower.to_user(b"\0")
    follower.from_user(b"C0644 5 a\n")
    follower.to_user(b"\x01scp: /tmp/file: Permission denied\n")  # no bytes follow
    follower.from_user(b"C0644 2 b\nhi\0")
    follower.to_user(b"\0\x01scp: /tmp/file: No space left on device\n")
    events = follower.take_events()
    assert [(e["path"], e["len"], e["success"], e.get("error")) for e in events] == [
        ("/tmp/file", 0, False, "scp: /tmp/file: Permission denied"),
        ("/tmp/file", 2, False, "scp: /tmp/file: No space left on device"),
    ]
    missing = ScpFollower("download", "/root/secret", target_is_dir=False)
    missing.from_user(b"\0")
    missing.to_user(b"\x01scp: /root/secret: Permission denied\n")
    assert missing.take_events() == [{"action": "download", "path": "/root/secret",
                                      "success": False,
                                      "error": "scp: /root/secret: Permission denied"}]


def test_scp_records_are_cut_where_scp_cuts_them() -> None:
    """scp reads at most 2047 bytes of a record: a longer line is two records to it."""
    follower = ScpFollower("upload", "/tmp/d", target_is_dir=True)
    follower.to_user(b"\0")
    follower.from_user(b"C0644 5 " + b"a" * 2039 + b"C0644 5 evil\nhello\0")
    follower.to_user(b"\x01scp: name too long\n")  # scp refuses the first "record"
    follower.to_user(b"\0\0")  # and takes the second, and its bytes
    events = follower.take_events()
    assert [(e["path"], e["len"], e["success"]) for e in events] == [
        ("/tmp/d/" + "a" * 2039, 0, False), ("/tmp/d/evil", 5, True)]
    assert events[1]["sha256"] == sha(b"hello")


def test_scp_transfer_cut_short_is_reported() -> None:
    follower = ScpFollower("download", "/srv/big", target_is_dir=False)
    follower.from_user(b"\0\0")
    follower.to_user(b"C0644 100 big\n" + b"x" * 40)
    (event,) = follower.finish()
    assert (event["len"], event["size"], event["success"]) == (40, 100, False)
    assert event["sha256"] == sha(b"x" * 40)


def test_scp_stops_following_where_scp_gives_up() -> None:
    for records in (b"\n", b"X\n", b"C0644 5 ../etc/passwd\n", b"C06 5 a\n", b"\x02fatal\n"):
        follower = ScpFollower("upload", "/tmp", target_is_dir=True)
        follower.to_user(b"\0")
        follower.from_user(records + b"C0644 1 a\nz\0")
        assert not follower.holding  # scp exits: nothing waits for its answer
        assert all(e["success"] is False for e in follower.take_events())


# -- SFTP sniffing ------------------------------------------------------------------------------


def test_sftp_is_sniffed_however_the_init_packet_is_split() -> None:
    stream = INIT + packet(wire.STAT, u32(1), string(b"."))
    for cut in range(len(stream) + 1):
        sniffer = SftpSniffer()
        passed = sniffer.take(stream[:cut]) + sniffer.take(stream[cut:])
        assert sniffer.verdict is True and passed == stream, cut


@pytest.mark.parametrize("start", [b"echo hi\n", b"\0\0\0\x05\x02", b"\0\0\0\0",
                                   b"\0\x05\0\0\x01", b"\xff"])
def test_other_input_goes_on_at_once(start: bytes) -> None:
    sniffer = SftpSniffer()
    assert sniffer.take(start) == start and sniffer.verdict is False
    held = SftpSniffer()
    assert held.take(b"\0\0") == b"" and held.verdict is None
    assert held.at_eof() == b"\0\0" and held.verdict is False
