"""Which addresses a node may advertise and the proxy may dial.

A node chooses the address it advertises, and the proxy then sends users' connections
there. Addresses that reach the proxy's own host or its neighbours rather than a node
(loopback, link-local such as a cloud metadata service, the unspecified address,
multicast) are refused unless the operator allows a network for nodes
(``proxy.node_networks``), as a one-machine test cluster does for 127.0.0.0/8.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import Iterable

from limen.errors import BadParameter

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# 0.0.0.0/8 is "this host on this network": Linux dials 0.0.0.0 as the local host.
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")


def parse_networks(values: Iterable[str]) -> tuple[IPNetwork, ...]:
    """CIDRs as written in the config ("127.0.0.0/8", "fe80::/10", "10.0.0.5")."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise BadParameter(f"{value!r} is not a network; write it like 10.0.0.0/8") from None
    return tuple(networks)


def parse_ip(host: str) -> IPAddress | None:
    """The address ``host`` names literally (IPv4-mapped IPv6 as IPv4), or None for a name."""
    try:
        addr = ipaddress.ip_address(host.strip().strip("[]").split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def special_kind(addr: IPAddress) -> str | None:
    """Why an address does not name a node elsewhere, or None for an ordinary one."""
    if addr.is_loopback:
        return "a loopback address"
    if addr.is_link_local:
        return "a link-local address"
    if addr.is_unspecified or (isinstance(addr, ipaddress.IPv4Address)
                               and addr in _THIS_NETWORK):
        return "an unspecified address"
    if addr.is_multicast:
        return "a multicast address"
    return None


def refusal(addr: IPAddress, allowed: Iterable[IPNetwork]) -> str | None:
    """Why a node may not be at ``addr`` (None: it may), given the allowed networks."""
    kind = special_kind(addr)
    if kind is None or any(addr in net for net in allowed if net.version == addr.version):
        return None
    return (f"{addr} is {kind}, which reaches the proxy's own host rather than a node; "
            "an operator can allow it with proxy.node_networks")


def check_advertised(addr: str, allowed: Iterable[IPNetwork], port_known: bool = True) -> None:
    """Refuse an advertised HOST:PORT whose host is an address nodes may not have.

    A host name is accepted here: what it resolves to is checked by the proxy when it
    dials, since a name can point elsewhere later. ``port_known=False`` accepts port 0:
    a joining node whose listener is not bound yet tells its port in its heartbeats.
    """
    from limen.config import split_host_port

    host, port = split_host_port(addr)
    if not host or (port == 0 and port_known):
        raise BadParameter(f"the advertised address {addr!r} needs a host and a port")
    ip = parse_ip(host)
    reason = refusal(ip, allowed) if ip is not None else None
    if reason is not None:
        raise BadParameter(f"the advertised address {addr} is refused: {reason}")


def first_address() -> str:
    """The first non-loopback address of this host (127.0.0.1 when it has none)."""
    with contextlib.suppress(OSError):
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            addr = str(info[4][0])
            if not addr.startswith("127."):
                return addr
    return "127.0.0.1"
