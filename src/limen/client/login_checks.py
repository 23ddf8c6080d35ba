"""What a login's certificate allows, read without asyncssh: the checks `limen ssh` makes
before a packet leaves.

asyncssh and cryptography take about 300 ms to import here, longer than a whole stock
`ssh` through the proxy; `limen ssh` hands a single node to OpenSSH's ssh when it can
(client/openssh_exec.py), so it needs the certificate's principals, validity and
extensions without them. The certificate format (PROTOCOL.certkeys in OpenSSH) is a
short run of length-prefixed fields, read here by hand rather than by a library because
the one library that reads it is the import we are avoiding. Nothing here verifies a
signature: the proxy and the node do; this only explains the common mistakes early.
"""

from __future__ import annotations

import base64
import os
import struct
import time
from collections.abc import Callable
from pathlib import Path

from limen.client.openssh_fast import default_login
from limen.errors import AccessDenied, BadParameter

RELOGIN = "run limen login"

# How many public-key fields sit between a certificate's nonce and its serial number.
_KEY_FIELDS = {
    "ssh-ed25519-cert-v01@openssh.com": 1,
    "ecdsa-sha2-nistp256-cert-v01@openssh.com": 2,
    "ecdsa-sha2-nistp384-cert-v01@openssh.com": 2,
    "ecdsa-sha2-nistp521-cert-v01@openssh.com": 2,
    "ssh-rsa-cert-v01@openssh.com": 2,
    "sk-ssh-ed25519-cert-v01@openssh.com": 2,
    "sk-ecdsa-sha2-nistp256-cert-v01@openssh.com": 3,
}


class CertFields:
    """(A plain class: dataclasses would cost `limen ssh` ~9 ms of imports; see profile.)"""

    __slots__ = ("principals", "valid_after", "valid_before", "extensions")

    def __init__(self, principals: tuple[str, ...], valid_after: int, valid_before: int,
                 extensions: frozenset[str]) -> None:
        self.principals = principals
        self.valid_after = valid_after  # seconds since the epoch
        self.valid_before = valid_before
        self.extensions = extensions

    def permits(self, extension: str) -> bool:
        return extension in self.extensions


class _Reader:
    def __init__(self, blob: bytes) -> None:
        self._blob, self._at = blob, 0

    def take(self, size: int) -> bytes:
        if self._at + size > len(self._blob):
            raise ValueError("the certificate is truncated")
        chunk = self._blob[self._at:self._at + size]
        self._at += size
        return chunk

    def string(self) -> bytes:
        return self.take(struct.unpack(">I", self.take(4))[0])

    def uint64(self) -> int:
        return int(struct.unpack(">Q", self.take(8))[0])

    def at_end(self) -> bool:
        return self._at == len(self._blob)


def _strings(packed: bytes) -> list[bytes]:
    """The strings packed in one string: principals, or extensions' name/data pairs."""
    reader, strings = _Reader(packed), []
    while not reader.at_end():
        strings.append(reader.string())
    return strings


def parse_cert(text: str) -> CertFields:
    """The fields of an ``*-cert-v01@openssh.com`` line; ValueError when it is not one."""
    try:
        kind, b64 = text.split()[:2]
        reader = _Reader(base64.b64decode(b64, validate=True))
    except (ValueError, TypeError) as exc:
        raise ValueError("not an OpenSSH certificate") from exc
    if kind not in _KEY_FIELDS or reader.string().decode("ascii", "replace") != kind:
        raise ValueError(f"unsupported certificate type {kind!r}")
    reader.string()  # nonce
    for _ in range(_KEY_FIELDS[kind]):
        reader.string()
    reader.take(8 + 4)  # serial, type
    reader.string()  # key id
    principals = tuple(p.decode() for p in _strings(reader.string()))
    valid_after, valid_before = reader.uint64(), reader.uint64()
    reader.string()  # critical options
    extensions = frozenset(n.decode() for n in _strings(reader.string())[::2])  # names
    return CertFields(principals, valid_after, valid_before, extensions)


def read_cert(path: Path, proxy: str, now: float | None = None) -> CertFields:
    """The login's certificate, refused in words when unreadable, expired or not yet valid."""
    try:
        fields = parse_cert(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise AccessDenied(f"your key or certificate cannot be read ({exc}); {RELOGIN}") from None
    now = time.time() if now is None else now
    if now >= fields.valid_before:
        raise AccessDenied(validity_message("expired", proxy))
    if now < fields.valid_after:
        raise AccessDenied(validity_message("not yet valid", proxy))
    return fields


def validity_message(reason: str, proxy: str) -> str:
    if "expired" in reason:
        return f"your certificate has expired; {RELOGIN} --proxy {proxy}"
    return f"your certificate is not valid yet (is this machine's clock right?); {RELOGIN}"


def choose_login(allowed: list[str], wanted: str | None) -> str:
    """The login to use: the one asked for, else the local user name when the
    certificate allows it (as ssh does), else the certificate's first login."""
    wanted = wanted or default_login(allowed)
    if wanted not in allowed:
        raise AccessDenied(
            f"your certificate does not allow login '{wanted}' "
            f"(it allows: {', '.join(allowed) or 'none'}); ask an admin to add it to "
            f"your logins, then {RELOGIN}"
        )
    return wanted


def check_port_forwarding(permits: Callable[[str], bool]) -> None:
    if not permits("permit-port-forwarding"):
        raise AccessDenied("port forwarding (-L) is not allowed: your certificate does not "
                           "permit it (your roles do not allow port forwarding)")


def agent_socket(permits: Callable[[str], bool], wanted: bool) -> str | None:
    """The ssh-agent socket that -A forwards; None without -A."""
    if not wanted:
        return None
    path = os.environ.get("SSH_AUTH_SOCK")
    if not path:
        raise BadParameter("-A forwards your ssh-agent, but none is running (SSH_AUTH_SOCK "
                           "is not set)")
    if not permits("permit-agent-forwarding"):
        raise AccessDenied("agent forwarding (-A) is not allowed: your certificate does not "
                           "permit it (your roles do not allow it)")
    return path


class Target:
    """``[LOGIN@]NODE``: the login is None when the person gave none."""

    __slots__ = ("node", "login")

    def __init__(self, node: str, login: str | None = None) -> None:
        self.node = node
        self.login = login

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Target) and (self.node, self.login) == (other.node, other.login)

    def __hash__(self) -> int:  # scp groups its paths by target
        return hash((self.node, self.login))

    def __repr__(self) -> str:
        return f"Target(node={self.node!r}, login={self.login!r})"

    @classmethod
    def parse(cls, text: str) -> Target:
        login, sep, node = text.rpartition("@")
        if not node or (sep and not login):
            raise BadParameter(f"{text!r} is not [LOGIN@]NODE")
        return cls(node=node, login=login or None)


def is_selector(target: str) -> bool:
    """``[LOGIN@]k=v``: a node name never holds '=', so this is a selector."""
    return "=" in target.rpartition("@")[2]
