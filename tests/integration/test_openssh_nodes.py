"""Agentless OpenSSH nodes: a stock /usr/sbin/sshd (no Limen code on its side),
configured with exactly the lines `limen nodes add --openssh` printed, reached through
the proxy by `limen ssh` and stock ssh, scp and sftp; the proxy records and audits the
sessions, ends them on a lock, refuses users whose roles do not reach the node's labels,
and refuses an sshd that cannot prove it is the node.

The module shares one cluster and one registered sshd; tests that change the sshd or
the registration make nodes of their own.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import asyncssh
import pexpect
import pytest

from limen.auth.facade import AuthFacade
from limen.auth.identity import Identity
from limen.errors import AccessDenied
from limen.sshauth import read_certificate
from tests.proxy.support import SSHD, wait_until
from tests.support.cluster import ClusterHarness
from tests.support.ports import free_port
from tests.support.recordings import complete_recording, printed_text, recordings_of
from tests.support.ssh_access import (
    CLUSTER,
    SshUser,
    clean_env,
    new_user,
    random_file,
    sha256_file,
    signed_up,
    unique,
)
from tests.support.ssh_access import wait_until as wait_for

BASE_SSHD = (
    "ListenAddress 127.0.0.1\n"
    "AuthorizedKeysFile none\n"
    "PasswordAuthentication no\n"
    "KbdInteractiveAuthentication no\n"
    "PermitRootLogin prohibit-password\n"
    "UsePAM no\n"
    "StrictModes no\n"
    "PidFile none\n"
    "LogLevel VERBOSE\n"
    "UseDNS no\n"
    "Subsystem sftp internal-sftp\n"
)


class StockSshd:
    """/usr/sbin/sshd -D -e -f CFG on 127.0.0.1, with the printed lines."""

    def __init__(self, root: Path, port: int, limen_lines: str) -> None:
        self.port = port
        self.config = root / "sshd_config"
        self.config.write_text(f"Port {port}\n" + BASE_SSHD + limen_lines)
        self.log = root / "sshd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> StockSshd:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        check = subprocess.run([SSHD, "-t", "-f", str(self.config)], capture_output=True,
                               text=True)
        assert check.returncode == 0, check.stderr
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.config)],
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                         start_new_session=True)
        wait_until(lambda: "Server listening" in self.log.read_text(), 10, "sshd to listen")
        return self

    def reload(self) -> None:
        """SIGHUP: sshd starts again with its files read anew, as `systemctl reload`."""
        assert self.proc is not None
        listening = self.log.read_text().count("Server listening")
        self.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: self.log.read_text().count("Server listening") > listening, 10,
                   "sshd to listen again")

    def stop(self) -> None:
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(10)


@dataclass
class Registered:
    name: str
    node_id: str
    out: Path
    printed: str
    sshd: StockSshd


def register(cluster: ClusterHarness, root: Path, name: str, labels: str,
             port: int | None = None) -> tuple[str, Path, int]:
    port = port or free_port()
    out = root / f"{name}-files"
    added = cluster.admin("nodes", "add", "--openssh", name, "--addr", f"127.0.0.1:{port}",
                          "--labels", labels, "--out", str(out), "--install-dir", str(out))
    assert added.returncode == 0, added.stderr
    return added.stdout, out, port


def sshd_lines(printed: str) -> str:
    """The sshd_config lines, as a person copies them from what was printed."""
    keys = ("TrustedUserCAKeys", "HostKey", "HostCertificate", "AuthorizedPrincipalsCommand")
    return "".join(line.strip() + "\n" for line in printed.splitlines()
                   if line.strip().split(" ", 1)[0] in keys or
                   line.strip().startswith("AuthorizedPrincipalsCommandUser"))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterHarness]:
    harness = ClusterHarness(tmp_path_factory.mktemp("openssh")).start()
    try:
        yield harness
    finally:
        harness.stop()


@pytest.fixture(scope="module")
def node(cluster: ClusterHarness, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[Registered]:
    root = tmp_path_factory.mktemp("sshd")
    name = unique("legacy")
    printed, out, port = register(cluster, root, name, "env=legacy")
    sshd = StockSshd(root, port, sshd_lines(printed)).start()
    node_id = re.search(r"\(id ([0-9a-f-]{36})\)", printed).group(1)  # type: ignore[union-attr]
    try:
        yield Registered(name, node_id, out, printed, sshd)
    finally:
        sshd.stop()


def legacy_role(cluster: ClusterHarness, tmp_path: Path) -> str:
    doc = tmp_path / "legacy-role.yaml"
    doc.write_text("kind: role\nversion: v7\nmetadata:\n  name: legacy-ops\nspec:\n"
                   "  allow:\n    logins: [root]\n    node_labels: {env: legacy}\n")
    created = cluster.admin("create", "-f", str(doc), "--force")
    assert created.returncode == 0, created.stderr
    return "legacy-ops"


@pytest.fixture(scope="module")
def alice(cluster: ClusterHarness, node: Registered, tmp_path_factory: pytest.TempPathFactory
          ) -> SshUser:
    role = legacy_role(cluster, tmp_path_factory.mktemp("roles"))
    return new_user(cluster, "alice", roles=f"access,{role}", logins="root")


# -- registering ----------------------------------------------------------------------------


def test_add_prints_what_the_host_needs(node: Registered, alice: SshUser) -> None:
    printed = node.printed
    assert "TrustedUserCAKeys" in printed and "HostCertificate" in printed
    assert f"AuthorizedPrincipalsCommand /bin/echo limen-openssh/{node.node_id}/%u" in printed
    assert "limen nodes cert" in printed  # how to renew
    assert (node.out / "limen_host_key").stat().st_mode & 0o777 == 0o600
    cert = asyncssh.read_certificate(str(node.out / "limen_host_key-cert.pub"))
    assert read_certificate(cert).key_id == node.node_id
    assert f"{node.name}.{CLUSTER}" in cert.principals
    # Clients trust the host CA for any name: a loopback address is never certified.
    assert "127.0.0.1" not in cert.principals
    user_ca = (node.out / "limen_user_ca.pub").read_text().split()
    assert user_ca[1] in printed
    listed = {n["name"]: n for n in alice.limen("ls", "--format", "json").json()}
    assert listed[node.name]["connection"] == "openssh"
    assert listed[node.name]["labels"] == {"env": "legacy"}
    assert listed[node.name]["kind"] == "openssh"


# -- reaching it ----------------------------------------------------------------------------


def test_limen_ssh_reaches_it_and_the_output_is_recorded(
    cluster: ClusterHarness, node: Registered, alice: SshUser
) -> None:
    result = alice.limen("ssh", f"root@{node.name}", "echo agentless-$((6*7)); exit 3")
    assert result.returncode == 3, result.stderr
    assert result.stdout == "agentless-42\n"
    start = wait_for(lambda: cluster.events_of("session.start", user=alice.name,
                                               server_id=node.node_id), 10, "session.start")
    sid = start[0]["sid"]
    assert start[0]["server_hostname"] == node.name and start[0]["login"] == "root"
    wait_for(lambda: cluster.events_of("session.end", sid=sid), 10, "session.end")
    assert cluster.events_of("exec", sid=sid)[0]["exit_code"] == 3
    auditor = new_user(cluster, "auditor", roles="auditor", logins="root")
    complete_recording(auditor, sid)
    assert "agentless-42" in printed_text(auditor, sid)
    assert recordings_of(auditor, alice.name)[0]["node"] == node.name


def test_stock_ssh_scp_and_sftp_reach_it(
    cluster: ClusterHarness, node: Registered, alice: SshUser, tmp_path: Path
) -> None:
    target = f"root@{node.name}.{CLUSTER}"
    stock = alice.ssh(target, "echo stock-$((1+1))")
    assert (stock.returncode, stock.stdout) == (0, b"stock-2\n"), stock.stderr

    sent = random_file(tmp_path / "up.bin", 3)
    remote = f"/tmp/{unique('limen-openssh')}.bin"
    up = alice.tool("scp", str(sent), f"{target}:{remote}")
    assert up.returncode == 0, up.stderr
    assert sha256_file(Path(remote)) == sha256_file(sent)
    back = tmp_path / "back.bin"
    down = subprocess.run(
        ["sftp", "-F", str(alice.config), "-o", "BatchMode=yes", "-b", "-", target],
        input=f"get {remote} {back}\n", capture_output=True, text=True, env=clean_env(),
        timeout=60)
    assert down.returncode == 0, down.stderr
    assert sha256_file(back) == sha256_file(sent)
    again = tmp_path / "again.bin"
    ours = alice.limen("scp", f"root@{node.name}:{remote}", str(again))
    assert ours.returncode == 0, ours.stderr
    assert sha256_file(again) == sha256_file(sent)
    Path(remote).unlink()

    files = wait_for(lambda: [e for e in cluster.events_of("sftp", user=alice.name)
                              if e.get("path", "").endswith(remote)], 10, "sftp events")
    actions = {e["action"] for e in files}
    assert {"upload", "download"} <= actions
    upload = next(e for e in files if e["action"] == "upload")
    assert upload["sha256"] == sha256_file(sent) and upload["len"] == 3 << 20
    assert upload["server_id"] == node.node_id


def test_legacy_scp_is_followed_file_by_file(
    cluster: ClusterHarness, node: Registered, alice: SshUser, tmp_path: Path
) -> None:
    target = f"root@{node.name}.{CLUSTER}"
    sent = random_file(tmp_path / "legacy.bin", 1)
    remote = f"/tmp/{unique('limen-scp')}.bin"
    up = alice.tool("scp", "-O", str(sent), f"{target}:{remote}")
    assert up.returncode == 0, up.stderr
    back = tmp_path / "legacy-back.bin"
    down = alice.tool("scp", "-O", f"{target}:{remote}", str(back))
    assert down.returncode == 0, down.stderr
    assert sha256_file(back) == sha256_file(sent)
    Path(remote).unlink()
    files = wait_for(lambda: [e for e in cluster.events_of("scp", user=alice.name)
                              if e.get("path") == remote], 10, "scp events")
    assert {e["action"] for e in files} == {"upload", "download"}
    assert all(e["sha256"] == sha256_file(sent) and e["len"] == 1 << 20 for e in files)
    assert all(e["server_id"] == node.node_id for e in files)

def test_file_copy_refused_by_a_role(
    cluster: ClusterHarness, node: Registered, tmp_path: Path
) -> None:
    doc = tmp_path / "nocopy.yaml"
    doc.write_text("kind: role\nversion: v7\nmetadata:\n  name: legacy-nocopy\nspec:\n"
                   "  allow:\n    logins: [root]\n    node_labels: {env: legacy}\n"
                   "  options:\n    ssh_file_copy: false\n")
    assert cluster.admin("create", "-f", str(doc), "--force").returncode == 0
    erin = new_user(cluster, "erin", roles="legacy-nocopy", logins="root")
    target = f"root@{node.name}.{CLUSTER}"
    remote = f"/tmp/{unique('nocopy')}"
    for argv in (["scp", str(doc), f"{target}:{remote}"],
                 ["scp", "-O", str(doc), f"{target}:{remote}"]):
        refused = erin.tool(*argv)
        assert refused.returncode != 0
        assert not Path(remote).exists()
    assert "file copy (scp and sftp) is not allowed" in refused.stderr
    assert erin.ssh(target, "echo shell-ok").stdout == b"shell-ok\n"
    rejected = cluster.events_of("session.rejected", user=erin.name)
    assert {e["session_kind"] for e in rejected} == {"subsystem", "exec"}

def test_interactive_shell_with_a_pty(node: Registered, alice: SshUser) -> None:
    argv = alice.ssh_argv("-tt", f"root@{node.name}.{CLUSTER}")
    shell = pexpect.spawn(argv[0], argv[1:], env=clean_env(), timeout=20, dimensions=(33, 101))
    try:
        shell.sendline("stty size; tty; echo pty-$((2*21))")
        shell.expect("pty-42")
        assert b"33 101" in shell.before and b"/dev/pts/" in shell.before
        shell.sendline("exit 5")
        shell.expect(pexpect.EOF)
    finally:
        shell.close()
    assert shell.exitstatus == 5


def check_health(cluster: ClusterHarness) -> None:
    """One round of the proxy's health check, now (it runs every 30 s by itself)."""
    assert cluster.service.jump is not None and cluster.service.jump.openssh is not None
    cluster.run(cluster.service.jump.openssh.health.check_all())


def test_health_shows_in_ls(cluster: ClusterHarness, node: Registered, alice: SshUser) -> None:
    check_health(cluster)
    listed = {n["name"]: n for n in alice.limen("ls", "--format", "json").json()}
    assert (listed[node.name]["state"], listed[node.name]["online"]) == ("ok", True)
    row = next(line for line in alice.limen("ls").stdout.splitlines() if node.name in line)
    assert "openssh" in row and "offline" not in row and "ok" in row


def test_renewing_the_host_certificate(
    cluster: ClusterHarness, node: Registered, alice: SshUser, tmp_path: Path
) -> None:
    """limen nodes cert over the host key the sshd already has; the sshd picks the new
    certificate up at its next reload and is still the node."""
    renewed = cluster.admin("nodes", "cert", node.name, "--pubkey",
                            str(node.out / "limen_host_key.pub"), "--ttl", "90d",
                            "--out", str(tmp_path), "--install-dir", str(node.out))
    assert renewed.returncode == 0, renewed.stderr
    new = read_certificate((tmp_path / "limen_host_key-cert.pub").read_text())
    old = read_certificate((node.out / "limen_host_key-cert.pub").read_text())
    assert new.key_id == old.key_id and new.serial != old.serial
    assert new.valid_before > old.valid_before
    (node.out / "limen_host_key-cert.pub").write_text(
        (tmp_path / "limen_host_key-cert.pub").read_text())
    node.sshd.reload()
    again = alice.limen("ssh", f"root@{node.name}", "echo renewed")
    assert again.stdout == "renewed\n", again.stderr

    other = cluster.admin("nodes", "cert", "node1", "--pubkey",
                          str(node.out / "limen_host_key.pub"), "--out", str(tmp_path))
    assert other.returncode != 0 and "not an OpenSSH node" in other.stderr


# -- locks, roles, and an sshd that is not the node ------------------------------------------


def test_a_lock_ends_the_session_with_its_message(
    cluster: ClusterHarness, node: Registered, tmp_path: Path
) -> None:
    bob = new_user(cluster, "bob", roles=f"access,{legacy_role(cluster, tmp_path)}",
                   logins="root")
    argv = bob.ssh_argv("-tt", f"root@{node.name}.{CLUSTER}")
    shell = pexpect.spawn(argv[0], argv[1:], env=clean_env(), timeout=20)
    locked = None
    try:
        shell.sendline("echo ready-$((3*3))")
        shell.expect("ready-9")
        live = bob.limen("sessions", "ls", "--format", "json").json()
        assert [(s["node"], s["login"], s["interactive"]) for s in live] == [
            (node.name, "root", True)]
        locked = cluster.admin("lock", "--user", bob.name, "--message", "incident 15",
                               "--format", "json")
        assert locked.returncode == 0, locked.stderr
        shell.expect("incident 15", timeout=5)
        shell.expect(pexpect.EOF, timeout=5)
    finally:
        shell.close()
        if locked is not None:
            cluster.admin("rm", f"lock/{locked.json()['metadata']['name']}")
    end = wait_for(lambda: cluster.events_of("session.end", user=bob.name,
                                             server_id=node.node_id), 10, "session.end")
    assert end[0]["reason"] == "locked"


def test_a_user_whose_roles_miss_the_labels_is_refused_at_the_proxy(
    cluster: ClusterHarness, node: Registered, alice: SshUser, tmp_path: Path
) -> None:
    doc = tmp_path / "dev-only.yaml"
    doc.write_text("kind: role\nversion: v7\nmetadata:\n  name: dev-only\nspec:\n"
                   "  allow:\n    logins: [root]\n    node_labels: {env: dev}\n")
    assert cluster.admin("create", "-f", str(doc), "--force").returncode == 0
    carol = new_user(cluster, "carol", roles="dev-only", logins="root")  # env=dev only
    refused = carol.limen("ssh", f"root@{node.name}", "echo never")
    assert refused.returncode != 0
    assert "never" not in refused.stdout
    assert f"do not allow access to node {node.name}" in refused.stderr
    stock = carol.ssh(f"root@{node.name}.{CLUSTER}", "echo never")
    assert stock.returncode == 255 and b"never" not in stock.stdout
    denied = cluster.events_of("proxy.connect", user=carol.name, allowed=False)
    assert denied and {e["server_hostname"] for e in denied} >= {node.name}
    assert not cluster.events_of("session.start", user=carol.name)

    # A login the roles stopped granting after the certificate was issued: the current
    # roles decide, before the sshd hears of it.
    def dave_role(logins: str) -> None:
        doc.write_text("kind: role\nversion: v7\nmetadata:\n  name: dave-role\nspec:\n"
                       f"  allow:\n    logins: [{logins}]\n    node_labels: {{env: legacy}}\n")
        assert cluster.admin("create", "-f", str(doc), "--force").returncode == 0

    dave_role("root, nobody")
    dave = new_user(cluster, "dave", roles="dave-role", logins="root,nobody")
    dave_role("root")
    wrong = dave.limen("ssh", f"nobody@{node.name}", "echo never")
    assert wrong.returncode != 0 and "never" not in wrong.stdout
    assert "do not allow the login 'nobody'" in wrong.stderr, wrong.stderr
    rejected = wait_for(lambda: cluster.events_of("session.rejected", user=dave.name), 10,
                        "session.rejected")
    assert rejected[0]["server_id"] == node.node_id


def test_a_limen_users_own_certificate_does_not_open_the_sshd(
    node: Registered, alice: SshUser
) -> None:
    """Only the proxy's session certificates open it: straight to the sshd with the
    login certificate (principal root, same user CA) is refused by sshd itself."""
    direct = subprocess.run(
        ["ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
         "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-i", alice.status["key_path"], "-o", f"CertificateFile={alice.status['cert_path']}",
         "-p", str(node.sshd.port), "root@127.0.0.1", "echo direct"],
        capture_output=True, env=clean_env(), timeout=30)
    assert direct.returncode == 255 and b"direct" not in direct.stdout
    assert b"Permission denied" in direct.stderr


def _impostor(cluster: ClusterHarness, root: Path, name: str, host_lines: str
              ) -> tuple[str, StockSshd]:
    printed, out, port = register(cluster, root, name, "env=legacy")
    lines = "".join(line + "\n" for line in sshd_lines(printed).splitlines()
                    if not line.startswith(("HostKey", "HostCertificate")))
    return printed, StockSshd(root, port, lines + host_lines).start()


def test_an_sshd_without_the_clusters_host_certificate_is_refused(
    cluster: ClusterHarness, alice: SshUser, tmp_path: Path
) -> None:
    plain = tmp_path / "plain_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(plain)],
                   check=True)
    name = unique("impostor")
    _, sshd = _impostor(cluster, tmp_path, name, f"HostKey {plain}\n")
    try:
        check_health(cluster)
        listed = {n["name"]: n for n in alice.limen("ls", "--format", "json").json()}
        assert listed[name]["online"] is False
        assert "presents no host certificate" in listed[name]["state"]
        assert "openssh (offline)" in alice.limen("ls").stdout

        refused = alice.limen("ssh", f"root@{name}", "echo never")
        assert refused.returncode != 0 and "never" not in refused.stdout
        assert "presents no host certificate" in refused.stderr, refused.stderr
        stock = alice.ssh(f"root@{name}.{CLUSTER}", "echo never")
        assert b"never" not in stock.stdout
        assert b"presents no host certificate" in stock.stderr, stock.stderr
        assert cluster.events_of("session.rejected", user=alice.name, server_hostname=name)
    finally:
        sshd.stop()


def test_an_sshd_with_another_nodes_certificate_is_refused(
    cluster: ClusterHarness, node: Registered, alice: SshUser, tmp_path: Path
) -> None:
    """Certified by the right CA, but for the other node's key and id: not this node."""
    name = unique("copycat")
    _, sshd = _impostor(cluster, tmp_path, name,
                        f"HostKey {node.out / 'limen_host_key'}\n"
                        f"HostCertificate {node.out / 'limen_host_key-cert.pub'}\n")
    try:
        refused = alice.limen("ssh", f"root@{name}", "echo never")
        assert refused.returncode != 0 and "never" not in refused.stdout
        assert "did not prove it is that node" in refused.stderr, refused.stderr
        assert f"{node.node_id}'s" in refused.stderr
    finally:
        sshd.stop()


def test_registering_is_for_admins_and_checks_its_input(
    cluster: ClusterHarness, node: Registered, alice: SshUser, tmp_path: Path
) -> None:
    def add(*args: str, user: SshUser | None = None) -> str:
        argv = ("nodes", "add", "--out", str(tmp_path / "out"), *args)
        result = user.limen(*argv) if user else cluster.admin(*argv)
        assert result.returncode != 0, result.stdout
        assert "Traceback" not in result.stderr
        return result.stderr

    assert "you may not create node" in add("--openssh", unique("x"), "--addr", "127.0.0.1:22",
                                            user=alice)
    assert cluster.events_of("access.denied", user=alice.name, resource="node")
    assert "already registered" in add("--openssh", node.name, "--addr", "127.0.0.1:22")
    for reserved in ("localhost", "proxy", node.node_id, "10.1.2.3"):
        assert "is reserved or an address" in add("--openssh", reserved, "--addr",
                                                  "127.0.0.1:22")
    assert "is not HOST:PORT" in add("--openssh", unique("x"), "--addr", "127.0.0.1")
    assert "169.254.169.254" in add("--openssh", unique("x"), "--addr", "169.254.169.254:22")
    bad = tmp_path / "bad.pub"
    bad.write_text("ssh-ed25519 not-a-key\n")
    assert "not a valid OpenSSH public key" in add("--openssh", unique("x"), "--addr",
                                                   "127.0.0.1:22", "--pubkey", str(bad))


def test_only_the_proxy_obtains_session_certificates(
    cluster: ClusterHarness, node: Registered, alice: SshUser
) -> None:
    """A person, or a node, asking the auth service for a certificate that opens the sshd
    is refused and audited; the proxy's own identity gets one only within the roles."""
    auth = cluster.service.auth
    assert auth is not None
    key = asyncssh.generate_private_key("ssh-ed25519").export_public_key("openssh").decode()
    for caller in (Identity(user=alice.name, roles=["access", "legacy-ops"]),
                   Identity(user=node.node_id, builtin="node")):
        with pytest.raises(AccessDenied, match="only the proxy"):
            cluster.run(AuthFacade(auth, caller).openssh_session_cert(
                alice.name, "root", node.node_id, key))
    assert cluster.events_of("access.denied", user=alice.name, verb="connect")
    proxy = AuthFacade(auth, Identity(user="proxy", builtin="proxy"))
    cert = read_certificate(cluster.run(proxy.openssh_session_cert(
        alice.name, "root", node.node_id, key)).export_certificate("openssh"))
    assert cert.principals == (f"limen-openssh/{node.node_id}/root",)
    assert cert.key_id == alice.name
    assert (cert.valid_before - cert.valid_after).total_seconds() <= 180
    with pytest.raises(AccessDenied):  # a login alice's roles do not grant there
        cluster.run(proxy.openssh_session_cert(alice.name, "postgres", node.node_id, key))


def test_a_node_lock_refuses_and_removal_forgets_it(
    cluster: ClusterHarness, node: Registered, alice: SshUser, tmp_path: Path
) -> None:
    locked = cluster.admin("lock", "--node", node.name, "--message", "maintenance",
                           "--ttl", "1h", "--format", "json")
    assert locked.returncode == 0, locked.stderr
    try:
        def refused() -> bool:
            tried = alice.limen("ssh", f"root@{node.name}", "echo never")
            return tried.returncode != 0 and "maintenance" in tried.stderr

        wait_until(refused, 15, "the node lock's refusal")
    finally:
        cluster.admin("rm", f"lock/{locked.json()['metadata']['name']}")
    # The removal reaches the proxy's lock cache through the watch feed: soon, not at once.
    wait_until(lambda: alice.limen("ssh", f"root@{node.name}", "echo back").stdout
               == "back\n", 15, "the node reachable again once its lock is removed")

    name = unique("gone")
    register(cluster, tmp_path, name, "env=legacy")
    removed = cluster.admin("rm", f"node/{name}")
    assert removed.returncode == 0, removed.stderr
    assert name not in alice.limen("ls").stdout
    unknown = alice.limen("ssh", f"root@{name}", "true")
    assert unknown.returncode != 0 and "is not known" in unknown.stderr


# Last in the module: it moves the cluster's clock ahead of the sshd's.
def test_expiry_ends_the_session_saying_why(
    cluster: ClusterHarness, node: Registered, tmp_path: Path
) -> None:
    doc = tmp_path / "short.yaml"
    doc.write_text("kind: role\nversion: v7\nmetadata:\n  name: legacy-short\nspec:\n"
                   "  allow:\n    logins: [root]\n    node_labels: {env: legacy}\n"
                   "  options:\n    disconnect_expired_cert: true\n")
    assert cluster.admin("create", "-f", str(doc), "--force").returncode == 0
    person = signed_up(cluster, unique("brief"), "legacy-short", "root")
    assert cluster.login(person, "--ttl", "5m").returncode == 0
    config = person.home / "ssh_config"
    config.write_text(cluster.cli("config", home=person.home).stdout)
    shell = pexpect.spawn("ssh", ["-F", str(config), "-o", "BatchMode=yes", "-tt",
                                  f"root@{node.name}.{CLUSTER}"], env=clean_env(), timeout=20)
    try:
        shell.sendline("echo live-$((5*5))")
        shell.expect("live-25")
        cluster.clock.advance(timedelta(minutes=6))
        shell.expect("certificate expired", timeout=5)
        shell.expect(pexpect.EOF, timeout=5)
    finally:
        shell.close(force=True)
    end = wait_for(lambda: cluster.events_of("session.end", user=person.name), 10,
                   "session.end")
    assert end[0]["reason"] == "certificate expired"
