"""`limen proxy tls HOST:PORT`, the real command, against TLS servers of the test's own:
bytes both ways arrive whole, and a server that cannot prove it is the cluster's proxy
(another CA, no ALPN limen-ssh, no TLS at all) gets a refusal in words and not one byte.

The whole path through a real proxy, with stock ssh on top, is in
tests/integration/test_one_port.py."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import random
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from limen.client.profile import proxy_dirname
from limen.tls_direct import (
    ALPN_NODE,
    BINDING,
    answer,
    cert_blob,
    parse_request,
    signed_data,
)
from tests.sso import pki as test_pki
from tests.sso.pki import ServerFiles

pytestmark = pytest.mark.timeout(60)


Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "FakeProxy"], Awaitable[None]]


async def nothing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                  proxy: FakeProxy) -> None:
    return None


class FakeProxy:
    """A server on 127.0.0.1 that runs ``serve`` on each connection and keeps what
    ``serve`` recorded. Its TLS is asyncio's, as the real proxy's is (uvloop's port of
    it): like the proxy, it reads a TCP half-close as the end of the stream."""

    def __init__(self, files: ServerFiles | None, alpn: tuple[str, ...] = ("limen-ssh",),
                 serve: Serve = nothing) -> None:
        self.serve = serve
        self.received = bytearray()
        ctx = None
        if files is not None:  # None: plain TCP, no TLS
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(files.cert, files.key)
            if alpn:
                ctx.set_alpn_protocols(list(alpn))
        self._loop = asyncio.new_event_loop()
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=ctx))
        self.port = self._server.sockets[0].getsockname()[1]
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            await self.serve(reader, writer, self)
            writer.close()
            await writer.wait_closed()

    def close(self) -> None:
        async def stop() -> None:
            self._server.close()
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
               proxy: FakeProxy) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()


async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 proxy: FakeProxy) -> None:
    while data := await asyncio.wait_for(reader.read(65536), timeout=10):
        proxy.received += data


@pytest.fixture
def pki(tmp_path: Path) -> tuple[test_pki.TestCA, test_pki.TestCA]:
    """The cluster's CA, and another one."""
    return (test_pki.TestCA(tmp_path / "pki", "cluster"),
            test_pki.TestCA(tmp_path / "pki", "stranger"))


@pytest.fixture
def proxies() -> Iterator[list[FakeProxy]]:
    started: list[FakeProxy] = []
    yield started
    for proxy in started:
        proxy.close()


def start(proxies: list[FakeProxy], **kwargs: Any) -> FakeProxy:
    proxy = FakeProxy(**kwargs)
    proxies.append(proxy)
    return proxy


def logged_in_home(tmp_path: Path, address: str, ca: test_pki.TestCA) -> Path:
    """A LIMEN_HOME that trusts ``ca`` for ``address``, as limen login leaves it."""
    home = tmp_path / "home"
    keys = home / "keys" / proxy_dirname(address)
    keys.mkdir(parents=True)
    (keys / "tls-ca.pem").write_bytes(ca.path.read_bytes())
    return home


def relay(home: Path, address: str, **kwargs: object) -> subprocess.Popen[bytes]:
    env = {**os.environ, "LIMEN_HOME": str(home)}
    return subprocess.Popen(
        [sys.executable, "-m", "limen.cli.main", "proxy", "tls", address],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        **kwargs,  # type: ignore[call-overload]
    )


def refused(home: Path, address: str) -> str:
    """Runs the relay with bytes on its stdin; returns its error, having checked the
    exit status and that no traceback showed."""
    with relay(home, address) as done:
        _, err = done.communicate(b"SSH-2.0-OpenSSH_9.2 secret-bytes\r\n", timeout=30)
    text = err.decode()
    assert done.returncode == 1, text
    assert "Traceback" not in text, text
    assert text.startswith("ERROR: "), text
    return text


def test_bytes_both_ways_arrive_whole_and_in_order(tmp_path: Path, pki, proxies) -> None:
    cluster_ca, _ = pki
    proxy = start(proxies, files=cluster_ca.server("proxy"), serve=echo)
    home = logged_in_home(tmp_path, proxy.address, cluster_ca)
    payload = random.Random(5).randbytes(16 * 1024 * 1024)
    # As ssh passes it: "[%h]:%p" (an IPv6 address has colons of its own)
    with relay(home, f"[127.0.0.1]:{proxy.port}") as process:
        assert process.stdin is not None and process.stdout is not None
        stdin = process.stdin

        def feed() -> None:  # while the test reads: the echo fills every buffer otherwise
            stdin.write(payload)
            stdin.close()

        writer = threading.Thread(target=feed, daemon=True)
        writer.start()
        echoed = hashlib.sha256()
        got = 0
        while got < len(payload) and (chunk := process.stdout.read1(1 << 20)):
            echoed.update(chunk)
            got += len(chunk)
        writer.join(timeout=30)
        assert got == len(payload)
        assert echoed.hexdigest() == hashlib.sha256(payload).hexdigest()
        # stdin ended: the proxy hears of it, closes, and so the relay ends
        assert process.wait(timeout=30) == 0, process.stderr.read()


def test_what_the_proxy_sends_before_it_closes_is_delivered(tmp_path: Path, pki,
                                                            proxies) -> None:
    cluster_ca, _ = pki
    banner = b"SSH-2.0-limen\r\n" + b"x" * 3_000_000

    async def say_and_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                            proxy: FakeProxy) -> None:
        writer.write(banner)
        await writer.drain()

    proxy = start(proxies, files=cluster_ca.server("proxy"), serve=say_and_close)
    home = logged_in_home(tmp_path, proxy.address, cluster_ca)
    with relay(home, proxy.address) as process:
        assert process.stdout is not None
        out = process.stdout.read()  # to the end: the proxy closed, stdin is still open
        assert out == banner
        assert process.wait(timeout=30) == 0, process.stderr.read()


def test_a_certificate_from_another_ca_is_refused_before_any_byte(tmp_path: Path, pki,
                                                                  proxies) -> None:
    cluster_ca, stranger = pki
    proxy = start(proxies, files=stranger.server("impostor"), serve=record)
    error = refused(logged_in_home(tmp_path, proxy.address, cluster_ca), proxy.address)
    assert f"the proxy at {proxy.address} could not be verified" in error
    assert "not signed by the cluster's CA" in error
    assert bytes(proxy.received) == b""


def test_a_server_that_does_not_agree_to_carry_ssh_is_refused(tmp_path: Path, pki,
                                                              proxies) -> None:
    """A web server of the cluster's own CA that speaks only HTTP: its answer to SSH
    bytes would be nonsense, so none are sent."""
    cluster_ca, _ = pki
    for alpn in (("http/1.1",), ()):
        proxy = start(proxies, files=cluster_ca.server("web"), alpn=alpn, serve=record)
        error = refused(logged_in_home(tmp_path / proxy.address, proxy.address, cluster_ca),
                        proxy.address)
        assert "does not carry SSH inside TLS" in error, error
        assert "ALPN limen-ssh" in error
        assert bytes(proxy.received) == b""


def test_a_server_without_tls_is_refused(tmp_path: Path, pki, proxies) -> None:
    """Say, the proxy's dedicated SSH port given where its web port belongs."""
    cluster_ca, _ = pki

    async def banner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     proxy: FakeProxy) -> None:
        writer.write(b"SSH-2.0-OpenSSH_9.2\r\n")
        await record(reader, writer, proxy)

    proxy = start(proxies, files=None, serve=banner)
    error = refused(logged_in_home(tmp_path, proxy.address, cluster_ca), proxy.address)
    assert f"the TLS handshake with the proxy at {proxy.address} failed" in error
    assert b"secret-bytes" not in bytes(proxy.received)


def test_an_address_with_no_login_and_one_that_refuses(tmp_path: Path, pki,
                                                       proxies) -> None:
    cluster_ca, _ = pki
    proxy = start(proxies, files=cluster_ca.server("proxy"), serve=record)
    error = refused(tmp_path / "empty-home", proxy.address)
    assert f"no login through the proxy at {proxy.address} is stored" in error
    assert bytes(proxy.received) == b""
    with socket.create_server(("127.0.0.1", 0)) as closed:
        address = f"127.0.0.1:{closed.getsockname()[1]}"
    error = refused(logged_in_home(tmp_path, address, cluster_ca), address)
    assert "refused the connection" in error


def test_an_alert_answering_the_half_close_still_ends_quietly(tmp_path: Path, pki) -> None:
    """OpenSSL answers a TCP half-close under TLS with a decode_error alert (asyncio's
    and uvloop's TLS, the proxy's, read it as the end of the stream). Everything sent
    before still arrives, and the relay ends without an error."""
    cluster_ca, _ = pki
    files = cluster_ca.server("openssl")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(files.cert, files.key)
    ctx.set_alpn_protocols(["limen-ssh"])
    listener = socket.create_server(("127.0.0.1", 0))
    address = f"127.0.0.1:{listener.getsockname()[1]}"

    def serve() -> None:
        conn, _ = listener.accept()
        with ctx.wrap_socket(conn, server_side=True) as tls:
            while data := tls.recv(65536):  # to the half-close
                tls.sendall(data)

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    try:
        with relay(logged_in_home(tmp_path, address, cluster_ca), address) as process:
            out, err = process.communicate(b"echo me\n" * 1000, timeout=30)
        assert out == b"echo me\n" * 1000
        assert (process.returncode, err) == (0, b"")
    finally:
        listener.close()
        server.join(timeout=10)


# `limen proxy tls --node`: a direct connection to a node


def _logged_in_user(home: Path, address: str) -> Path:
    """The profile, Ed25519 key and certificate line `limen login` leaves (the fake proxy
    does not check the certificate: tests/integration/test_tls_direct.py has the real
    one); returns the key's path."""
    keys = home / "keys" / proxy_dirname(address)
    (keys / "profile.json").write_text(json.dumps({"proxy": address, "user": "alice"}))
    key = keys / "alice"
    key.write_bytes(Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption()))
    key.chmod(0o600)
    cert = "ssh-ed25519-cert-v01@openssh.com " + base64.b64encode(b"not-checked").decode()
    (keys / "alice-cert.pub").write_text(cert + " alice\n")
    return key


def test_a_direct_request_is_signed_for_its_connection_and_what_follows_is_relayed(
        tmp_path: Path, pki, proxies) -> None:
    """The request names the node and login, carries a signature over this very TLS
    connection, and the node's first bytes, sent in one write with the proxy's answer,
    reach ssh before the relay goes on both ways."""
    cluster_ca, _ = pki
    seen: dict[str, Any] = {}

    async def proxy_then_node(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                              proxy: FakeProxy) -> None:
        seen["request"] = parse_request((await reader.readline()).rstrip(b"\n"))
        seen["binding"] = writer.get_extra_info("ssl_object").get_channel_binding(BINDING)
        writer.write(answer() + b"SSH-2.0-node\r\n")
        await echo(reader, writer, proxy)

    proxy = start(proxies, files=cluster_ca.server("proxy"), alpn=(ALPN_NODE,),
                  serve=proxy_then_node)
    home = logged_in_home(tmp_path, proxy.address, cluster_ca)
    key = _logged_in_user(home, proxy.address)
    env = {**os.environ, "LIMEN_HOME": str(home)}
    done = subprocess.run(
        [sys.executable, "-m", "limen.cli.main", "proxy", "tls", "--node",
         "root@web1.cluster:22", proxy.address],
        input=b"SSH-2.0-OpenSSH_9.2\r\n", capture_output=True, env=env, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"SSH-2.0-node\r\nSSH-2.0-OpenSSH_9.2\r\n"
    request = seen["request"]
    assert (request.node, request.port, request.login) == ("web1.cluster", 22, "root")
    # OpenSSH's own verifier: an SSHSIG by the login's key, in the namespace limen-node,
    # over the request and this very connection's channel binding.
    signature = tmp_path / "request.sig"
    signature.write_text("-----BEGIN SSH SIGNATURE-----\n"
                         + base64.encodebytes(request.signature).decode()
                         + "-----END SSH SIGNATURE-----\n")
    signed = signed_data(seen["binding"], "web1.cluster", 22, "root", cert_blob(request.cert))

    def check(namespace: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(["ssh-keygen", "-Y", "check-novalidate", "-n", namespace, "-s",
                               str(signature)], input=signed, capture_output=True, timeout=30)

    assert check("limen-node").returncode == 0, check("limen-node").stderr
    assert check("file").returncode != 0  # another namespace: another kind of signature
    public = subprocess.run(["ssh-keygen", "-y", "-f", str(key)], capture_output=True,
                            check=True, timeout=30).stdout.split()[1]
    assert base64.b64decode(public) in request.signature  # made by that key


def test_a_refused_direct_request_is_a_sentence_and_nothing_is_relayed(
        tmp_path: Path, pki, proxies) -> None:
    cluster_ca, _ = pki

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     proxy: FakeProxy) -> None:
        await reader.readline()
        writer.write(answer("your roles do not allow access to node web1"))

    proxy = start(proxies, files=cluster_ca.server("proxy"), alpn=(ALPN_NODE,), serve=refuse)
    home = logged_in_home(tmp_path, proxy.address, cluster_ca)
    _logged_in_user(home, proxy.address)
    env = {**os.environ, "LIMEN_HOME": str(home)}
    done = subprocess.run(
        [sys.executable, "-m", "limen.cli.main", "proxy", "tls", "--node",
         "root@web1:22", proxy.address],
        input=b"SSH-2.0-OpenSSH_9.2\r\n", capture_output=True, env=env, timeout=30)
    assert done.returncode == 1 and done.stdout == b""
    error = done.stderr.decode()
    assert error == (f"ERROR: the proxy at {proxy.address} refused the connection to node "
                     "'web1': your roles do not allow access to node web1\n"), error
    no_login = subprocess.run(
        [sys.executable, "-m", "limen.cli.main", "proxy", "tls", "--node", "web1",
         proxy.address], input=b"", capture_output=True, env=env, timeout=30)
    assert no_login.returncode != 0
    assert b"names no login: give LOGIN@NODE[:PORT]" in no_login.stderr
