"""A joining node names itself; it may not get a certificate that answers for the proxy."""

from __future__ import annotations

import asyncssh
import httpx

from limen.auth.ca import read_cert_extensions
from limen.client.trust import insecure_context
from tests.support.cluster import ClusterHarness


def _join(cluster: ClusterHarness, name: str, addr: str) -> httpx.Response:
    token = cluster.admin("tokens", "add", "--type", "node", "--format", "json").json()["token"]
    key = asyncssh.generate_private_key("ssh-ed25519")
    body = {"token": token, "name": name, "addr": addr,
            "public_key": key.export_public_key("openssh").decode()}
    with httpx.Client(verify=insecure_context(), base_url=f"https://{cluster.web_addr}") as http:
        return http.post("/v1/join", json=body)


def test_reserved_names_are_refused(cluster: ClusterHarness) -> None:
    for name in ("localhost", "proxy", "127.0.0.1", "test.limen"):
        response = _join(cluster, name, "10.1.2.3:3022")
        assert response.status_code == 400, name
        assert "reserved or an address" in response.json()["error"]["message"]
    assert cluster.events_of("instance.join", node_name="localhost", success=False)


def test_loopback_addresses_are_dialed_but_not_certified(cluster: ClusterHarness) -> None:
    response = _join(cluster, "claims-node", "127.0.0.1:3022")
    assert response.status_code == 200, response.text
    cert = asyncssh.import_certificate(response.json()["host_cert"])
    assert "127.0.0.1" not in cert.principals
    assert {"claims-node", "claims-node.test.limen"} <= set(cert.principals)
    assert read_cert_extensions(cert)["role@limen"] == "node"
    elsewhere = _join(cluster, "claims-node-2", "198.18.7.7:3022")
    assert "198.18.7.7" in asyncssh.import_certificate(elsewhere.json()["host_cert"]).principals
