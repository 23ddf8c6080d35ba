"""A node cannot write the audit log in anyone else's name, and verify trusts only keys the
cluster's CA vouches for.

The attacker is a node: it joins with a token over HTTPS like any node and then reports
whatever it likes to POST /v1/events with its own API token. The auth service stamps who,
where and when from what it knows, keeps the node's words as claims, refuses what a node
may not report (with a clear error and an audit event), and `limen audit verify` still
passes with no forged row in the log. A stranger who can write to the audit store cannot
add a log of their own either: verify names it.
"""

from __future__ import annotations

import base64
import json
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from limen.audit.chain import GENESIS, AuditKey, checkpoint_message, event_hash, format_time
from limen.audit.store import stored_event
from limen.audit.vouchers import vouch
from limen.client.trust import insecure_context
from tests.support.cluster import ClusterHarness
from tests.support.ssh_access import NODE, SshUser, clean_env, new_user, unique, wait_until

FORGED_TIME = "2001-09-09T01:46:40Z"


@dataclass
class JoinedNode:
    """A node identity obtained the way every node gets one: a join token over HTTPS."""

    cluster: ClusterHarness
    node_id: str
    name: str
    api_token: str

    def _client(self) -> httpx.Client:
        return httpx.Client(verify=insecure_context(), base_url=f"https://{self.cluster.web_addr}",
                            headers={"authorization": f"Bearer {self.api_token}"}, timeout=30)

    def report(self, event: str, **fields: Any) -> httpx.Response:
        with self._client() as http:
            return http.post("/v1/events", json={"event": event, "fields": fields})

    def report_batch(self, events: list[tuple[str, dict[str, Any]]]) -> httpx.Response:
        with self._client() as http:
            return http.post("/v1/events/batch", json={
                "events": [{"event": name, "fields": fields} for name, fields in events]})

    def put_recording(self, sid: str, meta: dict[str, Any]) -> httpx.Response:
        with self._client() as http:
            return http.put(f"/v1/recordings/{sid}", json=meta)

    def post_recordings(self, recordings: list[dict[str, Any]]) -> httpx.Response:
        with self._client() as http:
            return http.post("/v1/recordings/batch", json={"recordings": recordings})


def join_node(cluster: ClusterHarness, name: str) -> JoinedNode:
    token = cluster.admin("tokens", "add", "--type", "node", "--format", "json").json()["token"]
    key = asyncssh.generate_private_key("ssh-ed25519")
    body = {"token": token, "name": name, "addr": "",
            "public_key": key.export_public_key("openssh").decode()}
    with httpx.Client(verify=insecure_context(), base_url=f"https://{cluster.web_addr}") as http:
        joined = http.post("/v1/join", json=body)
    assert joined.status_code == 200, joined.text
    answer = joined.json()
    return JoinedNode(cluster, answer["node_id"], name, answer["api_token"])


@pytest.fixture(scope="module")
def mallory(cluster: ClusterHarness) -> JoinedNode:
    return join_node(cluster, unique("mallory"))


@pytest.fixture(scope="module")
def victim(cluster: ClusterHarness) -> SshUser:
    return new_user(cluster, "victim")


def _node1_id(cluster: ClusterHarness) -> str:
    return next(e["server_id"] for e in cluster.events() if e.get("server_hostname") == "node1")


def _error(response: httpx.Response) -> str:
    return str(response.json()["error"]["message"])


def _refusal(cluster: ClusterHarness, node: JoinedNode, reported: str) -> dict[str, Any]:
    found = wait_until(lambda: [e for e in cluster.events_of(
        "audit.report.refused", server_id=node.node_id, reported=reported)], 10,
        f"the refusal of {node.name}'s {reported} report")
    return found[-1]


def _cert_text(user: SshUser) -> str:
    """The user's certificate as a node receives it: the wire blob, base64."""
    return Path(user.status["cert_path"]).read_text().split()[1]


# -- who, where and when are the auth service's -------------------------------------------


def test_forged_user_node_and_time_are_stamped_from_the_nodes_identity(
    cluster: ClusterHarness, mallory: JoinedNode, victim: SshUser
) -> None:
    node1 = _node1_id(cluster)
    command = f"forged-{uuid.uuid4().hex[:8]}"
    answer = mallory.report("exec", sid=str(uuid.uuid4()), user=victim.name, login="root",
                            server_id=node1, server_hostname="node1", time=FORGED_TIME,
                            command=command, exit_code=0)
    assert answer.status_code == 200, answer.text

    [written] = cluster.events_of("exec", command=command)
    assert (written["server_id"], written["server_hostname"]) == (mallory.node_id, mallory.name)
    assert "user" not in written and "login" not in written  # nothing backs the names
    assert (written["claimed_user"], written["claimed_login"]) == (victim.name, "root")
    assert written["node_time"] == "2001-09-09T01:46:40.000000000Z"
    assert written["time"] > "2020" and written["time"] != written["node_time"]
    assert not cluster.events_of("exec", command=command, server_id=node1)
    assert not cluster.events_of("exec", command=command, user=victim.name)
    shown = cluster.admin("audit", "search", "--since", "10m", "--node", mallory.node_id)
    assert f"{victim.name} (claimed)" in shown.stdout, shown.stdout + shown.stderr
    as_victim = cluster.admin("audit", "search", "--user", victim.name, "--format", "json")
    assert command not in as_victim.stdout


def test_a_session_start_names_a_user_only_when_a_certificate_backs_it(
    cluster: ClusterHarness, mallory: JoinedNode, victim: SshUser, tmp_path: Path
) -> None:
    foreign_ca = asyncssh.generate_private_key("ssh-ed25519")
    key = asyncssh.generate_private_key("ssh-ed25519")
    self_made = foreign_ca.generate_user_certificate(key, victim.name, principals=["root"])
    attempts: dict[str, dict[str, Any]] = {
        "no certificate": {},
        "a certificate from another CA":
            {"cert": base64.b64encode(bytes(self_made.public_data)).decode()},
        "the victim's own certificate, for a login it does not allow":
            {"cert": _cert_text(victim), "login": "postgres"},
        "not a certificate": {"cert": "bm90IGEgY2VydGlmaWNhdGU="},
    }
    for what, extra in attempts.items():
        sid = str(uuid.uuid4())
        fields = {"sid": sid, "user": victim.name, "login": "root", "session_kind": "shell",
                  **extra}
        assert mallory.report("session.start", **fields).status_code == 200, what
        [start] = cluster.events_of("session.start", sid=sid)
        assert "user" not in start and start["claimed_user"] == victim.name, what
        assert "cert" not in start and "cert_serial" not in start, what
        # The session's later events carry what its start established: still a claim.
        assert mallory.report("exec", sid=sid, user=victim.name, command="id").status_code == 200
        [later] = cluster.events_of("exec", sid=sid)
        assert "user" not in later and later["claimed_user"] == victim.name, what


def test_an_event_with_another_nodes_session_id_is_refused(
    cluster: ClusterHarness, mallory: JoinedNode, victim: SshUser
) -> None:
    done = victim.ssh(f"root@{NODE}", "true")
    assert done.returncode == 0, done.stderr
    start = wait_until(lambda: cluster.events_of("session.start", user=victim.name), 10,
                       "the victim's session on node1")[0]
    sid = start["sid"]
    wait_until(lambda: cluster.events_of("session.end", sid=sid), 10, "its end")
    before = len(cluster.events_of("exec", sid=sid))

    forged = mallory.report("exec", sid=sid, user=victim.name, command="rm -rf /", exit_code=0)
    assert forged.status_code == 403
    assert f"session {sid} was started by another node" in _error(forged)
    again = mallory.report("session.start", sid=sid, user=victim.name, cert=_cert_text(victim),
                           login="root")
    assert again.status_code == 403
    recording = mallory.put_recording(sid, {"user": victim.name, "login": "root"})
    assert recording.status_code == 403, recording.text

    refused = _refusal(cluster, mallory, "exec")
    assert sid in refused["error"] and refused["code"] == "TAU02W"
    assert sid in _refusal(cluster, mallory, "recording")["error"]
    assert len(cluster.events_of("exec", sid=sid)) == before
    assert all(e["server_id"] == start["server_id"] for e in cluster.events()
               if e.get("sid") == sid and e["event"] != "audit.report.refused")


def _listed(user: SshUser, sid: str) -> list[dict[str, Any]]:
    shown = user.limen("sessions", "ls", "--format", "json")
    assert shown.returncode == 0, shown.stderr
    return [s for s in shown.json() if s["id"] == sid]


def _as_admin(cluster: ClusterHarness) -> httpx.Client:
    return httpx.Client(verify=insecure_context(), base_url=f"https://{cluster.web_addr}",
                        headers={"authorization": f"Bearer {cluster.admin_token}"}, timeout=30)


def _listed_for_admin(cluster: ClusterHarness, sid: str) -> list[dict[str, Any]]:
    with _as_admin(cluster) as admin:
        return [s for s in admin.get("/v1/sessions").json() if s["id"] == sid]


def test_a_node_lists_and_ends_only_its_own_sessions(
    cluster: ClusterHarness, mallory: JoinedNode, victim: SshUser
) -> None:
    """The auth service lists a session from the session.start it wrote and ends it with
    its session.end: on the node that reported it, whatever that node claims, under a
    user marked as claimed when no certificate backs the start."""
    sid = str(uuid.uuid4())
    started = mallory.report("session.start", sid=sid, user=victim.name, login="root",
                             server_hostname="node1", session_kind="exec", command="id")
    assert started.status_code == 200, started.text
    [listed] = _listed_for_admin(cluster, sid)
    assert (listed["node"], listed["login"], listed["command"]) == (mallory.name, "root", "id")
    assert listed["user"] == f"{victim.name} (claimed)"
    assert _listed(victim, sid) == []  # not listed as the victim's own session

    proc = subprocess.Popen(victim.ssh_argv(f"root@{NODE}", "cat"), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env())
    try:
        live = wait_until(lambda: cluster.events_of("session.start", user=victim.name,
                                                    command="cat"), 20, "the victim's cat")
        victims = live[-1]["sid"]
        wait_until(lambda: _listed(victim, victims), 10, "the victim's session listed")
        forged = mallory.report("session.end", sid=victims, user=victim.name)
        assert forged.status_code == 403, forged.text
        assert _listed(victim, victims), "another node's session.end ended the session"
    finally:
        out, err = proc.communicate(b"bye\n", timeout=30)
    assert (proc.returncode, out) == (0, b"bye\n"), err
    wait_until(lambda: not _listed(victim, victims), 20, "the victim's session to end")

    assert mallory.report("session.end", sid=sid, exit_code=0).status_code == 200
    assert _listed_for_admin(cluster, sid) == []


def test_a_batch_that_starts_one_session_twice_lists_it_once(
    cluster: ClusterHarness, mallory: JoinedNode
) -> None:
    """A node's batch lists its sessions in one transaction: two starts of one session
    (a node may send them) do not fail the batch, and a session started and ended in the
    same batch is not left listed."""
    twice, brief = str(uuid.uuid4()), str(uuid.uuid4())
    start = {"login": "root", "session_kind": "exec", "command": "id"}
    answer = mallory.report_batch([
        ("session.start", {"sid": twice, **start}), ("session.start", {"sid": twice, **start}),
        ("session.start", {"sid": brief, **start}), ("session.end", {"sid": brief}),
    ])
    assert answer.status_code == 200, answer.text
    assert answer.json()["results"] == [{"ok": True}] * 4
    assert len(_listed_for_admin(cluster, twice)) == 1
    assert _listed_for_admin(cluster, brief) == []
    assert mallory.report("session.end", sid=twice).status_code == 200
    assert _listed_for_admin(cluster, twice) == []


def test_a_batch_of_events_is_judged_event_by_event(
    cluster: ClusterHarness, mallory: JoinedNode, victim: SshUser
) -> None:
    """POST /v1/events/batch takes each event as POST /v1/events would: a refused one is
    refused (and audited) alone, and the caller's token is judged for the whole batch."""
    done = victim.ssh(f"root@{NODE}", "true")
    assert done.returncode == 0, done.stderr
    others = wait_until(lambda: cluster.events_of("session.start", user=victim.name), 10,
                        "a session on node1")[0]["sid"]
    mine, marker = str(uuid.uuid4()), unique("batch")
    answer = mallory.report_batch([
        ("exec", {"sid": mine, "user": victim.name, "command": f"{marker}-1", "exit_code": 0}),
        ("exec", {"sid": others, "user": victim.name, "command": f"{marker}-2"}),
        ("user.login", {"user": marker, "success": True}),
        ("exec", {"sid": mine, "command": f"{marker}-3", "server_id": "node1",
                  "audit_index": 1}),
        ("exec", {"sid": mine, "command": f"{marker}-4", "exit_code": 0}),
    ])
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert results[0] == {"ok": True} and results[4] == {"ok": True}
    assert results[1]["error"]["kind"] == "access_denied"
    assert f"session {others} was started by another node" in results[1]["error"]["message"]
    assert results[2]["error"]["kind"] == "access_denied"
    assert results[3]["error"]["kind"] == "bad_parameter"
    written = [e["command"] for e in cluster.events_of("exec", server_id=mallory.node_id)
               if str(e.get("command", "")).startswith(marker)]
    assert written == [f"{marker}-1", f"{marker}-4"]
    assert not cluster.events_of("user.login", user=marker)
    assert _refusal(cluster, mallory, "exec")  # each refusal is on record

    too_many = mallory.report_batch([("exec", {"command": "x"})] * 101)
    assert too_many.status_code == 400 and "events" in _error(too_many)
    assert mallory.report_batch([]).status_code == 400
    with _as_admin(cluster) as http:
        as_admin = http.post("/v1/events/batch",
                             json={"events": [{"event": "exec", "fields": {"command": marker}}]})
    assert as_admin.status_code == 403, as_admin.text  # not a node, however mighty
    assert "only nodes report events" in _error(as_admin)
    assert not cluster.events_of("exec", command=marker)


def test_a_node_may_report_only_node_events_and_only_their_fields(
    cluster: ClusterHarness, mallory: JoinedNode, victim: SshUser
) -> None:
    marker = unique("nobody")
    for event in ("proxy.connect", "user.login", "audit.checkpoint", "lock.created"):
        answer = mallory.report(event, user=marker, success=True)
        assert answer.status_code == 403, event
        assert f"a node may not report {event} events" in _error(answer)
        assert _refusal(cluster, mallory, event)["error"] == _error(answer)
    assert not [e for e in cluster.events() if marker in json.dumps(e)]

    unknown = mallory.report("bogus.event", user=victim.name)
    assert unknown.status_code == 400 and "no node event named 'bogus.event'" in _error(unknown)

    sid = str(uuid.uuid4())
    extra = mallory.report("exec", sid=sid, command="id", shadow_user="root")
    assert extra.status_code == 400
    assert "event 'exec' has no field 'shadow_user'" in _error(extra)
    mistyped = mallory.report("exec", sid=sid, command="id", exit_code="0")
    assert mistyped.status_code == 400 and "'exit_code'" in _error(mistyped)
    for stamped in ("claimed_user", "node_time", "cert_serial", "log_id", "cluster_name"):
        answer = mallory.report("exec", sid=sid, command="id", **{stamped: "x"})
        assert answer.status_code == 400, stamped
        assert f"a node may not set {stamped}" in _error(answer)
    assert not cluster.events_of("exec", sid=sid)


def test_a_node_uid_deduplicates_only_that_nodes_own_events(
    cluster: ClusterHarness, mallory: JoinedNode
) -> None:
    someone_elses = cluster.events()[-1]["uid"]  # whatever was written last, by anyone
    command = f"uid-{uuid.uuid4().hex[:8]}"
    sid = str(uuid.uuid4())
    for _ in range(2):  # a resend after a lost answer is written once
        answer = mallory.report("exec", sid=sid, command=command, uid=someone_elses)
        assert answer.status_code == 200
    written = cluster.events_of("exec", command=command)
    assert len(written) == 1 and written[0]["uid"] != someone_elses
    assert len([e for e in cluster.events() if e["uid"] == someone_elses]) == 1


def test_a_nodes_time_claim_does_not_move_an_event_out_of_verify_since(
    cluster: ClusterHarness, mallory: JoinedNode, victim: SshUser
) -> None:
    command = f"old-{uuid.uuid4().hex[:8]}"
    answer = mallory.report("exec", sid=str(uuid.uuid4()), command=command, time=FORGED_TIME)
    assert answer.status_code == 200
    # Another event after it: a backdated row in the middle of the chain is what a
    # time-based selection would have cut out (and then found the chain broken).
    assert mallory.report("exec", sid=str(uuid.uuid4()), command="later").status_code == 200
    found = cluster.admin("audit", "search", "--since", "10m", "--type", "exec", "--node",
                          mallory.node_id, "--format", "json")
    assert found.returncode == 0, found.stderr
    assert [e["node_time"] for e in found.json() if e.get("command") == command] == [
        "2001-09-09T01:46:40.000000000Z"]
    recent = cluster.admin("audit", "verify", "--since", "10m", "--format", "json")
    assert recent.returncode == 0, recent.stdout + recent.stderr
    assert recent.json()["files_checked"] > 0 and recent.json()["store_checked"] > 0


def _cast(cluster: ClusterHarness, sid: str) -> bytes:
    with _as_admin(cluster) as admin:
        answer = admin.get(f"/v1/recordings/{sid}/cast")
    assert answer.status_code == 200, answer.text
    return answer.content


def _victims_recording(cluster: ClusterHarness, victim: SshUser, command: str
                       ) -> tuple[str, bytes]:
    """The victim runs ``command`` on node1: its session id, and its recording once the
    auth service has it whole."""
    done = victim.ssh(f"root@{NODE}", command)
    assert done.returncode == 0, done.stderr
    sid = wait_until(lambda: cluster.events_of("exec", user=victim.name, command=command), 10,
                     "the victim's command")[0]["sid"]
    wait_until(lambda: cluster.events_of("session.upload", sid=sid), 10, "its recording")
    return sid, _cast(cluster, sid)


def test_a_recording_in_one_request_is_judged_as_its_three_requests_would_be(
    cluster: ClusterHarness, mallory: JoinedNode, victim: SshUser
) -> None:
    """A short session's recording may come in one request (metadata, the cast as
    ``data``, the end). It meets the same checks: only the node's own sessions, at most
    MAX_APPEND bytes, and a repeat adds nothing."""
    own = str(uuid.uuid4())
    text = '{"version": 2, "width": 80, "height": 24}\n[0.1, "o", "mine\\r\\n"]\n'
    whole = {"end_ns": 2, "size": len(text.encode()), "data": text, "start_ns": 1}
    sent = mallory.put_recording(own, whole)
    assert sent.status_code == 200, sent.text
    assert sent.json() == {"size": len(text.encode()), "complete": True, "ended": True}
    assert _cast(cluster, own) == text.encode()
    again = mallory.put_recording(own, {**whole, "data": text + text})  # a lost answer's repeat
    assert again.status_code == 200 and again.json()["size"] == len(text.encode())
    assert _cast(cluster, own) == text.encode()

    sid, original = _victims_recording(cluster, victim, "echo the-victims-output")
    forged = mallory.put_recording(sid, {"data": text, "end_ns": 2, "size": len(text)})
    assert forged.status_code == 403, forged.text
    assert f"session {sid}" in _error(forged)
    assert _cast(cluster, sid) == original

    too_big = mallory.put_recording(str(uuid.uuid4()), {"data": "x" * (4 * 1024 * 1024 + 1)})
    assert too_big.status_code == 400, too_big.text


def _whole(sid: str, text: str) -> dict[str, Any]:
    cast = '{"version": 2, "width": 80, "height": 24}\n' + f'[0.1, "o", "{text}"]\n'
    return {"session_id": sid, "start_ns": 1, "end_ns": 2, "size": len(cast.encode()),
            "data": cast}


def test_a_batch_of_recordings_is_judged_recording_by_recording(
    cluster: ClusterHarness, mallory: JoinedNode, victim: SshUser
) -> None:
    """POST /v1/recordings/batch (a node's short sessions, together) takes each recording
    as PUT /v1/recordings/{id} would: another node's session is refused (and audited)
    alone, and the batch as a whole is bounded."""
    others, original = _victims_recording(cluster, victim, "echo the-victims-words")
    mine, marker = str(uuid.uuid4()), unique("cast")
    answer = mallory.post_recordings([
        _whole(mine, marker), _whole(others, f"{marker}-forged"), _whole("not-a-sid", marker),
        _whole(mine, f"{marker}-again!"),  # a repeat in the same batch adds nothing
    ])
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert results[0] == {"size": len(_whole(mine, marker)["data"]), "complete": True,
                          "ended": True}
    assert results[3] == results[0]
    assert _cast(cluster, mine) == _whole(mine, marker)["data"].encode()
    uploads = wait_until(lambda: cluster.events_of("session.upload", sid=mine), 10, "its upload")
    assert len(uploads) == 1 and uploads[0]["server_id"] == mallory.node_id
    assert results[1]["error"]["kind"] == "access_denied"
    assert f"session {others}" in results[1]["error"]["message"]
    assert _cast(cluster, others) == original
    assert others in _refusal(cluster, mallory, "recording")["error"]
    assert results[2]["error"]["kind"] == "bad_parameter"

    half = "x" * (2 * 1024 * 1024)
    too_much = mallory.post_recordings([_whole(str(uuid.uuid4()), half) for _ in range(3)])
    assert too_much.status_code == 400 and "bytes of recordings" in _error(too_much)
    assert mallory.post_recordings([]).status_code == 400
    with httpx.Client(verify=insecure_context(), base_url=f"https://{cluster.web_addr}",
                      timeout=30) as stranger:
        anonymous = stranger.post("/v1/recordings/batch",
                                  json={"recordings": [_whole(str(uuid.uuid4()), marker)]})
    assert anonymous.status_code == 403 and "needs a login" in _error(anonymous)


def test_verify_passes_after_the_attacks_and_no_forged_row_exists(
    cluster: ClusterHarness, mallory: JoinedNode
) -> None:
    report = cluster.admin("audit", "verify", "--format", "json")
    assert report.returncode == 0, report.stdout + report.stderr
    assert report.json()["ok"] is True
    from_mallory = [e for e in cluster.events() if e.get("server_id") == mallory.node_id]
    assert from_mallory  # its reports were written, as its own
    assert all("user" not in e for e in from_mallory
               if e["event"] not in ("instance.join", "audit.report.refused"))
    node1 = _node1_id(cluster)
    assert not [e for e in cluster.events() if e.get("server_id") == node1
                and str(e.get("command", "")).startswith(("forged-", "uid-", "old-", "rm -rf"))]


# -- verify trusts only keys the cluster's CA vouches for ---------------------------------


def _made_up_chain(key: AuditKey, cluster_name: str, count: int = 3) -> list[dict[str, Any]]:
    """A consistent chain of a log that never existed, signed with its own key."""
    records, prev = [], GENESIS
    for seq in range(1, count + 1):
        fields: dict[str, Any] = {"sid": str(uuid.uuid4()), "user": "ghost", "command": "id"}
        event, code = "exec", "T3002I"
        if seq == count:
            fields = {"through_seq": seq - 1, "through_hash": prev,
                      "signature": key.sign(checkpoint_message("checkpoint", key.log_id,
                                                               seq - 1, prev)),
                      "public_key": key.public_b64}
            event, code = "audit.checkpoint", "TAU00I"
        record = {"event": event, "code": code, "uid": str(uuid.uuid4()),
                  "time": format_time(1_900_000_000_000_000_000 + seq),
                  "cluster_name": cluster_name, **fields, "log_id": key.log_id, "seq": seq,
                  "prev_hash": prev}
        record["hash"] = prev = event_hash(record)
        records.append(record)
    return records


def _add_log(cluster: ClusterHarness, key: AuditKey, voucher: str | None) -> None:
    """What someone who can write to the store adds: a key and the events of its log.

    Written through the running service's own store handle: a second SQLite connection
    opened in this process would break the service's file locks."""
    events = cluster.service.auth.ctx.audit_store.events
    records = _made_up_chain(key, "test.limen")

    async def write() -> None:
        await events.register_log(key.log_id, key.public_b64, voucher)
        await events.insert([stored_event(r, json.dumps(r)) for r in records])

    cluster.run(write())


def _drop_log(cluster: ClusterHarness, key: AuditKey) -> None:
    events = cluster.service.auth.ctx.audit_store.events
    cluster.run(events.delete_through(key.log_id, 1_000))


def _untrusted(result: Any, key: AuditKey) -> None:
    assert result.returncode == 1, result.stdout
    assert f"BROKEN: untrusted at store: log {key.log_id} seq 1" in result.stdout, result.stdout
    assert "the cluster's CA does not vouch for" in result.stdout


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[ClusterHarness]:
    harness = ClusterHarness(tmp_path).start()
    yield harness
    harness.stop()


def _api_verify(cluster: ClusterHarness) -> dict[str, Any]:
    with _as_admin(cluster) as http:
        return dict(http.get("/v1/audit/verify").json())


def test_a_rogue_key_in_the_store_makes_verify_fail_naming_its_log(
    own_cluster: ClusterHarness,
) -> None:
    cluster = own_cluster
    assert cluster.admin("audit", "verify").returncode == 0
    host_ca = cluster.service.auth.ctx.cas.host_ca

    # Another auth service of this cluster: its key carries the host CA's voucher.
    sibling = AuditKey(Ed25519PrivateKey.generate())
    _add_log(cluster, sibling, vouch(host_ca, sibling.log_id, sibling.public_b64))
    trusted = cluster.admin("audit", "verify", "--format", "json")
    assert trusted.returncode == 0, trusted.stdout
    assert trusted.json()["checkpoints"] >= 1

    # A stranger with write access to the store: a key of their own without a voucher...
    unvouched = AuditKey(Ed25519PrivateKey.generate())
    _add_log(cluster, unvouched, None)
    _untrusted(cluster.admin("audit", "verify"), unvouched)
    _drop_log(cluster, unvouched)
    assert cluster.admin("audit", "verify").returncode == 0

    # ... or with a voucher from a CA of their own, or one copied from another log.
    rogue = AuditKey(Ed25519PrivateKey.generate())
    other_ca = asyncssh.generate_private_key("ssh-ed25519")
    _add_log(cluster, rogue, vouch(other_ca, rogue.log_id, rogue.public_b64))
    _untrusted(cluster.admin("audit", "verify"), rogue)
    over_api = _api_verify(cluster)
    assert over_api["ok"] is False
    assert [(p["kind"], rogue.log_id in p["message"]) for p in over_api["problems"]] == [
        ("untrusted", True)]
    _drop_log(cluster, rogue)
    copied = AuditKey(Ed25519PrivateKey.generate())
    _add_log(cluster, copied, vouch(host_ca, sibling.log_id, sibling.public_b64))
    _untrusted(cluster.admin("audit", "verify"), copied)
