"""Every security-relevant action is an audit event with its name, code and fields; the
events are searchable by each filter through `limen audit search`, which needs the rule
on `event` (the auditor role has it; an auditor still cannot create users).
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import asyncssh
import httpx
import pytest

from limen.audit.chain import event_hash
from limen.client.trust import verifying_context
from tests.support.cluster import ClusterHarness
from tests.support.ssh_access import (
    NODE,
    SshUser,
    clean_env,
    new_user,
    sign_by_hand,
    unique,
    wait_until,
)

TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$")


def _one(cluster: ClusterHarness, event: str, **match: Any) -> dict[str, Any]:
    found = wait_until(lambda: cluster.events_of(event, **match), 10, f"a {event} event")
    record = found[-1]
    # The common fields, and the event's place in the hash chain.
    assert TIME.match(record["time"]), record["time"]
    uuid.UUID(record["uid"])
    assert record["cluster_name"] == "test.limen"
    assert record["hash"] == event_hash(record) and len(record["prev_hash"]) == 64
    assert isinstance(record["seq"], int) and record["log_id"]
    return record


def _search(cluster: ClusterHarness, *args: str) -> list[dict[str, Any]]:
    result = cluster.admin("audit", "search", *args, "--format", "json")
    assert result.returncode == 0, result.stderr
    return result.json()


def test_account_and_resource_actions_are_events(cluster: ClusterHarness,
                                                 tmp_path: Path) -> None:
    name = unique("evuser")
    person = cluster.create_user(name, roles="access", logins="root")
    created = _one(cluster, "user.create", name=name)
    assert (created["code"], created["user"], created["roles"], created["logins"]) == (
        "T1002I", "admin", ["access"], ["root"])
    assert _one(cluster, "user.password_change", user=name)["code"] == "T1005I"

    assert cluster.login(person, password="wrong password here").returncode != 0
    failed = _one(cluster, "user.login", user=name, code="T1000W")
    assert failed["success"] is False and failed["method"] == "local" and failed["error"]
    assert failed["addr.remote"] == "127.0.0.1"
    assert cluster.login(person).returncode == 0
    ok = _one(cluster, "user.login", user=name, code="T1000I")
    assert ok["success"] is True and ok["addr.remote"] == "127.0.0.1"

    assert cluster.admin("users", "reset", name).returncode == 0
    assert _one(cluster, "user.update", name=name)["code"] == "T1003I"

    role = unique("evrole")
    doc = tmp_path / "role.yaml"
    doc.write_text(f"kind: role\nversion: v7\nmetadata:\n  name: {role}\nspec:\n"
                   "  allow:\n    logins: [nobody]\n")
    assert cluster.admin("create", "-f", str(doc)).returncode == 0
    assert _one(cluster, "role.created", name=role)["code"] == "T9000I"
    assert cluster.admin("create", "-f", str(doc), "--force").returncode == 0
    assert _one(cluster, "role.updated", name=role)["code"] == "T9002I"
    assert cluster.admin("rm", f"role/{role}").returncode == 0
    assert _one(cluster, "role.deleted", name=role)["user"] == "admin"

    locked = cluster.admin("lock", "--user", name, "--message", "audit test", "--format", "json")
    assert locked.returncode == 0, locked.stderr
    lock_name = locked.json()["metadata"]["name"]
    lock = _one(cluster, "lock.created", name=lock_name)
    assert (lock["code"], lock["target"], lock["message"]) == ("TLK00I", {"user": name},
                                                               "audit test")
    assert cluster.admin("rm", f"lock/{lock_name}").returncode == 0
    assert _one(cluster, "lock.deleted", name=lock_name)["code"] == "TLK01I"

    assert cluster.admin("users", "rm", name).returncode == 0
    assert _one(cluster, "user.delete", name=name)["code"] == "T1004I"


def test_join_tokens_and_node_joins_are_events(fresh_cluster: ClusterHarness) -> None:
    issued = fresh_cluster.admin("tokens", "add", "--type", "node", "--format", "json")
    assert issued.returncode == 0, issued.stderr
    created = _one(fresh_cluster, "join_token.create")
    assert created["code"] == "TJT00I" and created["roles"] == ["node"] and created["ttl"]
    key = asyncssh.generate_private_key("ssh-ed25519").export_public_key("openssh").decode()
    ca = (fresh_cluster.data_dir / "ca" / "tls_ca.crt").read_text()
    body = {"token": issued.json()["token"], "name": "joiner", "public_key": key,
            "addr": "127.0.0.1:1"}
    with httpx.Client(verify=verifying_context(ca)) as http:
        assert http.post(f"https://{fresh_cluster.web_addr}/v1/join", json=body).is_success
        body["token"] = "0" * 32
        assert http.post(f"https://{fresh_cluster.web_addr}/v1/join", json=body).status_code == 403
    used = _one(fresh_cluster, "join_token.use", node_name="joiner")
    assert used["code"] == "TJT02I" and used["token_id"] == created["token_id"]
    joined = _one(fresh_cluster, "instance.join", server_hostname="joiner", code="TJ001I")
    assert joined["server_id"] and joined["server_addr"] == "127.0.0.1:1"
    refused = _one(fresh_cluster, "instance.join", code="TJ001E")
    assert refused["success"] is False and refused["error"]


def test_session_actions_are_events(cluster: ClusterHarness, tmp_path: Path) -> None:
    alice = new_user(cluster, "evsess")
    ran = alice.ssh(f"root@{NODE}", "echo hi; exit 4")
    assert ran.returncode == 4
    start = _one(cluster, "session.start", user=alice.name)
    assert (start["code"], start["login"], start["server_hostname"]) == ("T2000I", "root",
                                                                         "node1")
    assert start["interactive"] is False and start["server_id"] and start["sid"]
    execd = _one(cluster, "exec", user=alice.name, sid=start["sid"])
    assert (execd["code"], execd["command"], execd["exit_code"]) == ("T3002I", "echo hi; exit 4",
                                                                     4)
    end = _one(cluster, "session.end", sid=start["sid"])
    assert end["code"] == "T2004I" and end["exit_code"] == 4 and end["interactive"] is False
    assert end["participants"] == [alice.name]
    assert end["session_start"] == start["session_start"] and end["session_stop"]
    data = _one(cluster, "session.data", sid=start["sid"])
    assert data["tx"] >= 3 and data["code"] == "T2006I"

    # Legacy scp: an "scp" event with the digest of the file copied.
    payload = tmp_path / "legacy.bin"
    payload.write_bytes(uuid.uuid4().bytes * 1000)
    remote = f"/tmp/{alice.name}.bin"
    try:
        copied = alice.tool("scp", "-O", str(payload), f"root@{NODE}:{remote}")
        assert copied.returncode == 0, copied.stderr
    finally:
        alice.ssh(f"root@{NODE}", f"rm -f {remote}")
    scp = _one(cluster, "scp", user=alice.name)
    assert (scp["code"], scp["action"], scp["path"]) == ("T3004I", "upload", remote)
    assert scp["sha256"] == hashlib.sha256(payload.read_bytes()).hexdigest()
    assert scp["len"] >= payload.stat().st_size

    # A forward the role allows (nothing listens there: the event is about the decision).
    forwarded = subprocess.run(alice.ssh_argv("-W", "127.0.0.1:9", f"root@{NODE}"),
                               capture_output=True, env=clean_env(), timeout=30,
                               stdin=subprocess.DEVNULL)
    assert forwarded.returncode != 0
    port = _one(cluster, "port", user=alice.name)
    assert (port["code"], port["addr"], port["allowed"]) == ("T3003I", "127.0.0.1:9", True)


def test_refusals_are_events(cluster: ClusterHarness, tmp_path: Path) -> None:
    alice = new_user(cluster, "evrefuse")
    stranger = asyncssh.generate_private_key("ssh-ed25519")
    forged = sign_by_hand(tmp_path / "forged", stranger, alice.name, ["root"])
    config = alice.config_with_identity(forged.key, forged.cert)

    def at_proxy() -> list[dict[str, Any]]:
        return [e for e in cluster.events_of("auth", code="T3007W") if e["method"] == "cert"]

    before = len(at_proxy())
    assert alice.ssh(f"root@{NODE}", "true", config=config).returncode == 255
    refusal = wait_until(lambda: at_proxy()[before:], 10, "the jump host's refusal")[0]
    assert refusal["success"] is False and "certificate" in refusal["reason"]

    # A lock on one login: the proxy lets the connection through, the node refuses the
    # session and says why.
    locked = cluster.admin("lock", "--user", alice.name, "--login", "root", "--message",
                           "no root today", "--format", "json")
    assert locked.returncode == 0, locked.stderr
    try:
        wait_until(lambda: alice.ssh(f"root@{NODE}", "true").returncode != 0, 10,
                   "the node to know the lock")
        rejected = _one(cluster, "session.rejected", user=alice.name)
        assert rejected["code"] == "T1006W" and "no root today" in rejected["reason"]
    finally:
        cluster.admin("rm", f"lock/{locked.json()['metadata']['name']}")


# -- search ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_sessions(cluster: ClusterHarness) -> tuple[SshUser, SshUser, float]:
    before = time.time()
    carol, dave = new_user(cluster, "srch-carol"), new_user(cluster, "srch-dave")
    for person in (carol, dave, carol):
        assert person.ssh(f"root@{NODE}", "true").returncode == 0
    wait_until(lambda: len(cluster.events_of("session.end", user=carol.name)) == 2, 10,
               "both of carol's sessions")
    return carol, dave, before


def test_search_by_type_user_node_session_and_time(cluster: ClusterHarness,
                                                   two_sessions: tuple) -> None:
    carol, dave, before = two_sessions
    starts = _search(cluster, "--type", "session.start", "--user", carol.name)
    assert [e["event"] for e in starts] == ["session.start"] * 2
    assert {e["user"] for e in starts} == {carol.name}
    assert starts[0]["seq"] > starts[1]["seq"]  # newest first
    assert starts[0]["time"] >= starts[1]["time"]

    both = _search(cluster, "--type", "session.start", "--type", "session.end",
                   "--user", dave.name)
    assert sorted(e["event"] for e in both) == ["session.end", "session.start"]

    sid = starts[0]["sid"]
    session = _search(cluster, "--session", sid)
    assert {e["sid"] for e in session} == {sid}
    assert {"session.start", "exec", "session.end"} <= {e["event"] for e in session}

    node_id = starts[0]["server_id"]
    by_name = _search(cluster, "--node", "node1", "--user", carol.name)
    by_id = _search(cluster, "--node", node_id, "--user", carol.name)
    assert by_name and [e["uid"] for e in by_name] == [e["uid"] for e in by_id]
    # A name no test uses (others in this shared cluster do try to reach "no-such-node").
    assert _search(cluster, "--node", unique("never-a-node")) == []

    limited = _search(cluster, "--user", carol.name, "--limit", "3")
    assert len(limited) == 3
    everything = _search(cluster, "--user", carol.name, "--limit", "1000")
    assert [e["uid"] for e in everything[:3]] == [e["uid"] for e in limited]

    oldest = everything[-1]["time"]
    newest = everything[0]["time"]
    assert _search(cluster, "--user", carol.name, "--since", newest, "--limit", "1000")[-1][
        "time"] == newest
    until = _search(cluster, "--user", carol.name, "--until", oldest, "--limit", "1000")
    assert [e["uid"] for e in until] == [everything[-1]["uid"]]
    assert len(_search(cluster, "--user", carol.name, "--since", "1h", "--limit", "1000")) == len(
        everything)
    text = cluster.admin("audit", "search", "--user", carol.name, "--type", "session.start")
    assert text.returncode == 0 and carol.name in text.stdout and "T2000I" in text.stdout


def test_search_pages_newest_first_through_the_api(cluster: ClusterHarness,
                                                   two_sessions: tuple) -> None:
    carol, _, _ = two_sessions
    ca = (cluster.data_dir / "ca" / "tls_ca.crt").read_text()
    token = (cluster.data_dir / "admin.token").read_text().strip()
    seen: list[dict[str, Any]] = []
    params: dict[str, Any] = {"user": carol.name, "limit": 2}
    with httpx.Client(verify=verifying_context(ca), base_url=f"https://{cluster.web_addr}",
                      headers={"authorization": f"Bearer {token}"}) as http:
        while True:
            page = http.get("/v1/audit/events", params=params).json()
            assert len(page["events"]) <= 2
            seen += page["events"]
            if not page["next"]:
                break
            params["cursor"] = page["next"]
    assert len(seen) == len({e["uid"] for e in seen}) >= 6
    keys = [(e["time"], e["seq"]) for e in seen]
    assert keys == sorted(keys, reverse=True)


def test_an_auditor_searches_and_plays_but_cannot_create_users(
    cluster: ClusterHarness, two_sessions: tuple
) -> None:
    carol, _, _ = two_sessions
    auditor = new_user(cluster, "evauditor", roles="auditor", logins="")
    found = auditor.limen("audit", "search", "--user", carol.name, "--format", "json")
    assert found.returncode == 0, found.stderr
    assert found.json() and {e["user"] for e in found.json()} == {carol.name}
    verified = auditor.limen("audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    recordings = wait_until(
        lambda: [r for r in auditor.limen("recordings", "ls", "--format", "json").json()
                 if r["user"] == carol.name and r["complete"]], 10, "carol's recordings")
    played = auditor.limen("play", recordings[0]["session_id"], "--format", "asciicast")
    assert played.returncode == 0 and played.stdout.startswith('{"version": 2'), played.stderr

    refused = auditor.limen("users", "add", unique("nope"), "--roles", "access")
    assert refused.returncode == 1 and "ERROR" in refused.stderr


def test_a_user_without_the_rule_is_refused(cluster: ClusterHarness,
                                            two_sessions: tuple) -> None:
    carol, _, _ = two_sessions
    for argv in (("audit", "search"), ("audit", "verify"), ("recordings", "ls"),
                 ("recordings", "search", "x"), ("play", str(uuid.uuid4()))):
        refused = carol.limen(*argv)
        assert refused.returncode == 1, argv
        assert "you may not" in refused.stderr and "no role allows it" in refused.stderr, (
            argv, refused.stderr)
    denied = wait_until(lambda: cluster.events_of("access.denied", user=carol.name), 10,
                        "access.denied events")
    assert {e["resource"] for e in denied} >= {"event", "recording"}
