"""File copy: sftp (the stock sftp-server, run as the login) and scp, both protocols."""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from pathlib import Path

import pytest

from tests.node.conftest import Node


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
    size = payload.stat().st_size
    upload = node.observer.wait_for("sftp", lambda f: f["action"] == "upload")
    assert (upload["path"], upload["len"]) == (str(remote), size)
    download = node.observer.wait_for("sftp", lambda f: f["action"] == "download")
    assert (download["path"], download["len"]) == (str(remote), size)
    assert upload["sid"] == download["sid"]


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
    size = payload.stat().st_size
    upload = node.observer.wait_for("scp", lambda f: f["action"] == "upload")
    assert upload["path"] == str(remote) and upload["len"] >= size
    download = node.observer.wait_for("scp", lambda f: f["action"] == "download")
    assert download["path"] == str(remote) and download["len"] >= size


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
    assert len(node.observer.named("session.rejected")) >= 2
    assert client.ssh("echo shell-still-works").stdout == b"shell-still-works\n"
