"""Direct connections to nodes inside TLS (ALPN limen-node, `limen config --tls-routing`).

Stock ssh reaches a node with `limen proxy tls --node` as its ProxyCommand; scp and sftp
too. Then what a stranger or a user would try against the request line, sent by hand on
real TLS connections to the real proxy: a line replayed on another connection, someone
else's certificate, a certificate from another CA or expired, a login it does not name,
a signature the key made for something else, TLS 1.2, garbage and an endless line, a
node the roles do not reach. Each is refused with a sentence and audited, and the port
goes on serving. A lock, and the
certificate's expiry where a role says so, end a live direct connection as they end a
jump connection.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncssh
import pytest

from limen.auth.ca import sign_user_cert
from limen.client.node_request import request_node, sign
from limen.proxy.ssh_direct import DirectConnection
from limen.tls_direct import ALPN_NODE, BINDING, MAX_LINE, Request, cert_blob, signed_data
from tests.support.cluster import ClusterHarness
from tests.support.ssh_access import (
    CLUSTER,
    NODE,
    SshUser,
    new_user,
    sign_by_hand,
    wait_until,
)


def _config(user: SshUser) -> Path:
    printed = user.limen("config", "--tls-routing")
    assert printed.returncode == 0, printed.stderr
    path = user.home / "ssh_config_direct"
    path.write_text(printed.stdout)
    return path


def _open(cluster: ClusterHarness, tls12: bool = False) -> ssl.SSLSocket:
    """A TLS connection to the web port with ALPN limen-node, as `limen proxy tls` opens."""
    ctx = ssl.create_default_context(cadata=(cluster.data_dir / "ca" / "tls_ca.crt").read_text())
    ctx.check_hostname = False
    ctx.set_alpn_protocols([ALPN_NODE])
    if tls12:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    host, port = cluster.web_addr.rsplit(":", 1)
    tls = ctx.wrap_socket(socket.create_connection((host, int(port)), timeout=10))
    assert tls.selected_alpn_protocol() == ALPN_NODE
    return tls


def _line(tls: ssl.SSLSocket, key: Path, cert: Path, node: str = NODE,
          login: str = "root") -> bytes:
    """A request signed by ``key`` for this very connection."""
    binding = tls.get_channel_binding(BINDING)
    assert binding
    text = cert.read_text().strip()
    data = signed_data(binding, node, 22, login, cert_blob(text))
    return Request(node=node, port=22, login=login, cert=text,
                   signature=sign(key, data)).to_line()


def _answer(tls: ssl.SSLSocket, line: bytes) -> dict[str, object]:
    """Send ``line``, read the proxy's answer, and check it closed the connection after."""
    tls.sendall(line)
    received = b""
    while chunk := tls.recv(4096):
        received += chunk
    answer, _, rest = received.partition(b"\n")
    assert rest == b"", rest  # nothing from any node
    return json.loads(answer)


def _refusals(cluster: ClusterHarness, reason: str) -> list[dict[str, object]]:
    return wait_until(
        lambda: [e for e in cluster.events_of("auth", kind="tls", success=False)
                 if reason in str(e.get("reason", ""))],
        10, f"an auth refusal saying {reason!r}")


def _paths(user: SshUser) -> tuple[Path, Path]:
    return Path(user.status["key_path"]), Path(user.status["cert_path"])


def _still_serves(cluster: ClusterHarness, user: SshUser) -> None:
    """A good request on a new connection still gets the node's SSH banner."""
    with _open(cluster) as tls:
        first = request_node(tls, *_paths(user), "root", NODE, 22, "the proxy")
        while b"\n" not in first:
            first += tls.recv(4096)
        assert first.startswith(b"SSH-2.0-"), first


def test_stock_ssh_scp_and_sftp_reach_a_node_directly_inside_tls(
    cluster: ClusterHarness, tmp_path: Path
) -> None:
    user = new_user(cluster, "direct")
    config = _config(user)
    before = len(cluster.events_of("proxy.disconnect", user=user.name))
    done = user.ssh("-v", f"root@{NODE}", "echo", "direct-in-tls", config=config)
    assert done.stdout == b"direct-in-tls\n", done.stderr
    assert done.stderr.count(b"Authenticated to") == 1  # one SSH connection: the node's
    source = tmp_path / "up.bin"
    source.write_bytes(b"x" * 300_000)
    copied = subprocess.run(["scp", "-F", str(config), "-o", "BatchMode=yes", str(source),
                             f"root@{NODE}:/tmp/limen-direct-up.bin"], capture_output=True,
                            timeout=60)
    assert copied.returncode == 0, copied.stderr
    listed = subprocess.run(["sftp", "-F", str(config), "-o", "BatchMode=yes", "-b", "-",
                             f"root@{NODE}"], input=b"ls -l /tmp/limen-direct-up.bin\n",
                            capture_output=True, timeout=60)
    assert b"300000" in listed.stdout, listed.stderr
    connects = wait_until(
        lambda: [e for e in cluster.events_of("proxy.connect", user=user.name)
                 if e.get("allowed") is True], 10, "proxy.connect events")
    assert connects[0]["server_hostname"] == "node1" and connects[0]["login"] == "root"
    ends = wait_until(lambda: cluster.events_of("proxy.disconnect", user=user.name)[before:]
                      if len(cluster.events_of("proxy.disconnect", user=user.name)) >= before + 3
                      else [], 10, "proxy.disconnect events")
    assert max(int(e["bytes_up"]) for e in ends) > 300_000  # the scp went through here


def test_a_request_replayed_on_another_connection_is_refused(cluster: ClusterHarness) -> None:
    """Someone who saw a request (a proxy log, a debugging dump) cannot use it: the
    signature covers the TLS connection it was made for."""
    user = new_user(cluster, "replayed")
    with _open(cluster) as first:
        line = _line(first, *_paths(user))
    with _open(cluster) as second:
        answer = _answer(second, line)
    assert answer["ok"] is False
    assert "not made by the certificate's key for this connection" in str(answer["error"])
    _refusals(cluster, "for this connection")
    _still_serves(cluster, user)


def test_someone_elses_certificate_with_ones_own_key_is_refused(
    cluster: ClusterHarness
) -> None:
    victim, mallory = new_user(cluster, "victim"), new_user(cluster, "mallory")
    victim_cert = Path(victim.status["cert_path"])
    mallory_key = Path(mallory.status["key_path"])
    with _open(cluster) as tls:
        answer = _answer(tls, _line(tls, mallory_key, victim_cert))
    assert answer["ok"] is False
    assert "not made by the certificate's key" in str(answer["error"])


def test_a_signature_the_key_made_for_something_else_is_refused(
    cluster: ClusterHarness
) -> None:
    """The same key signs git commits or files with `ssh-keygen -Y sign` in other
    namespaces: such a signature, even over the very bytes a request signs, is refused."""
    user = new_user(cluster, "namespace")
    key, cert = _paths(user)
    with _open(cluster) as tls:
        binding = tls.get_channel_binding(BINDING)
        assert binding
        text = cert.read_text().strip()
        data = signed_data(binding, NODE, 22, "root", cert_blob(text))
        armored = subprocess.run(["ssh-keygen", "-q", "-Y", "sign", "-n", "git", "-f", str(key)],
                                 input=data, capture_output=True, check=True, timeout=30).stdout
        sshsig = base64.b64decode(b"".join(armored.splitlines()[1:-1]))
        answer = _answer(tls, Request(node=NODE, port=22, login="root", cert=text,
                                      signature=sshsig).to_line())
    assert answer == {"ok": False, "error": "the signature was made for 'git', not 'limen-node'"}
    _refusals(cluster, "made for 'git'")


def test_a_certificate_from_another_ca_or_expired_is_refused(
    cluster: ClusterHarness, tmp_path: Path
) -> None:
    user = new_user(cluster, "badcert")
    stranger_ca = asyncssh.generate_private_key("ssh-ed25519")
    forged = sign_by_hand(tmp_path / "forged", stranger_ca, user.name, ["root"])
    with _open(cluster) as tls:
        answer = _answer(tls, _line(tls, forged.key, forged.cert))
    assert "not signed by this cluster's user CA" in str(answer["error"])
    past = datetime.now(UTC) - timedelta(hours=1)
    expired = sign_by_hand(tmp_path / "expired", cluster.service.auth.ctx.cas.user_ca,
                           user.name, ["root"], valid_after=past - timedelta(hours=2),
                           valid_before=past)
    with _open(cluster) as tls:
        answer = _answer(tls, _line(tls, expired.key, expired.cert))
    assert "the certificate expired at" in str(answer["error"])
    _refusals(cluster, "expired at")


def test_a_certificate_bound_to_other_addresses_is_refused(
    cluster: ClusterHarness, tmp_path: Path
) -> None:
    """A certificate with a source-address restriction is judged against the TLS
    connection's own peer, not anything the request says."""
    user = new_user(cluster, "elsewhere")
    key = asyncssh.generate_private_key("ssh-ed25519")
    now = datetime.now(UTC)
    cert = sign_user_cert(cluster.service.auth.ctx.cas.user_ca, key.convert_to_public(),
                          key_id=user.name, principals=["root"],
                          valid_after=now - timedelta(minutes=1),
                          valid_before=now + timedelta(hours=1),
                          source_address=["192.0.2.0/24"])
    key_path, cert_path = tmp_path / "key", tmp_path / "cert"
    key_path.write_bytes(key.export_private_key("openssh"))
    key_path.chmod(0o600)
    cert_path.write_bytes(cert.export_certificate("openssh"))
    with _open(cluster) as tls:
        answer = _answer(tls, _line(tls, key_path, cert_path))
    assert answer == {"ok": False,
                      "error": "the certificate may not be used from 127.0.0.1"}
    _refusals(cluster, "may not be used from 127.0.0.1")


def test_a_login_the_certificate_does_not_name_is_refused(cluster: ClusterHarness) -> None:
    user = new_user(cluster, "nologin", logins="root")
    with _open(cluster) as tls:
        answer = _answer(tls, _line(tls, *_paths(user), login="daemon"))
    assert "'daemon' is neither the certificate's user" in str(answer["error"])


def test_tls_12_is_refused(cluster: ClusterHarness) -> None:
    """Only TLS 1.3's channel binding is signed: each of its handshakes is a full one."""
    user = new_user(cluster, "tls12")
    with _open(cluster, tls12=True) as tls:
        assert tls.version() == "TLSv1.2"
        answer = _answer(tls, _line(tls, *_paths(user)))
    assert answer == {"ok": False, "error": "direct connections to nodes need TLS 1.3"}


def test_garbage_and_an_endless_line_are_refused_and_the_port_still_serves(
    cluster: ClusterHarness
) -> None:
    user = new_user(cluster, "garbage")
    with _open(cluster) as tls:
        assert _answer(tls, b"SSH-2.0-OpenSSH_9.2\r\n")["error"] == "the request is not JSON"
    with _open(cluster) as tls:
        answer = _answer(tls, b'{"node": "node1", "port": true}\n')
        assert "needs node, login, cert and sig" in str(answer["error"])
    with _open(cluster) as tls:
        answer = _answer(tls, b"{" * (MAX_LINE + 4096))
        assert answer["error"] == "the request line is too long"
    _refusals(cluster, "the request line is too long")
    _still_serves(cluster, user)


def test_a_node_the_roles_do_not_reach_is_refused_and_audited(
    cluster: ClusterHarness, tmp_path: Path
) -> None:
    doc = tmp_path / "role.yaml"
    doc.write_text("kind: role\nversion: v7\nmetadata:\n  name: direct-nowhere\nspec:\n"
                   "  allow:\n    logins: [root]\n    node_labels: {env: nowhere}\n")
    assert cluster.admin("create", "-f", str(doc)).returncode == 0
    user = new_user(cluster, "nowhere", roles="direct-nowhere", logins="root")
    done = user.ssh(f"root@{NODE}", "echo should-not-run", config=_config(user))
    assert done.returncode == 255 and b"should-not-run" not in done.stdout
    assert b"your roles do not allow access to node node1" in done.stderr, done.stderr
    assert b"Traceback" not in done.stderr
    refused = wait_until(lambda: cluster.events_of("proxy.connect", user=user.name,
                                                   allowed=False), 10, "the refusal")
    assert "your roles do not allow" in str(refused[0]["reason"])
    unknown = user.limen("proxy", "tls", "--node", f"root@nosuch.{CLUSTER}:22",
                         cluster.web_addr, input="")
    assert unknown.returncode != 0
    assert "node 'nosuch' is not known" in unknown.stderr, unknown.stderr
    assert "Traceback" not in unknown.stderr


def test_a_lock_ends_a_live_direct_connection(cluster: ClusterHarness) -> None:
    user = new_user(cluster, "directlock")
    config = _config(user)
    held = subprocess.Popen(["ssh", "-F", str(config), "-o", "BatchMode=yes", f"root@{NODE}",
                             "echo held; sleep 60"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    lock_name = ""
    try:
        assert held.stdout is not None and held.stdout.readline() == b"held\n"
        jump = cluster.service.jump
        assert jump is not None
        direct = [c for c in list(jump.connections)
                  if isinstance(c, DirectConnection) and c.identity
                  and c.identity.user == user.name]
        assert len(direct) == 1
        locked = cluster.admin("lock", "--user", user.name, "--message", "incident 7",
                               "--format", "json")
        assert locked.returncode == 0, locked.stderr
        lock_name = locked.json()["metadata"]["name"]
        started = time.monotonic()
        assert held.wait(timeout=15) != 0
        assert time.monotonic() - started < 15
        wait_until(lambda: direct[0] not in jump.connections, 10, "the connection's end")
        refused = user.ssh(f"root@{NODE}", "true", config=config)
        assert refused.returncode == 255 and b"incident 7" in refused.stderr, refused.stderr
    finally:
        if held.poll() is None:
            held.kill()
        held.communicate(timeout=10)
        if lock_name:
            assert cluster.admin("rm", f"lock/{lock_name}").returncode == 0


@pytest.mark.parametrize("line", [
    b'{"node": "node1"}', b"[]", b'"x"',
    b'{"node": "node1", "port": 22, "login": "root", "cert": "\\u0000\\u0000", "sig": "AAAA"}',
    b'{"node": "node1", "port": 22, "login": "root", "cert": "ssh-ed25519 AAAA", "sig": "!"}',
])
def test_a_request_missing_its_fields_is_refused(cluster: ClusterHarness, line: bytes) -> None:
    with _open(cluster) as tls:
        answer = _answer(tls, line + b"\n")
    assert answer["ok"] is False and answer["error"]


def test_expiry_ends_a_live_direct_connection(fresh_cluster: ClusterHarness,
                                              tmp_path: Path) -> None:
    """With disconnect_expired_cert, the certificate's expiry ends a direct connection as
    it ends a jump: the node ends the session saying why, the proxy ends what is left."""
    cluster = fresh_cluster
    doc = tmp_path / "role.yaml"
    doc.write_text("kind: role\nversion: v7\nmetadata:\n  name: shortlived-role\nspec:\n"
                   "  allow:\n    logins: [root]\n    node_labels: {'*': '*'}\n"
                   "  options:\n    disconnect_expired_cert: true\n")
    assert cluster.admin("create", "-f", str(doc)).returncode == 0
    user = cluster.create_user("shortlived", roles="shortlived-role", logins="root")
    logged_in = cluster.login(user, "--ttl", "5m")
    assert logged_in.returncode == 0, logged_in.stderr
    printed = cluster.cli("config", "--tls-routing", home=user.home)
    assert printed.returncode == 0, printed.stderr
    config = user.home / "ssh_config_direct"
    config.write_text(printed.stdout)
    held = subprocess.Popen(["ssh", "-F", str(config), "-o", "BatchMode=yes", f"root@{NODE}",
                             "echo held; sleep 60"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    # A connection that never logs in to the node, so that only the proxy can end it
    # (the node's own login timeout is 30 s of real time; the certificate's 5 minutes
    # pass on the cluster's clock).
    silent = _open(cluster)
    try:
        keys = next((user.home / "keys").rglob("profile.json")).parent
        first = request_node(silent, keys / user.name, keys / f"{user.name}-cert.pub", "root",
                             NODE, 22, "the proxy")
        assert held.stdout is not None and held.stdout.readline() == b"held\n"
        jump = cluster.service.jump
        assert jump is not None

        def both() -> list[DirectConnection]:
            found = [c for c in list(jump.connections) if isinstance(c, DirectConnection)]
            return found if len(found) == 2 else []

        direct = wait_until(both, 10, "both connections")
        cluster.clock.advance(timedelta(minutes=6))
        # Generous waits: a loaded CI machine, not the feature, sets how long these take.
        _, err = held.communicate(timeout=20)
        assert held.returncode != 0
        assert b"certificate expired" in err, err
        silent.settimeout(20)
        while silent.recv(4096):  # the node's banner (if not read already), then the end
            pass
        assert first == b"" or first.startswith(b"SSH-")
        wait_until(lambda: not set(direct) & set(jump.connections), 20, "the connections' end")
    finally:
        silent.close()
        if held.poll() is None:
            held.kill()
            held.communicate(timeout=10)
