"""Session sharing end to end, two people in two real terminals (pexpect): the owner's
shell through stock OpenSSH, the joiner through `limen join` (or stock `ssh NODE join`).

Observers see the output and cannot type; peers type; a moderated role's session waits
for a moderator and ends when the last one leaves; a moderator (or `limen sessions kill`)
ends it; a node that stops ends every party. Attacks: no join_sessions, a forged mode,
a mode the roles do not grant, another node's session id, a bogus id.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from tests.support.cluster import ClusterHarness
from tests.support.ssh_access import NODE, SshUser, clean_env, new_user, wait_until

PROMPT = "JOIN-PROMPT> "
OWNER = "share-owner"
MODERATED = "share-moderated"
PAUSED = "share-paused"
ACCESS = "    logins: [root]\n    node_labels: {'*': '*'}\n"
ROLES = {
    OWNER: "  allow:\n" + ACCESS,
    "share-watch": "  allow:\n" + ACCESS + (
        "    join_sessions:\n"
        f"    - {{name: watch, roles: [{OWNER}], kinds: [ssh], modes: [observer]}}\n"),
    "share-pair": "  allow:\n" + ACCESS + (
        "    join_sessions:\n"
        f"    - {{name: pair, roles: ['*'], kinds: [ssh], modes: [observer, peer]}}\n"
        "  deny:\n    join_sessions:\n"
        f"    - {{name: not-moderated, roles: [{MODERATED}], modes: [peer]}}\n"),
    MODERATED: "  allow:\n" + ACCESS + (
        "    require_session_join:\n"
        "    - name: four-eyes\n"
        "      filter: 'contains(user.spec.roles, \"share-mod\")'\n"
        "      kinds: [ssh]\n      count: 1\n      modes: [moderator]\n"
        "      on_leave: terminate\n"),
    PAUSED: "  allow:\n" + ACCESS + (
        "    require_session_join:\n"
        "    - {name: watched, filter: 'equals(user.metadata.name, \"NOBODY\") || "
        "contains(user.spec.roles, \"share-mod\")', count: 1, on_leave: pause}\n"),
    "share-mod": "  allow:\n" + ACCESS + (
        "    join_sessions:\n"
        f"    - {{name: moderate, roles: [{MODERATED}, {OWNER}, {PAUSED}], modes: [moderator]}}\n"),
}


@pytest.fixture(scope="module")
def people(cluster: ClusterHarness, tmp_path_factory: pytest.TempPathFactory
           ) -> dict[str, SshUser]:
    docs = tmp_path_factory.mktemp("share-roles")
    for name, body in ROLES.items():
        path = docs / f"{name}.yaml"
        path.write_text(f"kind: role\nversion: v7\nmetadata:\n  name: {name}\nspec:\n{body}")
        created = cluster.admin("create", "-f", str(path))
        assert created.returncode == 0, created.stderr
    who = {"alice": OWNER, "bob": "share-watch", "carol": "share-pair", "dave": OWNER,
           "erin": MODERATED, "frank": "share-mod", "gina": PAUSED}
    return {key: new_user(cluster, f"sj{key}", roles=role, logins="root")
            for key, role in who.items()}


def _shell(user: SshUser, node: str = NODE) -> pexpect.spawn:
    argv = user.ssh_argv("-tt", f"root@{node}")
    return pexpect.spawn(argv[0], argv[1:], env=clean_env(TERM="xterm"), dimensions=(24, 80),
                         timeout=20, encoding="utf-8", codec_errors="replace")


def _ready_shell(user: SshUser, node: str = NODE) -> tuple[pexpect.spawn, str]:
    child = _shell(user, node)
    child.sendline(f"PS1='{PROMPT}'; export PS1; echo SID=$LIMEN_SESSION_ID.")
    child.expect(r"SID=([0-9a-f-]{36})\.")
    sid = child.match.group(1)
    child.expect_exact(PROMPT)
    return child, sid


def _join(user: SshUser, sid: str, mode: str) -> pexpect.spawn:
    env = clean_env(TERM="xterm", LIMEN_HOME=str(user.home))
    return pexpect.spawn(sys.executable, ["-m", "limen.cli.main", "join", sid, "--mode", mode],
                         env=env, dimensions=(24, 80), timeout=20, encoding="utf-8",
                         codec_errors="replace")


@pytest.fixture
def closing() -> Iterator[list[pexpect.spawn]]:
    children: list[pexpect.spawn] = []
    yield children
    for child in children:
        child.close(force=True)


def _parties(user: SshUser, sid: str) -> list[str]:
    listed = user.limen("sessions", "ls", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    return next((s["parties"] for s in listed.json() if s["id"] == sid), [])


def test_an_observer_sees_the_output_and_cannot_type(
    cluster: ClusterHarness, people: dict[str, SshUser], closing: list[pexpect.spawn]
) -> None:
    alice, bob = people["alice"], people["bob"]
    owner, sid = _ready_shell(alice)
    closing.append(owner)
    listed = bob.limen("sessions", "ls")  # bob may join it, so he sees it
    assert listed.returncode == 0 and sid in listed.stdout, listed.stderr
    watcher = _join(bob, sid, "observer")
    closing.append(watcher)
    watcher.expect_exact(f"joined {alice.name}'s session {sid} as observer, 80x24")
    owner.expect_exact(f"{bob.name} joined as observer")
    wait_until(lambda: f"{bob.name} (observer)" in _parties(bob, sid), 10, "bob in parties")
    node = cluster.service.node
    assert node is not None and node.heartbeat is not None
    cluster.run(node.heartbeat.beat())  # a heartbeat re-sends the tracker as it stands
    assert f"{bob.name} (observer)" in _parties(bob, sid)

    owner.sendline("echo SHARED-$((6*7))")
    owner.expect_exact("SHARED-42")
    watcher.expect_exact("SHARED-42")
    watcher.setwinsize(50, 200)  # a joiner's window changes nothing in the session
    owner.setwinsize(30, 100)
    watcher.expect_exact("the session's terminal is now 100x30")
    owner.sendline("stty size")
    owner.expect_exact("30 100")
    watcher.send("echo BOBTYPED-$((1+1))\r")  # an observer's keys reach nothing
    owner.sendline("echo CHECK-$((2+3))")
    owner.expect_exact("CHECK-5")
    watcher.expect_exact("CHECK-5")
    assert "BOBTYPED-2" not in owner.before + watcher.before

    watcher.send("q")
    watcher.expect(pexpect.EOF)
    owner.expect_exact(f"{bob.name} left (observer)")
    joined = wait_until(lambda: cluster.events_of("session.join", sid=sid, user=bob.name),
                        10, "session.join")
    assert joined[0]["mode"] == "observer" and joined[0]["code"] == "T2001I"
    left = wait_until(lambda: cluster.events_of("session.leave", sid=sid, user=bob.name),
                      10, "session.leave")
    assert left[0]["mode"] == "observer"
    owner.sendline("exit")
    owner.expect(pexpect.EOF)
    end = wait_until(lambda: cluster.events_of("session.end", sid=sid), 10, "session.end")
    assert end[0]["participants"] == [alice.name, bob.name]


def test_a_peer_types_into_the_session_and_it_is_recorded_once(
    cluster: ClusterHarness, people: dict[str, SshUser], closing: list[pexpect.spawn]
) -> None:
    alice, carol = people["alice"], people["carol"]
    owner, sid = _ready_shell(alice)
    closing.append(owner)
    peer = _join(carol, sid, "peer")
    closing.append(peer)
    peer.expect_exact("as peer")
    owner.expect_exact(f"{carol.name} joined as peer")
    peer.send("echo PEER-$((3*3))\r")
    owner.expect_exact("PEER-9")
    peer.expect_exact("PEER-9")
    owner.sendline("exit")
    owner.expect(pexpect.EOF)
    peer.expect_exact("the session has ended")
    peer.expect(pexpect.EOF)
    auditor = new_user(cluster, "sjaudit", roles="auditor", logins="")
    text = wait_until(lambda: _played(auditor, sid), 15, "the recording")
    assert text.count("PEER-9") == 1


def _played(auditor: SshUser, sid: str) -> str:
    played = auditor.limen("play", sid, "--format", "text")
    return played.stdout if played.returncode == 0 and "PEER-9" in played.stdout else ""


def test_a_moderated_session_waits_for_a_moderator_and_ends_when_the_last_one_leaves(
    cluster: ClusterHarness, people: dict[str, SshUser], closing: list[pexpect.spawn]
) -> None:
    erin, frank = people["erin"], people["frank"]
    owner = _shell(erin)
    closing.append(owner)
    owner.expect_exact("waiting for a moderator")
    owner.sendline("echo EARLY-$((1+1))")  # nothing runs before a moderator is there
    sid = wait_until(lambda: next((s["id"] for s in _sessions(frank) if s["user"] == erin.name
                                   and s["state"] == "waiting for moderators"), None), 10,
                     "erin's session listed as waiting for moderators")
    # carol's role allows peer in anyone's sessions but denies it in moderated ones:
    # deny wins; and an observer does not count as a moderator.
    denied = people["carol"].ssh("-tt", f"root@{NODE}", "join", sid, "--mode", "peer")
    assert b"role 'share-pair' denies joining" in denied.stdout + denied.stderr
    watcher = _join(people["carol"], sid, "observer")
    closing.append(watcher)
    owner.expect_exact(f"{people['carol'].name} joined as observer")
    moderator = _join(frank, sid, "moderator")
    closing.append(moderator)
    moderator.expect_exact("as moderator")
    owner.expect_exact(f"{frank.name} joined as moderator")
    assert "it starts now" not in owner.before  # carol's joining did not start it
    owner.expect_exact("it starts now")
    wait_until(lambda: [s for s in _sessions(frank) if s["id"] == sid
                        and s["state"] == "active"], 10, "the session listed as active")
    owner.sendline("echo MOD-$((4+4))")
    owner.expect_exact("MOD-8")
    moderator.expect_exact("MOD-8")
    assert "EARLY-2" not in owner.before + moderator.before
    moderator.send("q")
    moderator.expect(pexpect.EOF)
    owner.expect_exact("on_leave: terminate")
    owner.expect(pexpect.EOF)
    watcher.expect_exact("on_leave: terminate")
    watcher.expect(pexpect.EOF)
    end = wait_until(lambda: cluster.events_of("session.end", sid=sid), 10, "session.end")
    assert end[0]["reason"] == "moderator left"
    # Without a terminal there is nothing to moderate: a command does not run at all.
    unseen = erin.ssh(f"root@{NODE}", "echo UNSEEN-$((2*2))")
    assert unseen.returncode != 0 and b"UNSEEN-4" not in unseen.stdout
    assert b"only a session with a terminal can be moderated" in unseen.stderr


def test_on_leave_pause_holds_the_session_until_a_moderator_is_back(
    cluster: ClusterHarness, people: dict[str, SshUser], closing: list[pexpect.spawn]
) -> None:
    gina, frank = people["gina"], people["frank"]
    owner = _shell(gina)
    closing.append(owner)
    owner.expect_exact("waiting for a moderator")
    sid = wait_until(lambda: next((s["id"] for s in _sessions(frank) if s["user"] == gina.name),
                                  None), 10, "gina's session listed")
    first = _join(frank, sid, "moderator")
    closing.append(first)
    owner.expect_exact("it starts now")
    flag = Path(f"/tmp/{gina.name}-flag")
    flag.unlink(missing_ok=True)
    try:
        owner.sendline(f"echo LOOP-$((3*3)); while [ ! -e {flag} ]; do sleep 0.05; done; "
                       "echo HELD-$((8*8))")
        owner.expect_exact("LOOP-9")  # the shell runs the loop before the pause drops input
        first.send("q")
        first.expect(pexpect.EOF)
        owner.expect_exact("paused until a moderator joins")
        wait_until(lambda: [s for s in _sessions(frank) if s["id"] == sid
                            and s["state"] == "paused"], 10, "the session listed as paused")
        owner.send("echo TYPED-$((5*5))\r")  # dropped: nothing reaches a paused session
        flag.touch()  # the shell's loop now prints, into the pause: held until it resumes
        with pytest.raises(pexpect.TIMEOUT):
            owner.expect_exact("HELD-64", timeout=1)
        second = _join(frank, sid, "moderator")
        closing.append(second)
        # The notice comes on stderr, the held output on stdout: ssh writes what reaches
        # it in one read stdout first, so on a busy machine either may show first.
        _expect_all(owner, ["the session resumes", "HELD-64"])
        second.expect_exact("HELD-64")  # held until it joined: it was not a party before
        owner.sendline("echo AFTER-$((6*6))")
        owner.expect_exact("AFTER-36")
        second.expect_exact("AFTER-36")
        assert "TYPED-25" not in owner.before
        owner.sendline("exit")
        owner.expect(pexpect.EOF)
    finally:  # a failed run must not leave the flag for the next
        flag.unlink(missing_ok=True)


def _expect_all(child: pexpect.spawn, texts: list[str]) -> None:
    """Each of ``texts`` appears, in any order."""
    waiting = list(texts)
    while waiting:
        waiting.pop(child.expect_exact(waiting))


def _sessions(user: SshUser) -> list[dict]:
    listed = user.limen("sessions", "ls", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    return listed.json()


def test_a_moderator_ends_the_session_with_sessions_kill(
    cluster: ClusterHarness, people: dict[str, SshUser], closing: list[pexpect.spawn]
) -> None:
    alice, frank, bob = people["alice"], people["frank"], people["bob"]
    owner, sid = _ready_shell(alice)
    closing.append(owner)
    watcher = _join(bob, sid, "observer")
    closing.append(watcher)
    owner.expect_exact(f"{bob.name} joined as observer")
    refused = bob.limen("sessions", "kill", sid)  # observers cannot end it
    assert refused.returncode != 0 and "only as observer, not as moderator" in refused.stderr
    killed = frank.limen("sessions", "kill", sid)
    assert killed.returncode == 0, killed.stderr
    owner.expect_exact(f"moderator {frank.name} ended the session")
    owner.expect(pexpect.EOF)
    watcher.expect_exact(f"moderator {frank.name} ended the session")
    watcher.expect(pexpect.EOF)
    end = wait_until(lambda: cluster.events_of("session.end", sid=sid), 10, "session.end")
    assert end[0]["reason"] == "ended by moderator"


def test_a_moderator_ends_the_session_from_the_terminal(
    cluster: ClusterHarness, people: dict[str, SshUser], closing: list[pexpect.spawn]
) -> None:
    alice, frank = people["alice"], people["frank"]
    owner, sid = _ready_shell(alice)
    closing.append(owner)
    moderator = _join(frank, sid, "moderator")
    closing.append(moderator)
    moderator.expect_exact("t ends the session")
    owner.expect_exact(f"{frank.name} joined as moderator")
    moderator.send("t")
    owner.expect_exact(f"moderator {frank.name} ended the session")
    owner.expect(pexpect.EOF)
    moderator.expect(pexpect.EOF)
    joined = cluster.events_of("session.join", sid=sid, user=frank.name)
    assert joined and joined[0]["mode"] == "moderator"


def test_joins_the_roles_do_not_grant_are_refused_and_audited(
    cluster: ClusterHarness, people: dict[str, SshUser], closing: list[pexpect.spawn]
) -> None:
    alice, bob, dave = people["alice"], people["bob"], people["dave"]
    owner, sid = _ready_shell(alice)
    closing.append(owner)
    # dave has no join_sessions: the session is not even listed for him, and the node,
    # asked directly with stock ssh, refuses in a sentence.
    cli = dave.limen("join", sid)
    assert cli.returncode != 0 and "not running, or you may not see it" in cli.stderr
    direct = dave.ssh("-tt", f"root@{NODE}", "join", sid, "--mode", "observer")
    assert direct.returncode != 0
    assert b"do not allow joining" in direct.stdout + direct.stderr
    failed = wait_until(lambda: cluster.events_of("session.join", user=dave.name), 10,
                        "the refused join")
    assert failed[0]["code"] == "T2001W" and failed[0]["success"] is False
    assert failed[0]["sid"] == sid and "do not allow joining" in failed[0]["error"]
    # bob's role grants observer: asking the node for peer is refused, whatever he sends.
    forged = bob.ssh("-tt", f"root@{NODE}", "join", sid, "--mode", "peer")
    assert forged.returncode != 0
    assert b"only as observer, not as peer" in forged.stdout + forged.stderr
    bogus = bob.ssh("-tt", f"root@{NODE}", "join", sid, "--mode", "root")
    assert b"is not a join mode" in bogus.stdout + bogus.stderr
    notid = bob.ssh("-tt", f"root@{NODE}", "join", "../../etc", "--mode", "observer")
    assert b"is not a session id" in notid.stdout + notid.stderr
    modes = {e.get("mode") for e in cluster.events_of("session.join", user=bob.name,
                                                       success=False)}
    assert {"peer", "root", "observer"} <= modes
    owner.sendline("echo STILL-$((1+1))")  # alice never heard of any of it
    owner.expect_exact("STILL-2")
    assert "joined" not in owner.before
    owner.sendline("exit")
    owner.expect(pexpect.EOF)


def test_a_session_of_another_node_cannot_be_joined_here_and_a_node_stop_ends_every_party(
    cluster: ClusterHarness, people: dict[str, SshUser], closing: list[pexpect.spawn]
) -> None:
    alice, bob = people["alice"], people["bob"]
    node = cluster.add_node("share2", {"team": "share"})
    owner, sid = _ready_shell(alice, "share2.test.limen")
    closing.append(owner)
    elsewhere = bob.ssh("-tt", f"root@{NODE}", "join", sid, "--mode", "observer")
    assert elsewhere.returncode != 0
    assert f"no live session {sid} on this node".encode() in elsewhere.stdout + elsewhere.stderr
    refused = wait_until(lambda: [e for e in cluster.events_of("session.join", user=bob.name)
                                  if sid in e.get("error", "")], 10, "the refused join")
    assert "sid" not in refused[0]  # another node's session is not node1's to name
    assert not cluster.events_of("audit.report.refused", reported="session.join")

    watcher = _join(bob, sid, "observer")
    closing.append(watcher)
    owner.expect_exact(f"{bob.name} joined as observer")
    cluster.run(node.stop())
    cluster.extra_nodes.remove(node)
    owner.expect_exact("the node is shutting down", timeout=10)
    watcher.expect_exact("the node is shutting down", timeout=10)
    owner.expect(pexpect.EOF, timeout=10)
    watcher.expect(pexpect.EOF, timeout=10)
