"""Fixtures for the jump host tests: one PKI and one stock sshd node per module."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass

import pytest

from limen.clock import Clock
from limen.proxy.ssh_jump import JumpHost, JumpPolicy, JumpSettings, NodeRoute
from tests.proxy.support import CLUSTER, CountingRouter, Pki, Recorder, Sshd, UserFiles


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def node(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    sshd = Sshd(pki, tmp_path_factory.mktemp("node1")).start()
    yield sshd
    sshd.stop()


@pytest.fixture(scope="module")
def alice(pki: Pki) -> UserFiles:
    """Key id alice, logins alice and root, and no permit-port-forwarding."""
    return pki.user("alice")


@dataclass
class Jump:
    host: JumpHost
    router: CountingRouter
    recorder: Recorder

    @property
    def port(self) -> int:
        return self.host.port


MakeJump = Callable[..., Awaitable[Jump]]


@pytest.fixture
async def make_jump(pki: Pki, node: Sshd) -> AsyncIterator[MakeJump]:
    started: list[JumpHost] = []

    async def make(policy: JumpPolicy | None = None, host_ca=None,
                   routes: list[NodeRoute] = (), clock: Clock | None = None) -> Jump:
        key, cert = pki.host_identity("proxy", ["proxy", "127.0.0.1", "localhost"], ca=host_ca)
        settings = JumpSettings("127.0.0.1", 0, key, [cert], [pki.user_ca], CLUSTER)
        router = CountingRouter([node.route(), *routes])
        recorder = Recorder()
        host = JumpHost(settings, router, policy, recorder, clock=clock)
        await host.start()
        started.append(host)
        return Jump(host, router, recorder)

    yield make
    for host in started:
        await host.stop()
        assert not host.observer.invalid, host.observer.invalid


@pytest.fixture
async def jump(make_jump: MakeJump) -> Jump:
    return await make_jump()
