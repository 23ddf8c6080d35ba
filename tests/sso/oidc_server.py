"""The test's OpenID Connect provider: oidc-provider from npm, run with Node on 127.0.0.1."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.sso.pki import ServerFiles
from tests.support.processes import stop_process

PROVIDER_DIR = Path(__file__).parent / "provider"
CLIENT_ID = "limen-test"
CLIENT_SECRET = "s3cret-for-the-test-client"


def node_modules_ready() -> None:
    if shutil.which("node") is None:
        pytest.fail("Node.js is missing: scripts/test installs it (apt nodejs)")
    if not (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
        pytest.fail("oidc-provider is not installed: scripts/test runs npm ci in "
                    f"{PROVIDER_DIR}")


@dataclass
class OIDCProvider:
    """One provider process; ``restart`` keeps its port (and may change its key)."""

    workdir: Path
    tls: ServerFiles
    redirect_url: str
    users: dict[str, dict[str, Any]]
    kid: str = "key-1"
    id_token_ttl: int = 3600
    port: int = 0
    _proc: subprocess.Popen[str] | None = field(default=None, repr=False)

    @property
    def issuer(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> OIDCProvider:
        node_modules_ready()
        config = self.workdir / "provider.json"
        config.write_text(json.dumps({
            "cert": str(self.tls.cert), "key": str(self.tls.key), "port": self.port,
            "kid": self.kid, "id_token_ttl": self.id_token_ttl, "users": self.users,
            "clients": [
                {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                 "redirect_uris": [self.redirect_url]},
                {"client_id": "other-app", "client_secret": "other-secret",
                 "redirect_uris": [self.redirect_url]},
            ],
        }))
        with (self.workdir / "provider.log").open("a") as log:
            self._proc = subprocess.Popen(
                ["node", str(PROVIDER_DIR / "provider.mjs"), str(config)], cwd=PROVIDER_DIR,
                stdout=subprocess.PIPE, stderr=log, text=True,
            )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()  # blocks until it listens, or it died
        if not line.startswith("listening "):
            self.stop()
            log = (self.workdir / "provider.log").read_text()[-2000:]
            raise AssertionError(f"the OIDC provider did not start: {line!r}\n{log}")
        self.port = int(line.split()[1])
        return self

    def stop(self) -> None:
        if self._proc is not None:
            stop_process(self._proc)
            if self._proc.stdout:
                self._proc.stdout.close()
            self._proc = None

    def restart(self, kid: str | None = None) -> None:
        self.stop()
        self.kid = kid or self.kid
        self.start()

    def set_mode(self, mode: str, claims: dict[str, Any] | None = None,
                 header: dict[str, Any] | None = None) -> None:
        """What the token endpoint does to ID tokens: pass, tamper (claims changed, the
        signature kept), resign (claims and header changed, signed by the provider's own
        key), alg_none (no signature at all)."""
        body = {"mode": mode, "claims": claims or {}, "header": header or {}}
        response = httpx.post(f"{self.issuer}/test/mode", json=body,
                              verify=ssl.create_default_context(cafile=self.tls.ca),
                              timeout=10)
        assert response.status_code == 204, response.text
