"""Session recordings end to end: an interactive shell through stock OpenSSH is recorded on
the node as asciicast v2 (with its resizes), exec output too; the auth service has them
while and after the session runs; `limen recordings ls/search`, `limen play` (replay and
export that `asciinema cat` reads); file transfers recorded as byte counts;
`record_session: strict` ends a session whose recorder fails part way. (A session that
cannot be recorded at all never starts under strict: test_transfer_attacks.py.)
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import uuid
from pathlib import Path

import pexpect
import pytest

from tests.support.cluster import ClusterHarness
from tests.support.ssh_access import NODE, SshUser, clean_env, new_user, unique, wait_until

PROMPT = "REC-PROMPT> "


def _shell(user: SshUser, node: str = NODE) -> pexpect.spawn:
    argv = user.ssh_argv("-tt", f"root@{node}")
    child = pexpect.spawn(argv[0], argv[1:], env=clean_env(TERM="xterm"), dimensions=(24, 80),
                          timeout=20, encoding="utf-8", codec_errors="replace")
    child.sendline(f"PS1='{PROMPT}'; export PS1")
    child.expect_exact(PROMPT)
    child.expect_exact(PROMPT)
    return child


def _recordings(user: SshUser, *args: str) -> list[dict]:
    result = user.limen("recordings", *args, "--format", "json")
    assert result.returncode == 0, result.stderr
    return result.json()


def _mine(cluster: ClusterHarness, auditor: SshUser, name: str) -> list[dict]:
    return [r for r in _recordings(auditor, "ls", "--limit", "1000") if r["user"] == name]


@pytest.fixture(scope="module")
def auditor(cluster: ClusterHarness) -> SshUser:
    return new_user(cluster, "rec-auditor", roles="auditor", logins="")


def test_an_interactive_session_is_recorded_with_resizes_and_plays_back(
    cluster: ClusterHarness, auditor: SshUser, tmp_path: Path
) -> None:
    alice = new_user(cluster, "recshell")
    marker = f"marker-{uuid.uuid4().hex[:8]}"
    child = _shell(alice)
    try:
        child.sendline(f"echo {marker}-$((40+2))")
        child.expect_exact(f"{marker}-42")
        child.expect_exact(PROMPT)
        # While the session runs the auth service already has what it printed.
        live = wait_until(lambda: _mine(cluster, auditor, alice.name), 10, "a live recording")
        assert live[0]["complete"] is False and live[0]["end"] is None
        wait_until(lambda: [r for r in _recordings(auditor, "search", f"{marker}-42")
                            if r["user"] == alice.name], 10, "the printed text, searchable")
        child.setwinsize(40, 120)
        wait_until(lambda: cluster.events_of("resize", user=alice.name), 10, "a resize event")
        child.sendline("stty size")
        child.expect_exact("40 120")
        child.sendline("exit 3")
        child.expect(pexpect.EOF)
    finally:
        child.close()

    done = wait_until(lambda: [r for r in _mine(cluster, auditor, alice.name) if r["complete"]],
                      15, "the complete recording")[0]
    start = cluster.events_of("session.start", user=alice.name)[0]
    assert done["session_id"] == start["sid"]
    uuid.UUID(done["session_id"])
    assert (done["login"], done["node"], done["kind"]) == ("root", "node1", "shell")
    assert done["start"] and done["end"] and done["size"] > 0 and not done["interrupted"]
    upload = cluster.events_of("session.upload", sid=done["session_id"])
    assert upload and upload[0]["complete"] is True and upload[0]["size"] == done["size"]

    exported = auditor.limen("play", done["session_id"], "--format", "asciicast")
    assert exported.returncode == 0, exported.stderr
    lines = exported.stdout.splitlines()
    header = json.loads(lines[0])
    assert (header["version"], header["width"], header["height"]) == (2, 80, 24)
    frames = [json.loads(line) for line in lines[1:]]
    assert [f[2] for f in frames if f[1] == "r"] == ["120x40"]
    assert any(f"{marker}-42" in f[2] for f in frames if f[1] == "o")
    times = [f[0] for f in frames]
    assert times == sorted(times)

    cast = tmp_path / "session.cast"
    cast.write_text(exported.stdout)
    # asciinema cat opens /dev/tty: give it a terminal.
    shown, status = pexpect.run(f"asciinema cat {cast}", withexitstatus=True, timeout=30,
                                env={**clean_env(HOME=str(tmp_path)), "LC_ALL": "C.UTF-8"},
                                encoding="utf-8")
    assert status == 0, shown
    assert f"{marker}-42" in shown

    replay = auditor.limen("play", done["session_id"], "--speed", "50", "--skip-idle")
    assert replay.returncode == 0, replay.stderr
    assert f"{marker}-42" in replay.stdout
    text = auditor.limen("play", done["session_id"], "--format", "text")
    assert f"{marker}-42" in text.stdout and "\x1b" not in text.stdout
    assert cluster.events_of("session.recording.access", user=auditor.name,
                             sid=done["session_id"])


def test_exec_output_is_recorded_and_searchable(cluster: ClusterHarness,
                                                auditor: SshUser) -> None:
    alice = new_user(cluster, "recexec")
    word = f"needle{uuid.uuid4().hex[:10]}"
    # Long output: the word lands far from the start, probably across upload chunks.
    script = f"seq 1 20000; echo {word}; echo done >&2"
    result = alice.ssh(f"root@{NODE}", script)
    assert result.returncode == 0, result.stderr
    done = wait_until(lambda: [r for r in _mine(cluster, auditor, alice.name) if r["complete"]],
                      15, "the exec recording")[0]
    assert done["kind"] == "exec"
    found = _recordings(auditor, "search", word.upper())  # case does not matter
    assert [r["session_id"] for r in found] == [done["session_id"]]
    assert _recordings(auditor, "search", f"absent-{uuid.uuid4().hex}") == []
    text = auditor.limen("play", done["session_id"], "--format", "text").stdout
    assert "19999\n20000\n" in text and word in text and "done" in text


def test_file_transfers_are_recorded_as_byte_counts_and_audited_per_file(
    cluster: ClusterHarness, auditor: SshUser, tmp_path: Path
) -> None:
    alice = new_user(cluster, "recscp")
    payload = tmp_path / "payload.txt"
    payload.write_text("copy me\n" * 1000)
    remote = f"/tmp/{alice.name}.txt"
    try:
        up = alice.tool("scp", str(payload), f"root@{NODE}:{remote}")
        assert up.returncode == 0, up.stderr
        back = tmp_path / "back.txt"
        down = alice.tool("scp", f"root@{NODE}:{remote}", str(back))
        assert down.returncode == 0, down.stderr
    finally:
        Path(remote).unlink(missing_ok=True)
    digest = hashlib.sha256(payload.read_bytes()).hexdigest()
    moved = wait_until(lambda: [e for e in cluster.events_of("sftp", user=alice.name)
                                if e["action"] in ("upload", "download")], 10, "sftp events")
    assert {e["action"] for e in moved} == {"upload", "download"}
    assert all(e["sha256"] == digest and e["path"] == remote for e in moved)
    assert all(e["len"] == payload.stat().st_size and e["success"] for e in moved)
    # Each transfer has a recording too: what went by is counted, the text not stored.
    sessions = {e["sid"] for e in moved}
    done = wait_until(lambda: [r for r in _mine(cluster, auditor, alice.name)
                               if r["complete"] and r["session_id"] in sessions],
                      15, "both recordings")
    assert len(done) == 2 and {r["kind"] for r in done} == {"subsystem"}
    for recording in done:
        text = auditor.limen("play", recording["session_id"], "--format", "text").stdout
        assert "bytes of binary output not recorded" in text and "copy me" not in text


def test_strict_recording_ends_the_session_when_the_recorder_fails_mid_session(
    cluster: ClusterHarness, tmp_path: Path
) -> None:
    node = unique("strict")
    role = tmp_path / "strict.yaml"
    role.write_text(
        "kind: role\nversion: v7\nmetadata:\n  name: strict-rec\nspec:\n"
        "  options:\n    record_session: strict\n"
        "  allow:\n    logins: [root]\n    node_labels: {'*': '*'}\n"
    )
    assert cluster.admin("create", "-f", str(role), "--force").returncode == 0
    added = cluster.add_node(node, {"env": "strict"})
    strict = new_user(cluster, "strict", roles="strict-rec", logins="root")
    # The node's recordings live on a tiny file system: a session that prints more than
    # fits makes its recorder fail part way (no space left on device).
    recordings = added.data_dir / "recordings"
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(recordings)],
                   check=True)
    try:
        host = f"{node}.test.limen"
        stopped = strict.ssh(f"root@{host}", "for i in $(seq 1 3000); do echo line$i "
                             "padding-padding-padding; sleep 0.001; done; echo finished",
                             timeout=60)
    finally:
        subprocess.run(["umount", "-l", str(recordings)], check=True)
    assert stopped.returncode != 0
    assert b"finished" not in stopped.stdout and b"line1 " in stopped.stdout
    assert b"record_session: strict" in stopped.stderr
    failures = wait_until(lambda: cluster.events_of("session.recording.failure",
                                                    user=strict.name), 10, "a failure event")
    assert failures[0]["server_hostname"] == node and "space" in failures[0]["error"]
    end = wait_until(lambda: cluster.events_of("session.end", user=strict.name), 10,
                     "the strict session's end")
    assert end[0]["reason"] == "recording failed"
