"""Host and port in one string ('host:port', '[v6]:port'): a base helper with no
dependencies, so the client's start-up does not load the config's models to parse one."""

from __future__ import annotations

from limen.errors import BadParameter


def split_host_port(addr: str, default_port: int | None = None) -> tuple[str, int]:
    """'host:port', '[v6]:port' or (with a default port) a bare host."""
    addr = addr.strip()
    if addr.startswith("["):
        host, _, rest = addr[1:].partition("]")
        port_text = rest.lstrip(":")
    elif addr.count(":") == 1:
        host, port_text = addr.split(":")
    else:
        host, port_text = addr, ""
    if not port_text:
        if default_port is None:
            raise BadParameter(f"address {addr!r} needs a port, like host:3080")
        return host, default_port
    try:
        port = int(port_text)
    except ValueError:
        raise BadParameter(f"address {addr!r} has a port that is not a number") from None
    if not 0 <= port <= 65535:
        raise BadParameter(f"address {addr!r} has a port out of range")
    return host, port
