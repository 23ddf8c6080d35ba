"""The node's small pure pieces, without a server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncssh
import pytest

from limen.clock import FakeClock
from limen.errors import AccessDenied, BadParameter
from limen.node import CertPolicy, ManualTimers, NodeSettings, SessionPermit
from limen.node.forwarding.destinations import Destination
from limen.node.process.environment import filter_client_env
from limen.node.process.executor import ExitStatus
from limen.node.ssh.identity import UserIdentity, identity_from_certificate
from limen.node.ssh.policy import destination_allowed
from limen.sshauth import read_certificate

CA = asyncssh.generate_private_key("ssh-ed25519")
KEY = asyncssh.generate_private_key("ssh-ed25519")
NOW = datetime.now(UTC)


def cert_blob(**kwargs) -> bytes:
    kwargs.setdefault("principals", ["root"])
    kwargs.setdefault("valid_after", int(NOW.timestamp()) - 60)
    kwargs.setdefault("valid_before", int(NOW.timestamp()) + 3600)
    return CA.generate_user_certificate(KEY, "alice", **kwargs).public_data


def identity_of(blob: bytes) -> UserIdentity:
    return identity_from_certificate(read_certificate(blob), None)


def test_environment_filter() -> None:
    accepted, refused = filter_client_env(
        {"LANG": "C", "LC_ALL": "C", "TERM": "vt100", "APP_MODE": "x", "LD_PRELOAD": "y",
         "PATH": "/tmp"},
        ["APP_*"],
    )
    assert accepted == {"LANG": "C", "LC_ALL": "C", "TERM": "vt100", "APP_MODE": "x"}
    assert sorted(refused) == ["LD_PRELOAD", "PATH"]


def test_destination_patterns_judge_the_resolved_address() -> None:
    permit = SessionPermit(port_forwarding=["db-*.internal:5432", "10.0.0.*:*", "127.0.0.1:80",
                                            "192.0.2.0/24:22", "[::1]:443"])

    def allowed(host: str, port: int, address: str) -> bool:
        return destination_allowed(permit, Destination(host, port, address))

    assert allowed("DB-1.internal", 5432, "198.51.100.9")
    assert allowed("10.0.0.7", 22, "10.0.0.7")
    assert allowed("anything.example", 22, "10.0.0.7")  # it resolved to an allowed address
    assert allowed("localhost", 80, "127.0.0.1")
    assert allowed("192.0.2.44", 22, "192.0.2.44")
    assert allowed("localhost", 443, "::1")
    assert not allowed("db-1.internal", 22, "10.1.1.1")  # wrong port
    # The text looks allowed, the address is not: a look-alike name.
    assert not allowed("10.0.0.7.evil.example", 22, "203.0.113.5")
    assert not allowed("127.0.0.1.evil.example", 80, "203.0.113.5")
    # A glob never crosses a dot, and names never admit a request by address.
    assert not allowed("db-1.internal.evil.example", 5432, "203.0.113.5")
    assert not allowed("db-1.evil.internal", 5432, "203.0.113.5")
    assert not allowed("203.0.113.5", 5432, "203.0.113.5")
    assert destination_allowed(SessionPermit(port_forwarding=True),
                               Destination("anything", 1, "203.0.113.5"))
    assert not destination_allowed(SessionPermit(), Destination("anything", 1, "203.0.113.5"))


async def test_cert_policy_follows_the_certificate() -> None:
    identity = identity_of(cert_blob(permit_port_forwarding=False))
    assert identity is not None
    clock = FakeClock()
    policy = CertPolicy(clock=clock, idle_timeout=60)
    permit = await policy.authorize(identity, "root", "shell", {})
    assert permit.disconnect_at == identity.valid_before and permit.idle_timeout == 60
    with pytest.raises(AccessDenied, match="port forwarding to h:1 is not allowed"):
        await policy.authorize(identity, "root", "port_forward", {"host": "h", "port": 1})
    clock.advance(7200)
    with pytest.raises(AccessDenied, match="expired"):
        await policy.authorize(identity, "root", "shell", {})


def test_manual_timers_fire_only_when_due() -> None:
    timers = ManualTimers()
    fired: list[str] = []
    timers.call_at(timers.clock.now().replace(microsecond=0), lambda: fired.append("now"))
    later = timers.call_at(timers.clock.now() + timedelta(seconds=10),
                           lambda: fired.append("later"))
    assert timers.fire_due() == 1
    later.cancel()
    assert timers.advance(20) == 0 and fired == ["now"]


def test_exit_status() -> None:
    assert ExitStatus.from_returncode(3) == ExitStatus(3)
    killed = ExitStatus.from_returncode(-15)
    assert (killed.signal, killed.as_int) == ("TERM", 143)


def test_settings_validation() -> None:
    with pytest.raises(BadParameter, match="trusted user CA"):
        NodeSettings(host_key=KEY, user_ca_keys=[])
    with pytest.raises(BadParameter, match="not an environment variable name"):
        NodeSettings(host_key=KEY, user_ca_keys=[CA], env_allowlist=["BAD NAME"])
    with pytest.raises(BadParameter, match="'scp' must be an absolute path"):
        NodeSettings(host_key=KEY, user_ca_keys=[CA], scp_program="scp")  # no PATH lookup


def test_without_root_only_the_nodes_own_account(monkeypatch: pytest.MonkeyPatch) -> None:
    import pwd

    from limen.node.process import users

    own = pwd.getpwnam("nobody")
    monkeypatch.setattr(users.os, "geteuid", lambda: own.pw_uid)
    assert users.lookup_user("nobody").uid == own.pw_uid
    with pytest.raises(AccessDenied, match="without root privileges.*'nobody', not 'root'"):
        users.lookup_user("root")
    with pytest.raises(AccessDenied, match="no local user 'no-such-user'"):
        users.lookup_user("no-such-user")
