"""Bulk data through the proxy: 100 MB arrives intact (sha256) with stock ssh/scp and with
`limen scp`, both directions, and the node's sftp events carry the same digest;
recursive copies; file-copy errors are sentences.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.cluster import ClusterHarness
from tests.support.ssh_access import (
    NODE,
    clean_env,
    new_user,
    random_file,
    sha256_file,
    wait_until,
)

SIZE_MB = 100


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_file(tmp_path_factory.mktemp("big") / "payload.bin", SIZE_MB)


def test_100_mb_through_stock_ssh_and_scp_arrives_intact(
    cluster: ClusterHarness, big_file: Path, tmp_path: Path
) -> None:
    alice = new_user(cluster, "bulk")
    want = sha256_file(big_file)
    remote = f"/tmp/{alice.name}.bin"
    try:
        with big_file.open("rb") as source:  # a pipe into ssh: the proxy's copy loops
            piped = subprocess.run(
                alice.ssh_argv(f"root@{NODE}", f"cat > {remote} && sha256sum {remote}"),
                stdin=source, capture_output=True, env=clean_env(), timeout=90,
            )
        assert piped.returncode == 0, piped.stderr
        assert piped.stdout.split()[0].decode() == want

        back = tmp_path / "back.bin"
        down = alice.tool("scp", f"root@{NODE}:{remote}", str(back), timeout=90)
        assert down.returncode == 0, down.stderr
        assert back.stat().st_size == SIZE_MB << 20
        assert sha256_file(back) == want
    finally:
        alice.ssh(f"root@{NODE}", f"rm -f {remote}")
    assert _transferred(cluster, alice.name, "download", remote) == (SIZE_MB << 20, want)


def test_100_mb_through_limen_scp_both_ways(
    cluster: ClusterHarness, big_file: Path, tmp_path: Path
) -> None:
    alice = new_user(cluster, "lscp")
    want = sha256_file(big_file)
    remote = f"/tmp/{alice.name}.bin"
    try:
        up = alice.limen("scp", str(big_file), f"root@node1:{remote}", timeout=90)
        assert up.returncode == 0, up.stderr
        remote_sum = alice.limen("ssh", "node1", f"sha256sum {remote}")
        assert remote_sum.stdout.split()[0] == want

        back = tmp_path / "back.bin"
        down = alice.limen("scp", f"node1:{remote}", str(back), timeout=90)
        assert down.returncode == 0, down.stderr
        assert sha256_file(back) == want
    finally:
        alice.limen("ssh", "node1", f"rm -f {remote}")
    for action in ("upload", "download"):
        assert _transferred(cluster, alice.name, action, remote) == (SIZE_MB << 20, want)


def _transferred(cluster: ClusterHarness, user: str, action: str, path: str) -> tuple[int, str]:
    """Length and digest of the node's sftp event for one file."""
    event = wait_until(lambda: [e for e in cluster.events_of("sftp", user=user)
                                if e["action"] == action and e["path"] == path], 10,
                       f"the sftp {action} event")[0]
    return event["len"], event["sha256"]


def test_limen_scp_recursive_both_ways(cluster: ClusterHarness, tmp_path: Path) -> None:
    alice = new_user(cluster, "rscp")
    tree = tmp_path / "tree"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "top.txt").write_text("top\n")
    (tree / "a" / "b" / "deep.txt").write_text("deep\n")
    remote = f"/tmp/{alice.name}-tree"
    try:
        flat = alice.limen("scp", str(tree), f"node1:{remote}")
        assert flat.returncode != 0 and "use -r" in flat.stderr

        up = alice.limen("scp", "-r", str(tree), f"node1:{remote}")
        assert up.returncode == 0, up.stderr
        listing = alice.limen("ssh", "node1", f"cd {remote} && find . -type f | sort")
        assert listing.stdout.split() == ["./a/b/deep.txt", "./top.txt"]

        back = tmp_path / "back"
        down = alice.limen("scp", "-r", f"node1:{remote}", str(back))
        assert down.returncode == 0, down.stderr
        assert (back / "a" / "b" / "deep.txt").read_text() == "deep\n"
        assert (back / "top.txt").read_text() == "top\n"
    finally:
        alice.limen("ssh", "node1", f"rm -rf {remote}")


def test_limen_scp_errors_are_sentences(cluster: ClusterHarness, tmp_path: Path) -> None:
    alice = new_user(cluster, "scperr")
    missing = alice.limen("scp", "node1:/no/such/file", str(tmp_path / "x"))
    assert missing.returncode != 0
    assert missing.stderr.startswith("ERROR: ") and "Traceback" not in missing.stderr
    both_local = alice.limen("scp", str(tmp_path / "a"), str(tmp_path / "b"))
    assert both_local.returncode != 0 and "remote" in both_local.stderr
    unknown = alice.limen("scp", str(tmp_path), "nowhere:/tmp/x")
    assert unknown.returncode != 0


def test_git_over_ssh_clones_and_pushes_through_the_proxy(
    cluster: ClusterHarness, tmp_path: Path
) -> None:
    """git runs `git-upload-pack` / `git-receive-pack` as exec sessions: both ways work."""
    alice = new_user(cluster, "gitter")
    remote = f"/tmp/{alice.name}.git"
    env = {**clean_env(), "GIT_SSH_COMMAND": f"ssh -F {alice.config} -o BatchMode=yes",
           "GIT_AUTHOR_NAME": "a", "GIT_AUTHOR_EMAIL": "a@x", "GIT_COMMITTER_NAME": "a",
           "GIT_COMMITTER_EMAIL": "a@x"}

    def git(*args: str, cwd: Path = tmp_path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=60)

    try:
        made = alice.ssh(f"root@{NODE}", f"git init -q --bare {remote}")
        assert made.returncode == 0, made.stderr
        url = f"root@{NODE}:{remote}"
        assert git("clone", "-q", url, "work").returncode == 0
        work = tmp_path / "work"
        (work / "hello.txt").write_text("through limen\n")
        assert git("add", "hello.txt", cwd=work).returncode == 0
        assert git("commit", "-qm", "first", cwd=work).returncode == 0
        pushed = git("push", "-q", "origin", "HEAD", cwd=work)
        assert pushed.returncode == 0, pushed.stderr
        again = git("clone", "-q", url, "again")
        assert again.returncode == 0, again.stderr
        assert (tmp_path / "again" / "hello.txt").read_text() == "through limen\n"
    finally:
        alice.ssh(f"root@{NODE}", f"rm -rf {remote}")
    # Each command's exec event follows its session's end.
    commands = wait_until(
        lambda: [c for e in cluster.events_of("exec", user=alice.name)
                 if "git-" in (c := e["command"])] if len(cluster.events_of(
                     "exec", user=alice.name)) >= 4 else None, 10, "git's exec events")
    assert any("git-receive-pack" in c for c in commands)
    assert any("git-upload-pack" in c for c in commands)
