"""The `limen` command's shell front (cli/launcher.sh) against the Python reader of the
same memo (client/openssh_fast.py).

The front is a second reader, so it is held to the first: it becomes ssh only where
planned_argv would, with the very same arguments, and hands everything else to Python
with the words unchanged. Each case runs the written launcher under /bin/sh, with a
stand-in ssh that prints its argv and a stand-in Python that prints the words it got.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from limen import __version__
from limen.cli import launcher
from limen.client import openssh_fast
from tests.support.memo_home import Home

pytestmark = pytest.mark.timeout(120)

DEFERRED = "DEFERRED"


@dataclass
class Outcome:
    ssh: list[str] | None  # the stand-in ssh's argv, when the front became ssh
    python: list[str] | None  # the words Python got after `limen`, when it deferred


class Front:
    """The launcher written for this home, its Python a stand-in that prints the words."""

    def __init__(self, home: Home, root: Path, shell: str = "") -> None:
        self.home = home
        self.shell = [shell] if shell else []  # "": the #! line's /bin/sh
        python = root / "python"
        python.write_text(f'#!/bin/sh\nprintf "%s\\n" {DEFERRED}\nprintf "%s\\0" "$@"\n')
        python.chmod(0o755)
        self.path = root / "limen"
        launcher.install(str(self.path), str(python))

    def run(self, *words: str, **env: str) -> Outcome:
        done = subprocess.run([*self.shell, str(self.path), "ssh", *words], capture_output=True,
                              timeout=30, env={**self.home.env, **env})
        assert done.returncode == 0, done.stderr
        out = done.stdout.decode()
        if out.startswith(DEFERRED + "\n"):
            python_words = out[len(DEFERRED) + 1:].split("\0")[:-1]
            assert python_words[:3] == ["-P", "-S", "-c"]
            return Outcome(None, python_words[5:])
        return Outcome(json.loads(out), None)

    def agrees(self, *words: str, **env: str) -> Outcome:
        """Run the front; where it became ssh, Python's reader gives the same argv."""
        outcome = self.run(*words, **env)
        if outcome.ssh is not None:
            assert outcome.ssh == self.home.plan(*words, **env), words
        else:
            assert outcome.python == ["ssh", *words]
        return outcome


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home(tmp_path)


@pytest.fixture(params=["", "/bin/bash"])
def front(home: Home, tmp_path: Path, request: pytest.FixtureRequest) -> Front:
    """Debian's /bin/sh (dash), and bash, which is /bin/sh elsewhere."""
    return Front(home, tmp_path, request.param)


@pytest.mark.parametrize("words", [
    ["web1", "true"],
    ["root@web1"],
    ["root@web1.c.example", "echo", "-n", "hi;", "exit 4"],
    ["web1", ""],
    ["web1", "ls", "-la", "--", "$(touch x)"],
])
def test_the_plain_shape_becomes_ssh_with_the_full_paths_arguments(
        front: Front, home: Home, words: list[str]) -> None:
    expected = home.full_path(*words)
    assert front.run(*words).ssh == expected
    assert home.plan(*words) == expected


def test_the_default_login_is_the_local_user_when_allowed_else_the_first(
        front: Front, home: Home) -> None:
    for user in ("alice", "nobody"):
        expected = home.full_path("web1", "true", USER=user, LOGNAME=user)
        assert front.run("web1", "true", USER=user, LOGNAME=user).ssh == expected
    assert front.run("web1", "true", USER="", LOGNAME="").python is not None  # pwd's


@pytest.mark.parametrize("words", [
    ["-t", "web1"],  # options: Python parses them
    ["web1", "-t", "top"],
    ["-l", "root", "web1"],
    ["Web1", "true"],  # upper case: the suffix is matched without case
    ["@web1", "true"],
    ["--", "web1", "true"],
    ["env=dev", "uptime"],
    ["x ProxyCommand touch y", "true"],
    ["web1;touch y", "true"],
    ["a@b@web1", "true"],
    ["nobody@web1", "true"],
    ["alice@web1", "true"],  # allowed, but the config was written for root
    ["web1\u00e9", "true"],
])
def test_any_other_shape_reaches_python_unchanged(
        front: Front, home: Home, words: list[str]) -> None:
    home.full_path("root@web1", "true")
    assert front.run("root@web1", "true").ssh is not None
    assert front.run(*words).python == ["ssh", *words]


def test_the_clock_is_checked_against_the_validity(front: Front, home: Home) -> None:
    """The memo's validity, edited (the memo is not among the files it names): the
    front reads the clock as the Python reader does."""
    expected = home.full_path("web1", "true")
    memo = home.memo.read_text()
    valid = next(line for line in memo.splitlines() if line.startswith("valid "))
    now = int(time.time())
    for after, before, ok in ((now - 60, now + 60, True), (now - 60, now - 1, False),
                              (now + 60, now + 120, False), (now - 60, "x", False)):
        home.memo.write_text(memo.replace(valid, f"valid {after} {before}"))
        outcome = front.agrees("web1", "true")
        assert outcome.ssh == (expected if ok else None), (after, before)

    home.memo.write_text(memo)
    tomorrow = now + 86400  # a file from the future: the clock is behind it, not trusted
    os.utime(home.keys / "openssh_known_hosts", (tomorrow, tomorrow))
    identity = openssh_fast.file_identity(str(home.keys / "openssh_known_hosts"))
    home.memo.write_text("".join(
        f"file {identity} {line.split(' ', 4)[4]}\n" if line.endswith("openssh_known_hosts")
        else line + "\n" for line in memo.splitlines()))
    assert home.plan("web1", "true") == expected
    assert front.run("web1", "true").python is not None


def test_anything_changed_since_the_memo_reaches_python(front: Front, home: Home) -> None:
    expected = home.full_path("web1", "true")
    assert front.run("web1", "true").ssh == expected
    for env in ({"LIMEN_SSH_CLIENT": "native"}, {"LIMEN_SSH_CLIENT": "openssh"},
                {"LIMEN_HOME": f"{home.dir}/./"}, {"LIMEN_HOME": f"{home.dir}/"},
                {"LIMEN_HOME": f"{home.dir}/../home"}, {"PATH": f".:{home.env['PATH']}"},
                {"PATH": f"{home.env['PATH']}:"}, {"PATH": "/nonexistent"}):
        assert front.run("web1", "true", **env).python is not None, env

    for changed in (home.cert, home.keys / "profile.json", home.keys / "openssh_config",
                    home.keys / "openssh_known_hosts"):
        home.full_path("web1", "true")
        changed.write_bytes(changed.read_bytes())  # the same bytes, a new file
        assert front.run("web1", "true").python is not None, changed.name

    home.full_path("web1", "true")
    memo = home.memo.read_text()
    marker = home.dir / "current-profile"
    proxy = marker.read_text()
    for damaged in (memo.replace(__version__, __version__ + ".1"),  # another version's
                    memo.replace("principal alice\n", ""), memo.rstrip("\n"),
                    memo + "extension caf\u00e9\n", "", memo.replace("\nfile ", "\nfile x", 1)):
        home.memo.write_text(damaged)
        assert front.run("web1", "true").python is not None, damaged
    home.memo.write_text(memo)
    assert front.run("web1", "true").ssh == expected
    for other in (proxy + "other\n", proxy.rstrip("\n"), " " + proxy):
        marker.write_text(other)
        assert front.run("web1", "true").python is not None, other


def test_a_memo_that_holds_shell_syntax_is_only_data(front: Front, home: Home) -> None:
    """The user's own file, but read by a shell: nothing in it runs."""
    home.full_path("web1", "true")
    ran = home.root / "ran"
    memo = home.memo.read_text()
    config = next(line for line in memo.splitlines() if line.startswith("config "))
    odd = f"config $(touch {ran})`touch {ran}`;touch {ran} '\"*"
    home.memo.write_text(memo.replace(config, odd).replace("cluster c.example",
                                                           "cluster c.example;x"))
    assert front.agrees("web1", "true").python is not None  # the cluster: not plain
    home.memo.write_text(memo.replace(config, odd))
    argv = front.agrees("web1", "true").ssh
    assert argv is not None and argv[argv.index("-F") + 1] == odd.removeprefix("config ")
    assert not ran.exists()


WORD = st.sampled_from(["web1", "root@web1", "alice@web1", "web1.c.example", "Web1", "-t",
                        "-T", "-l", "root", "--", "-", "", "true", "a b", "x@", "@web1",
                        "db.c.example", "nobody@db", "*", "$HOME", "caf\u00e9"])


def test_the_front_never_says_yes_where_python_would_not(front: Front, home: Home) -> None:
    home.full_path("web1", "true")

    @settings(max_examples=150, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(words=st.lists(WORD, max_size=5), user=st.sampled_from(["alice", "root", "x"]))
    def check(words: Sequence[str], user: str) -> None:
        front.agrees(*words, USER=user, LOGNAME=user)

    check()


def test_the_written_front_runs_python_wherever_it_lives(tmp_path: Path) -> None:
    """A path with a space and a quote is one word to the shell."""
    odd = tmp_path / "my python's dir"
    odd.mkdir()
    python = odd / "python"
    python.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    python.chmod(0o755)
    path = tmp_path / "limen"
    launcher.install(str(path), str(python))
    assert path.read_text().startswith("#!/bin/sh\n")
    assert os.stat(path).st_mode & 0o777 == 0o755
    done = subprocess.run([str(path), "get", "it's", "*"], capture_output=True, text=True,
                          timeout=30, env={"PATH": "/usr/bin:/bin"})
    lines = done.stdout.splitlines()
    assert lines[:3] == ["-P", "-S", "-c"]
    assert lines[-3:] == ["get", "it's", "*"]
