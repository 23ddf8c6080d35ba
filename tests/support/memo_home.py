"""A logged-in LIMEN_HOME for `limen ssh`'s hand-over to OpenSSH, with a stand-in ssh."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncssh
import pytest

from limen import __version__
from limen.auth.ca import sign_user_cert
from limen.client import openssh_fast
from limen.client.profile import Profile
from tests.support.importtime import imported_modules

# main() with argv None, the way in of pip's console script, importtime on.
MAIN = (sys.executable, "-X", "importtime", "-m", "limen.cli.main")
CA = asyncssh.generate_private_key("ssh-ed25519")
PRINCIPALS = ["root", "alice"]


class Home:
    """A logged-in LIMEN_HOME and a stand-in ssh that prints its argv as JSON (in
    isolated mode, so that an importtime report on stderr is limen's alone)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dir = root / "home"
        bin_dir = root / "bin"
        bin_dir.mkdir()
        self.ssh = bin_dir / "ssh"
        self.ssh.write_text("#!/bin/sh\nexec python3 -I -c "
                            "'import json,sys; print(json.dumps(sys.argv[1:]))' \"$0\" \"$@\"\n")
        self.ssh.chmod(0o755)
        self.env = {**os.environ, "LIMEN_HOME": str(self.dir), "USER": "alice",
                    "LOGNAME": "alice", "SSH_AUTH_SOCK": "/tmp/agent.sock",
                    "PATH": f"{bin_dir}:{os.environ['PATH']}"}
        self.env.pop(openssh_fast.CLIENT_ENV, None)
        self.profile = Profile(proxy="proxy.example:3080", cluster="c.example", user="alice",
                               logins=PRINCIPALS, ssh_proxy="proxy.example:3023",
                               host_ca="@cert-authority * " + CA.export_public_key(
                                   "openssh").decode().strip())
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("LIMEN_HOME", str(self.dir))
            self.profile.save()
            self.keys = self.profile.dir  # the profile's paths follow $LIMEN_HOME
            self.cert = self.profile.cert_path
        self.memo = self.keys / openssh_fast.MEMO_NAME
        self.valid_before = datetime.now(UTC) + timedelta(hours=1)
        self.sign()

    def sign(self, **permits: bool) -> None:
        key = asyncssh.generate_private_key("ssh-ed25519")
        cert = sign_user_cert(
            CA, key.convert_to_public(), key_id="alice", principals=PRINCIPALS,
            valid_after=datetime.now(UTC) - timedelta(minutes=1),
            valid_before=self.valid_before,
            **{"permit_port_forwarding": True, "permit_agent_forwarding": True, **permits})
        self.cert.write_bytes(cert.export_certificate("openssh"))

    def run(self, *words: str, limen: Sequence[str] = MAIN,
            **env: str) -> subprocess.CompletedProcess[str]:
        """`limen ssh WORDS`, run as ``limen`` (by default MAIN)."""
        return subprocess.run([*limen, "ssh", *words], capture_output=True, text=True,
                              timeout=30, env={**self.env, **env})

    def full_path(self, *words: str, limen: Sequence[str] = MAIN, **env: str) -> list[str]:
        self.memo.unlink(missing_ok=True)
        done = self.run(*words, limen=limen, **env)
        assert done.returncode == 0, done.stderr
        assert "argparse" in imported_modules(done.stderr)
        return json.loads(done.stdout)

    def plan(self, *words: str, now: float | None = None, **env: str) -> list[str] | None:
        return openssh_fast.planned_argv(words, {**self.env, **env},
                                         time.time() if now is None else now, __version__)
