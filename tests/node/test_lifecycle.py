"""What ends a session: certificate expiry, idleness, an explicit terminate, node shutdown.

Time is the node's injected clock: the tests move it and the due timers fire at once.
"""

from __future__ import annotations

import subprocess
import time

from limen.node import CertPolicy
from tests.node.conftest import Node


def start_long_session(node: Node, command: str = "echo started; sleep 100"):
    proc = subprocess.Popen(node.client().ssh_argv("--", command), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"started\n"  # the session is up and running
    sid = node.observer.wait_for("session.start")["sid"]
    return proc, sid


def finish(proc: subprocess.Popen) -> tuple[int, bytes]:
    _, err = proc.communicate(timeout=15)
    return proc.returncode, err


def test_certificate_expiry_ends_the_session(node: Node) -> None:
    proc, sid = start_long_session(node)
    assert sid in node.call(lambda: set(node.server.sessions))
    node.advance(3600 + 60)  # past the certificate's valid_before
    code, err = finish(proc)
    assert b"limen: your certificate expired at" in err and b"limen login" in err
    assert code == 255  # the shell was hung up on: ssh reports the signal
    end = node.observer.wait_for("session.end", lambda f: f["sid"] == sid)
    assert end["reason"] == "certificate expired" and end["exit_signal"] == "HUP"
    assert node.call(lambda: dict(node.server.sessions)) == {}
    node.observer.wait_for("client.disconnect")


def test_expired_identity_gets_no_new_sessions(node: Node) -> None:
    client = node.client()
    assert client.ssh("true").returncode == 0
    node.advance(3600 + 60)
    # The certificate is still valid for the real clock, so asyncssh lets it in;
    # the node's own clock says it has expired.
    result = client.ssh("true")
    assert result.returncode == 255
    node.observer.wait_for("auth", lambda f: "expired" in (f.get("reason") or ""))


def test_idle_session_is_disconnected(node_factory) -> None:
    node = node_factory(lambda clock: CertPolicy(idle_timeout=600, clock=clock))
    proc, sid = start_long_session(node)
    node.advance(300)
    assert proc.poll() is None  # not idle long enough yet
    node.advance(301)
    code, err = finish(proc)
    assert b"limen: session idle for 10m" in err and b"disconnecting" in err
    end = node.observer.wait_for("session.end", lambda f: f["sid"] == sid)
    assert end["reason"] == "idle timeout"


def test_activity_postpones_the_idle_timeout(node_factory) -> None:
    node = node_factory(lambda clock: CertPolicy(idle_timeout=600, clock=clock))
    proc = subprocess.Popen(node.client().ssh_argv("--", "cat"), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    node.observer.wait_for("session.start")
    node.advance(500)
    proc.stdin.write(b"still here\n")
    proc.stdin.flush()
    assert proc.stdout.readline() == b"still here\n"  # traffic at t=500
    node.advance(200)  # t=700: idle for 200 s only
    proc.stdin.write(b"and here\n")
    proc.stdin.flush()
    assert proc.stdout.readline() == b"and here\n"
    assert finish(proc)[0] == 0  # closes stdin: cat ends


def test_terminate_from_the_registry(node: Node) -> None:
    proc, sid = start_long_session(node)
    assert node.run(node.server.terminate(sid, "limen: your session was locked by admin"))
    code, err = finish(proc)
    assert b"limen: your session was locked by admin" in err
    assert node.observer.wait_for("session.end", lambda f: f["sid"] == sid)["reason"]


def test_stop_ends_live_sessions(node_factory) -> None:
    node = node_factory(kill_grace_time=0.5)
    proc, sid = start_long_session(node, "trap '' HUP; echo started; sleep 100")
    started = time.monotonic()
    node.run(node.server.stop())
    code, err = finish(proc)
    assert b"limen: the node is shutting down" in err
    assert time.monotonic() - started < 10  # SIGKILL after the grace time: HUP is ignored
    end = node.observer.wait_for("session.end", lambda f: f["sid"] == sid)
    assert end["exit_signal"] == "KILL"
