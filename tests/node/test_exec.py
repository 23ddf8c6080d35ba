"""Commands: exit codes, signals, stdin, large transfers both ways."""

from __future__ import annotations

import hashlib
import os
import pwd
import signal
import subprocess
from pathlib import Path

import pytest

from tests.node.conftest import Node


def test_exit_codes(node: Node) -> None:
    client = node.client()
    ok = client.ssh("echo hello")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == b"hello\n"
    assert client.ssh("exit 3").returncode == 3


def test_signal_exit_is_reported(node: Node) -> None:
    client = node.client()
    result = client.ssh("kill -TERM $$", options=("-o", "LogLevel=DEBUG"))
    assert result.returncode == 255  # what ssh exits with when the remote side got a signal
    assert b"exit-signal" in result.stderr
    event = node.observer.wait_for("exec", lambda f: f["command"] == "kill -TERM $$")
    assert event["exit_signal"] == "TERM"
    assert event["exit_code"] == 128 + 15


def test_stdin_eof_ends_cat(node: Node) -> None:
    result = node.client().ssh("cat; echo done", input=b"line one\nline two\n", timeout=20)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"line one\nline two\ndone\n"


def test_stderr_is_separate(node: Node) -> None:
    result = node.client().ssh("echo out; echo err >&2")
    assert (result.stdout, result.stderr) == (b"out\n", b"err\n")


BIG = 100 * 1024 * 1024


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("big") / "100MB.bin"
    digest = hashlib.sha256()
    with path.open("wb") as out:
        for _ in range(BIG // (4 * 1024 * 1024)):
            chunk = os.urandom(4 * 1024 * 1024)
            digest.update(chunk)
            out.write(chunk)
    return path, digest.hexdigest()


def test_100mb_upload_through_stdin(node: Node, big_file: tuple[Path, str], tmp_path: Path) -> None:
    source, digest = big_file
    target = tmp_path / "uploaded.bin"
    with source.open("rb") as stdin:
        result = node.client().ssh(f"cat > {target} && sha256sum {target}", stdin=stdin)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0].decode() == digest


def test_100mb_download_through_stdout(node: Node, big_file: tuple[Path, str],
                                       tmp_path: Path) -> None:
    source, digest = big_file
    target = tmp_path / "downloaded.bin"
    with target.open("wb") as stdout:
        result = node.client().ssh(f"cat {source}", stdout=stdout)
    assert result.returncode == 0, result.stderr
    assert hashlib.sha256(target.read_bytes()).hexdigest() == digest


def test_environment_allow_list(node_factory) -> None:
    node = node_factory(env_allowlist=["LIMEN_OK_*"])
    result = node.client().ssh(
        'echo "$LANG|$LC_TIME|$LIMEN_OK_X|${FOO-unset}|${LD_PRELOAD-unset}|$USER|$HOME|$SHELL"',
        options=("-o", "SetEnv=LANG=fr_FR.UTF-8 LC_TIME=C FOO=bar LIMEN_OK_X=yes LD_PRELOAD=/x.so"),
    )
    assert result.returncode == 0, result.stderr
    shell = pwd.getpwnam("root").pw_shell
    assert result.stdout.decode().strip() == f"fr_FR.UTF-8|C|yes|unset|unset|root|/root|{shell}"


def test_session_variables(node: Node) -> None:
    result = node.client().ssh('echo "$SSH_CONNECTION|${SSH_TTY-none}|$LIMEN_SESSION_ID|$PATH"')
    connection, tty, sid, path = result.stdout.decode().strip().split("|")
    assert connection.startswith("127.0.0.1 ") and connection.endswith(f" 127.0.0.1 {node.port}")
    assert tty == "none"
    assert sid in {f["sid"] for f in node.observer.named("session.start")}
    assert "/usr/bin" in path


def test_runs_as_the_login_user(node: Node, test_user) -> None:
    client = node.client(login=test_user.pw_name)
    result = client.ssh('id -u; id -g; id -G; echo "$HOME"; pwd; echo "$USER"; touch mine')
    assert result.returncode == 0, result.stderr
    uid, gid, groups, home, cwd, user = result.stdout.decode().split("\n")[:6]
    assert (int(uid), int(gid)) == (test_user.pw_uid, test_user.pw_gid)
    expected_groups = set(os.getgrouplist(test_user.pw_name, test_user.pw_gid))
    assert {int(g) for g in groups.split()} == expected_groups
    assert len(expected_groups) > 1  # the fixture added a supplementary group
    assert home == cwd == test_user.pw_dir
    assert user == test_user.pw_name
    assert os.stat(Path(test_user.pw_dir) / "mine").st_uid == test_user.pw_uid


def test_a_home_the_user_may_not_enter_is_not_entered_for_them(node: Node, test_user) -> None:
    """Root could change into any directory before dropping privileges (the node leaves
    env out where it may, env_free.py): a home whose owner took their own search
    permission away is still refused as the user's own chdir would be, on a pty too."""
    client = node.client(login=test_user.pw_name)
    home = test_user.pw_dir
    before = os.stat(home).st_mode & 0o7777
    os.chmod(home, 0o000)
    try:
        results = [client.ssh("pwd; echo started", options=extra) for extra in ((), ("-tt",))]
    finally:
        os.chmod(home, before)
    for result in results:
        assert result.returncode == 125, result.stdout
        assert b"started" not in result.stdout
        assert b"Permission denied" in result.stdout + result.stderr
    assert client.ssh("pwd").stdout.decode().strip() == home  # and entered once it may


def test_a_session_cannot_take_root_back(node: Node, test_user) -> None:
    """The switch sets the saved ids too and leaves no capability: a user's process that
    asks for uid 0 (or gid 0) again is refused, on a pty as without one."""
    client = node.client(login=test_user.pw_name)
    probe = ("grep -E '^(Uid|Gid|CapPrm|CapEff|CapAmb):' /proc/self/status; "
             "python3 -c 'import os; os.setuid(0)' 2>/dev/null && echo ROOT-AGAIN; "
             "python3 -c 'import os; os.setgid(0)' 2>/dev/null && echo GROUP-ROOT-AGAIN; "
             "echo end")
    for extra in ((), ("-tt",)):
        result = client.ssh(probe, options=extra)
        assert result.returncode == 0, result.stderr
        fields = dict(line.split(":", 1) for line in
                      result.stdout.decode().replace("\r", "").splitlines() if ":" in line)
        assert fields["Uid"].split() == [str(test_user.pw_uid)] * 4  # real, effective, saved, fs
        assert fields["Gid"].split() == [str(test_user.pw_gid)] * 4
        assert {int(fields[cap], 16) for cap in ("CapPrm", "CapEff", "CapAmb")} == {0}
        assert b"AGAIN" not in result.stdout and b"end" in result.stdout


def test_unknown_local_user_is_a_clear_error(node: Node) -> None:
    result = node.client(node.creds(principals=("nobody-here",)), login="nobody-here").ssh("true")
    assert result.returncode == 1
    assert b"there is no local user 'nobody-here'" in result.stderr


def test_child_signal_dispositions_are_default(node: Node) -> None:
    # A node started from a non-interactive shell inherits ignored SIGINT/SIGQUIT;
    # its sessions must not. Python itself ignores SIGPIPE.
    old = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGQUIT)}
    try:
        result = node.client().ssh("grep -E '^Sig(Ign|Blk)' /proc/self/status")
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().split() == ["SigBlk:", "0" * 16, "SigIgn:", "0" * 16]


def test_twenty_concurrent_sessions(node: Node) -> None:
    client = node.client()
    procs = [
        subprocess.Popen(client.ssh_argv("--", f"sleep 0.5; echo session-{i}"),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for i in range(20)
    ]
    outputs = [proc.communicate(timeout=60) for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * 20, [err for _, err in outputs]
    assert [out for out, _ in outputs] == [f"session-{i}\n".encode() for i in range(20)]
    assert len(node.observer.named("session.start")) == 20
