"""File transfers and recordings cannot be slipped past (issue 10, holes 1, 4 and 7's
`sftp -s`), tried as a user would, through the proxy with stock OpenSSH and `limen scp`:

- a command that only looks like scp runs as what it is: recorded in full, audited as exec;
- under `record_session: strict` a session that cannot be recorded never starts;
- sftp events come from the protocol: a file name cannot forge one, and the node hashes
  the bytes transferred, never a file a name points at;
- sha256 and len of sftp and legacy scp events are those of the bytes sent, both ways,
  recursive included;
- `ssh_file_copy: false` holds against `sftp -s PROGRAM` and an exec of sftp-server, even
  one whose name is hidden from the command line.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pexpect
import pytest

from limen.resources import Role
from tests.support.cluster import ClusterHarness
from tests.support.recordings import complete_recording, printed_text
from tests.support.ssh_access import (
    LOCAL_LOGIN,
    NODE,
    SshUser,
    clean_env,
    ensure_local_user,
    new_user,
    unique,
    wait_until,
)

SFTP_SERVER = "/usr/lib/openssh/sftp-server"
FILE_COPY_DENIED = "file copy (scp and sftp) is not allowed"


@pytest.fixture(scope="module")
def auditor(cluster: ClusterHarness) -> SshUser:
    return new_user(cluster, "xfer-auditor", roles="auditor", logins="")


def _role(cluster: ClusterHarness, **options: Any) -> str:
    name = unique("xfer-role")
    role = Role.model_validate({
        "metadata": {"name": name},
        "spec": {"allow": {"logins": ["{{internal.logins}}"], "node_labels": {"*": "*"}},
                 "options": options},
    })
    cluster.run(cluster.service.auth.ctx.stores.roles.create(role))
    return name


def _session(cluster: ClusterHarness, user: str, **match: Any) -> dict[str, Any]:
    return wait_until(lambda: cluster.events_of("session.start", user=user, **match), 10,
                      f"the session of {user}")[-1]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- 1. what only looks like scp --------------------------------------------------------------


def test_a_command_that_looks_like_scp_is_recorded_and_audited_as_exec(
    cluster: ClusterHarness, auditor: SshUser
) -> None:
    alice = new_user(cluster, "fakescp")
    marker = f"MARK-1-{uuid.uuid4().hex[:8]}"
    command = f"scp -f /dev/null; echo {marker}"
    ran = alice.ssh(f"root@{NODE}", command)
    assert marker.encode() in ran.stdout, ran.stderr
    sid = _session(cluster, alice.name)["sid"]
    execd = wait_until(lambda: cluster.events_of("exec", sid=sid), 10, "the exec event")
    assert execd[0]["command"] == command
    complete_recording(auditor, sid)
    assert marker in printed_text(auditor, sid)
    assert cluster.events_of("scp", sid=sid) == []


def test_a_shell_behind_scp_with_a_terminal_is_recorded(
    cluster: ClusterHarness, auditor: SshUser
) -> None:
    alice = new_user(cluster, "fakescp-tty")
    marker = uuid.uuid4().hex[:8]
    argv = alice.ssh_argv("-tt", f"root@{NODE}", "scp -t x </dev/null; exec bash -i")
    child = pexpect.spawn(argv[0], argv[1:], env=clean_env(TERM="xterm"), timeout=20,
                          encoding="utf-8", codec_errors="replace")
    try:
        child.sendline(f"echo MARK-$((1+1))-{marker}")
        child.expect_exact(f"MARK-2-{marker}")
        child.sendline("exit")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    sid = _session(cluster, alice.name)["sid"]
    complete_recording(auditor, sid)
    assert f"MARK-2-{marker}" in printed_text(auditor, sid)
    assert cluster.events_of("scp", sid=sid) == []


# -- 3. strict recording ------------------------------------------------------------------------


def test_a_session_that_cannot_be_recorded_does_not_start_under_strict(
    cluster: ClusterHarness,
) -> None:
    node = unique("unrecordable")
    added = cluster.add_node(node, {"env": "unrecordable"})
    strict = new_user(cluster, "strict", roles=_role(cluster, record_session="strict"),
                      logins="root")
    relaxed = new_user(cluster, "relaxed", roles="access", logins="root")
    # The node's recordings directory becomes a file: no recording can be opened.
    recordings = added.data_dir / "recordings"
    shutil.rmtree(recordings)
    recordings.write_text("not a directory\n")
    host = f"{node}.test.limen"
    witness = Path(f"/tmp/{unique('never-ran')}")

    refused = strict.ssh(f"root@{host}", f"touch {witness}")
    assert refused.returncode != 0
    assert b"cannot be recorded" in refused.stderr and b"record_session: strict" in refused.stderr
    assert not witness.exists()  # the user's command never ran
    rejected = wait_until(lambda: cluster.events_of("session.rejected", user=strict.name), 10,
                          "the refusal")[0]
    assert "record_session: strict" in rejected["reason"]
    assert rejected["server_hostname"] == node
    assert cluster.events_of("session.start", user=strict.name) == []
    assert cluster.events_of("session.recording.failure", user=strict.name)

    try:
        fine = relaxed.ssh(f"root@{host}", f"touch {witness} && echo best-effort-runs")
        assert fine.returncode == 0 and fine.stdout == b"best-effort-runs\n", fine.stderr
        assert witness.exists()
        failure = wait_until(lambda: cluster.events_of("session.recording.failure",
                                                       user=relaxed.name), 10, "a failure")
        assert failure[0]["error"] and failure[0]["sid"]
    finally:
        witness.unlink(missing_ok=True)


# -- 4. sftp events cannot be forged by names -------------------------------------------------


def test_a_file_name_cannot_forge_sftp_events(cluster: ClusterHarness, tmp_path: Path) -> None:
    ensure_local_user()
    account = pwd.getpwnam(LOCAL_LOGIN)
    alice = new_user(cluster, "forger", logins=LOCAL_LOGIN)
    base = Path(f"/tmp/{unique('forge')}")
    forged = f'{base}/a"\nclose "/etc/shadow" bytes read 1 written 0'
    parent = Path(forged).parent  # .../a"\nclose "/etc
    parent.mkdir(parents=True)
    for directory in (parent, parent.parent, base):  # the user's own, down to the file
        os.chown(directory, account.pw_uid, account.pw_gid)
    payload = tmp_path / "payload.txt"
    payload.write_bytes(b"innocent bytes\n")
    try:
        copied = alice.limen("scp", str(payload), f"{LOCAL_LOGIN}@node1:{forged}")
        assert copied.returncode == 0, copied.stderr
        assert Path(forged).read_bytes() == b"innocent bytes\n"
    finally:
        shutil.rmtree(base, ignore_errors=True)
    events = wait_until(lambda: cluster.events_of("sftp", user=alice.name), 10, "sftp events")
    uploads = [e for e in events if e["action"] == "upload"]
    assert [(e["path"], e["len"], e["sha256"]) for e in uploads] == [
        (forged, 15, _sha(b"innocent bytes\n"))]
    assert all(e.get("path") != "/etc/shadow" for e in events)
    shadow = _sha(Path("/etc/shadow").read_bytes())
    assert all(e.get("sha256") != shadow for e in events)


# -- 5. digests of the bytes sent -------------------------------------------------------------


def _tree(root: Path) -> dict[str, bytes]:
    files = {"top.bin": os.urandom(70_000), "a/b/deep.txt": b"deep\n" * 1000, "a/empty": b""}
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return files


def _moved(cluster: ClusterHarness, event: str, user: str, action: str,
           expected: dict[str, bytes]) -> None:
    """Every expected file has an event with its length and digest."""
    def found() -> dict[str, tuple[int, str]]:
        return {e["path"]: (e["len"], e.get("sha256", ""))
                for e in cluster.events_of(event, user=user)
                if e["action"] == action and e["path"] in expected}
    seen = wait_until(lambda: len(found()) == len(expected) and found(), 10,
                      f"{event} {action} events")
    assert seen == {path: (len(data), _sha(data)) for path, data in expected.items()}


def test_sftp_digests_are_of_the_bytes_sent(cluster: ClusterHarness, tmp_path: Path) -> None:
    alice = new_user(cluster, "sftpsum")
    files = _tree(tmp_path / "tree")
    remote = f"/tmp/{unique('sftp-tree')}"
    batch = tmp_path / "batch"
    batch.write_text(f"mkdir {remote}\nput -r {tmp_path / 'tree'} {remote}/tree\n"
                     f"get -r {remote}/tree {tmp_path / 'back'}\n")
    try:
        done = alice.tool("sftp", "-b", str(batch), f"root@{NODE}")
        assert done.returncode == 0, done.stderr
    finally:
        shutil.rmtree(remote, ignore_errors=True)
    assert all((tmp_path / "back" / name).read_bytes() == data for name, data in files.items())
    expected = {f"{remote}/tree/{name}": data for name, data in files.items()}
    _moved(cluster, "sftp", alice.name, "upload", expected)
    _moved(cluster, "sftp", alice.name, "download", expected)


def test_legacy_scp_digests_are_of_the_bytes_sent(cluster: ClusterHarness,
                                                  tmp_path: Path) -> None:
    alice = new_user(cluster, "scpsum")
    files = _tree(tmp_path / "tree")
    single = tmp_path / "single.bin"
    single.write_bytes(os.urandom(100_000))
    remote = Path(f"/tmp/{unique('scp-tree')}")
    remote.mkdir()
    try:
        for args in ([str(tmp_path / "tree"), f"root@{NODE}:{remote}"],
                     [str(single), f"root@{NODE}:{remote}/single.bin"],
                     [f"root@{NODE}:{remote}/tree", str(tmp_path / "back")],
                     [f"root@{NODE}:{remote}/single.bin", str(tmp_path / "single.back")]):
            copied = alice.tool("scp", "-O", "-r", *args)
            assert copied.returncode == 0, copied.stderr
    finally:
        shutil.rmtree(remote, ignore_errors=True)
    assert (tmp_path / "single.back").read_bytes() == single.read_bytes()
    assert all((tmp_path / "back" / name).read_bytes() == data for name, data in files.items())
    expected = {f"{remote}/tree/{name}": data for name, data in files.items()}
    expected[f"{remote}/single.bin"] = single.read_bytes()
    _moved(cluster, "scp", alice.name, "upload", expected)
    _moved(cluster, "scp", alice.name, "download", expected)
    # The transfers were recorded as byte counts, and no exec event claims them.
    assert cluster.events_of("exec", user=alice.name) == []


# -- 6. ssh_file_copy: false against sftp -s and an exec of sftp-server -------------------------


HIDDEN = "p=/usr/lib/openssh/sftp-; exec ${p}server"  # no "sftp-server" among its words


def _sftp_s(user: SshUser, program: str, batch: Path) -> subprocess.CompletedProcess[str]:
    return user.tool("sftp", "-s", program, "-b", str(batch), f"root@{NODE}")


def test_file_copy_off_refuses_sftp_by_any_command(cluster: ClusterHarness,
                                                   tmp_path: Path) -> None:
    bob = new_user(cluster, "nocopy", roles=_role(cluster, ssh_file_copy=False), logins="root")
    target = Path(f"/tmp/{unique('nocopy')}")
    local = tmp_path / "x.txt"
    local.write_text("x\n")
    batch = tmp_path / "batch"
    batch.write_text(f"put {local} {target}\n")
    for program in (SFTP_SERVER, HIDDEN):
        refused = _sftp_s(bob, program, batch)
        assert refused.returncode != 0
        assert FILE_COPY_DENIED in refused.stderr, (program, refused.stderr)
    direct = bob.ssh(f"root@{NODE}", SFTP_SERVER, input=b"")
    assert direct.returncode != 0 and FILE_COPY_DENIED.encode() in direct.stderr
    assert not target.exists()
    rejected = wait_until(lambda: len(cluster.events_of("session.rejected", user=bob.name)) >= 3,
                          10, "three refusals") and cluster.events_of("session.rejected",
                                                                      user=bob.name)
    assert all(FILE_COPY_DENIED in e["reason"] for e in rejected)
    assert cluster.events_of("sftp", user=bob.name) == []
    assert bob.ssh(f"root@{NODE}", "echo shell-still-works").stdout == b"shell-still-works\n"


def test_file_copy_on_audits_sftp_by_any_command_as_sftp(cluster: ClusterHarness,
                                                        tmp_path: Path) -> None:
    alice = new_user(cluster, "copyon")
    local = tmp_path / "x.txt"
    local.write_bytes(b"through an exec\n")
    targets = []
    try:
        for program in (SFTP_SERVER, HIDDEN):
            target = f"/tmp/{unique('sftp-s')}"
            targets.append(target)
            batch = tmp_path / "batch"
            batch.write_text(f"put {local} {target}\n")
            done = _sftp_s(alice, program, batch)
            assert done.returncode == 0, done.stderr
            assert Path(target).read_bytes() == local.read_bytes()
    finally:
        for target in targets:
            Path(target).unlink(missing_ok=True)
    _moved(cluster, "sftp", alice.name, "upload",
           {target: local.read_bytes() for target in targets})
    # A command's exec event follows its session's end, after the transfer's events.
    wait_until(lambda: len(cluster.events_of("exec", user=alice.name)) >= 2, 10, "exec events")
    commands = [e["command"] for e in cluster.events_of("exec", user=alice.name)]
    assert commands == [SFTP_SERVER, HIDDEN]
