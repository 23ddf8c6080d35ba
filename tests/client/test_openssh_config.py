"""`limen config`'s block (and `limen ssh`'s, which is the same) for the proxy addresses
a login may store: a name, an IPv4 and an IPv6 address."""

from __future__ import annotations

from pathlib import Path

import pytest

from limen.client.openssh import config_block
from limen.client.profile import Profile

pytestmark = pytest.mark.timeout(30)


def _profile(ssh_proxy: str) -> Profile:
    return Profile(proxy="proxy.example:3080", cluster="c.example", user="alice",
                   logins=["root"], ssh_proxy=ssh_proxy)


@pytest.mark.parametrize(("ssh_proxy", "host", "jump"), [
    ("proxy.example:3023", "proxy.example", "root@proxy.example:3023"),
    ("127.0.0.1:3023", "127.0.0.1", "root@127.0.0.1:3023"),
    ("[::1]:3023", "::1", "root@[::1]:3023"),
])
def test_the_jump_names_the_proxy_so_that_ssh_can_parse_it(
    ssh_proxy: str, host: str, jump: str
) -> None:
    text = config_block(_profile(ssh_proxy), "root")
    assert f"Host *.c.example {host}\n" in text
    assert f"Host *.c.example !{host}\n    ProxyJump {jump}\n" in text


def test_a_known_hosts_file_of_the_callers_choice_replaces_the_shared_one(
    tmp_path: Path,
) -> None:
    text = config_block(_profile("127.0.0.1:3023"), "root", known_hosts=tmp_path / "kh")
    assert f'UserKnownHostsFile "{tmp_path / "kh"}"' in text
