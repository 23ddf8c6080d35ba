"""Tunnel test helpers: a node as a real `limen start --roles node` process (optionally in a
network namespace), the proxy's view of tunnels, and restarting a test cluster's proxy.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from limen.config import Config
from limen.errors import AlreadyExists
from limen.service import Service
from tests.support.cluster import ClusterHarness
from tests.support.netns import NatNamespace
from tests.support.processes import stop_process
from tests.support.ssh_access import unique, wait_until


class NodeProcess:
    """`limen start --roles node --token ... --proxy ...` in a process (group) of its own."""

    def __init__(self, cluster: ClusterHarness, base: Path, name: str, labels: str = "",
                 proxy: str | None = None, netns: str | None = None,
                 extra: tuple[str, ...] = ()) -> None:
        self.cluster = cluster
        self.name = name
        self.data_dir = base / name
        self.log = base / f"{name}.log"
        self.proxy = proxy or cluster.web_addr
        self.netns = netns
        self.labels = labels
        self.extra = extra
        token = cluster.admin("tokens", "add", "--type", "node", "--format", "json")
        assert token.returncode == 0, token.stderr
        self.token = token.json()["token"]
        self.proc: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        argv = [sys.executable, "-m", "limen.cli.main", "start", "--roles", "node",
                "--token", self.token, "--proxy", self.proxy, "--insecure",
                "--name", self.name, "--data-dir", str(self.data_dir), *self.extra]
        if self.labels:
            argv += ["--labels", self.labels]
        if self.netns:  # `ip netns exec` execs the command: the pid stays the node's
            argv = ["ip", "netns", "exec", self.netns, *argv]
        return argv

    def start(self) -> NodeProcess:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def check_alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited:\n{self.log.read_text()}")

    def node(self) -> Any:
        """The node's registration, once it exists and the node is present (heartbeating)."""
        self.check_alive()
        auth = self.cluster.service.auth
        nodes = self.cluster.run(auth.ctx.stores.nodes.list())
        node = next((n for n in nodes if n.spec.hostname == self.name), None)
        if node is None or self.cluster.run(auth.nodes.presence_of(node.name)) is None:
            return None
        return node

    def wait_registered(self, timeout: float = 30) -> NodeProcess:
        wait_until(lambda: self.node() is not None, timeout, f"node {self.name} to register")
        return self

    def wait_tunneled(self, timeout: float = 30) -> str:
        """Wait until the proxy has this node's tunnel; returns the node id."""
        def ready() -> str | None:
            node = self.node()
            if node is None or tunnel_of(self.cluster, node.name) is None:
                return None
            return str(node.name)

        return wait_until(ready, timeout, f"node {self.name}'s tunnel")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None:  # the node and the shells it started
            stop_process(self.proc, sig=sig, timeout=15, group=True)


DIRECT = ("--listen-addr", "127.0.0.1:0", "--advertise-addr", "127.0.0.1")  # not tunneled


@contextlib.contextmanager
def nat_cluster(base: Path, config: Callable[[Path, str], Config],
                node_prefix: str) -> Iterator[tuple[ClusterHarness, NatNamespace, NodeProcess]]:
    """A cluster on the host end of a fresh NAT namespace and a node tunneling from inside.

    Building the namespace fails the tests (never skips); everything is torn down even
    when set-up fails half way."""
    ns = NatNamespace.create()
    cluster: ClusterHarness | None = None
    node: NodeProcess | None = None
    try:
        cluster = ClusterHarness(base, config=config(base / "data", ns.host_addr)).start()
        node = NodeProcess(cluster, base, unique(node_prefix), "net=nat", netns=ns.name).start()
        node.wait_tunneled()
        yield cluster, ns, node
    finally:
        try:
            if node is not None:
                node.stop()
            if cluster is not None:
                cluster.stop()
        finally:
            ns.remove()


def tunnel_of(cluster: ClusterHarness, node_id: str) -> Any:
    """The proxy's live tunnel for a node id, or None."""
    tunnels = cluster.service.tunnels
    return tunnels.directory.get(node_id) if tunnels is not None else None


def restart_proxy(cluster: ClusterHarness) -> float:
    """Stop the cluster's service (auth, proxy, tunnel server, its own node) and start it
    again on the same addresses; returns the monotonic time it was back up.

    The config must name fixed ports: agents come back to the same address.
    """
    cluster.run(cluster.service.stop())
    cluster.service = Service(cluster.config, clock=cluster.clock)
    deadline = time.monotonic() + 20
    while True:  # the old sockets may linger a moment
        try:
            cluster.run(cluster.service.start())
            return time.monotonic()
        except (OSError, AlreadyExists):  # a port in use is said as AlreadyExists
            if time.monotonic() > deadline:
                raise
            cluster.service = Service(cluster.config, clock=cluster.clock)
            time.sleep(0.1)
