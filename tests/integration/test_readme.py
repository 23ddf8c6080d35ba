"""Every command in the README's shell blocks, run as written, in the README's order,
against the cluster the README's own quick start starts.

The README's placeholders (the signup token `3f9c...`, `sha256:ab12...`, `CLUSTER`, the
proxy's address, a lock's `ID`) are replaced by the values the earlier commands printed;
ports the README names (3080, 8080, 3000, 9000) become free ones, since other clusters
may run on this machine. A command of the README that this walk does not run fails the
test, so the README cannot grow a command nobody ran. Excluded, with the reason: the
test suite itself, and systemd commands (they need systemd as PID 1; the unit files are
checked by systemd-analyze in test_examples.py).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pexpect
import pytest

from limen import totp
from limen.config import load_config
from tests.support.cluster import PASSWORD
from tests.support.ports import free_port, free_ports
from tests.support.ssh_access import wait_until

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
EXCLUDED = {
    "./scripts/test": "runs this very test suite",
    "sudo install -m 0644 examples/limen.service /etc/systemd/system/limen.service":
        "needs systemd as PID 1",
    "sudo systemctl daemon-reload && sudo systemctl enable --now limen": "needs systemd",
    "sudo systemctl reload limen": "needs systemd",
    "limen start --roles auth,proxy --config ha.yaml":
        "needs PostgreSQL and two hosts; test_ha.py runs two instances this way",
    "limen status --cluster --config ha.yaml": "test_ha.py runs it against two instances",
}


def readme_commands(text: str) -> list[str]:
    """The command lines of the README's ```sh blocks, continuations joined, comments cut."""
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        joined = re.sub(r"\\\n\s*", "", block)
        for line in joined.splitlines():
            line = re.split(r"\s{2,}#", line)[0].strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands



def _totp_now(secret: str, back_steps: int = 0) -> str:
    when = datetime.fromtimestamp(datetime.now(UTC).timestamp() - back_steps * 30, UTC)
    return totp.code_at(secret, when)


class Walk:
    """The reader's machine: a home, a working directory, and what earlier commands said."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.home = base / "home"
        (self.home / ".ssh").mkdir(parents=True, mode=0o700)
        self.cwd = base / "work"
        (self.cwd / "site").mkdir(parents=True)
        (self.cwd / "site" / "index.html").write_text("<p>readme</p>\n")
        (self.cwd / "file").write_text("a file\n")
        self.data = base / "data"
        self.config = base / "limen.yaml"
        # Fixed ports, as a real cluster has: a restart comes back where clients know it.
        web, ssh, tunnel, node = free_ports(4)
        self.config.write_text(
            f"cluster_name: readme.limen\ndata_dir: {self.data}\n"
            f"proxy:\n  web_listen_addr: 127.0.0.1:{web}\n"
            f"  ssh_listen_addr: 127.0.0.1:{ssh}\n  tunnel_listen_addr: 127.0.0.1:{tunnel}\n"
            f"ssh:\n  listen_addr: 127.0.0.1:{node}\n  name: web-1\n  labels: {{env: dev}}\n"
        )
        self.values: dict[str, str] = {"CLUSTER": "readme.limen"}
        self.background: list[subprocess.Popen[bytes]] = []
        self.ran: list[str] = []
        self.cluster: subprocess.Popen[bytes] | None = None
        # The identity providers the single sign-on section connects to (stopped at the end),
        # and the CA their certificates come from.
        self.services: list[Any] = []
        self.ca: Any = None

    # -- running ---------------------------------------------------------------------

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("SSH_AUTH_SOCK", "LIMEN_HOME")}
        env.update(HOME=str(self.home), LIMEN_DATA_DIR=str(self.data), LC_ALL="C",
                   PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}")
        env.update(extra)
        return env

    def fill(self, command: str) -> str:
        for placeholder, value in self.values.items():
            command = command.replace(placeholder, value)
        return command

    def run(self, command: str, **extra: str) -> str:
        result = subprocess.run(["bash", "-c", self.fill(command)], cwd=self.cwd,
                                capture_output=True, text=True, env=self.env(**extra),
                                timeout=120, stdin=subprocess.DEVNULL)
        assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
        return result.stdout

    def start(self, command: str, log: str, cwd: Path | None = None,
              **extra: str) -> subprocess.Popen[bytes]:
        out = (self.base / log).open("ab")
        proc = subprocess.Popen(["bash", "-c", f"exec {self.fill(command)}"],
                                cwd=cwd or self.cwd,
                                stdout=out, stderr=subprocess.STDOUT, env=self.env(**extra),
                                stdin=subprocess.DEVNULL, start_new_session=True)
        out.close()
        self.background.append(proc)
        return proc

    def spawn(self, command: str) -> pexpect.spawn:
        return pexpect.spawn("bash", ["-c", self.fill(command)], cwd=str(self.cwd),
                             env=self.env(), encoding="utf-8", timeout=60)

    @staticmethod
    def stop(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)

    def stop_all(self) -> None:
        for proc in reversed(self.background):
            self.stop(proc)
        for service in self.services:
            service.stop()

    def log(self, name: str) -> str:
        return (self.base / name).read_text(errors="replace")

    def run_file(self) -> dict[str, str]:
        return json.loads((self.data / "run.json").read_text())

    def wait_cluster(self, proc: subprocess.Popen[bytes], log: str) -> None:
        wait_until(lambda: (self.data / "run.json").exists() or proc.poll() is not None,
                   300, "limen start to listen")
        assert proc.poll() is None, self.log(log)
        self.values["127.0.0.1:3080"] = self.values["HOST:3080"] = \
            self.values["proxy.example.com:3080"] = self.run_file()["web_addr"]
        self.cluster = proc

    def nodes(self) -> list[str]:
        listed = json.loads(self.run("limen ls --format json"))
        return [n["name"] for n in listed]


# One function per README command (the key is the command as written).

def quickstart(walk: Walk, command: str) -> None:
    # "Arguments after quickstart go to limen start": ports of its own, this data dir.
    proc = walk.start(f"{command} --config {walk.config}", "cluster.log", cwd=REPO)
    walk.wait_cluster(proc, "cluster.log")
    assert "limen users add alice" in walk.log("cluster.log")


def users_add(walk: Walk, command: str) -> None:
    out = walk.run(command)
    printed = re.search(r"limen signup (\S+) --proxy (\S+) --ca-pin (sha256:\S+)", out)
    assert printed, out
    walk.values["3f9c..."] = printed.group(1)
    walk.values["sha256:ab12..."] = walk.values["sha256:..."] = printed.group(3)
    assert printed.group(2) == walk.run_file()["web_addr"]


def signup(walk: Walk, command: str) -> None:
    child = walk.spawn(command)
    child.expect("New password")
    child.sendline(PASSWORD)
    child.expect("Repeat it")
    child.sendline(PASSWORD)
    child.expect(r"secret=([A-Z2-7]+)")
    walk.values["secret"] = secret = child.match.group(1)
    child.expect("6-digit code: ")
    # A person types what the app shows: the previous code while it is still accepted,
    # else the current one (and signup then waits for the next, saying so).
    into_step = datetime.now(UTC).timestamp() % 30
    child.sendline(_totp_now(secret, back_steps=1 if into_step > 3 else 0))
    child.expect("Now run:", timeout=70)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def login(walk: Walk, command: str) -> None:
    child = walk.spawn(command)
    child.expect("Password: ")
    child.sendline(PASSWORD)
    child.expect("TOTP code: ")
    child.sendline(_totp_now(walk.values["secret"]))
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
    profile = json.loads(next((walk.home / ".limen" / "keys").glob("*/profile.json"))
                         .read_text())
    walk.values["proxy.example.com:3023"] = profile["ssh_proxy"]


def expect_output(pattern: str) -> Callable[[Walk, str], None]:
    def check(walk: Walk, command: str) -> None:
        out = walk.run(command)
        assert re.search(pattern, out), f"{command}: {out}"
    return check


def interactive_shell(walk: Walk, command: str) -> None:
    child = walk.spawn(command)
    child.sendline("echo readme-$((6*7)); exit")
    child.expect("readme-42")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def local_forward(walk: Walk, command: str) -> None:
    port = str(free_port())
    proc = walk.start(command.replace("8080", port), "forward.log")
    wait_until(lambda: _listening(int(port)) or proc.poll() is not None, 30,
               "limen ssh -L to listen")
    assert proc.poll() is None, walk.log("forward.log")
    walk.stop(proc)


def remote_forward(walk: Walk, command: str) -> None:
    port = free_port()
    proc = walk.start(command.replace("9000:", f"{port}:"), "rforward.log")
    # The node (this same machine) listens on its loopback for the user's forward.
    wait_until(lambda: _listening(port) or proc.poll() is not None, 30, "ssh -R to listen")
    assert proc.poll() is None, walk.log("rforward.log")
    walk.stop(proc)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return True
    except OSError:
        return False


def scp_site(walk: Walk, command: str) -> None:
    try:
        walk.run(command)
        assert Path("/srv/site/index.html").read_text() == "<p>readme</p>\n"
    finally:
        shutil.rmtree("/srv/site", ignore_errors=True)


def stock_scp(walk: Walk, command: str) -> None:
    try:
        walk.run(command)
        assert Path("/tmp/file").read_text() == "a file\n"
    finally:
        Path("/tmp/file").unlink(missing_ok=True)


def tokens_add(walk: Walk, command: str) -> None:
    out = walk.run(command)
    printed = re.search(r"--token (\S+)", out)
    assert printed and "--proxy" in out and "--ca-pin" in out, out
    walk.values["--token T "] = walk.values["--token TOKEN "] = f"--token {printed.group(1)} "


def join_node(name: str, log: str) -> Callable[[Walk, str], None]:
    def run(walk: Walk, command: str) -> None:
        node_dir = walk.base / log  # another host's data dir
        proc = walk.start(command, f"{log}.log", LIMEN_DATA_DIR=str(node_dir))
        wait_until(lambda: name in walk.nodes() or proc.poll() is not None, 60,
                   f"node {name} to join")
        assert proc.poll() is None, walk.log(f"{log}.log")
        assert "joined cluster readme.limen" in walk.log(f"{log}.log")
        walk.stop(proc)
    return run


def create_roles(walk: Walk, command: str) -> None:
    yaml_block = re.search(r"```yaml\n(kind: role.*?)```", README.read_text(), re.S)
    assert yaml_block
    (walk.cwd / "roles.yaml").write_text(yaml_block.group(1))
    walk.run(command)


def edit_role(walk: Walk, command: str) -> None:
    editor = walk.base / "editor.sh"
    editor.write_text("#!/bin/sh\nsed -i 's/max_sessions: 10/max_sessions: 9/' \"$1\"\n")
    editor.chmod(0o755)
    walk.run(command, EDITOR=str(editor))
    assert "max_sessions: 9" in walk.run("limen get role/prod-ops --format yaml")


def get_locks(walk: Walk, command: str) -> None:
    walk.run(command)
    locks = json.loads(walk.run(f"{command} --format json"))
    walk.values["lock/ID"] = f"lock/{locks[0]['metadata']['name']}"


def restart_with_diag(walk: Walk, command: str) -> None:
    assert walk.cluster is not None
    walk.stop(walk.cluster)  # the reader restarts the cluster with the new flags
    walk.values["127.0.0.1:3000"] = f"127.0.0.1:{free_port()}"
    proc = walk.start(f"{command} --config {walk.config}", "cluster2.log")
    walk.wait_cluster(proc, "cluster2.log")
    records = [json.loads(line) for line in walk.log("cluster2.log").splitlines()
               if line.startswith("{")]
    assert records and all("component" in r for r in records)


def readyz(walk: Walk, command: str) -> None:
    assert json.loads(walk.run(command))["ready"] is True


def _readme_yaml(kind: str) -> str:
    block = re.search(rf"```yaml\n( *# \S+\n *kind: {kind}\n.*?)```", README.read_text(),
                      re.S)
    assert block, f"the README's {kind} connector"
    return textwrap.dedent(block.group(1))


def _test_ca(walk: Walk) -> Any:
    from tests.sso.pki import TestCA

    if walk.ca is None:
        walk.ca = TestCA(walk.base / "pki", "readme-providers")
    return walk.ca


# The reader's identity provider: the admin, in groups the README's mapping gives access
# and editor (so the LDAP connector that follows is theirs to create).
README_IDP_USER = {"alice": {"password": "alice-at-the-idp", "claims": {
    "email": "alice@example.com", "groups": ["ops", "admins-limen"],
    "unix_logins": ["root"]}}}


def create_oidc_connector(walk: Walk, command: str) -> None:
    """The README's connector, pointed at the test's provider (oidc-provider from npm)."""
    from tests.sso.oidc_server import CLIENT_ID, CLIENT_SECRET, OIDCProvider

    ca = _test_ca(walk)
    redirect = f"https://{walk.values['proxy.example.com:3080']}/v1/sso/oidc/callback"
    provider = OIDCProvider(walk.base, ca.server("idp"), redirect, README_IDP_USER).start()
    walk.services.append(provider)
    secret = walk.base / "okta.secret"
    secret.write_text(CLIENT_SECRET + "\n")
    text = (_readme_yaml("oidc").replace("https://example.okta.com", provider.issuer)
            .replace("0oa1b2c3d4", CLIENT_ID).replace("/etc/limen/okta.secret", str(secret))
            .replace("spec:\n", f"spec:\n  ca_file: {ca.path}\n"))
    # Only the proxy's address: fill() would also replace words such as "secret".
    web = walk.values["proxy.example.com:3080"]
    (walk.cwd / "okta.yaml").write_text(text.replace("proxy.example.com:3080", web))
    walk.run(command)


def oidc_login(walk: Walk, command: str) -> None:
    """`limen login --auth okta`: $BROWSER is the tests' scripted browser."""
    browser = walk.base / "browser.sh"
    browser.write_text(f'#!/bin/sh\nexec {sys.executable} {REPO}/tests/sso/browser.py "$1"\n')
    browser.chmod(0o755)
    assert walk.ca is not None
    out = walk.run(command, BROWSER=str(browser), LIMEN_TEST_IDP_USER="alice",
                   LIMEN_TEST_IDP_PASSWORD=README_IDP_USER["alice"]["password"],
                   LIMEN_TEST_CAS=f"{walk.ca.path}:{walk.data / 'ca' / 'tls_ca.crt'}",
                   LIMEN_TEST_BROWSER_LOG=str(walk.base / "browser.log"))
    assert "alice@example.com" in out and "access" in out, out


def create_ldap_connector(walk: Walk, command: str) -> None:
    """The README's connector, pointed at a slapd of the test's own (same DNs)."""
    from tests.sso.slapd import SERVICE_PASSWORD, Slapd

    ca = _test_ca(walk)
    directory = Slapd(walk.base / "slapd", ca.server("ldap", hosts=("127.0.0.1",))).start()
    walk.services.append(directory)
    secret = walk.base / "ldap-bind.secret"
    secret.write_text(SERVICE_PASSWORD + "\n")
    text = (_readme_yaml("ldap").replace("ldaps://ldap.example.com:636", directory.ldaps_url)
            .replace("/etc/limen/ldap-ca.pem", str(ca.path))
            .replace("/etc/limen/ldap-bind.secret", str(secret)))
    (walk.cwd / "corp.yaml").write_text(text)
    walk.run(command)


def ldap_login(walk: Walk, command: str) -> None:
    from tests.sso.slapd import PASSWORDS

    child = walk.spawn(command)
    child.expect("Corporate directory password: ")
    child.sendline(PASSWORDS["dave"])
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
    assert "dave" in child.before


RUNNERS: dict[str, Callable[[Walk, str], None]] = {
    "./scripts/quickstart": quickstart,
    "limen users add alice --roles access,editor --logins alice,root": users_add,
    "limen signup 3f9c... --proxy 127.0.0.1:3080 --ca-pin sha256:ab12...": signup,
    "limen login --proxy 127.0.0.1:3080 --user alice": login,
    "limen status": expect_output(r"alice"),
    "limen ls": expect_output(r"web-1"),
    "limen ssh root@web-1 uptime": expect_output(r"load average"),
    "limen ssh -t web-1": interactive_shell,
    "limen ssh env=dev 'df -h /'": expect_output(r"web-1.*Filesystem|Filesystem"),
    "limen ssh -L 8080:127.0.0.1:80 web-1 -N": local_forward,
    "limen scp -r ./site root@web-1:/srv/": scp_site,
    "limen sessions ls": expect_output(r""),
    "limen config > ~/.ssh/limen_config": expect_output(r""),
    "ssh -F ~/.ssh/limen_config root@web-1.CLUSTER uptime": expect_output(r"load average"),
    "scp -F ~/.ssh/limen_config file root@web-1.CLUSTER:/tmp/": stock_scp,
    "ssh -F ~/.ssh/limen_config -J alice@proxy.example.com:3023 root@web-1.CLUSTER uptime":
        expect_output(r"load average"),
    "ssh -F ~/.ssh/limen_config -R 9000:127.0.0.1:8000 root@web-1.CLUSTER -N": remote_forward,
    "limen tokens add --type node --labels env=prod --ttl 30m": tokens_add,
    "limen start --roles node --token T --proxy HOST:3080 --ca-pin sha256:... --name web-2 "
    "--labels team=web": join_node("web-2", "node-web-2"),
    "limen get roles": expect_output(r"access"),
    "limen create -f roles.yaml": create_roles,
    "limen edit role/prod-ops": edit_role,
    "limen rm role/prod-ops": expect_output(r""),
    'limen lock --user bob --message "incident 42" --ttl 2h': expect_output(r""),
    "limen get locks": get_locks,
    "limen rm lock/ID": expect_output(r""),
    "limen start --diag-addr 127.0.0.1:3000 --log-format json": restart_with_diag,
    "curl -s http://127.0.0.1:3000/metrics | grep '^limen_'":
        expect_output(r"limen_logins_total|limen_certificates_issued_total"),
    "curl -s http://127.0.0.1:3000/readyz": readyz,
    "limen start --roles node --token TOKEN --proxy proxy.example.com:3080 --ca-pin "
    "sha256:... --name db-1": join_node("db-1", "node-nat"),
    "limen create -f okta.yaml": create_oidc_connector,
    "limen get connectors": expect_output(r"okta"),
    "limen login --proxy proxy.example.com:3080 --auth okta": oidc_login,
    "limen create -f corp.yaml": create_ldap_connector,
    "limen login --proxy proxy.example.com:3080 --auth corp --user dave": ldap_login,
}


def test_every_readme_command_has_a_runner_or_a_reason() -> None:
    commands = readme_commands(README.read_text())
    missing = [c for c in commands if c not in RUNNERS and c not in EXCLUDED]
    assert not missing, f"README commands no test runs: {missing}"
    stale = [c for c in [*RUNNERS, *EXCLUDED] if c not in commands]
    assert not stale, f"runners for commands the README no longer has: {stale}"


def test_the_readme_config_example_loads(tmp_path: Path) -> None:
    block = re.search(r"```yaml\n(cluster_name: example.com.*?)```", README.read_text(), re.S)
    assert block
    path = tmp_path / "limen.yaml"
    path.write_text(block.group(1))
    config = load_config(path)
    assert config.cluster_name == "example.com" and config.audit.max_age == "365d"


def test_the_readme_ha_config_loads(tmp_path: Path) -> None:
    block = re.search(r"```yaml\n# ha.yaml.*?\n(.*?)```", README.read_text(), re.S)
    assert block
    path = tmp_path / "ha.yaml"
    path.write_text(block.group(1))
    config = load_config(path)
    assert config.storage.type == "postgres" and config.storage.schema_name == "limen"
    assert config.roles() == ["auth", "proxy"] and config.auth.heartbeat_interval == "5s"


@pytest.mark.timeout(900)
def test_the_readme_walkthrough_runs_as_written(tmp_path: Path) -> None:
    walk = Walk(tmp_path)
    # Another tokens add for the NAT node: a token is offered once per README block.
    try:
        for command in readme_commands(README.read_text()):
            if command in EXCLUDED:
                continue
            if command.startswith("limen start --roles node --token TOKEN"):
                tokens_add(walk, "limen tokens add --type node --labels env=prod --ttl 30m")
            RUNNERS[command](walk, command)
            walk.ran.append(command)
        assert httpx.get(f"http://{walk.values['127.0.0.1:3000']}/healthz").status_code == 200
    finally:
        walk.stop_all()
    assert len(walk.ran) == len(RUNNERS)
