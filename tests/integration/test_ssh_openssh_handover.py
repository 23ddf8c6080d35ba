"""`limen ssh NODE` hands a single node to OpenSSH's ssh (client/openssh_exec.py).

A stand-in `ssh` first on PATH writes down its arguments and then runs the real one, so
each test can tell which client ran. What the hand-over must keep: the refusals limen
explains before a packet leaves (expired certificate, a login it does not name, -L or
-A it does not permit) still come before any ssh runs; the local reading of the
certificate is only an explanation, never trust (a certificate edited on disk still
meets the proxy's refusal); the cluster's host CA alone is trusted, not another
cluster's; and LIMEN_SSH_CLIENT=native, or a machine without ssh, keeps the asyncssh
client.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
import struct
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from limen.cli import launcher
from tests.support.cluster import ClusterHarness
from tests.support.importtime import imported_modules
from tests.support.ssh_access import (
    CLUSTER,
    SshUser,
    ensure_local_user,
    new_user,
    sign_by_hand,
    wait_until,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module", autouse=True)
def _local_account() -> None:
    ensure_local_user()


class StandIn:
    """An `ssh` on PATH that records each argv as a JSON line, then execs the real ssh."""

    def __init__(self, directory: Path) -> None:
        real = shutil.which("ssh")
        assert real is not None
        directory.mkdir()
        self.log = directory / "argv.jsonl"
        script = directory / "ssh"
        script.write_text(
            "#!/bin/sh\n"
            f"python3 -c 'import json,sys; print(json.dumps(sys.argv[1:]))' \"$@\" >> {self.log}\n"
            f'exec {real} "$@"\n'
        )
        script.chmod(0o755)
        self.env = {"PATH": f"{directory}:{os.environ['PATH']}"}

    def calls(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]


@pytest.fixture
def stand_in(tmp_path: Path) -> StandIn:
    return StandIn(tmp_path / "bin")


def test_a_node_is_handed_to_openssh_with_the_clusters_config(
    cluster: ClusterHarness, stand_in: StandIn
) -> None:
    alice = new_user(cluster, "handover")
    ran = alice.limen("ssh", "-T", "root@node1", "echo", "-n", "hi;", "exit 4",
                      env=stand_in.env)
    assert (ran.returncode, ran.stdout) == (4, "hi"), ran.stderr
    [argv] = stand_in.calls()
    config = Path(argv[argv.index("-F") + 1])
    assert argv[argv.index("-l") + 1] == "root"
    assert argv[argv.index("--") + 1:] == [f"node1.{CLUSTER}", "echo", "-n", "hi;", "exit 4"]
    assert "-T" in argv

    # The config and its known_hosts are the user's alone, and trust this cluster's host
    # CA only: the profile's line, not every line of the shared known_hosts.
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    text = config.read_text()
    known_hosts = Path(next(line.split(None, 1)[1].strip('"') for line in text.splitlines()
                            if line.strip().startswith("UserKnownHostsFile")))
    profile = json.loads((config.parent / "profile.json").read_text())
    assert known_hosts.read_text() == profile["host_ca"].strip() + "\n"
    assert stat.S_IMODE(known_hosts.stat().st_mode) == 0o600


def _expire_certificate(cluster: ClusterHarness, user: SshUser, tmp_path: Path) -> None:
    """Put a certificate that expired two hours ago, signed by the cluster, in place of
    the user's."""
    past = datetime.now(UTC) - timedelta(hours=2)
    old = sign_by_hand(tmp_path / "old", cluster.service.auth.ctx.cas.user_ca, user.name,
                       ["root"], valid_after=past - timedelta(hours=1), valid_before=past)
    Path(user.status["cert_path"]).write_bytes(old.cert.read_bytes())


def test_the_next_hand_over_comes_from_the_memo_until_the_certificate_changes(
    cluster: ClusterHarness, stand_in: StandIn, tmp_path: Path
) -> None:
    """The memo of the first hand-over lets the second skip argparse, the profile and the
    certificate (client/openssh_fast.py); a new certificate sends the third through the
    full checks again, which refuse it in words."""
    alice = new_user(cluster, "homemo", logins="root")
    profiled = {**stand_in.env, "PYTHONPROFILEIMPORTTIME": "1"}
    first = alice.limen("ssh", "root@node1", "echo one", env=profiled)
    second = alice.limen("ssh", "root@node1", "echo two", env=profiled)
    assert (first.stdout, second.stdout) == ("one\n", "two\n"), first.stderr + second.stderr
    assert "argparse" in imported_modules(first.stderr)
    assert "argparse" not in imported_modules(second.stderr)  # the memo's way
    calls = stand_in.calls()
    assert calls[0][:-1] == calls[1][:-1]  # the same ssh arguments, but for the command

    _expire_certificate(cluster, alice, tmp_path)
    expired = alice.limen("ssh", "root@node1", "true", env=stand_in.env)
    assert expired.returncode == 255
    assert "certificate has expired; run limen login" in expired.stderr
    assert len(stand_in.calls()) == 2


def test_the_shell_front_reaches_the_node_without_python_until_the_certificate_changes(
    cluster: ClusterHarness, stand_in: StandIn, tmp_path: Path
) -> None:
    """The `limen` scripts/install writes (cli/launcher.sh), with a Python that must not
    run: from the memo, `limen ssh LOGIN@NODE COMMAND` reaches the real node through the
    real proxy; once the certificate changes, the words go to Python."""
    alice = new_user(cluster, "hofront", logins="root")
    first = alice.limen("ssh", "root@node1", "echo one", env=stand_in.env)  # leaves the memo
    assert first.stdout == "one\n", first.stderr
    no_python = tmp_path / "no-python"
    no_python.write_text("#!/bin/sh\necho 'Python ran' >&2\nexit 97\n")
    no_python.chmod(0o755)
    front = tmp_path / "limen"
    launcher.install(str(front), str(no_python))
    env = {**os.environ, "LIMEN_HOME": str(alice.home), **stand_in.env}
    env.pop("SSH_AUTH_SOCK", None)

    def front_ssh() -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(front), "ssh", "root@node1", "echo two"], env=env,
                              capture_output=True, text=True, timeout=60)

    second = front_ssh()
    assert (second.returncode, second.stdout) == (0, "two\n"), second.stderr
    calls = stand_in.calls()
    assert calls[1][:-1] == calls[0][:-1]  # the same ssh arguments, but for the command

    _expire_certificate(cluster, alice, tmp_path)
    expired = front_ssh()
    assert (expired.returncode, expired.stderr) == (97, "Python ran\n")
    assert len(stand_in.calls()) == 2


def test_refusals_limen_explains_come_before_any_ssh_runs(
    cluster: ClusterHarness, stand_in: StandIn, tmp_path: Path
) -> None:
    alice = new_user(cluster, "horefuse", logins="root")
    login = alice.limen("ssh", "nobody@node1", "true", env=stand_in.env)
    assert login.returncode == 255
    assert "does not allow login 'nobody'" in login.stderr
    agent = alice.limen("ssh", "-A", "node1", "true",
                        env={**stand_in.env, "SSH_AUTH_SOCK": ""})
    assert agent.returncode == 255 and "none is running" in agent.stderr

    _expire_certificate(cluster, alice, tmp_path)
    expired = alice.limen("ssh", "node1", "true", env=stand_in.env)
    assert expired.returncode == 255
    assert "certificate has expired; run limen login" in expired.stderr
    assert "Traceback" not in login.stderr + agent.stderr + expired.stderr
    assert stand_in.calls() == []


def _with_principals(cert_line: str, principals: list[str]) -> str:
    """The same certificate with its principals replaced: its signature no longer fits."""
    kind, b64 = cert_line.split()[:2]
    blob = base64.b64decode(b64)
    parsed = asyncssh.import_certificate(cert_line)
    old = b"".join(struct.pack(">I", len(p)) + p.encode() for p in parsed.principals)
    new = b"".join(struct.pack(">I", len(p)) + p.encode() for p in principals)
    old_field, new_field = struct.pack(">I", len(old)) + old, struct.pack(">I", len(new)) + new
    assert blob.count(old_field) == 1
    return f"{kind} {base64.b64encode(blob.replace(old_field, new_field)).decode()}\n"


def test_a_certificate_edited_on_disk_passes_the_local_check_and_meets_the_proxys_refusal(
    cluster: ClusterHarness, stand_in: StandIn
) -> None:
    alice = new_user(cluster, "hoforge", logins="root")
    cert_path = Path(alice.status["cert_path"])
    cert_path.write_text(_with_principals(cert_path.read_text(), ["root", "admin"]))

    def refusals() -> list[dict[str, Any]]:
        return [e for e in cluster.events_of("auth", code="T3007W", method="cert")
                if e["success"] is False]

    before = len(refusals())
    forged = alice.limen("ssh", "admin@node1", "true", env=stand_in.env)
    assert forged.returncode == 255
    assert "Permission denied" in forged.stderr, forged.stderr
    assert len(stand_in.calls()) == 1  # limen's own reading let it through to ssh
    # ssh itself finds the signature wrong and offers the bare key, which the proxy
    # refuses as well: either way the edit bought nothing.
    wait_until(lambda: refusals()[before:], 10, "the proxy's refusal of the edited cert")


def test_another_clusters_host_ca_in_the_shared_known_hosts_is_not_trusted(
    cluster: ClusterHarness, stand_in: StandIn
) -> None:
    alice = new_user(cluster, "hohostca")
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key("openssh").decode()
    profile_path = Path(alice.status["cert_path"]).parent / "profile.json"
    profile = json.loads(profile_path.read_text())
    shared = Path(alice.status["known_hosts_path"])
    # The shared file still holds the real CA; the profile names another cluster's.
    profile_path.write_text(json.dumps({**profile, "host_ca": f"@cert-authority * {other}"}))
    assert profile["host_ca"].split()[-1] in shared.read_text()
    refused = alice.limen("ssh", "node1", "true", env=stand_in.env)
    assert refused.returncode == 255
    assert "Host key verification failed" in refused.stderr, refused.stderr


@pytest.mark.parametrize("how", ["LIMEN_SSH_CLIENT=native", "no ssh on PATH"])
def test_the_asyncssh_client_runs_when_asked_or_without_openssh(
    cluster: ClusterHarness, stand_in: StandIn, tmp_path: Path, how: str
) -> None:
    alice: SshUser = new_user(cluster, "honative")
    if how == "no ssh on PATH":
        env = {"PATH": str(tmp_path / "empty")}
        (tmp_path / "empty").mkdir()
    else:
        env = {**stand_in.env, "LIMEN_SSH_CLIENT": "native"}
    ran = alice.limen("ssh", "root@node1", "echo native; exit 3", env=env)
    assert (ran.returncode, ran.stdout) == (3, "native\n"), ran.stderr
    killed = alice.limen("ssh", "root@node1", "kill -TERM $$", env=env)
    assert "killed by signal TERM" in killed.stderr  # said by the asyncssh client only
    assert stand_in.calls() == []


@pytest.mark.parametrize("node", [
    # No "=": a word with one is a label selector, which never reaches ssh.
    "-oProxyCommand touch {marker}." + CLUSTER,  # an option where the node goes
    "-oProxyCommand touch {marker}",  # the same, given to ssh as -o HostName=...
    "x ProxyCommand touch {marker}",  # a second setting inside -o HostName=...
    "x\nProxyCommand touch {marker}",
])
def test_a_node_name_cannot_smuggle_options_into_ssh(
    cluster: ClusterHarness, stand_in: StandIn, tmp_path: Path, node: str
) -> None:
    alice = new_user(cluster, "hoinject")
    marker = tmp_path / "ran"
    ran = alice.limen("ssh", "--", node.format(marker=marker), "true", env=stand_in.env)
    assert ran.returncode == 255, ran.stderr
    assert list(tmp_path.glob("ran*")) == []  # ".CLUSTER" may have been appended
    assert "Traceback" not in ran.stderr
