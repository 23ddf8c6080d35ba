"""Helpers for the SSH access tests: logged-in users with an OpenSSH config from
`limen config`, stock ssh/scp/sftp runs, certificates signed by hand, and waiting.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import asyncssh

from limen.auth.ca import sign_user_cert
from limen.client.api import APIClient
from tests.support.cluster import PASSWORD, CLIResult, ClusterHarness, LimenUser

CLUSTER = "test.limen"
NODE = f"node1.{CLUSTER}"
LOCAL_LOGIN = "limen-test"  # a second local account on the node
T = TypeVar("T")


def ensure_local_user(name: str = LOCAL_LOGIN) -> None:
    """The node runs commands as real accounts; create the test's one when missing."""
    if subprocess.run(["id", name], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", name], check=True)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def wait_until(predicate: Callable[[], T], timeout: float, what: str, every: float = 0.05) -> T:
    """Poll until ``predicate`` returns something truthy; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def random_file(path: Path, size_mb: int) -> Path:
    with path.open("wb") as fh:
        for _ in range(size_mb):
            fh.write(os.urandom(1 << 20))
    return path


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for stock OpenSSH: no agent, C locale."""
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    env.update(LC_ALL="C", **extra)
    return env


@dataclass
class SshUser:
    """A Limen user who has logged in, with `limen config` saved as an ssh -F file."""

    cluster: ClusterHarness
    person: LimenUser
    status: dict[str, Any]
    config: Path

    @property
    def name(self) -> str:
        return self.person.name

    @property
    def home(self) -> Path:
        return self.person.home

    def limen(self, *args: str, **kwargs: Any) -> CLIResult:
        return self.cluster.cli(*args, home=self.home, **kwargs)

    def ssh_argv(self, *args: str, config: Path | None = None) -> list[str]:
        return ["ssh", "-F", str(config or self.config), "-o", "BatchMode=yes", *args]

    def ssh(self, *args: str, config: Path | None = None, input: bytes | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            self.ssh_argv(*args, config=config), input=input, capture_output=True,
            env=clean_env(), timeout=timeout, stdin=None if input is not None else
            subprocess.DEVNULL,
        )

    def tool(self, name: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """scp or sftp with the same config."""
        return subprocess.run(
            [name, "-F", str(self.config), "-o", "BatchMode=yes", *args],
            capture_output=True, text=True, env=clean_env(), timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def config_with_identity(self, key: Path, cert: Path) -> Path:
        """The same config, authenticating with another key and certificate."""
        text = self.config.read_text()
        # The certificate first: the key's path is a prefix of it.
        text = text.replace(self.status["cert_path"], str(cert))
        text = text.replace(self.status["key_path"], str(key))
        path = key.parent / "ssh_config"
        path.write_text(text)
        return path


def new_user(cluster: ClusterHarness, prefix: str, roles: str = "access",
             logins: str = f"root,{LOCAL_LOGIN}") -> SshUser:
    """Sign up and log in a new user (a unique name: the cluster is shared).

    Creation and signup go straight to the HTTPS API (test_login drives those commands);
    login and `limen config` run the real CLI, which writes the files under test.
    """
    person = signed_up(cluster, unique(prefix), roles, logins)
    result = cluster.login(person)
    assert result.returncode == 0, result.stderr
    printed = cluster.cli("config", home=person.home)
    assert printed.returncode == 0, printed.stderr
    config = person.home / "ssh_config"
    config.write_text(printed.stdout)
    return SshUser(cluster, person, _status(person.home), config)


def signed_up(cluster: ClusterHarness, name: str, roles: str, logins: str) -> LimenUser:
    ca = (cluster.data_dir / "ca" / "tls_ca.crt").read_text()
    token = (cluster.data_dir / "admin.token").read_text().strip()
    with APIClient(cluster.web_addr, ca, token) as admin:
        issued = admin.post("/v1/users", {"name": name, "roles": roles.split(","),
                                          "logins": [x for x in logins.split(",") if x]})
    with APIClient(cluster.web_addr, ca) as anonymous:
        secret = anonymous.post("/v1/signup/start", {"token": issued["token"]})["totp_secret"]
        person = LimenUser(name, secret, cluster.new_home())
        anonymous.post("/v1/signup/finish", {"token": issued["token"], "password": PASSWORD,
                                             "otp": cluster.next_otp(person)})
    return person


def _status(home: Path) -> dict[str, Any]:
    """What `limen status --format json` shows, read from the profile's files."""
    profile = json.loads(next((home / "keys").glob("*/profile.json")).read_text())
    keys = next((home / "keys").glob("*/profile.json")).parent
    return {
        **profile,
        "key_path": str(keys / profile["user"]),
        "cert_path": str(keys / f"{profile['user']}-cert.pub"),
        "known_hosts_path": str(home / "known_hosts"),
    }


@dataclass
class HandMadeCert:
    key: Path
    cert: Path


def sign_by_hand(
    directory: Path,
    ca: asyncssh.SSHKey,
    key_id: str,
    principals: list[str],
    valid_after: datetime | None = None,
    valid_before: datetime | None = None,
) -> HandMadeCert:
    """A key and a certificate of our own making; no ``-cert.pub`` beside the key, so
    OpenSSH uses exactly the CertificateFile it is given."""
    directory.mkdir(parents=True, exist_ok=True)
    key = asyncssh.generate_private_key("ssh-ed25519")
    now = datetime.now(UTC)
    cert = sign_user_cert(
        ca, key.convert_to_public(), key_id=key_id, principals=principals,
        valid_after=valid_after or now - timedelta(minutes=1),
        valid_before=valid_before or now + timedelta(hours=1),
        permit_port_forwarding=True,
    )
    key_path = directory / "key"
    key_path.write_bytes(key.export_private_key("openssh"))
    key_path.chmod(0o600)
    cert_path = directory / "cert"
    cert_path.write_bytes(cert.export_certificate("openssh"))
    return HandMadeCert(key_path, cert_path)


def events_for(cluster: ClusterHarness, event: str, user: str) -> list[dict[str, Any]]:
    return cluster.events_of(event, user=user)
