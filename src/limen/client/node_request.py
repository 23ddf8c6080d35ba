"""`limen proxy tls --node`: ask the proxy for a direct connection to one node.

Inside TLS 1.3 with ALPN limen-node (``limen.tls_direct``): one line with the node, the
login, the login's certificate and a signature by its key over all of them and over this
TLS connection; the proxy answers one line. After an ok, the connection carries ssh's
own SSH connection to the node, so ssh makes one SSH connection, not a jump and a second
one inside it.

The signature is made by OpenSSH's `ssh-keygen -Y sign` (SSHSIG, namespace
``limen-node``), which ssh's own package carries: about 3 ms, where importing
cryptography's Ed25519 and SSH key reader took 25 ms here and asyncssh over 120, and ssh
waits for this process before its first byte. It runs through ``os.posix_spawnp`` and
pipes rather than ``subprocess`` for the same reason (that import alone is about 9 ms).
"""

from __future__ import annotations

import base64
import binascii
import os
import ssl
from pathlib import Path

from limen.errors import AccessDenied, ConnectionProblem
from limen.tls_direct import (
    BINDING,
    MAX_LINE,
    NAMESPACE,
    Request,
    cert_blob,
    read_answer,
    signed_data,
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
    """An SSHSIG blob by the login's key over ``data``, in the namespace ``limen-node``."""
    argv = ["ssh-keygen", "-q", "-Y", "sign", "-n", NAMESPACE, "-f", str(key_path)]
    try:
        status, out, err = _run(argv, data)
    except OSError as exc:
        raise ConnectionProblem(f"ssh-keygen (from OpenSSH's client) could not be run to "
                                f"sign the request: {exc.strerror or exc}") from None
    armored = out.decode("ascii", "replace").strip().splitlines()
    if status != 0 or len(armored) < 3 or armored[0] != "-----BEGIN SSH SIGNATURE-----":
        why = err.decode(errors="replace").strip().splitlines()
        raise AccessDenied(f"your key {key_path} could not sign the request "
                           f"({why[0] if why else f'ssh-keygen exit status {status}'}); "
                           "run limen login")
    try:
        return base64.b64decode("".join(armored[1:-1]), validate=True)
    except binascii.Error:
        raise AccessDenied("ssh-keygen's signature could not be read") from None


def _run(argv: list[str], stdin: bytes) -> tuple[int, bytes, bytes]:
    """Run ``argv`` with ``stdin`` (under a pipe's size) and return its exit status,
    stdout and stderr."""
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        pid = os.posix_spawnp(argv[0], argv, os.environ, file_actions=[
            (os.POSIX_SPAWN_DUP2, in_r, 0), (os.POSIX_SPAWN_DUP2, out_w, 1),
            (os.POSIX_SPAWN_DUP2, err_w, 2),
            *((os.POSIX_SPAWN_CLOSE, fd) for fd in (in_r, in_w, out_r, out_w, err_r, err_w)),
        ])
    except OSError:
        for fd in (in_r, in_w, out_r, out_w, err_r, err_w):
            os.close(fd)
        raise
    for fd in (in_r, out_w, err_w):
        os.close(fd)
    with os.fdopen(in_w, "wb") as child_in:
        child_in.write(stdin)
    with os.fdopen(out_r, "rb") as child_out, os.fdopen(err_r, "rb") as child_err:
        out = child_out.read()
        err = child_err.read()
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), out, err


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
