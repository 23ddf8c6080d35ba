"""Stock OpenSSH as a client of a test cluster: a config of its own, ProxyJump via the proxy."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support.cluster import ClusterHarness, LimenUser


def ssh_config(cluster: ClusterHarness, user: LimenUser) -> Path:
    """A config using the user's login certificate; -F keeps the machine's config out."""
    key = next((user.home / "keys").rglob(user.name))
    host, port = cluster.ssh_addr.rsplit(":", 1)
    path = user.home / "ssh_config"
    path.write_text(
        f"Host {host}\n"
        f"  ProxyJump none\n"
        f"Host *\n"
        f"  IdentityFile {key}\n"
        f"  CertificateFile {key}-cert.pub\n"
        f"  IdentitiesOnly yes\n"
        f"  IdentityAgent none\n"
        f"  UserKnownHostsFile {user.home / 'known_hosts'}\n"
        f"  StrictHostKeyChecking yes\n"
        f"  BatchMode yes\n"
        f"  ProxyJump {user.name}@{host}:{port}\n"
    )
    return path


def ssh(config: Path, target: str, *command: str, timeout: float = 60,
        extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ssh", "-F", str(config), *extra, target, *command],
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )
