"""A node as the HTTPS API sees it, driven by hand: join with a token, then heartbeats,
event reports and renewals with the API token it was given. What a misbehaving node (or
someone holding a node's files) would send, through the real proxy."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh
import httpx

from limen.client.trust import verifying_context
from limen.config import JoinOptions, NodeConfig
from limen.node.cluster.role import NodeRole
from tests.support.cluster import ClusterHarness


def new_token(cluster: ClusterHarness, *flags: str) -> str:
    result = cluster.admin("tokens", "add", "--type", "node", *flags, "--format", "json")
    assert result.returncode == 0, result.stderr
    return str(result.json()["token"])


@dataclass
class HandNode:
    """One node identity: a host key, and once joined, its id and API token."""

    cluster: ClusterHarness
    name: str
    key: asyncssh.SSHKey = field(
        default_factory=lambda: asyncssh.generate_private_key("ssh-ed25519"))
    joined: dict[str, Any] = field(default_factory=dict)

    def _client(self) -> httpx.Client:
        ca = (self.cluster.data_dir / "ca" / "tls_ca.crt").read_text()
        return httpx.Client(base_url=f"https://{self.cluster.web_addr}",
                            verify=verifying_context(ca), timeout=30)

    def try_join(self, token: str, addr: str = "", labels: dict[str, str] | None = None,
                 proof: dict[str, str] | None = None) -> httpx.Response:
        """``proof``: the host key's signature, as `limen start` sends (sign_join)."""
        body = {"token": token, "name": self.name, "addr": addr, "labels": labels or {},
                "public_key": self.key.export_public_key("openssh").decode(),
                "proof": proof}
        with self._client() as http:
            response = http.post("/v1/join", json=body)
        if response.is_success:
            self.joined = response.json()
        return response

    def join(self, token: str, addr: str = "", labels: dict[str, str] | None = None,
             proof: dict[str, str] | None = None) -> str:
        """Join; returns the node id."""
        response = self.try_join(token, addr, labels, proof)
        assert response.status_code == 200, response.text
        return str(self.joined["node_id"])

    @property
    def node_id(self) -> str:
        return str(self.joined["node_id"])

    @property
    def api_token(self) -> str:
        return str(self.joined["api_token"])

    def call(self, method: str, path: str, body: Any = None,
             token: str | None = None) -> httpx.Response:
        headers = {"authorization": f"Bearer {token or self.api_token}"}
        with self._client() as http:
            return http.request(method, path, json=body, headers=headers)

    def heartbeat(self, addr: str | None, connection: str = "direct", token: str | None = None,
                  **extra: Any) -> httpx.Response:
        return self.call("POST", "/v1/nodes/heartbeat",
                         {"addr": addr, "connection": connection, **extra}, token)

    def report(self, token: str | None = None) -> httpx.Response:
        return self.call("POST", "/v1/events", {"event": "client.disconnect",
                                                 "fields": {"reason": "test"}}, token)


def error_of(response: httpx.Response) -> str:
    return str(response.json()["error"]["message"])


def joined_role(cluster: ClusterHarness, base: Path, name: str, token: str,
                advertise: str | None = "127.0.0.1", beating: bool = False) -> NodeRole:
    """A node role that joins through the HTTPS API with a token, as a remote node does
    (RemoteLink, API token), but on the cluster's event loop and clock so that a test
    can move its time. Unless ``beating``, its heartbeat loop is stopped after the first
    beat: the test calls ``role.heartbeat.beat()`` when it wants one."""
    config = NodeConfig(listen_addr="127.0.0.1:0", name=name, proxy_addr=cluster.web_addr,
                        join_token=token, advertise_addr=advertise)
    role = NodeRole(config, base / name, cluster.clock, None, JoinOptions(insecure=True))
    cluster.run(role.start())
    cluster.extra_nodes.append(role)
    if not beating:
        assert role.heartbeat is not None
        cluster.run(role.heartbeat.stop())
    return role
