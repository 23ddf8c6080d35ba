"""Roles and locks end to end: stock OpenSSH through the proxy, the CLI for admins."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pexpect
import pytest

from limen.client.trust import verifying_context
from tests.support.cluster import ClusterHarness, LimenUser
from tests.support.ports import free_port
from tests.support.ssh import ssh, ssh_config


def _role_yaml(name: str, body: str) -> str:
    return f"kind: role\nversion: v7\nmetadata:\n  name: {name}\nspec:\n{body}"


def _create(cluster: ClusterHarness, tmp_path: Path, text: str, *flags: str):
    path = tmp_path / f"doc{time.monotonic_ns()}.yaml"
    path.write_text(text)
    return cluster.admin("create", "-f", str(path), *flags)


def _user_with_role(cluster: ClusterHarness, tmp_path: Path, name: str, role_body: str,
                    ) -> tuple[LimenUser, Path]:
    created = _create(cluster, tmp_path, _role_yaml(f"{name}-role", role_body))
    assert created.returncode == 0, created.stderr
    user = cluster.create_user(name, roles=f"{name}-role", logins="root")
    assert cluster.login(user).returncode == 0
    return user, ssh_config(cluster, user)


def _nodes_seen(cluster: ClusterHarness, user: LimenUser) -> list[str]:
    token = next((user.home / "keys").rglob(f"{user.name}.token")).read_text().strip()
    ca = next((user.home / "keys").rglob("tls-ca.pem")).read_text()
    with httpx.Client(verify=verifying_context(ca), base_url=f"https://{cluster.web_addr}",
                      headers={"authorization": f"Bearer {token}"}) as http:
        return [n["name"] for n in http.get("/v1/nodes").json()]


@pytest.fixture(scope="module")
def prod_node(cluster: ClusterHarness) -> str:
    cluster.add_node("prod1", {"env": "prod"})
    return "prod1"


def test_a_prod_role_neither_sees_nor_reaches_dev_nodes(
    cluster: ClusterHarness, prod_node: str, tmp_path: Path
) -> None:
    user, config = _user_with_role(cluster, tmp_path, "prodonly", (
        "  allow:\n    logins: [root]\n    node_labels: {env: prod}\n"))
    assert _nodes_seen(cluster, user) == ["prod1"]
    reached = ssh(config, "root@prod1", "echo", "on-prod")
    assert reached.stdout.strip() == "on-prod", reached.stderr
    refused = ssh(config, "root@node1", "echo", "on-dev")
    assert refused.returncode != 0
    assert "on-dev" not in refused.stdout
    denied = cluster.events_of("proxy.connect", user="prodonly")
    assert any(e.get("success") is False or e.get("allowed") is False for e in denied)


def test_a_role_edit_applies_to_the_next_session_without_a_new_login(
    cluster: ClusterHarness, prod_node: str, tmp_path: Path
) -> None:
    user, config = _user_with_role(cluster, tmp_path, "shifty", (
        "  allow:\n    logins: [root]\n    node_labels: {env: dev}\n"))
    assert ssh(config, "root@node1", "true").returncode == 0
    assert ssh(config, "root@prod1", "true").returncode != 0
    edited = _create(cluster, tmp_path, _role_yaml("shifty-role", (
        "  allow:\n    logins: [root]\n    node_labels: {env: prod}\n")), "--force")
    assert edited.returncode == 0, edited.stderr
    assert ssh(config, "root@prod1", "true").returncode == 0
    assert ssh(config, "root@node1", "true").returncode != 0


def test_a_login_removed_from_the_role_is_refused_by_the_node(
    cluster: ClusterHarness, tmp_path: Path
) -> None:
    user, config = _user_with_role(cluster, tmp_path, "loginless", (
        "  allow:\n    logins: [root]\n    node_labels: {'*': '*'}\n"))
    assert ssh(config, "root@node1", "true").returncode == 0
    _create(cluster, tmp_path, _role_yaml("loginless-role", (
        "  allow:\n    logins: [nobody]\n    node_labels: {'*': '*'}\n")), "--force")
    result = ssh(config, "root@node1", "true")
    assert result.returncode != 0
    assert "login 'root'" in result.stderr


def test_a_lock_ends_a_live_session_and_refuses_new_ones(
    cluster: ClusterHarness, tmp_path: Path
) -> None:
    user, config = _user_with_role(cluster, tmp_path, "lockee", (
        "  allow:\n    logins: [root]\n    node_labels: {'*': '*'}\n"))
    shell = pexpect.spawn("ssh", ["-F", str(config), "-tt", "root@node1"], timeout=20,
                          encoding="utf-8")
    try:
        shell.sendline("echo READY-$((40+2))")
        shell.expect("READY-42")
        locked = cluster.admin("lock", "--user", "lockee", "--message", "incident 42",
                               "--format", "json")
        assert locked.returncode == 0, locked.stderr
        started = time.monotonic()
        shell.expect("incident 42", timeout=5)
        shell.expect(pexpect.EOF, timeout=5)
        assert time.monotonic() - started < 5
    finally:
        shell.close(force=True)
    refused = ssh(config, "root@node1", "true")
    assert refused.returncode != 0
    assert "incident 42" in refused.stderr
    again = cluster.login(user)
    assert again.returncode != 0 and "locked" in again.stderr
    lock_name = locked.json()["metadata"]["name"]
    assert cluster.admin("rm", f"lock/{lock_name}").returncode == 0
    assert cluster.events_of("lock.created", name=lock_name)
    assert cluster.events_of("lock.deleted", name=lock_name)
    deadline = time.monotonic() + 5
    while ssh(config, "root@node1", "true").returncode != 0:
        assert time.monotonic() < deadline, "the lifted lock still refuses sessions"


def test_a_node_lock_refuses_sessions_on_that_node(
    cluster: ClusterHarness, prod_node: str, tmp_path: Path
) -> None:
    user, config = _user_with_role(cluster, tmp_path, "nodelockee", (
        "  allow:\n    logins: [root]\n    node_labels: {'*': '*'}\n"))
    locked = cluster.admin("lock", "--node", "prod1", "--ttl", "1h", "--format", "json")
    try:
        refused = ssh(config, "root@prod1", "true")
        assert refused.returncode != 0
        assert "locked" in refused.stderr
        assert ssh(config, "root@node1", "true").returncode == 0
    finally:
        cluster.admin("rm", f"lock/{locked.json()['metadata']['name']}")


def test_an_idle_session_is_ended_with_a_message(
    cluster: ClusterHarness, tmp_path: Path
) -> None:
    user, config = _user_with_role(cluster, tmp_path, "idler", (
        "  allow:\n    logins: [root]\n    node_labels: {'*': '*'}\n"
        "  options:\n    client_idle_timeout: 1s\n"))
    shell = pexpect.spawn("ssh", ["-F", str(config), "-tt", "root@node1"], timeout=20,
                          encoding="utf-8")
    try:
        # Typed again until the shell answers: the timeout counts from the last keystroke,
        # and on a loaded machine the shell can take over a second to start and answer.
        deadline = time.monotonic() + 20
        while shell.expect(["READY-42", pexpect.TIMEOUT], timeout=0.3) != 0:
            assert time.monotonic() < deadline, "the shell never answered"
            shell.sendline("echo READY-$((40+2))")
        shell.expect("idle", timeout=10)
        shell.expect(pexpect.EOF, timeout=10)
    finally:
        shell.close(force=True)


@pytest.fixture
def echo_servers() -> Iterator[tuple[int, int]]:
    """Two TCP echo servers on 127.0.0.1: (allowed port, other port)."""
    servers = [socket.create_server(("127.0.0.1", 0)) for _ in range(2)]
    stop = threading.Event()

    def serve(server: socket.socket) -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.sendall(conn.recv(1024))

    threads = [threading.Thread(target=serve, args=(s,), daemon=True) for s in servers]
    for thread in threads:
        thread.start()
    yield servers[0].getsockname()[1], servers[1].getsockname()[1]
    stop.set()
    for thread in threads:
        thread.join(2)
    for server in servers:
        server.close()


def _forward_echo(config: Path, local: int, remote: int, host: str = "127.0.0.1") -> str:
    """Send "ping" through `ssh -L`; what comes back ("" when the node refused)."""
    proc = subprocess.Popen(
        ["ssh", "-F", str(config), "-N", "-L", f"127.0.0.1:{local}:{host}:{remote}",
         "root@node1"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", local), timeout=5) as conn:
                    conn.sendall(b"ping")
                    try:
                        return conn.recv(16).decode()
                    except ConnectionResetError:
                        return ""
            except ConnectionRefusedError:  # ssh is not listening yet
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait(10)



def test_port_forwarding_outside_the_allow_list_is_refused(
    cluster: ClusterHarness, tmp_path: Path, echo_servers: tuple[int, int]
) -> None:
    allowed, other = echo_servers
    user, config = _user_with_role(cluster, tmp_path, "forwarder", (
        "  allow:\n    logins: [root]\n    node_labels: {'*': '*'}\n"
        f"  options:\n    port_forwarding: ['127.0.0.1:{allowed}']\n"))
    assert _forward_echo(config, free_port(), allowed) == "ping"
    assert _forward_echo(config, free_port(), other) == ""
    refusals = cluster.events_of("port", user="forwarder")
    assert any(e.get("allowed") is False for e in refusals)


def test_forward_allow_lists_judge_the_address_not_the_text(
    cluster: ClusterHarness, tmp_path: Path, echo_servers: tuple[int, int]
) -> None:
    """A look-alike name passes a textual glob; the node judges where it would connect."""
    allowed, _other = echo_servers
    user, config = _user_with_role(cluster, tmp_path, "lookalike", (
        "  allow:\n    logins: [root]\n    node_labels: {'*': '*'}\n"
        f"  options:\n    port_forwarding: ['127.0.0.*:{allowed}']\n"))
    # localhost resolves to an allowed address: admitted, although the text differs.
    assert _forward_echo(config, free_port(), allowed, host="localhost") == "ping"
    # 127.0.0.1.invalid matches the glob's text but is no allowed address.
    assert _forward_echo(config, free_port(), allowed, host="127.0.0.1.invalid") == ""
    lookalike = cluster.events_of("port", user="lookalike", addr=f"127.0.0.1.invalid:{allowed}")
    assert lookalike and all(e["allowed"] is False for e in lookalike)


def test_an_invalid_role_file_changes_nothing(cluster: ClusterHarness, tmp_path: Path) -> None:
    text = (_role_yaml("good-one", "  allow:\n    logins: [x]\n")
            + "---\n" + _role_yaml("bad-one", "  allow:\n    logins: [x]\n"
                                   "  options:\n    max_session_ttl: forever\n"))
    result = _create(cluster, tmp_path, text)
    assert result.returncode != 0
    assert "field 'spec.options.max_session_ttl' (line 17)" in result.stderr
    listed = cluster.admin("get", "roles", "--format", "json").json()
    assert "good-one" not in [r["metadata"]["name"] for r in listed]
    broken = _create(cluster, tmp_path, "kind: role\nmetadata: [\n")
    assert broken.returncode != 0 and "line" in broken.stderr


def test_get_create_rm_and_edit(cluster: ClusterHarness, tmp_path: Path) -> None:
    listed = cluster.admin("get", "roles", "--format", "json").json()
    assert {"access", "editor", "auditor"} <= {r["metadata"]["name"] for r in listed}
    assert _create(cluster, tmp_path, _role_yaml("tmp-role", "  allow:\n    logins: [a]\n")
                   ).returncode == 0
    again = _create(cluster, tmp_path, _role_yaml("tmp-role", "  allow:\n    logins: [b]\n"))
    assert again.returncode != 0 and "already exists" in again.stderr

    editor = tmp_path / "editor.sh"
    editor.write_text("#!/bin/sh\nsed -i 's/- a$/- edited/' \"$1\"\n")
    editor.chmod(0o755)
    edited = cluster.admin("edit", "role/tmp-role", env={"EDITOR": str(editor)})
    assert edited.returncode == 0, edited.stderr
    shown = cluster.admin("get", "role/tmp-role", "--format", "json").json()
    assert shown["spec"]["allow"]["logins"] == ["edited"]

    assert cluster.admin("rm", "role/tmp-role").returncode == 0
    gone = cluster.admin("get", "role/tmp-role")
    assert gone.returncode != 0 and "does not exist" in gone.stderr


def test_edit_refuses_to_overwrite_a_concurrent_change(
    cluster: ClusterHarness, tmp_path: Path
) -> None:
    assert _create(cluster, tmp_path, _role_yaml("race-role", "  allow:\n    logins: [a]\n")
                   ).returncode == 0
    other = tmp_path / "other.yaml"
    other.write_text(_role_yaml("race-role", "  allow:\n    logins: [theirs]\n"))
    # The editor saves someone else's change to the role while "we" are editing.
    editor = tmp_path / "racing-editor.sh"
    editor.write_text(
        "#!/bin/sh\n"
        f"{cluster.cli_command()} create -f {other} --force --data-dir {cluster.data_dir}\n"
        "sed -i 's/- a$/- mine/' \"$1\"\n"
    )
    editor.chmod(0o755)
    result = cluster.admin("edit", "role/race-role", env={"EDITOR": str(editor)})
    assert result.returncode != 0
    assert "changed by someone else" in result.stderr
    shown = cluster.admin("get", "role/race-role", "--format", "json").json()
    assert shown["spec"]["allow"]["logins"] == ["theirs"]


def test_admin_api_checks_rules(cluster: ClusterHarness, tmp_path: Path) -> None:
    auditor = cluster.create_user("audrey", roles="auditor")
    assert cluster.login(auditor).returncode == 0
    refused = cluster.cli("get", "roles", home=auditor.home)
    assert refused.returncode != 0 and "may not list role" in refused.stderr
    lock = cluster.cli("lock", "--user", "someone", home=auditor.home)
    assert lock.returncode != 0 and "may not create lock" in lock.stderr


def test_status_shows_effective_logins_and_options(cluster: ClusterHarness) -> None:
    user = cluster.create_user("statusy", roles="access", logins="statusy")
    assert cluster.login(user).returncode == 0
    status = cluster.cli("status", "--format", "json", home=user.home).json()
    assert status["effective_logins"] == ["statusy"]
    assert status["options"]["port_forwarding"] is True
    assert status["options"]["record_session"] == "best_effort"
