"""A shared session's parties and moderation, and the join command's parsing: the node's
own decisions, driven directly (the channels around them are test_session_join.py's)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import pytest

from limen.node.ssh.join import JoinRequest, parse_join
from limen.node.ssh.sharing import Party, SharedSession
from limen.resources.session_policy import RequireSessionJoin


@pytest.mark.parametrize(
    ("kind", "command", "expected"),
    [
        ("exec", "join 3f2b1c0d-9e8f-4a7b-8c6d-5e4f3a2b1c0d --mode peer",
         JoinRequest("3f2b1c0d-9e8f-4a7b-8c6d-5e4f3a2b1c0d", "peer")),
        ("exec", "join abc", JoinRequest("abc", "observer")),
        ("exec", "join abc --mode moderator --end", JoinRequest("abc", "moderator", True)),
        ("exec", "join -t, a.txt b.txt", None),  # coreutils' join keeps working
        ("exec", "join a b", None),
        ("exec", "joiner abc", None),
        ("shell", None, None),
        ("subsystem", None, None),
    ],
)
def test_only_the_join_contract_is_taken_for_a_join(kind: str, command: str | None,
                                                    expected: JoinRequest | None) -> None:
    assert parse_join(kind, command) == expected


class Recorder:
    def __init__(self) -> None:
        self.owner_lines: list[str] = []
        self.typed: list[bytes] = []
        self.ended: list[str] = []
        self.tasks: list[asyncio.Future[None]] = []
        self.states: list[str] = []

    def session(self, requirements: list[RequireSessionJoin]) -> SharedSession:
        async def terminate(message: str, reason: str) -> None:
            self.ended.append(reason)

        def spawn(coro: Awaitable[None]) -> None:
            self.tasks.append(asyncio.ensure_future(coro))

        return SharedSession("alice", self.owner_lines.append, self.typed.append,
                             requirements, terminate, spawn, self.states.append)


def party(user: str, mode: str, roles: list[str], seen: list[bytes]) -> Party:
    return Party(user, mode, roles, seen.append, lambda line: None, lambda message: None)


async def test_output_reaches_every_party_and_only_peers_type() -> None:
    rec = Recorder()
    shared = rec.session([])
    seen_bob: list[bytes] = []
    seen_carol: list[bytes] = []
    bob, carol = party("bob", "observer", [], seen_bob), party("carol", "peer", [], seen_carol)
    shared.join(bob)
    shared.join(carol)
    shared.output(b"hello")
    shared.type(bob, b"rm -rf /\r")
    shared.type(carol, b"ls\r")
    assert seen_bob == seen_carol == [b"hello"]
    assert rec.typed == [b"ls\r"]
    assert rec.owner_lines == ["limen: bob joined as observer", "limen: carol joined as peer"]
    shared.leave(bob)
    assert rec.owner_lines[-1] == "limen: bob left (observer)"
    assert shared.participants == ["bob", "carol"]


async def test_a_paused_session_resumes_when_a_moderator_is_back() -> None:
    rec = Recorder()
    shared = rec.session([RequireSessionJoin(name="m", filter='contains(user.spec.roles, "aud")',
                                             on_leave="pause")])
    assert shared.paused
    shared.join(party("mallory", "moderator", ["dev"], []))  # the filter does not admit her
    assert shared.paused
    frank = party("frank", "moderator", ["aud"], [])
    shared.join(frank)
    assert not shared.paused
    shared.started = True
    shared.leave(frank)
    assert shared.paused and rec.ended == []
    peer = party("carol", "peer", [], [])
    shared.join(peer)
    shared.type(peer, b"x")
    assert rec.typed == []  # nothing reaches a paused session
    shared.join(party("frank", "moderator", ["aud"], []))
    assert not shared.paused
    assert rec.owner_lines[-1] == "limen: a moderator is back; the session resumes"
    assert rec.states == ["active", "paused", "active"]  # what limen sessions ls shows


async def test_the_last_moderator_leaving_ends_the_session_under_terminate() -> None:
    rec = Recorder()
    shared = rec.session([RequireSessionJoin(name="m", count=2)])
    one, two = party("a", "moderator", [], []), party("b", "moderator", [], [])
    shared.join(one)
    assert shared.paused
    shared.join(two)
    assert not shared.paused
    shared.started = True
    shared.leave(one)
    await asyncio.gather(*rec.tasks)
    assert rec.ended == ["moderator left"]


async def test_joining_a_session_that_just_ended_lets_the_joiner_go() -> None:
    rec = Recorder()
    shared = rec.session([])
    shared.close("limen: the node is shutting down")
    ended: list[str] = []
    late = Party("bob", "observer", [], lambda data: None, lambda line: None, ended.append)
    shared.join(late)
    assert ended == ["limen: the session has ended"] and shared.parties == []


async def test_the_owner_and_a_second_channel_do_not_count_as_moderators() -> None:
    rec = Recorder()
    shared = rec.session([RequireSessionJoin(name="m", count=2)])
    shared.join(party("alice", "moderator", [], []))  # the owner, from another connection
    shared.join(party("bob", "moderator", [], []))
    shared.join(party("bob", "moderator", [], []))  # bob again, on a second channel
    assert shared.paused
    shared.join(party("carol", "moderator", [], []))
    assert not shared.paused


async def test_a_moderator_who_leaves_before_the_start_leaves_it_waiting() -> None:
    rec = Recorder()
    shared = rec.session([RequireSessionJoin(name="m")])
    bob = party("bob", "moderator", [], [])
    shared.join(bob)
    assert not shared.paused
    shared.leave(bob)  # before the owner's task let the process run
    assert shared.paused and rec.ended == []
    assert rec.states[-1] == "waiting for moderators"
