"""`ssh -R` through the proxy: the node listens on its loopback and forwards back to the
user when the roles allow remote forwarding; refusals are audited with their reason."""

from __future__ import annotations

import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cluster import ClusterHarness, LimenUser
from tests.support.ssh import ssh_config
from tests.support.ssh_access import wait_until

ALLOCATED = re.compile(r"Allocated port (\d+) for remote forward")


def _role_user(cluster: ClusterHarness, tmp_path: Path, name: str, forwarding: str,
               logins: str = "root") -> tuple[LimenUser, Path]:
    doc = tmp_path / f"{name}.yaml"
    doc.write_text(
        f"kind: role\nversion: v7\nmetadata:\n  name: {name}-role\nspec:\n"
        f"  allow:\n    logins: [{logins}]\n    node_labels: {{'*': '*'}}\n"
        f"  options:\n    port_forwarding: {forwarding}\n"
    )
    created = cluster.admin("create", "-f", str(doc))
    assert created.returncode == 0, created.stderr
    user = cluster.create_user(name, roles=f"{name}-role", logins=logins)
    assert cluster.login(user).returncode == 0
    return user, ssh_config(cluster, user)


@pytest.fixture
def echo_port() -> Iterator[int]:
    """A server on the client's side that answers "echo:" + what it reads."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.sendall(b"echo:" + conn.recv(64))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(2)
    server.close()


def _ssh_r(config: Path, spec: str, login: str = "root") -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["ssh", "-F", str(config), "-v", "-N", "-o", "ExitOnForwardFailure=yes", "-R", spec,
         f"{login}@node1"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


def _allocated_port(proc: subprocess.Popen[str]) -> int:
    assert proc.stderr is not None
    deadline = time.monotonic() + 30
    for line in proc.stderr:
        match = ALLOCATED.search(line)
        if match:
            return int(match.group(1))
        assert time.monotonic() < deadline, "ssh -R never reported its port"
    raise AssertionError(f"ssh -R ended (status {proc.wait()}) without a forward")


def test_remote_forward_reaches_back_to_the_user_and_is_audited(
    cluster: ClusterHarness, tmp_path: Path, echo_port: int
) -> None:
    _user, config = _role_user(cluster, tmp_path, "rfwd", "{local: false, remote: true}")
    proc = _ssh_r(config, f"0:127.0.0.1:{echo_port}")
    try:
        port = _allocated_port(proc)
        # The node listens on its loopback: a process on the node reaches the user's side.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(b"hello")
            assert conn.recv(64) == b"echo:hello"
    finally:
        proc.kill()
        proc.communicate(timeout=10)
    events = wait_until(
        lambda: [e for e in cluster.events_of("port", user="rfwd", kind="remote-forward")
                 if e.get("origin")],
        10, "the forwarded connection's audit event")
    assert events[0]["allowed"] is True
    assert events[0]["addr"] == f"127.0.0.1:{port}"
    listens = cluster.events_of("port", user="rfwd", kind="remote-forward", allowed=True)
    assert any(e.get("listen") == "localhost:0" or e.get("listen", "").endswith(":0")
               for e in listens)


def test_remote_forward_is_refused_when_only_local_forwarding_is_allowed(
    cluster: ClusterHarness, tmp_path: Path, echo_port: int
) -> None:
    _user, config = _role_user(cluster, tmp_path, "lfwdonly", "{local: true, remote: false}")
    proc = _ssh_r(config, f"0:127.0.0.1:{echo_port}")
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode != 0
    assert "remote port forwarding failed" in err
    # The reason reaches the client too (ssh -v shows the node's debug message).
    assert "remote port forwarding (ssh -R) is not allowed by your roles" in err
    refused = cluster.events_of("port", user="lfwdonly", kind="remote-forward", allowed=False)
    assert refused and "not allowed by your roles" in refused[0]["error"]


def test_a_list_of_destinations_allows_local_forwarding_only(
    cluster: ClusterHarness, tmp_path: Path, echo_port: int
) -> None:
    _user, config = _role_user(cluster, tmp_path, "listfwd", "['127.0.0.1:*']")
    proc = _ssh_r(config, f"0:127.0.0.1:{echo_port}")
    proc.communicate(timeout=30)
    assert proc.returncode != 0
    assert cluster.events_of("port", user="listfwd", kind="remote-forward", allowed=False)


def test_a_privileged_port_is_for_root_only(
    cluster: ClusterHarness, tmp_path: Path, echo_port: int
) -> None:
    from tests.support.ssh_access import LOCAL_LOGIN, ensure_local_user

    ensure_local_user()
    _user, config = _role_user(cluster, tmp_path, "lowport", "true", logins=LOCAL_LOGIN)
    proc = _ssh_r(config, f"80:127.0.0.1:{echo_port}", login=LOCAL_LOGIN)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode != 0
    assert "only the root login may listen below 1024" in err
    refused = cluster.events_of("port", user="lowport", kind="remote-forward", allowed=False)
    assert refused and "privileged" in refused[0]["error"]
