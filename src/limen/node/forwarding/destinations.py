"""Which forward destinations a role's allow-list admits, judged by where the node connects.

A role may list destinations instead of allowing every forward:
``port_forwarding: ['10.0.0.0/24:5432', 'db-*.internal:5432', '127.0.0.1:*']``.
Matching the requested text alone would let ``127.0.0.1.evil.example`` pass the pattern
``127.*:5432`` and connect wherever that name resolves. So the node resolves the
requested host first and judges the address it will actually connect to:

- an address pattern (an IP, an IPv4 glob such as ``10.0.0.*``, a CIDR, ``[v6]``) matches
  only the resolved address;
- a name pattern matches the requested name, case-insensitively, label by label: ``*``
  never crosses a dot, so ``db-*.internal`` does not admit ``db-1.internal.evil.example``;
  a name pattern never admits a request made by address;
- ``*`` alone admits any host. The port part is a glob of the port number.

The node then connects to the address that was judged, never resolving again.
"""

from __future__ import annotations

import fnmatch
import ipaddress
from dataclasses import dataclass

_ADDRESS_CHARS = set("0123456789.*?")


@dataclass(frozen=True)
class Destination:
    host: str  # as the client asked for it
    port: int
    address: str  # the resolved address the node would connect to


def split_pattern(pattern: str) -> tuple[str, str]:
    """'host:port', '[v6]:port' -> (host, port glob); a pattern without a port means any."""
    if pattern.startswith("["):
        host, _, rest = pattern[1:].partition("]")
        return host, rest[1:] if rest.startswith(":") else "*"
    host, sep, port = pattern.rpartition(":")
    return (host, port) if sep else (pattern, "*")


def _is_address_pattern(host: str) -> bool:
    if "/" in host or ":" in host:
        return True
    return bool(host) and set(host) <= _ADDRESS_CHARS and any(c.isdigit() for c in host)


def _address_matches(pattern: str, address: str) -> bool:
    try:
        addr = ipaddress.ip_address(address)
    except ValueError:
        return False
    if "/" in pattern:
        try:
            return addr in ipaddress.ip_network(pattern, strict=False)
        except ValueError:
            return False
    try:
        return addr == ipaddress.ip_address(pattern)
    except ValueError:
        return addr.version == 4 and fnmatch.fnmatchcase(str(addr), pattern)


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


def _name_matches(pattern: str, name: str) -> bool:
    if _is_address(name):
        return False
    wanted, given = pattern.lower().rstrip(".").split("."), name.lower().rstrip(".").split(".")
    return len(wanted) == len(given) and all(
        fnmatch.fnmatchcase(label, glob) for glob, label in zip(wanted, given, strict=True)
    )


def pattern_admits(pattern: str, dest: Destination) -> bool:
    host, port = split_pattern(pattern.strip())
    if not fnmatch.fnmatchcase(str(dest.port), port or "*"):
        return False
    if host == "*":
        return True
    if _is_address_pattern(host):
        return _address_matches(host, dest.address)
    return _name_matches(host, dest.host)


def destination_admitted(rule: bool | list[str], dest: Destination) -> bool:
    """Whether ``port_forwarding`` (True, False or a list of patterns) admits ``dest``."""
    if isinstance(rule, bool):
        return rule
    return any(pattern_admits(pattern, dest) for pattern in rule)
