"""High availability: two `limen start --roles auth,proxy` processes on one PostgreSQL
schema act as one cluster, and either may die.

One module cluster: instances A and B started at the same moment (so they race to create
the CAs and the tables), a tunneled node and a direct node, both joined through A. The
tests that only look share it; the SIGKILL test runs last and restarts A itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pexpect
import pytest

from limen.audit.chain import log_id_for, read_public_key
from limen.clock import FakeClock
from limen.errors import AccessDenied
from tests.support.cluster import LimenUser
from tests.support.ha import DSN, Instance, drop_schema, new_schema
from tests.support.ssh_access import clean_env, signed_up, unique, wait_until
from tests.support.tunnel import DIRECT, NodeProcess

pytestmark = pytest.mark.postgres

CLUSTER = "ha.limen"


@dataclass
class HA:
    a: Instance
    b: Instance
    tunneled: NodeProcess
    direct: NodeProcess
    base: Path

    def node(self, via: Instance, name: str) -> dict[str, Any] | None:
        return next((n for n in via.get("/v1/nodes") if n["name"] == name), None)


@pytest.fixture(scope="module")
def ha(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HA]:
    base = tmp_path_factory.mktemp("ha")
    schema = new_schema()
    clock = FakeClock(follow_real_time=True)
    a, b = Instance(base, "a", schema, clock), Instance(base, "b", schema, clock)
    nodes: list[NodeProcess] = []
    try:
        a.launch(), b.launch()  # together: one set of CAs, one set of tables all the same
        a.wait_ready(), b.wait_ready()
        tunneled = NodeProcess(a, base, unique("tun"), "env=dev", proxy=a.web_addr)
        direct = NodeProcess(a, base, unique("dir"), "env=dev", proxy=a.web_addr, extra=DIRECT)
        nodes += [tunneled.start(), direct.start()]
        cluster = HA(a, b, tunneled, direct, base)
        both = sorted([a.web_addr, b.web_addr])
        wait_until(lambda: (cluster.node(b, tunneled.name) or {}).get("proxies") == both, 30,
                   "the tunneled node to keep a tunnel to both proxies")
        wait_until(lambda: cluster.node(b, direct.name), 30, "the direct node to register")
        yield cluster
    finally:
        for node in nodes:
            node.stop()
        a.stop()
        b.stop()
        drop_schema(schema)


def person(ha: HA, prefix: str, roles: str = "access") -> LimenUser:
    """A user made and signed in through A."""
    user = signed_up(ha.a, unique(prefix), roles, "root")
    result = ha.a.login(user)
    assert result.returncode == 0, result.stderr
    return user


def through(user: LimenUser, instance: Instance) -> Path:
    """Point the user's `limen ssh` at this instance's jump host (as a load balancer or
    DNS would after a failover) and write a stock ssh config jumping through it."""
    path = next((user.home / "keys").glob("*/profile.json"))
    profile = json.loads(path.read_text())
    profile["ssh_proxy"] = instance.ssh_addr
    path.write_text(json.dumps(profile))
    printed = instance.cli("config", home=user.home)
    assert printed.returncode == 0, printed.stderr
    config = user.home / f"ssh_config.{instance.name}"
    config.write_text(printed.stdout)
    assert f"{instance.ssh_addr.rsplit(':', 1)[1]}" in printed.stdout
    return config


def stock_ssh(config: Path, target: str, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ssh", "-F", str(config), "-o", "BatchMode=yes", target, *command],
                          capture_output=True, text=True, timeout=60, env=clean_env(),
                          stdin=subprocess.DEVNULL)


# -- one cluster ---------------------------------------------------------------------------


def test_instances_started_together_share_one_set_of_cas(ha: HA) -> None:
    for name in ("user_ca", "host_ca", "tls_ca.key", "tls_ca.crt"):
        assert (ha.a.data_dir / "ca" / name).read_bytes() == \
            (ha.b.data_dir / "ca" / name).read_bytes(), name
    pings = [i.get("/v1/ping") for i in (ha.a, ha.b)]
    assert pings[0]["ca_pin"] == pings[1]["ca_pin"]
    assert pings[0]["host_ca"] == pings[1]["host_ca"]
    # Each proxy has its own SSH host key, and names both proxies to node agents.
    assert pings[0]["tunnel_host_key"] != pings[1]["tunnel_host_key"]
    for ping in pings:
        assert sorted(p["web_addr"] for p in ping["tunnel_peers"]) == \
            sorted([ha.a.web_addr, ha.b.web_addr])


def test_admin_credentials_of_one_instance_work_on_the_other(ha: HA) -> None:
    with ha.b.api(token=(ha.a.data_dir / "admin.token").read_text().strip()) as client:
        assert isinstance(client.get("/v1/users"), list)
    with ha.a.api(token=(ha.b.data_dir / "admin.token").read_text().strip()) as client:
        assert isinstance(client.get("/v1/users"), list)


def test_sign_in_through_a_then_limen_ssh_and_stock_ssh_through_b(ha: HA) -> None:
    user = person(ha, "hab")
    config = through(user, ha.b)
    for node in (ha.tunneled.name, ha.direct.name):
        ran = ha.b.cli("ssh", f"root@{node}", "echo", "via-b", home=user.home)
        assert (ran.returncode, ran.stdout.strip()) == (0, "via-b"), ran.stderr
        stock = stock_ssh(config, f"root@{node}.{CLUSTER}", "echo", "stock-b")
        assert (stock.returncode, stock.stdout.strip()) == (0, "stock-b"), stock.stderr


def test_ls_shows_which_proxies_hold_each_node(ha: HA) -> None:
    user = person(ha, "hals")
    listed = {n["name"]: n for n in ha.a.cli("ls", "--format", "json", home=user.home).json()}
    assert listed[ha.tunneled.name]["proxies"] == sorted([ha.a.web_addr, ha.b.web_addr])
    assert listed[ha.tunneled.name]["online"] is True
    assert listed[ha.direct.name]["proxies"] == []  # dialed directly by whichever proxy
    text = ha.a.cli("ls", home=user.home).stdout
    assert "Proxies" in text and ha.b.web_addr in text


def test_a_lock_made_on_b_ends_a_session_held_through_a(ha: HA) -> None:
    user = person(ha, "halock")
    config = through(user, ha.a)
    shell = pexpect.spawn("ssh", ["-F", str(config), "-tt", f"root@{ha.tunneled.name}."
                                  f"{CLUSTER}"], timeout=20, encoding="utf-8", env=clean_env())
    try:
        shell.sendline("echo READY-$((40+2))")
        shell.expect("READY-42")
        locked = ha.b.admin("lock", "--user", user.name, "--message", "incident 77")
        assert locked.returncode == 0, locked.stderr
        started = time.monotonic()
        shell.expect("incident 77", timeout=5)
        shell.expect(pexpect.EOF, timeout=5)
        assert time.monotonic() - started < 2.5
    finally:
        shell.close(force=True)
    refused = stock_ssh(config, f"root@{ha.direct.name}.{CLUSTER}", "true")
    assert refused.returncode != 0 and "incident 77" in refused.stderr


def test_a_role_edit_on_b_applies_through_a_within_two_seconds(ha: HA, tmp_path: Path) -> None:
    role = unique("harole")
    spec = "spec:\n  allow:\n    logins: [{login}]\n    node_labels: {{'*': '*'}}\n"
    doc = tmp_path / "role.yaml"
    doc.write_text(f"kind: role\nmetadata:\n  name: {role}\n" + spec.format(login="root"))
    assert ha.b.admin("create", "-f", str(doc)).returncode == 0
    user = person(ha, "haedit", roles=role)
    config = through(user, ha.a)
    target = f"root@{ha.direct.name}.{CLUSTER}"
    assert stock_ssh(config, target, "true").returncode == 0
    doc.write_text(f"kind: role\nmetadata:\n  name: {role}\n" + spec.format(login="nobody"))
    edited = ha.b.admin("create", "-f", str(doc), "--force")
    assert edited.returncode == 0, edited.stderr
    started = time.monotonic()
    wait_until(lambda: stock_ssh(config, target, "true").returncode != 0, 5,
               "the edited role to refuse root through A")
    assert time.monotonic() - started < 2.5


def test_status_cluster_lists_both_instances_up(ha: HA) -> None:
    shown = ha.b.admin("status", "--cluster", "--format", "json")
    assert shown.returncode == 0, shown.stderr
    instances = {i["web_addr"]: i for i in shown.json()}
    assert set(instances) == {ha.a.web_addr, ha.b.web_addr}
    for instance in instances.values():
        assert instance["roles"] == ["auth", "proxy"] and instance["status"] == "up"
        assert instance["version"] and instance["last_heartbeat"] and instance["id"]
    text = ha.a.admin("status", "--cluster").stdout
    assert "Last heartbeat" in text and ha.b.web_addr in text


def test_status_cluster_is_for_admins_only(ha: HA) -> None:
    user = person(ha, "hanosy")
    refused = ha.a.cli("status", "--cluster", home=user.home)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "instance" in refused.stderr
    # A node's own identity may not list the instances either.
    node_token = json.loads((ha.tunneled.data_dir / "node" / "identity.json").read_text())
    with pytest.raises(AccessDenied), ha.b.api(token=node_token["api_token"]) as client:
        client.get("/v1/cluster/instances")
    denied = ha.b.admin("audit", "search", "--type", "access.denied", "--user", user.name,
                        "--format", "json")
    assert denied.returncode == 0, denied.stderr
    assert any(e.get("resource") == "instance" for e in denied.json())


def test_an_instance_with_another_clusters_cas_refuses_to_start(ha: HA, tmp_path: Path) -> None:
    stray = Instance(tmp_path, "stray", ha.a.schema, ha.a.clock)
    other = Instance(tmp_path, "other", new_schema(), ha.a.clock)
    try:
        other.start()  # makes its own CAs in a cluster of its own
        other.stop()
        (stray.data_dir).mkdir(parents=True)
        (other.data_dir / "ca").rename(stray.data_dir / "ca")
        stray.launch()
        assert stray.proc is not None and stray.proc.wait(60) != 0
        log = stray.log.read_text()
        assert "belongs to another cluster" in log and "Traceback" not in log
    finally:
        stray.stop()
        drop_schema(other.schema)


def test_each_instance_keeps_its_own_chain_verified_and_searched_from_either(ha: HA) -> None:
    user = person(ha, "haaudit")
    through(user, ha.b)
    mark = unique("REC")
    ran = ha.b.cli("ssh", f"root@{ha.direct.name}", "echo", mark, home=user.home)
    assert ran.returncode == 0, ran.stderr
    # The recording is in the shared store: found and played through A.
    found = wait_until(lambda: [r for r in ha.a.get(f"/v1/recordings/search?text={mark}")
                                if r["complete"]], 15, "the recording through A")
    with ha.a.api() as client:
        cast = "\n".join(client.stream_lines(f"/v1/recordings/{found[0]['session_id']}/cast"))
    assert mark in cast
    # Events of both chains (A logged the login, B the jump), searched through B.
    logs = {name: log_id_for(read_public_key(i.data_dir / "ca") or "")
            for name, i in (("a", ha.a), ("b", ha.b))}
    assert logs["a"] != logs["b"]
    searched = ha.b.admin("audit", "search", "--user", user.name, "--limit", "500",
                          "--format", "json")
    assert searched.returncode == 0, searched.stderr
    assert {e["log_id"] for e in searched.json()} == set(logs.values())
    for instance in (ha.a, ha.b):
        verified = instance.verify()
        assert verified.returncode == 0, verified.stdout + verified.stderr
        # Every stored event of both chains was checked, not only this instance's.
        assert verified.json()["store_checked"] > verified.json()["files_checked"] > 0
    # The data dir alone does not say where the store is: a clear refusal, not a pass.
    blind = ha.b.cli("audit", "verify", "--data-dir", str(ha.b.data_dir))
    assert blind.returncode != 0 and "pass --config" in blind.stderr
    assert "Traceback" not in blind.stderr
    # B checks A's chain too: a row of A's log changed in the shared store is caught.
    with _row_tampered(ha.a.schema, logs["a"], user.name):
        broken = ha.b.verify()
        assert broken.returncode == 1 and "Traceback" not in broken.stderr
        assert any(logs["a"] in p["where"] or p["kind"] in ("changed", "store")
                   for p in broken.json()["problems"])
    assert ha.b.verify().returncode == 0


@contextlib.contextmanager
def _row_tampered(schema: str, log_id: str, user: str) -> Iterator[None]:
    """One of the log's rows about ``user`` says mallory instead, until the block ends."""
    async def swap(old: str, new: str) -> None:
        conn = await asyncpg.connect(DSN, server_settings={"search_path": schema})
        try:
            await conn.execute("UPDATE audit_events SET data = replace(data, $1, $2) "
                               "WHERE id = (SELECT min(id) FROM audit_events "
                               "WHERE log_id = $3 AND data LIKE '%' || $1 || '%')",
                               old, new, log_id)
        finally:
            await conn.close()

    forged = "m" * len(user)
    asyncio.run(swap(user, forged))
    try:
        yield
    finally:
        asyncio.run(swap(forged, user))


# -- losing an instance (last: it kills A) ----------------------------------------------


def test_sigkill_of_a_mid_session_b_serves_and_a_rejoins(ha: HA) -> None:
    user = person(ha, "hakill")
    config_a = through(user, ha.a)
    config_b = through(user, ha.b)
    shell = pexpect.spawn("ssh", ["-F", str(config_b), "-tt", f"root@{ha.tunneled.name}."
                                  f"{CLUSTER}"], timeout=20, encoding="utf-8", env=clean_env())
    doomed = pexpect.spawn("ssh", ["-F", str(config_a), "-tt", f"root@{ha.direct.name}."
                                   f"{CLUSTER}"], timeout=20, encoding="utf-8", env=clean_env())
    try:
        for term in (shell, doomed):
            term.sendline("echo READY-$((40+2))")
            term.expect("READY-42")
        ha.a.kill()
        killed = time.monotonic()
        doomed.expect(pexpect.EOF, timeout=10)  # its jump host died with A
        # The session through B goes on, and both nodes are reached through B within 10 s.
        shell.sendline("echo STILL-$((1+1))")
        shell.expect("STILL-2")
        for node in (ha.tunneled.name, ha.direct.name):
            wait_until(lambda n=node: stock_ssh(config_b, f"root@{n}.{CLUSTER}",
                                                "true").returncode == 0,
                       10, f"{node} through B")
        assert time.monotonic() - killed < 10
        shell.sendline("exit")
        shell.expect(pexpect.EOF)
    finally:
        shell.close(force=True)
        doomed.close(force=True)
    # A is called down once three heartbeats are missing.
    wait_until(lambda: _status_of(ha.b, ha.a) == "down", 10, "A to be marked down")
    assert ha.b.admin("status", "--cluster").returncode == 1
    # Nothing acknowledged was lost: every chain verifies, from the survivor.
    verified = ha.b.verify()
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.json()["store_checked"] > verified.json()["files_checked"]
    # Both sessions' recordings reached the shared store whole, the one through A too:
    # its node, joined through A, sends them to B now.
    def shells() -> list[dict[str, Any]]:
        return [r for r in ha.b.get("/v1/recordings")
                if r["user"] == user.name and r["kind"] == "shell"]

    try:
        wait_until(lambda: len(shells()) == 2 and all(r["end"] for r in shells()), 30,
                   "both shells' recordings to end in the store")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {shells()}") from None
    assert all(r["complete"] and r["size"] > 0 for r in shells()), shells()
    # A rejoins under its old id, and takes tunnels again.
    old_id = (ha.a.data_dir / "instance_id").read_text().strip()
    ha.a.start()
    wait_until(lambda: _status_of(ha.b, ha.a) == "up", 10, "A to be up again")
    assert any(i["id"] == old_id and i["status"] == "up" for i in ha.b.get("/v1/cluster/instances"))
    both = sorted([ha.a.web_addr, ha.b.web_addr])
    wait_until(lambda: (ha.node(ha.b, ha.tunneled.name) or {}).get("proxies") == both, 30,
               "the tunneled node back on A")
    assert stock_ssh(through(user, ha.a), f"root@{ha.tunneled.name}.{CLUSTER}",
                     "true").returncode == 0


def _status_of(via: Instance, instance: Instance) -> str:
    addr = instance.run_file()["web_addr"] if instance.alive() else None
    listed = via.get("/v1/cluster/instances")
    mine = (instance.data_dir / "instance_id").read_text().strip()
    found = [i for i in listed if i["id"] == mine and (addr is None or i["web_addr"] == addr)]
    return found[0]["status"] if found else ""

