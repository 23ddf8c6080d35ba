"""When a node's heartbeat ticks send a beat. A direct node beats at every tick; a
tunneled one at every tick while it has sessions (their trackers last two minutes
unless a beat renews them), else every 5 minutes: its proxy sees the tunnel come and go,
and heartbeats were most of what an idle tunnel cost the proxy."""

from __future__ import annotations

from limen.node.cluster.membership import QUIET_TUNNEL_SECONDS, Heartbeat, NodeIdentity
from limen.resources import Session


def _heartbeat(addr: str, sessions: list[Session]) -> Heartbeat:
    identity = NodeIdentity(node_id="id-1", name="web-1", cluster="c.test", host_cert="",
                            host_ca="", user_ca="", heartbeat_seconds=60.0)
    # The link is not used to decide the schedule.
    return Heartbeat(link=None, identity=identity, addr=addr,  # type: ignore[arg-type]
                     trackers=lambda: sessions)


def _tracker() -> Session:
    return Session.model_validate({"metadata": {"name": "s-1"},
                                   "spec": {"user": "alice", "login": "root",
                                            "node_id": "id-1", "node_name": "web-1",
                                            "started": "2026-12-04T12:00:00Z"}})


def test_a_direct_node_beats_at_every_tick() -> None:
    beat = _heartbeat("10.0.0.5:3022", [])
    assert beat.due(60.0) and beat.quiet_seconds() == 60.0


def test_an_idle_tunneled_node_beats_every_five_minutes() -> None:
    beat = _heartbeat("", [])
    assert QUIET_TUNNEL_SECONDS == 300.0 == beat.quiet_seconds()
    assert not beat.due(60.0) and not beat.due(299.0)
    assert beat.due(300.0)


def test_a_tunneled_node_with_sessions_beats_at_every_tick() -> None:
    sessions: list[Session] = []
    beat = _heartbeat("", sessions)
    assert not beat.due(60.0)
    sessions.append(_tracker())  # a session started: its tracker needs renewing
    assert beat.due(60.0)
