"""The client's files under $LIMEN_HOME (default ~/.limen), in forms OpenSSH reads.

current-profile                  which proxy the commands use by default
known_hosts                      @cert-authority lines for the clusters' host CAs
keys/PROXY/tls-ca.pem            the cluster's X.509 CA, trusted after first contact
keys/PROXY/profile.json          proxy, cluster, user, roles, logins, expiry, SSH proxy, host CA
keys/PROXY/USER                  private key (0600)
keys/PROXY/USER.pub              public key
keys/PROXY/USER-cert.pub         the OpenSSH certificate
keys/PROXY/USER.token            API session token (0600)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from limen.client.openssh_fast import MEMO_NAME, proxy_dirname
from limen.errors import AccessDenied, BadParameter, NotFound
from limen.files import write_private  # noqa: F401 - re-exported for callers


def limen_home() -> Path:
    return Path(os.environ.get("LIMEN_HOME") or Path.home() / ".limen").absolute()


class Profile:
    """One login, as keys/PROXY/profile.json keeps it.

    A plain class, not a dataclass: `limen ssh` and `limen proxy tls` read a profile on
    every run before anything else, and the dataclasses module imports inspect (about
    9 ms of their start-up here).
    """

    def __init__(
        self,
        proxy: str,
        cluster: str = "",
        user: str = "",
        roles: list[str] | None = None,
        logins: list[str] | None = None,
        valid_until: str = "",
        ssh_proxy: str = "",  # the jump host's host:port (limen ssh, ProxyJump)
        host_ca: str = "",  # this cluster's "@cert-authority * KEY" line, to verify its hosts
        auth: str = "",  # the connector of the last login (limen login --auth); "" for local
    ) -> None:
        self.proxy = proxy
        self.cluster = cluster
        self.user = user
        self.roles = list(roles or [])
        self.logins = list(logins or [])
        self.valid_until = valid_until
        self.ssh_proxy = ssh_proxy
        self.host_ca = host_ca
        self.auth = auth

    def as_dict(self) -> dict[str, object]:
        return dict(vars(self))

    def __repr__(self) -> str:
        return f"Profile({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"

    def require_ssh_proxy(self) -> str:
        """The jump host's address; NotFound, with the way out, for a profile stored
        before the proxy reported it."""
        if not self.ssh_proxy:
            raise NotFound(f"your profile does not know the proxy's SSH address; run limen "
                           f"login --proxy {self.proxy}")
        return self.ssh_proxy

    @property
    def dir(self) -> Path:
        return limen_home() / "keys" / proxy_dirname(self.proxy)

    @property
    def ca_path(self) -> Path:
        return self.dir / "tls-ca.pem"

    @property
    def key_path(self) -> Path:
        return self.dir / self.user

    @property
    def cert_path(self) -> Path:
        return self.dir / f"{self.user}-cert.pub"

    @property
    def pub_path(self) -> Path:
        return self.dir / f"{self.user}.pub"

    @property
    def token_path(self) -> Path:
        return self.dir / f"{self.user}.token"

    @staticmethod
    def known_hosts_path() -> Path:
        return limen_home() / "known_hosts"

    def trusted_ca(self) -> str | None:
        return self.ca_path.read_text() if self.ca_path.exists() else None

    def trust_ca(self, ca_pem: str) -> None:
        write_private(self.ca_path, ca_pem, 0o644)

    def token(self) -> str:
        if not self.token_path.exists():
            raise AccessDenied("you are not logged in; run limen login")
        return self.token_path.read_text().strip()

    def save(self) -> None:
        write_private(self.dir / "profile.json", json.dumps(self.as_dict(), indent=2) + "\n", 0o644)
        write_private(limen_home() / "current-profile", self.proxy + "\n", 0o644)

    def remove_credentials(self) -> None:
        for path in (
            self.key_path,
            self.pub_path,
            self.cert_path,
            self.token_path,
            self.dir / "profile.json",
            self.dir / MEMO_NAME,
        ):
            path.unlink(missing_ok=True)
        current = limen_home() / "current-profile"
        if current.exists() and current.read_text().strip() == self.proxy:
            current.unlink()


def load(proxy: str) -> Profile:
    path = limen_home() / "keys" / proxy_dirname(proxy) / "profile.json"
    if not path.exists():
        return Profile(proxy=proxy)
    try:
        return Profile(**json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:
        raise BadParameter(f"{path} is damaged; run limen logout and log in again") from exc


def current() -> Profile:
    marker = limen_home() / "current-profile"
    if not marker.exists():
        raise NotFound("you are not logged in; run limen login --proxy HOST:PORT --user NAME")
    profile = load(marker.read_text().strip())
    if not profile.user:
        raise NotFound("you are not logged in; run limen login --proxy HOST:PORT --user NAME")
    return profile


def add_known_host_ca(line: str) -> None:
    """Add the host CA line once; other clusters' lines stay."""
    path = Profile.known_hosts_path()
    lines = path.read_text().splitlines() if path.exists() else []
    if line.strip() not in (entry.strip() for entry in lines):
        lines.append(line.strip())
    write_private(path, "\n".join(lines) + "\n", 0o644)
