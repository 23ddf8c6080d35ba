"""`limen ssh` starts fast: a command loads its own module, not every library of the CLI.

Timing is a benchmark's job (bench/); here the budget is counted in modules imported,
which does not depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncssh
import pytest

from limen.auth.ca import sign_user_cert
from limen.cli import main
from limen.client import liboqs_probe
from limen.client.profile import Profile
from tests.support.importtime import imported_modules

HEAVY = ("asyncssh", "httpx", "pydantic", "rich", "yaml", "cryptography", "sqlalchemy",
         "fastapi", "uvicorn", "prometheus_client")
BUDGET = 200  # modules, the standard library's included (about 120 today)
CA = asyncssh.generate_private_key("ssh-ed25519")


def _public_line(key: asyncssh.SSHKey) -> str:
    return key.export_public_key("openssh").decode().strip()


def _imported(*argv: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "limen.cli.main", *argv],
        capture_output=True, text=True, timeout=60, check=True,
    )
    return imported_modules(done.stderr)


def _heavy(modules: list[str]) -> list[str]:
    return sorted({m.split(".")[0] for m in modules} & set(HEAVY))


def test_ssh_help_imports_no_heavy_library_and_stays_within_budget() -> None:
    modules = _imported("ssh", "--help")
    heavy = _heavy(modules)
    assert heavy == [], f"`limen ssh --help` imports {heavy}"
    assert len(modules) <= BUDGET, f"{len(modules)} modules imported, budget {BUDGET}"


def test_every_command_is_mapped_to_its_module() -> None:
    """A command missing from the map still works, but loads every module (slow)."""
    parser = main.build_parser([])
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == set(main.COMMANDS)
    for command, module in main.COMMANDS.items():
        assert main._modules_for([command, "--help"]) == (module,)


@pytest.mark.skipif(liboqs_probe.liboqs_present(), reason="asyncssh may load liboqs here")
def test_importing_the_ssh_client_does_not_search_for_liboqs() -> None:
    """asyncssh's search for liboqs runs ldconfig, then the compiler and the linker (most
    of `limen ssh`'s start-up); with no liboqs on the host it is answered at once. (One
    ldconfig remains: asyncssh finds libnettle, which umac needs, through it.)"""
    code = (
        "import json, subprocess\n"
        "spawned, popen = [], subprocess.Popen\n"
        "def recording(args, *rest, **kwargs):\n"
        "    spawned.append(list(args))\n"
        "    return popen(args, *rest, **kwargs)\n"
        "subprocess.Popen = recording\n"
        "import limen.client.ssh, limen.cli.proxy_cmd, asyncssh\n"
        "print(json.dumps([spawned, asyncssh.crypto.pq.mlkem_available]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    spawned, mlkem = json.loads(done.stdout)
    assert [argv for argv in spawned if any("oqs" in arg for arg in argv)] == []
    assert len(spawned) <= 1, spawned  # the ldconfig for libnettle
    assert mlkem  # ML-KEM still offered (from cryptography, not liboqs)


def test_proxy_tls_imports_no_ssh_or_x509_library() -> None:
    """ssh waits for its ProxyCommand before the first byte: `limen proxy tls` needs the
    ssl module, not asyncssh or cryptography (here it stops at the missing login)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "limen.cli.main", "proxy", "tls",
         "127.0.0.1:9"], capture_output=True, text=True, timeout=60,
        env={**os.environ, "LIMEN_HOME": "/nonexistent/limen-home"},
    )
    assert done.returncode == 1 and "no login through the proxy" in done.stderr, done.stderr
    modules = imported_modules(done.stderr)
    assert "limen.client.tls_relay" in modules  # the command did load its relay
    heavy = _heavy(modules)
    assert heavy == [], f"`limen proxy tls` imports {heavy}"
    assert "ctypes" not in modules  # the liboqs shortcut waits for an import of asyncssh
    assert "logging" not in modules  # ssh waits for this command on every connection
    assert "argparse" not in modules  # the words `limen config` writes are read by hand


def test_proxy_tls_words_of_another_shape_still_go_through_argparse() -> None:
    """Only what `limen config` writes skips argparse; the rest (help, unknown options)
    gets argparse's answers."""
    def limen(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "limen.cli.main", "proxy", "tls", *args],
                              capture_output=True, text=True, timeout=60,
                              env={**os.environ, "LIMEN_HOME": "/nonexistent/limen-home"})

    helped = limen("--help")
    assert helped.returncode == 0 and "--node LOGIN@NODE[:PORT]" in helped.stdout
    unknown = limen("--bogus", "127.0.0.1:9")
    assert unknown.returncode == 2 and "unrecognized arguments: --bogus" in unknown.stderr
    reordered = limen("127.0.0.1:9", "--node", "root@web1:22")  # argparse takes it too
    assert reordered.returncode == 1 and "no login through the proxy" in reordered.stderr


def test_ssh_to_one_node_hands_over_to_openssh_before_any_heavy_import(tmp_path: Path) -> None:
    """`limen ssh NODE` checks the login's certificate by hand and becomes OpenSSH's ssh
    (client/openssh_exec.py): asyncssh's import alone would take longer than ssh's whole
    run. A stand-in ssh on PATH reports that it was reached."""
    home = tmp_path / "home"
    profile = Profile(proxy="proxy.example:3080", cluster="c.example", user="alice",
                      logins=["root"], ssh_proxy="proxy.example:3023",
                      host_ca="@cert-authority * " + _public_line(CA))
    key = asyncssh.generate_private_key("ssh-ed25519")
    now = datetime.now(UTC)
    cert = sign_user_cert(CA, key.convert_to_public(), key_id="alice", principals=["root"],
                          valid_after=now - timedelta(minutes=1),
                          valid_before=now + timedelta(hours=1))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ssh").write_text("#!/bin/sh\necho \"stand-in ssh $*\"\n")
    (bin_dir / "ssh").chmod(0o755)
    env = {**os.environ, "LIMEN_HOME": str(home), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LIMEN_HOME", str(home))
        profile.save()
        profile.cert_path.write_bytes(cert.export_certificate("openssh"))
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "limen.cli.main", "ssh", "root@web1", "true"],
        capture_output=True, text=True, timeout=60, env=env,
    )
    assert done.returncode == 0 and "stand-in ssh -F" in done.stdout, done.stderr
    assert "-l root -o HostName=web1 -- web1.c.example true" in done.stdout
    modules = imported_modules(done.stderr)
    heavy = _heavy(modules)
    assert heavy == [], f"`limen ssh NODE` imports {heavy} before it hands over"
    # What no hand-over needs: the event loop, logging, typing, dataclasses (inspect).
    assert {"asyncio", "logging", "typing", "dataclasses"} & set(modules) == set()
    assert len(modules) <= BUDGET, f"{len(modules)} modules imported, budget {BUDGET}"
