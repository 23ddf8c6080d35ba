"""What a person may type for a proxy, turned into the one form the client uses: HOST:PORT.

Accepted, so that the banner's URL can be pasted as it is:
``https://HOST:PORT[/]``, ``HOST:PORT``, ``HOST`` (port 3080, the proxy's web port),
``[V6]:PORT``, ``[V6]`` and a bare IPv6 address (port 3080; brackets to give a port).
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from limen.errors import BadParameter

DEFAULT_WEB_PORT = 3080
FORMS = "https://HOST:PORT, HOST:PORT or HOST (port 3080)"


def normalize_proxy(text: str) -> str:
    """'HOST:PORT' (IPv6 in brackets) for any accepted form; BadParameter otherwise."""
    raw = text.strip()
    if not raw:
        raise BadParameter(f"the proxy address is empty; give {FORMS}")
    host, port = _from_url(raw) if "://" in raw else _split(raw)
    if not host:
        raise BadParameter(f"{text!r} names no host; give {FORMS}")
    if not 1 <= port <= 65535:
        raise BadParameter(f"{text!r} has port {port}, out of range (1-65535)")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _from_url(raw: str) -> tuple[str, int]:
    url = urlsplit(raw)
    if url.scheme != "https":
        raise BadParameter(f"{raw!r}: the proxy speaks https, not {url.scheme}; give {FORMS}")
    if url.path not in ("", "/") or url.query or url.fragment:
        raise BadParameter(f"{raw!r}: give the proxy's address only, without a path")
    try:
        port = url.port
    except ValueError:
        raise BadParameter(f"{raw!r} has a port that is not a number") from None
    return url.hostname or "", port or DEFAULT_WEB_PORT


def _split(raw: str) -> tuple[str, int]:
    if raw.startswith("["):
        host, sep, rest = raw[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise BadParameter(f"{raw!r} is not an address; give {FORMS}")
        return host, _port(raw, rest[1:]) if rest else DEFAULT_WEB_PORT
    if raw.count(":") > 1:  # a bare IPv6 address: the port needs brackets around it
        try:
            return str(ipaddress.IPv6Address(raw)), DEFAULT_WEB_PORT
        except ValueError:
            raise BadParameter(f"{raw!r} is not an address; an IPv6 address with a port "
                               "is written [ADDRESS]:PORT") from None
    host, sep, port_text = raw.partition(":")
    return host, _port(raw, port_text) if sep else DEFAULT_WEB_PORT


def _port(raw: str, text: str) -> int:
    if not text.isdigit():
        raise BadParameter(f"{raw!r} has a port that is not a number; give {FORMS}")
    return int(text)
