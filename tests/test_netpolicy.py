"""Which addresses a node may advertise: the pure rules under the join and heartbeat
checks and the proxy's dialing (their attack tests are in tests/integration)."""

from __future__ import annotations

from pathlib import Path

import pytest

from limen.config import load_config
from limen.errors import BadParameter
from limen.netpolicy import check_advertised, parse_ip, parse_networks, refusal

LOOPBACK = parse_networks(["127.0.0.0/8"])


@pytest.mark.parametrize(("addr", "kind"), [
    ("127.0.0.1:22", "loopback"),
    ("[::1]:22", "loopback"),
    ("[::ffff:127.0.0.1]:22", "loopback"),  # IPv4-mapped: judged as the IPv4 it is
    ("169.254.169.254:80", "link-local"),
    ("[fe80::1]:22", "link-local"),
    ("0.0.0.0:22", "unspecified"),
    ("0.1.2.3:22", "unspecified"),
    ("[::]:22", "unspecified"),
    ("224.0.0.1:22", "multicast"),
])
def test_addresses_that_reach_the_proxys_own_host_are_refused(addr: str, kind: str) -> None:
    with pytest.raises(BadParameter, match=f"is an? {kind} address"):
        check_advertised(addr, ())


@pytest.mark.parametrize("addr", ["10.1.2.3:3022", "198.51.100.7:22", "[2001:db8::5]:22",
                                  "web-2.internal:3022"])
def test_ordinary_addresses_and_names_are_accepted(addr: str) -> None:
    check_advertised(addr, ())


def test_an_allowed_network_lets_its_addresses_through_and_no_others() -> None:
    check_advertised("127.0.0.1:22", LOOPBACK)
    ip = parse_ip("169.254.1.1")
    assert ip is not None and refusal(ip, LOOPBACK) is not None
    ip6 = parse_ip("::1")
    assert ip6 is not None and refusal(ip6, LOOPBACK) is not None  # v4 networks only


def test_a_port_is_needed_except_while_joining() -> None:
    with pytest.raises(BadParameter, match="needs a host and a port"):
        check_advertised("10.0.0.1:0", ())
    check_advertised("10.0.0.1:0", (), port_known=False)
    with pytest.raises(BadParameter):
        check_advertised("10.0.0.1", ())


def test_networks_in_the_config_must_parse() -> None:
    assert [str(n) for n in parse_networks(["10.0.0.5", "fe80::/10"])] == ["10.0.0.5/32",
                                                                          "fe80::/10"]
    with pytest.raises(BadParameter, match="not a network"):
        parse_networks(["10.0.0.0/33"])


def test_the_config_names_a_bad_network_or_credential_lifetime(tmp_path: Path) -> None:
    path = tmp_path / "limen.yaml"
    path.write_text("proxy:\n  node_networks: [127.0.0.0/8, nowhere]\n")
    with pytest.raises(BadParameter, match=r"proxy\.node_networks.*line 2.*not a network"):
        load_config(path)
    path.write_text("auth:\n  node_credential_ttl: 5m\n")
    with pytest.raises(BadParameter, match=r"auth\.node_credential_ttl.*between 10m and 30d"):
        load_config(path)
    path.write_text("auth:\n  node_credential_ttl: 8h\nproxy:\n  node_networks: [10.9.0.0/16]\n")
    config = load_config(path)
    assert (config.auth.node_credential_ttl, config.proxy.node_networks) == ("8h",
                                                                            ["10.9.0.0/16"])
