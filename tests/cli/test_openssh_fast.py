"""`limen ssh NODE` from the memo of its last hand-over (client/openssh_fast.py).

The fast path must give ssh exactly the arguments the full path gives, and must leave
to the full path everything it cannot vouch for: a changed file, a certificate out of
its validity, a login or option the certificate does not permit, words it does not
know. Each case here runs the real command: once with no memo (the full path, which
writes one), then once from the memo, and compares what a stand-in ssh received.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from limen import __version__
from tests.support.importtime import imported_modules
from tests.support.memo_home import Home

pytestmark = pytest.mark.timeout(60)

@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home(tmp_path)


@pytest.mark.parametrize("words", [
    ["web1", "true"],
    ["root@web1"],
    ["-t", "web1"],
    ["-t", "-t", "web1", "top"],
    ["web1", "-t", "-l", "root", "ls", "-la"],
    ["-l", "root", "alice@web1", "true"],
    ["-L", "8080:127.0.0.1:80", "-N", "web1"],
    ["-A", "-T", "root@web1.c.example", "echo", "-n", "hi;", "exit 4"],
    ["web1", "ls", "-t", "--", "x"],
    ["web1", ""],
])
def test_the_memo_gives_ssh_what_the_full_path_gives(home: Home, words: list[str]) -> None:
    expected = home.full_path(*words)
    assert home.memo.exists()
    assert home.plan(*words) == expected
    again = home.run(*words)
    assert json.loads(again.stdout) == expected
    imported = set(imported_modules(again.stderr))
    assert not imported & {"argparse", "pathlib", "json", "re", "limen.client.profile"}


def test_the_default_login_is_the_local_user_when_allowed_else_the_first(home: Home) -> None:
    for user in ("alice", "nobody"):
        expected = home.full_path("web1", "true", USER=user, LOGNAME=user)
        assert expected[expected.index("-l") + 1] == ("alice" if user == "alice" else "root")
        assert home.plan("web1", "true", USER=user, LOGNAME=user) == expected


@pytest.mark.parametrize("words", [
    ["env=dev", "uptime"],  # a label selector: the asyncssh client
    ["--", "web1", "true"],
    ["-tt", "web1"],
    ["-lroot", "web1"],
    ["-x", "web1"],
    ["--help"],
    ["-l"],
    [],
    ["x ProxyCommand touch y", "true"],
    ["-oProxyCommand=y", "true"],
    ["a@b@web1", "true"],
    ["nobody@web1", "true"],  # not a principal: the full path says so in words
    ["alice@web1", "true"],  # allowed, but the config was written for root
])
def test_words_the_fast_path_does_not_vouch_for_go_to_the_full_path(
        home: Home, words: list[str]) -> None:
    home.full_path("root@web1", "true")
    assert home.plan("root@web1", "true") is not None
    assert home.plan(*words) is None


def test_anything_changed_since_the_memo_goes_to_the_full_path(home: Home) -> None:
    expected = home.full_path("web1", "true")
    valid_before = int(home.valid_before.timestamp())
    assert home.plan("web1", "true", now=valid_before - 1) == expected
    assert home.plan("web1", "true", now=valid_before) is None  # expired
    assert home.plan("web1", "true", now=time.time() - 3600) is None  # not yet valid
    assert home.plan("web1", "true", LIMEN_SSH_CLIENT="native") is None
    assert home.plan("-A", "web1", "true", SSH_AUTH_SOCK="") is None
    assert home.plan("web1", "true", PATH="/nonexistent") is None
    assert home.plan("web1", "true", LIMEN_HOME=f"{home.dir}/./") == expected
    assert home.plan("web1", "true", LIMEN_HOME=f"{home.dir}/../home") is None

    for changed in (home.cert, home.keys / "profile.json", home.keys / "openssh_config",
                    home.keys / "openssh_known_hosts"):
        home.full_path("web1", "true")
        changed.write_bytes(changed.read_bytes())  # the same bytes, a new file
        assert home.plan("web1", "true") is None, changed.name

    home.full_path("web1", "true")
    memo = home.memo.read_text()
    home.memo.write_text(memo.replace(__version__, __version__ + ".1"))
    assert home.plan("web1", "true") is None  # another version wrote it
    home.memo.write_text(memo.replace("principal alice\n", ""))
    assert home.plan("web1", "true") is None  # damaged
    home.memo.write_text("")
    assert home.plan("web1", "true") is None


def test_forwarding_the_certificate_does_not_permit_goes_to_the_full_path(home: Home) -> None:
    home.sign(permit_port_forwarding=False, permit_agent_forwarding=False)
    home.full_path("web1", "true")
    assert home.plan("web1", "true") is not None
    assert home.plan("-L", "8080:127.0.0.1:80", "web1") is None
    assert home.plan("-A", "web1", "true") is None
    refused = home.run("-L", "8080:127.0.0.1:80", "web1")
    assert refused.returncode == 255 and "port forwarding (-L) is not allowed" in refused.stderr


def test_the_memo_is_private_and_goes_with_logout(home: Home) -> None:
    home.full_path("web1", "true")
    assert home.memo.stat().st_mode & 0o777 == 0o600
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LIMEN_HOME", str(home.dir))
        home.profile.remove_credentials()
    assert not home.memo.exists()
