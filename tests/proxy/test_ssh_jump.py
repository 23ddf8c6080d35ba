"""The jump host with stock OpenSSH: ssh -J through Limen to a stock sshd node."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from datetime import datetime
from pathlib import Path

import pytest

from limen.errors import AccessDenied
from limen.proxy.ssh_jump import PROXY_SESSION_MESSAGE, JumpIdentity, NodeRoute
from tests.proxy.conftest import Jump, MakeJump
from tests.proxy.support import CLUSTER, SSH, Pki, Sshd, UserFiles, run, run_ssh


class DenyNode1:
    """A policy that lets nobody onto node1."""

    def __init__(self) -> None:
        self.asked: list[tuple[JumpIdentity, NodeRoute]] = []

    async def check_node_access(self, identity: JumpIdentity, route: NodeRoute) -> None:
        self.asked.append((identity, route))
        raise AccessDenied(f"{identity.user} may not reach node '{route.name}'")

    async def connection_deadline(self, identity: JumpIdentity) -> datetime | None:
        return identity.valid_before


@pytest.fixture(scope="module")
def payload_20mb(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    return _payload(tmp_path_factory.mktemp("data") / "20mb", 20 * 1024 * 1024)


def _payload(path: Path, size: int) -> tuple[Path, str]:
    data = os.urandom(size)
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


# reaching nodes


async def test_stock_ssh_reaches_node_without_port_forwarding_permit(
    jump: Jump, alice: UserFiles
) -> None:
    assert "permit-port-forwarding" not in alice.cert.options
    result = await run_ssh(alice, jump.port, "root@node1", "echo hi")
    assert (result.code, result.out) == (0, b"hi\n"), result.err
    auth = await jump.recorder.wait_for("auth", success=True)
    assert (auth["user"], auth["login"]) == ("alice", "alice")
    connect = await jump.recorder.wait_for("proxy.connect")
    assert connect["allowed"] is True
    assert (connect["server_hostname"], connect["server_id"], connect["user"]) == (
        "node1", "id-node1", "alice")


async def test_node_name_with_cluster_suffix_and_any_port(jump: Jump, alice: UserFiles) -> None:
    result = await run_ssh(alice, jump.port, f"root@node1.{CLUSTER}", "echo one")
    assert (result.code, result.out) == (0, b"one\n"), result.err
    for port in ("3022", "5555"):
        result = await run_ssh(alice, jump.port, "root@node1", "echo two", extra=["-p", port])
        assert (result.code, result.out) == (0, b"two\n"), result.err


async def test_jump_user_may_be_the_key_id(jump: Jump, pki: Pki) -> None:
    bob = pki.user("bob", key_id="bob", principals=("root",))
    result = await run_ssh(bob, jump.port, "root@node1", "echo bob", jump_user="bob")
    assert (result.code, result.out) == (0, b"bob\n"), result.err

    refused = await run_ssh(bob, jump.port, "root@node1", "true", jump_user="carol")
    assert refused.code == 255
    assert "Permission denied" in refused.err
    failure = await jump.recorder.wait_for("auth", success=False)
    assert "'carol' is neither" in failure["reason"]


async def test_unknown_node_is_refused_with_a_sentence(jump: Jump, alice: UserFiles) -> None:
    result = await run_ssh(alice, jump.port, "root@nosuch", "true")
    assert result.code == 255
    assert "node 'nosuch' is not known" in result.err
    assert jump.router.dials == 0
    connect = await jump.recorder.wait_for("proxy.connect")
    assert connect["allowed"] is False


async def test_offline_node_is_refused(jump: Jump, alice: UserFiles) -> None:
    jump.router.offline.add("id-node1")
    result = await run_ssh(alice, jump.port, "root@node1", "true")
    assert result.code == 255
    assert "node 'node1' is offline" in result.err


async def test_policy_denial_happens_before_dialing(
    make_jump: MakeJump, alice: UserFiles, node: Sshd
) -> None:
    policy = DenyNode1()
    jump = await make_jump(policy)
    seen_before = node.connections_seen()
    result = await run_ssh(alice, jump.port, "root@node1", "true")
    assert result.code == 255
    assert "alice may not reach node 'node1'" in result.err
    assert "administratively prohibited" in result.err
    assert jump.router.dials == 0
    assert node.connections_seen() == seen_before
    identity, route = policy.asked[0]
    assert (identity.user, identity.principals, route.node_id) == (
        "alice", ("alice", "root"), "id-node1"
    )
    assert identity.remote_addr == "127.0.0.1"
    assert identity.valid_before.timestamp() > time.time()


# refusals at the proxy


async def test_certificate_from_another_ca_is_refused(jump: Jump, pki: Pki) -> None:
    eve = pki.user("eve", ca=pki.other_ca)
    result = await run_ssh(eve, jump.port, "root@node1", "true")
    assert result.code == 255
    assert "Permission denied" in result.err
    failure = await jump.recorder.wait_for("auth", success=False)
    assert "not signed by this cluster's user CA" in failure["reason"]
    assert jump.router.dials == 0


async def test_expired_certificate_is_refused(jump: Jump, pki: Pki) -> None:
    now = time.time()
    old = pki.user("old", valid_after=now - 7200, valid_before=now - 3600)
    result = await run_ssh(old, jump.port, "root@node1", "true")
    assert result.code == 255
    failure = await jump.recorder.wait_for("auth", success=False)
    assert "expired" in failure["reason"]
    assert jump.router.dials == 0


async def test_plain_key_is_refused(jump: Jump, alice: UserFiles, tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_text(alice.config.read_text().replace("CertificateFile", "#"))
    argv = [SSH, "-F", str(config), "-p", str(jump.port), "alice@127.0.0.1", "true"]
    result = await run(argv)
    assert result.code == 255
    failure = await jump.recorder.wait_for("auth", success=False)
    assert "a plain key was offered" in failure["reason"]


async def test_session_at_the_proxy_is_refused(jump: Jump, alice: UserFiles) -> None:
    argv = [SSH, "-F", str(alice.config), "-p", str(jump.port), "alice@127.0.0.1", "echo hi"]
    result = await run(argv)
    assert result.code == 255
    assert PROXY_SESSION_MESSAGE in result.err
    assert result.out == b""


async def test_remote_forwarding_is_refused(jump: Jump, alice: UserFiles) -> None:
    argv = [SSH, "-F", str(alice.config), "-p", str(jump.port), "-N", "-R", "0:127.0.0.1:9",
            "-o", "ExitOnForwardFailure=yes", "alice@127.0.0.1"]
    result = await run(argv)
    assert result.code == 255
    assert "remote port forwarding failed" in result.err
    refused = await jump.recorder.wait_for("proxy.refused", kind="tcpip-forward")
    assert refused["user"] == "alice"


# data


async def test_20_mb_both_ways_intact(
    jump: Jump, alice: UserFiles, payload_20mb: tuple[Path, str]
) -> None:
    path, digest = payload_20mb
    up = await run_ssh(alice, jump.port, "root@node1", "sha256sum", stdin=path.read_bytes())
    assert up.code == 0, up.err
    assert up.out.split()[0].decode() == digest
    down = await run_ssh(alice, jump.port, "root@node1", f"cat {path}")
    assert down.code == 0, down.err
    assert hashlib.sha256(down.out).hexdigest() == digest
    end = await jump.recorder.wait_for("proxy.disconnect")
    assert end["bytes_up"] > 20 * 1024 * 1024 and "error" not in end


async def test_100_mb_both_ways_intact(
    jump: Jump, alice: UserFiles, tmp_path: Path
) -> None:
    path, digest = _payload(tmp_path / "100mb", 100 * 1024 * 1024)
    up = await run_ssh(alice, jump.port, "root@node1", f"cat > {path}.up && sha256sum < {path}.up",
                       stdin=path.read_bytes())
    assert up.code == 0, up.err
    assert up.out.split()[0].decode() == digest
    down = await run_ssh(alice, jump.port, "root@node1", f"cat {path}")
    assert down.code == 0, down.err
    assert hashlib.sha256(down.out).hexdigest() == digest


async def test_20_concurrent_sessions(jump: Jump, alice: UserFiles) -> None:
    results = await asyncio.gather(
        *(run_ssh(alice, jump.port, "root@node1", f"echo {i}") for i in range(20))
    )
    for i, result in enumerate(results):
        assert (result.code, result.out) == (0, f"{i}\n".encode()), result.err


async def test_half_close_lets_the_node_answer_after_end_of_input(
    jump: Jump, alice: UserFiles
) -> None:
    # ssh sends EOF on the channel when stdin ends; the node must still be able to answer.
    result = await run_ssh(alice, jump.port, "root@node1", "cat; sleep 0.2; echo done",
                           stdin=b"input\n")
    assert (result.code, result.out) == (0, b"input\ndone\n"), result.err


async def test_stop_closes_live_connections(jump: Jump, alice: UserFiles) -> None:
    ssh = asyncio.create_task(run_ssh(alice, jump.port, "root@node1", "echo up; sleep 60"))
    await jump.recorder.wait_for("proxy.connect", allowed=True)
    await jump.host.stop()
    result = await asyncio.wait_for(ssh, 20)
    assert result.code != 0
    assert jump.host.connection_count == 0
