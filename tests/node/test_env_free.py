"""When a session's process starts without ``env`` (node/process/env_free.py): only when
no signal would reach it ignored and the user could enter the directory themself. Real
directories, modes and signal dispositions; the through-the-node cases are in
test_exec.py."""

from __future__ import annotations

import os
import pwd
import signal
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from limen.node.process import env_free
from limen.node.process.executor import ProcessSpec, launcher, needs_env, spawn
from limen.node.process.users import lookup_user


@contextmanager
def no_signal_ignored() -> Iterator[None]:
    """Catch, for the test, any signal this process ignores (as `limen start` does with
    SIGQUIT): the suite may run in the background of a shell that ignores some."""
    ignored = [sig for sig in signal.valid_signals()
               if sig not in (signal.SIGKILL, signal.SIGSTOP)
               and signal.getsignal(sig) == signal.SIG_IGN
               and sig not in (signal.SIGPIPE, signal.SIGXFSZ)]
    for sig in ignored:
        signal.signal(sig, lambda *_: None)
    try:
        yield
    finally:
        for sig in ignored:
            signal.signal(sig, signal.SIG_IGN)


@contextmanager
def mode(path: str, bits: int) -> Iterator[None]:
    before = os.stat(path).st_mode & 0o7777
    os.chmod(path, bits)
    try:
        yield
    finally:
        os.chmod(path, before)


def _spec(user: pwd.struct_passwd, cwd: str) -> ProcessSpec:
    """As the node's session planning makes it (its worker thread checks the directory)."""
    local = lookup_user(user.pw_name)
    return ProcessSpec(local, ("/bin/true",), {}, cwd,
                       may_enter_cwd=env_free.user_may_enter(cwd, local))


def test_a_signal_ignored_here_is_reported_but_not_those_subprocess_restores() -> None:
    sigint = 1 << (signal.SIGINT - 1)
    with no_signal_ignored():
        assert env_free.ignored_signals() == 0  # SIGPIPE is ignored by Python, and restored
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            assert env_free.ignored_signals() == sigint
        finally:
            signal.signal(signal.SIGINT, old)
        assert env_free.ignored_signals() == 0


def test_the_user_may_enter_their_home_unless_its_mode_or_a_parent_says_no(
    test_user: pwd.struct_passwd, tmp_path: Path,
) -> None:
    user = lookup_user(test_user.pw_name)
    home = test_user.pw_dir
    with mode(home, 0o700):
        assert env_free.user_may_enter(home, user)
    with mode(home, 0o100):  # search alone is enough to change into it
        assert env_free.user_may_enter(home, user)
    with mode(home, 0o077):  # the owner's bits count for the owner, not the others'
        assert not env_free.user_may_enter(home, user)
    with mode(os.path.dirname(home), 0o700):  # /home, root's alone
        assert not env_free.user_may_enter(home, user)
    os.chmod(tmp_path, 0o777)
    with mode(str(tmp_path.parent), 0o700):  # pytest's root-owned directory above it
        assert not env_free.user_may_enter(str(tmp_path), user)
    assert env_free.user_may_enter(str(tmp_path), lookup_user("root"))
    assert not env_free.user_may_enter(str(tmp_path / "missing"), user)


def test_a_home_behind_a_symbolic_link_or_relative_goes_the_slow_way(
    test_user: pwd.struct_passwd,
) -> None:
    user = lookup_user(test_user.pw_name)
    link = f"/tmp/limen-home-link-{uuid.uuid4().hex[:8]}"
    os.symlink(test_user.pw_dir, link)
    try:
        assert env_free.user_may_enter(test_user.pw_dir, user)
        assert not env_free.user_may_enter(link, user)  # the kernel would walk the link
    finally:
        os.unlink(link)
    assert not env_free.user_may_enter("home", user)


def test_env_is_left_out_only_when_neither_of_its_jobs_is_needed(
    test_user: pwd.struct_passwd,
) -> None:
    spec = _spec(test_user, test_user.pw_dir)
    with no_signal_ignored():
        assert not needs_env(spec)
        assert "env" not in {os.path.basename(word) for word in launcher(spec, with_env=False)}
        old = signal.signal(signal.SIGQUIT, signal.SIG_IGN)
        try:
            assert needs_env(spec)  # the shell would start with SIGQUIT ignored
        finally:
            signal.signal(signal.SIGQUIT, old)
        with mode(test_user.pw_dir, 0o000):
            assert needs_env(_spec(test_user, test_user.pw_dir))  # root could; the user not
        assert needs_env(replace(spec, may_enter_cwd=False))  # not known: env decides
    words = launcher(spec)
    assert words[words.index(next(w for w in words if w.endswith("/env"))) + 1:][:3] == [
        "--default-signal", "-C", test_user.pw_dir]


async def test_a_directory_root_cannot_enter_after_all_is_left_to_env(
    test_user: pwd.struct_passwd,
) -> None:
    """Checked enterable, then not there when the process starts (removed meanwhile; a
    network file system refusing root): the start goes the slow way, and env, changing
    directory as the user, says why the session cannot start there."""
    gone = f"/tmp/limen-gone-{uuid.uuid4().hex[:8]}"
    spec = ProcessSpec(lookup_user(test_user.pw_name), ("/bin/echo", "started"), {}, gone,
                       may_enter_cwd=True)
    with no_signal_ignored():
        assert not needs_env(spec)  # the quick way is tried first
        child = await spawn(spec)
        try:
            status = await child.wait()
            out = await child.stdout.read(4096)
            err = await child.stderr.read(4096) if child.stderr is not None else b""
        finally:
            child.close()
    assert status.code == 125
    assert b"started" not in out and b"cannot change directory" in err
