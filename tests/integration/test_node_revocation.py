"""Issue 10, hole 6: nodes could not be revoked, and names were not unique.

`limen rm node/X` was undone by the node's next heartbeat, which could also rename and
relabel it; a second node could join under an existing name. Now a removed or locked
node is refused everywhere at once (its API token, its tunnel, the proxy's routes), a
heartbeat is presence only, a name belongs to one node, and the join token's labels win.
The nodes here are real `limen start --roles node` processes, or tokens and API calls
made by hand as a misbehaving node would make them.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from limen.auth.node_credentials import sign_join
from limen.node.cluster import link
from limen.proxy import web_nodes
from tests.support.cluster import ClusterHarness
from tests.support.node_api import HandNode, error_of, joined_role, new_token
from tests.support.ssh_access import SshUser, new_user, unique, wait_until
from tests.support.tunnel import NodeProcess, tunnel_of


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterHarness]:
    harness = ClusterHarness(tmp_path_factory.mktemp("revocation")).start()
    yield harness
    harness.stop()


@pytest.fixture(scope="module")
def alice(cluster: ClusterHarness) -> SshUser:
    return new_user(cluster, "revoke", logins="root")


@pytest.fixture
def tunneled(cluster: ClusterHarness, tmp_path: Path) -> Iterator[NodeProcess]:
    node = NodeProcess(cluster, tmp_path, unique("revocable"), "env=dev").start()
    try:
        node.wait_tunneled()
        yield node
    finally:
        node.stop()


def _identity(node: NodeProcess) -> tuple[dict[str, Any], asyncssh.SSHKey]:
    """What the node keeps on disk: its identity (API token, certificate) and host key."""
    directory = node.data_dir / "node"
    identity = json.loads((directory / "identity.json").read_text())
    return identity, asyncssh.read_private_key(str(directory / "host_key"))


def _as_node(cluster: ClusterHarness, node: NodeProcess) -> HandNode:
    """Its API calls, made by hand with its own token."""
    identity, key = _identity(node)
    hand = HandNode(cluster, node.name, key)
    hand.joined = identity
    return hand


async def _tunnel_login(addr: str, node_id: str, key: asyncssh.SSHKey, cert_line: str) -> None:
    host, port = addr.rsplit(":", 1)
    conn = await asyncssh.connect(host, int(port), username=node_id,
                                  client_keys=[(key, asyncssh.import_certificate(cert_line))],
                                  known_hosts=None, agent_path=None, config=[],
                                  preferred_auth="publickey")
    conn.close()


def _tunnel_login_refused(cluster: ClusterHarness, node: NodeProcess, why: str) -> None:
    identity, key = _identity(node)
    with pytest.raises(asyncssh.PermissionDenied):
        cluster.run(_tunnel_login(cluster.service.tunnel_addr, identity["node_id"], key,
                                  identity["host_cert"]))

    def audited() -> list[dict[str, Any]]:
        return [e for e in cluster.events_of("auth", success=False, kind="tunnel")
                if e.get("user") == identity["node_id"] and why in e.get("reason", "")]

    wait_until(audited, 10, "the refused tunnel login's audit event")


def _listed(user: SshUser) -> set[str]:
    result = user.limen("ls", "--format", "json")
    assert result.returncode == 0, result.stderr
    return {n["name"] for n in result.json()}


def _refused_everywhere(cluster: ClusterHarness, alice: SshUser, node: NodeProcess,
                        why: str) -> None:
    node_id = _identity(node)[0]["node_id"]
    wait_until(lambda: tunnel_of(cluster, node_id) is None, 5, "the tunnel to be closed")
    assert node.name not in _listed(alice)
    result = alice.limen("ssh", node.name, "echo should-not-run")
    assert result.returncode == 255 and "should-not-run" not in result.stdout
    hand = _as_node(cluster, node)
    for response in (hand.heartbeat("", "tunnel"), hand.report()):
        assert response.status_code == 403, response.text
        assert why in error_of(response)
    assert [e for e in cluster.events_of("auth", success=False, method="node-token")
            if e.get("server_id") == node_id and why in e.get("reason", "")]
    _tunnel_login_refused(cluster, node, why)


def test_rm_node_refuses_it_everywhere_at_once(
    cluster: ClusterHarness, alice: SshUser, tunneled: NodeProcess, tmp_path: Path
) -> None:
    assert alice.limen("ssh", tunneled.name, "echo before").stdout == "before\n"
    removed = cluster.admin("rm", f"node/{tunneled.name}")
    assert removed.returncode == 0, removed.stderr
    _refused_everywhere(cluster, alice, tunneled, "is not registered in this cluster")
    result = alice.limen("ssh", tunneled.name, "true")
    assert f"node '{tunneled.name}' is not known" in result.stderr
    gone = cluster.events_of("instance.remove", server_hostname=tunneled.name)
    assert gone and gone[0]["user"] == "admin"
    # The node keeps heartbeating and reconnecting; none of it brings it back.
    tunneled.check_alive()
    assert cluster.run(cluster.service.auth.nodes.presence_of(gone[0]["server_id"])) is None

    # A direct node, removed by id, is unreachable at once too.
    direct = joined_role(cluster, tmp_path, unique("direct"), new_token(cluster))
    assert alice.limen("ssh", direct.name, "echo up").stdout == "up\n"
    assert cluster.admin("rm", f"node/{direct.identity.node_id}").returncode == 0
    result = alice.limen("ssh", direct.name, "true")
    assert result.returncode == 255 and "is not known" in result.stderr
    assert direct.name not in _listed(alice)


def test_a_lock_on_the_node_refuses_it_while_it_lasts(
    cluster: ClusterHarness, alice: SshUser, tunneled: NodeProcess
) -> None:
    locked = cluster.admin("lock", "--node", tunneled.name, "--message", "disk swap",
                           "--ttl", "1h", "--format", "json")
    assert locked.returncode == 0, locked.stderr
    _refused_everywhere(cluster, alice, tunneled, "disk swap")
    result = alice.limen("ssh", tunneled.name, "true")
    assert "access is locked" in result.stderr and "disk swap" in result.stderr

    lifted = cluster.admin("rm", f"lock/{locked.json()['metadata']['name']}")
    assert lifted.returncode == 0, lifted.stderr
    node_id = tunneled.wait_tunneled(30)  # the agent's next try gets in
    assert _as_node(cluster, tunneled).heartbeat("", "tunnel").status_code == 200
    assert tunneled.name in _listed(alice)
    result = alice.limen("ssh", tunneled.name, "echo unlocked")
    assert result.stdout == "unlocked\n", result.stderr
    assert tunnel_of(cluster, node_id) is not None


def _open_feed(node: HandNode, **params: Any) -> tuple[list[str], threading.Event]:
    """The node's access feed read in a thread: the lines so far, and set when it ends."""
    lines: list[str] = []
    ended = threading.Event()

    def read() -> None:
        try:
            with node._client() as http, http.stream(
                    "GET", "/v1/watch/access", timeout=60, params=params,
                    headers={"authorization": f"Bearer {node.api_token}"}) as response:
                lines.extend(response.iter_lines())
        finally:
            ended.set()

    threading.Thread(target=read, daemon=True).start()
    return lines, ended


def _revoke(cluster: ClusterHarness, node: HandNode, how: str) -> None:
    """Remove the node ("rm") or lock it ("lock"), as an admin does."""
    if how == "rm":
        done = cluster.admin("rm", f"node/{node.node_id}")
    else:
        done = cluster.admin("lock", "--node", node.name, "--message", "feed test",
                             "--ttl", "1h")
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("revoke", ["rm", "lock"])
def test_a_removed_or_locked_nodes_access_feed_ends(
        cluster: ClusterHarness, monkeypatch: pytest.MonkeyPatch, revoke: str) -> None:
    """The feed a node opened before it was removed or locked does not outlive that: at
    its next quiet ping the proxy finds the node out of good standing and ends it."""
    monkeypatch.setattr(web_nodes, "PING_SECONDS", 0.2)
    node = HandNode(cluster, unique("feed"))
    node.join(new_token(cluster))
    lines, ended = _open_feed(node)
    pings = lambda: sum('"ping"' in line for line in lines)  # noqa: E731
    wait_until(lambda: pings() >= 3 or ended.is_set(), 20, "pings on the open feed")
    assert pings() >= 3, lines[-3:]
    assert not ended.is_set()  # checked at each ping, and still in good standing

    _revoke(cluster, node, revoke)
    assert ended.wait(20), "the revoked node's feed is still open"
    reopened, ended_again = _open_feed(node)
    assert ended_again.wait(20) and not any('"ready"' in line for line in reopened)


@pytest.mark.parametrize("revoke", ["rm", "lock"])
def test_a_revoked_nodes_feed_ends_at_once_not_at_its_next_ping(
        cluster: ClusterHarness, monkeypatch: pytest.MonkeyPatch, revoke: str) -> None:
    """The revocation is pushed to the open feed: with no ping due for an hour, the feed
    of a node removed or locked ends all the same, while another node's feed stays."""
    monkeypatch.setattr(web_nodes, "PING_SECONDS", 3600)
    node, bystander = HandNode(cluster, unique("push")), HandNode(cluster, unique("stay"))
    node.join(new_token(cluster))
    bystander.join(new_token(cluster))
    lines, ended = _open_feed(node)
    other_lines, other_ended = _open_feed(bystander)
    for seen in (lines, other_lines):
        wait_until(lambda seen=seen: any('"ready"' in line for line in seen), 20,
                   "the feed's snapshot")

    _revoke(cluster, node, revoke)
    assert ended.wait(20), "the revoked node's feed waited for a ping"
    assert not other_ended.is_set()


def test_a_node_chooses_how_often_its_quiet_feed_is_pinged_within_bounds(
        cluster: ClusterHarness, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pings wake the proxy once per node: nodes ask for one a minute (link.py), and the
    proxy keeps the interval a caller may ask for between 5 s and 5 minutes."""
    monkeypatch.setattr(web_nodes, "PING_SECONDS", 3600)  # the default would never ping
    node = HandNode(cluster, unique("ping"))
    node.join(new_token(cluster))
    lines, ended = _open_feed(node, ping=web_nodes.PING_MIN_SECONDS)
    wait_until(lambda: any('"ping"' in line for line in lines), 30, "a ping as asked")
    assert not ended.is_set()
    for wrong in ("1", "301", "soon"):
        refused = node.call("GET", f"/v1/watch/access?ping={wrong}")
        assert refused.status_code == 400, refused.text
        assert "query.ping" in error_of(refused)
    assert link.FEED_READ_TIMEOUT > link.FEED_PING_SECONDS >= web_nodes.PING_MIN_SECONDS


def test_the_nodes_link_asks_for_its_pings_and_its_feed_outlives_the_proxys_default(
        cluster: ClusterHarness, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the proxy's default at an hour, only the interval the node's link asks for
    keeps its feed within the read timeout."""
    monkeypatch.setattr(web_nodes, "PING_SECONDS", 3600)
    monkeypatch.setattr(link, "FEED_PING_SECONDS", web_nodes.PING_MIN_SECONDS)
    node = HandNode(cluster, unique("asks"))
    node.join(new_token(cluster))
    ca = (cluster.data_dir / "ca" / "tls_ca.crt").read_text()

    async def listen() -> list[dict[str, Any]]:
        remote = link.RemoteLink(cluster.web_addr, ca, node.api_token,
                                 feed_read_timeout=web_nodes.PING_MIN_SECONDS + 1.5)
        got: list[dict[str, Any]] = []
        try:
            async with asyncio.timeout(2 * web_nodes.PING_MIN_SECONDS - 1):
                async for message in remote.access_feed():
                    got.append(message)
        except TimeoutError:
            return got  # still open: pings came at the interval asked for
        finally:
            await remote.close()
        raise AssertionError(f"the feed ended early after {len(got)} messages")

    assert any(m.get("op") == "ready" for m in asyncio.run(listen()))


def test_names_are_unique_and_the_join_tokens_labels_bind(
    cluster: ClusterHarness, alice: SshUser
) -> None:
    name = unique("dup")
    first = HandNode(cluster, name)
    first.join(new_token(cluster, "--labels", "env=prod"), labels={"env": "dev", "team": "a"})
    registered = cluster.run(cluster.service.auth.nodes.find(name))
    assert registered.metadata.labels == {"env": "prod", "team": "a"}  # the token's env wins

    token = new_token(cluster)
    for taken in (name, name.upper()):
        second = HandNode(cluster, taken)  # another host key
        refused = second.try_join(token)
        assert refused.status_code == 409
        assert "already registered" in error_of(refused) and first.node_id in error_of(refused)
    assert cluster.events_of("instance.join", node_name=name, success=False)
    for shaped in (first.node_id, "3f2504e0-4f89-11d3-9a0c-0305e82c3301"):
        refused = HandNode(cluster, shaped).try_join(token)
        assert refused.status_code == 400 and "node id" in error_of(refused)
    HandNode(cluster, unique("other")).join(token)  # the refusals spent none of its use

    # A heartbeat is presence only: it cannot rename or relabel the node.
    for extra in ({"name": "renamed"}, {"labels": {"env": "dev"}}):
        beat = first.heartbeat("", "tunnel", **extra)
        assert beat.status_code == 400, beat.text
    assert first.heartbeat("", "tunnel").status_code == 200
    after = cluster.run(cluster.service.auth.nodes.find(name))
    assert (after.spec.hostname, after.metadata.labels) == (name, registered.metadata.labels)

    # Once removed, the name is free for another node.
    assert cluster.admin("rm", f"node/{name}").returncode == 0
    HandNode(cluster, name).join(new_token(cluster))


def test_a_registered_nodes_public_key_does_not_make_its_node(cluster: ClusterHarness) -> None:
    """Anyone can read a node's public host key (ssh-keyscan); with a join token of their
    own, that must not get them the node's id, labels or API credentials."""
    name = unique("victim")
    victim = HandNode(cluster, name)
    victim.join(new_token(cluster, "--labels", "env=prod"))
    before = cluster.run(cluster.service.auth.nodes.find(name))

    impostor = HandNode(cluster, name, key=victim.key)  # only the public half is used
    stranger_key = asyncssh.generate_private_key("ssh-ed25519")
    for proof in (None, sign_join(stranger_key, name, "t", cluster.clock.now())):
        refused = impostor.try_join(new_token(cluster, "--labels", "env=dev"), proof=proof)
        assert refused.status_code == 403, refused.text
        assert "host key" in error_of(refused)
    after = cluster.run(cluster.service.auth.nodes.find(name))
    assert (after.metadata.labels, after.spec.token_id) == (before.metadata.labels,
                                                            before.spec.token_id)
    assert victim.heartbeat("", "tunnel").status_code == 200  # its credentials still work
    assert cluster.events_of("instance.join", node_name=name, success=False)

    # The node itself, holding the key, joins again under its id.
    token = new_token(cluster)
    again = HandNode(cluster, name, key=victim.key)
    assert again.join(token, proof=sign_join(victim.key, name, token,
                                             cluster.clock.now())) == victim.node_id


def test_a_join_token_is_single_use_unless_created_for_more(cluster: ClusterHarness) -> None:
    single = new_token(cluster)
    HandNode(cluster, unique("once")).join(single)
    again = HandNode(cluster, unique("twice")).try_join(single)
    assert again.status_code == 403 and "has been used already" in error_of(again)
    assert [e for e in cluster.events_of("instance.join", success=False)
            if "has been used already" in e.get("error", "")]

    double = new_token(cluster, "--uses", "2")
    for _ in range(2):
        HandNode(cluster, unique("two")).join(double)
    assert HandNode(cluster, unique("three")).try_join(double).status_code == 403

    reusable = new_token(cluster, "--reusable")
    for _ in range(3):
        HandNode(cluster, unique("many")).join(reusable)
    listed = cluster.admin("tokens", "ls", "--format", "json").json()
    assert [t["uses_left"] for t in listed if t["uses_left"] is None]  # reusable: any
    assert [t for t in listed if t["uses_left"] == 0]  # spent tokens show so

    bad = cluster.admin("tokens", "add", "--type", "node", "--uses", "0")
    assert bad.returncode != 0 and "at least 1" in bad.stderr


def test_two_nodes_racing_for_one_single_use_token_one_wins(cluster: ClusterHarness) -> None:
    for _ in range(3):
        token = new_token(cluster)
        racers = [HandNode(cluster, unique("racer")) for _ in range(4)]
        with ThreadPoolExecutor(len(racers)) as pool:
            answers = list(pool.map(HandNode.try_join, racers, [token] * len(racers)))
        codes = sorted(response.status_code for response in answers)
        assert codes == [200, 403, 403, 403], [r.text for r in answers]
