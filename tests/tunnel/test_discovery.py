"""Where an agent dials, from the proxy's ping."""

from __future__ import annotations

import pytest

from limen.errors import ConnectionProblem
from limen.tunnel.discovery import choose_host, target_from_ping
from tests.tunnel.kit import new_key


@pytest.mark.parametrize(("published", "proxy_host", "expected"), [
    ("198.18.0.1", "198.18.0.1", "198.18.0.1"),
    ("127.0.0.1", "proxy.example.com", "proxy.example.com"),  # only the proxy's own view
    ("0.0.0.0", "10.1.2.3", "10.1.2.3"),
    ("::", "10.1.2.3", "10.1.2.3"),
    ("tunnels.example.com", "proxy.example.com", "tunnels.example.com"),  # public_addr
    ("192.0.2.7", "proxy.example.com", "192.0.2.7"),
])
def test_the_agent_dials_what_the_proxy_publishes_unless_it_is_local_only(
    published: str, proxy_host: str, expected: str
) -> None:
    assert choose_host(published, proxy_host) == expected


def test_a_ping_becomes_a_target_with_the_pinned_key_and_tls_when_multiplexed() -> None:
    key = new_key().convert_to_public()
    line = key.export_public_key("openssh").decode()
    plain = target_from_ping({"tunnel_addr": "127.0.0.1:3024", "tunnel_host_key": line},
                             "proxy.example.com:3080", "CA PEM")
    assert (plain.host, plain.port, plain.tls_ca) == ("proxy.example.com", 3024, None)
    assert plain.host_key is not None and plain.host_key.public_data == key.public_data
    muxed = target_from_ping({"tunnel_addr": "0.0.0.0:3080", "tunnel_tls": True},
                             "proxy.example.com:3080", "CA PEM")
    assert (muxed.port, muxed.tls_ca, muxed.host_key) == (3080, "CA PEM", None)


def test_a_proxy_without_a_tunnel_server_is_a_clear_error() -> None:
    with pytest.raises(ConnectionProblem, match="runs no tunnel server.*--advertise-addr"):
        target_from_ping({"cluster": "x"}, "proxy.example.com:3080")
