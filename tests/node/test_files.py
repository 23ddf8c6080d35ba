"""File copy: sftp (the stock sftp-server, run as the login) and scp, both protocols,
audited from the protocol (digests of the bytes sent) and recorded as byte counts; a
session that cannot be recorded never starts when the permit says strict."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import uuid
from pathlib import Path

import pytest

from limen.node import CertPolicy, SessionPermit, UserIdentity
from tests.node.conftest import Node

SFTP_SERVER = "/usr/lib/openssh/sftp-server"


@pytest.fixture
def payload(tmp_path: Path) -> Path:
    path = tmp_path / "payload.bin"
    path.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_sftp_put_and_get(node: Node, payload: Path, tmp_path: Path) -> None:
    remote, back = tmp_path / "remote.bin", tmp_path / "back.bin"
    result = node.client().sftp(f"put {payload} {remote}\nget {remote} {back}\n")
    assert result.returncode == 0, result.stderr
    assert digest(remote) == digest(back) == digest(payload)
    size, want = payload.stat().st_size, digest(payload)
    upload = node.observer.wait_for("sftp", lambda f: f["action"] == "upload")
    assert (upload["path"], upload["len"], upload["sha256"]) == (str(remote), size, want)
    download = node.observer.wait_for("sftp", lambda f: f["action"] == "download")
    assert (download["path"], download["len"], download["sha256"]) == (str(remote), size, want)
    assert upload["sid"] == download["sid"] and upload["success"] and download["success"]
    # The session was recorded too: everything it printed, as a transfer's byte count.
    sid = upload["sid"]
    assert sid in node.observer.recordings and node.observer.streams[sid] == {"transfer"}
    assert len(node.observer.output[sid]) > size


def test_sftp_runs_with_the_login_permissions(node: Node, payload: Path, test_user) -> None:
    client = node.client(login=test_user.pw_name)
    workdir = f"sftp-{uuid.uuid4().hex[:8]}"  # in the user's home, which outlives the test
    try:
        result = client.sftp(f"put {payload} mine.bin\n-put {payload} /root/not-yours.bin\n"
                             f"mkdir {workdir}\nrename mine.bin {workdir}/moved.bin\n")
        assert result.returncode == 0, result.stderr
        assert b"Permission denied" in result.stderr
        moved = Path(test_user.pw_dir) / workdir / "moved.bin"
        assert moved.stat().st_uid == test_user.pw_uid
        assert not Path("/root/not-yours.bin").exists()
    finally:
        shutil.rmtree(Path(test_user.pw_dir) / workdir, ignore_errors=True)
    rename = node.observer.wait_for("sftp", lambda f: f["action"] == "rename")
    assert rename["target"] == str(moved)
    node.observer.wait_for("sftp", lambda f: f["action"] == "mkdir")


def test_scp_both_directions(node: Node, payload: Path, tmp_path: Path) -> None:
    client = node.client()
    remote, back = tmp_path / "scp-remote.bin", tmp_path / "scp-back.bin"
    assert client.scp(str(payload), client.remote(str(remote))).returncode == 0
    assert client.scp(client.remote(str(remote)), str(back)).returncode == 0
    assert digest(remote) == digest(back) == digest(payload)
    node.observer.wait_for("sftp", lambda f: f["action"] == "upload")  # modern scp is SFTP


def test_legacy_scp_both_directions(node: Node, payload: Path, tmp_path: Path) -> None:
    client = node.client()
    remote, back = tmp_path / "legacy-remote.bin", tmp_path / "legacy-back.bin"
    up = client.scp(str(payload), client.remote(str(remote)), legacy=True)
    assert up.returncode == 0, up.stderr
    down = client.scp(client.remote(str(remote)), str(back), legacy=True)
    assert down.returncode == 0, down.stderr
    assert digest(remote) == digest(back) == digest(payload)
    size, want = payload.stat().st_size, digest(payload)
    upload = node.observer.wait_for("scp", lambda f: f["action"] == "upload")
    assert (upload["path"], upload["len"], upload["sha256"]) == (str(remote), size, want)
    download = node.observer.wait_for("scp", lambda f: f["action"] == "download")
    assert (download["path"], download["len"], download["sha256"]) == (str(remote), size, want)
    assert upload["mode"] == f"{payload.stat().st_mode & 0o7777:04o}"
    assert node.observer.named("exec") == []  # scp itself ran, not a shell
    assert node.observer.streams[upload["sid"]] == {"transfer"}


def test_file_copy_can_be_forbidden(node_factory, payload: Path, tmp_path: Path) -> None:
    from limen.node import CertPolicy

    node = node_factory(lambda clock: CertPolicy(file_copy=False, clock=clock))
    client = node.client()
    sftp = client.sftp(f"put {payload} {tmp_path / 'x'}\n")
    assert sftp.returncode != 0
    legacy = client.scp(str(payload), client.remote(str(tmp_path / "y")), legacy=True)
    assert legacy.returncode != 0
    assert b"file copy (scp and sftp) is not allowed" in legacy.stderr
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    direct = client.ssh(SFTP_SERVER, input=b"")
    assert direct.returncode != 0 and b"file copy (scp and sftp) is not allowed" in direct.stderr
    # A name the command line hides: the SFTP at the start of its input gives it away.
    hidden = client.sftp(f"put {payload} {tmp_path / 'z'}\n",
                         options=("-s", "p=/usr/lib/openssh/sftp-; exec ${p}server"))
    assert hidden.returncode != 0 and b"file copy (scp and sftp) is not allowed" in hidden.stderr
    assert not (tmp_path / "z").exists()
    assert len(node.observer.named("session.rejected")) >= 4
    assert node.observer.named("sftp") == [] and node.observer.named("scp") == []
    assert client.ssh("echo shell-still-works").stdout == b"shell-still-works\n"


class StrictPolicy(CertPolicy):
    def permit_for(self, identity: UserIdentity) -> SessionPermit:
        return dataclasses.replace(super().permit_for(identity), record="strict")


def test_a_session_that_cannot_be_recorded_never_starts_when_strict(
    node_factory, tmp_path: Path
) -> None:
    node = node_factory(lambda clock: StrictPolicy(clock=clock))
    node.observer.unrecordable = "the recording could not be opened (disk full)"
    witness = tmp_path / "ran"
    refused = node.client().ssh(f"touch {witness}")
    assert refused.returncode != 0 and b"cannot be recorded" in refused.stderr
    assert not witness.exists()
    rejected = node.observer.wait_for("session.rejected")
    assert "record_session: strict" in rejected["reason"] and rejected["command"]
    assert node.observer.named("session.start") == []
    node.observer.unrecordable = None
    assert node.client().ssh(f"touch {witness}").returncode == 0 and witness.exists()
