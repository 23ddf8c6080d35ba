"""`limen proxy tls --node`: ask the proxy for a direct connection to one node.

Inside TLS 1.3 with ALPN limen-node (``limen.tls_direct``): one line with the node, the
login, the login's certificate and a signature by its key over all of them and over this
TLS connection; the proxy answers one line. After an ok, the connection carries ssh's
own SSH connection to the node, so ssh makes one SSH connection, not a jump and a second
one inside it.

The key is read with ``cryptography`` alone (what `limen login` makes: Ed25519), not
asyncssh: ssh waits for this process before its first byte, and asyncssh's import takes
about five times as long.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from limen.errors import AccessDenied, ConnectionProblem
from limen.tls_direct import (
    BINDING,
    MAX_LINE,
    Request,
    cert_blob,
    read_answer,
    signed_data,
    ssh_string,
)


def request_node(tls: ssl.SSLSocket, key_path: Path, cert_path: Path, login: str, node: str,
                 port: int, where: str, timeout: float = 30.0) -> bytes:
    """Send the request and read the answer on a blocking ``tls``; returns what came
    after the answer (the node's first bytes). AccessDenied carries the proxy's refusal."""
    if tls.version() != "TLSv1.3":
        raise ConnectionProblem(f"{where} did not agree to TLS 1.3, which direct connections "
                                "to nodes need")
    binding = tls.get_channel_binding(BINDING)
    if not binding:
        raise ConnectionProblem(f"the TLS connection to {where} has no channel binding")
    cert = _read(cert_path).decode("ascii", "replace").strip()
    data = signed_data(binding, node, port, login, cert_blob(cert))
    request = Request(node=node, port=port, login=login, cert=cert,
                      signature=sign(key_path, data))
    tls.settimeout(timeout)
    try:
        tls.sendall(request.to_line())
        line, rest = _read_line(tls, where)
    except TimeoutError:
        raise ConnectionProblem(f"{where} did not answer within {timeout:g} s") from None
    except (ssl.SSLError, OSError) as exc:
        raise ConnectionProblem(f"the connection to {where} broke: {exc}") from None
    refusal = read_answer(line)
    if refusal is not None:
        raise AccessDenied(f"{where} refused the connection to node '{node}': {refusal}")
    return rest


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise AccessDenied(f"{path} cannot be read ({exc.strerror}); run limen login") from None


def sign(key_path: Path, data: bytes) -> bytes:
    """An SSH signature blob (``ssh-ed25519``) by the login's key over ``data``."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_ssh_private_key

    try:
        key = load_ssh_private_key(_read(key_path), password=None)
    except ValueError as exc:
        raise AccessDenied(f"your key {key_path} cannot be read ({exc}); run limen login") \
            from None
    if not isinstance(key, Ed25519PrivateKey):
        raise AccessDenied(f"your key {key_path} is not an Ed25519 key, which direct "
                           "connections need; run limen login for a new one")
    return ssh_string(b"ssh-ed25519") + ssh_string(key.sign(data))


def _read_line(tls: ssl.SSLSocket, where: str) -> tuple[bytes, bytes]:
    """The answer line, and whatever came after it in the same reads."""
    buf = b""
    while b"\n" not in buf:
        if len(buf) > MAX_LINE:
            raise ConnectionProblem(f"{where} sent an answer too long to be one")
        chunk = tls.recv(4096)
        if not chunk:
            raise ConnectionProblem(f"{where} closed the connection without answering")
        buf += chunk
    line, _, rest = buf.partition(b"\n")
    return line, rest
