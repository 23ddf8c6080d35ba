"""One authorization facade: the same checks for a node in-process and over HTTPS, and
every refusal (a rule's, a built-in identity's, or a service's data check) audited."""

from __future__ import annotations

import uuid
from typing import Any

import asyncssh
import httpx
import pytest

from limen.auth.facade import AuthFacade
from limen.auth.identity import Identity
from limen.client.trust import insecure_context
from limen.errors import AccessDenied
from limen.resources import Session
from tests.support.cluster import ClusterHarness


def _http(cluster: ClusterHarness, token: str | None = None) -> httpx.Client:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(verify=insecure_context(), base_url=f"https://{cluster.web_addr}",
                        headers=headers, timeout=30)


def _admin_token(cluster: ClusterHarness) -> str:
    return (cluster.data_dir / "admin.token").read_text().strip()


def _join_remote_node(cluster: ClusterHarness, name: str) -> tuple[str, str]:
    """A node that joins over HTTPS, as one on another host would: (node id, API token)."""
    with _http(cluster, _admin_token(cluster)) as admin:
        token = admin.post("/v1/tokens", json={"type": "node"}).json()["token"]
    key = asyncssh.generate_private_key("ssh-ed25519")
    body = {"token": token, "name": name,
            "public_key": key.export_public_key("openssh").decode()}
    with _http(cluster) as anonymous:
        joined = anonymous.post("/v1/join", json=body)
    assert joined.status_code == 200, joined.text
    return joined.json()["node_id"], joined.json()["api_token"]


def _node_id(node: Any) -> str:
    assert node.identity is not None
    return str(node.identity.node_id)


def _denials(cluster: ClusterHarness, **match: Any) -> list[dict[str, Any]]:
    return cluster.events_of("access.denied", **match)


def test_a_node_meets_the_same_recording_checks_in_process_and_over_https(
    cluster: ClusterHarness,
) -> None:
    remote_id, remote_token = _join_remote_node(cluster, "facade-remote")
    sid = str(uuid.uuid4())
    meta = {"user": "alice", "login": "alice", "node": "facade-remote", "kind": "shell"}
    with _http(cluster, remote_token) as remote:
        assert remote.put(f"/v1/recordings/{sid}", json=meta).status_code == 200

    # The cluster's own node runs in-process and talks through its LocalLink.
    local = cluster.service.node
    assert local is not None and local.link is not None
    with pytest.raises(AccessDenied) as refused:
        cluster.run(local.link.recording_append(sid, 0, b'{"version": 2}\n'))
    assert "its own sessions" in refused.value.message
    assert _denials(cluster, user=_node_id(local), resource="recording")

    # The same attempt from a remote node, over HTTPS, meets the same check.
    other_id, other_token = _join_remote_node(cluster, "facade-other")
    with _http(cluster, other_token) as other:
        answer = other.post(f"/v1/recordings/{sid}/data", params={"offset": 0},
                            content=b'{"version": 2}\n')
    assert answer.status_code == 403
    assert answer.json()["error"]["message"] == refused.value.message
    assert _denials(cluster, user=other_id, resource="recording")
    assert remote_id != other_id


def test_an_in_process_node_may_not_report_another_nodes_session(
    cluster: ClusterHarness,
) -> None:
    local = cluster.service.node
    assert local is not None and local.link is not None
    session = {
        "kind": "session", "version": "v1",
        "metadata": {"name": str(uuid.uuid4())},
        "spec": {"user": "alice", "login": "alice", "node_id": "someone-else",
                 "node_name": "elsewhere", "started": "2024-01-01T00:00:00Z"},
    }
    with pytest.raises(AccessDenied, match="its own sessions"):
        cluster.run(local.link.upsert_session(Session.model_validate(session)))
    assert _denials(cluster, user=_node_id(local), resource="session")


@pytest.mark.parametrize(
    ("method", "path", "body", "resource"),
    [
        ("POST", "/v1/events", {"event": "exec", "fields": {}}, "event"),
        ("PUT", f"/v1/recordings/{uuid.UUID(int=7)}", {"user": "x"}, "recording"),
        ("GET", "/v1/watch/access", None, "access_feed"),
        ("POST", "/v1/nodes/heartbeat", {"connection": "direct"}, "node"),
    ],
)
def test_what_only_nodes_may_do_is_refused_to_a_person_and_audited(
    cluster: ClusterHarness, method: str, path: str, body: Any, resource: str
) -> None:
    user = cluster.create_user(f"notanode{resource.replace('_', '')}", logins="nobody")
    assert cluster.login(user).returncode == 0
    token = next(user.home.rglob(f"{user.name}.token")).read_text().strip()
    with _http(cluster, token) as http:
        answer = http.request(method, path, json=body)
    assert answer.status_code == 403
    assert answer.json()["error"]["kind"] == "access_denied"
    assert _denials(cluster, user=user.name, resource=resource)


def test_a_rule_refusal_through_the_facade_names_the_rule_and_is_audited(
    cluster: ClusterHarness,
) -> None:
    """The facade checks a node's identity like any other: a node has no roles."""
    local = cluster.service.node
    assert local is not None
    api = AuthFacade(cluster.service.auth, Identity(user=_node_id(local),
                                                    builtin="node"))
    with pytest.raises(AccessDenied, match="may not list user"):
        cluster.run(api.list_users())
    assert _denials(cluster, user=_node_id(local), resource="user", verb="list")
