"""The first exchange of a direct connection to a node through the proxy's web port.

ALPN ``limen-node``: the client opens TLS 1.3 to the web port, verified through the
cluster's TLS CA, and sends one line naming the node and proving who it is; the proxy
answers one line; then the TLS connection carries the user's own SSH connection to the
node, byte for byte, with no SSH layer at the proxy (`limen config --tls-routing`).

The proof: the user's certificate, and a signature by its key over what the line asks
for and over this very TLS connection (its ``tls-unique`` channel binding, which both
ends read from their TLS library). The proxy judges the certificate as its jump host
would and checks the signature; a line copied onto another connection does not verify
there. Signing the TLS connection rather than a challenge from the proxy saves a round
trip, as SSH's own public-key authentication signs its session id.

The signature is OpenSSH's own kind for signing data, SSHSIG (PROTOCOL.sshsig), made by
`ssh-keygen -Y sign` in the namespace ``limen-node``: a signature the same key made for
anything else (a git commit, a file, SSH's own user auth) is in another namespace or
another format, and does not verify here.

Both ends use this module: it is stdlib only, so `limen proxy tls` starts without
asyncssh or cryptography.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct

from limen.errors import BadParameter

ALPN_NODE = "limen-node"
CONTEXT = b"limen-node-v1"  # the version of what is signed
NAMESPACE = "limen-node"  # the SSHSIG namespace: what the signature is for
MAX_LINE = 16 * 1024  # a certificate with many principals fits many times over
BINDING = "tls-unique"


class BadRequest(BadParameter):
    """A line that is not a request this module can read; the message says what is wrong."""


class Request:
    """What the client asks for. A plain class: dataclasses' import (inspect) would cost
    every `limen proxy tls` about 6 ms before ssh's first byte."""

    __slots__ = ("node", "port", "login", "cert", "signature")

    def __init__(self, node: str, port: int, login: str, cert: str, signature: bytes) -> None:
        self.node = node  # as ssh was given it: name, name.CLUSTER or id
        self.port = port
        self.login = login  # the SSH user name at the node
        self.cert = cert  # the user's certificate, one OpenSSH line
        self.signature = signature  # an SSHSIG blob by the certificate's key over signed_data

    def to_line(self) -> bytes:
        body = {"node": self.node, "port": self.port, "login": self.login, "cert": self.cert,
                "sig": base64.b64encode(self.signature).decode("ascii")}
        return json.dumps(body, separators=(",", ":")).encode() + b"\n"


def ssh_string(value: bytes) -> bytes:
    """An SSH wire string: its length, then its bytes."""
    return struct.pack(">I", len(value)) + value


def cert_blob(cert_line: str) -> bytes:
    """The certificate's wire bytes, from its OpenSSH line ("type base64 [comment]"): for
    the client, which reads no certificate otherwise (the proxy signs over the bytes its
    certificate reader, sshauth.cert, took from the same line)."""
    fields = cert_line.split()
    if len(fields) < 2:
        raise BadRequest("the certificate is not an OpenSSH certificate line")
    try:
        return base64.b64decode(fields[1], validate=True)
    except binascii.Error:
        raise BadRequest("the certificate's base64 is invalid") from None


def signed_data(binding: bytes, node: str, port: int, login: str, cert: bytes) -> bytes:
    """What the client signs: SSH wire strings, so no field can run into the next."""
    return b"".join((ssh_string(CONTEXT), ssh_string(binding), ssh_string(node.encode()),
                     struct.pack(">I", port), ssh_string(login.encode()), ssh_string(cert)))


def parse_request(line: bytes) -> Request:
    """The client's line (without its newline); BadRequest says what is wrong."""
    try:
        body = json.loads(line)
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("the request is not JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("the request is not a JSON object")
    node, port, login = body.get("node"), body.get("port"), body.get("login")
    cert, sig = body.get("cert"), body.get("sig")
    if not all(isinstance(v, str) and v for v in (node, login, cert, sig)):
        raise BadRequest("the request needs node, login, cert and sig, each a string")
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise BadRequest("the request's port is not a TCP port")
    try:
        signature = base64.b64decode(sig, validate=True)
    except binascii.Error:
        raise BadRequest("the request's signature is not base64") from None
    return Request(node=node, port=port, login=login, cert=cert, signature=signature)


def answer(error: str | None = None) -> bytes:
    """The proxy's line: ok, or the sentence that says why not."""
    body = {"ok": True} if error is None else {"ok": False, "error": error}
    return json.dumps(body).encode() + b"\n"


def read_answer(line: bytes) -> str | None:
    """None when the proxy said ok, else its sentence."""
    try:
        body = json.loads(line)
    except (UnicodeDecodeError, ValueError):
        return "the proxy's answer is not JSON (is that address a Limen proxy's web port?)"
    if isinstance(body, dict) and body.get("ok") is True:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    return str(error)[:1000] if error else "the proxy refused without saying why"
