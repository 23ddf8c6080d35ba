"""The node's small pure pieces, without a server."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import asyncssh
import pytest

from limen.clock import FakeClock
from limen.errors import AccessDenied, BadParameter
from limen.node import CertPolicy, ManualTimers, NodeSettings, SessionPermit
from limen.node.certcheck import TrustedCAs, check_user_certificate
from limen.node.environment import filter_client_env
from limen.node.executor import ExitStatus
from limen.node.policy import destination_allowed

CA = asyncssh.generate_private_key("ssh-ed25519")
KEY = asyncssh.generate_private_key("ssh-ed25519")
NOW = datetime.now(UTC)


def cert_blob(**kwargs) -> bytes:
    kwargs.setdefault("principals", ["root"])
    kwargs.setdefault("valid_after", int(NOW.timestamp()) - 60)
    kwargs.setdefault("valid_before", int(NOW.timestamp()) + 3600)
    return CA.generate_user_certificate(KEY, "alice", **kwargs).public_data


def check(blob: bytes, login: str = "root"):
    return check_user_certificate(blob, login, TrustedCAs([CA.convert_to_public()]), NOW)


def test_certificate_check_accepts_and_describes_the_user() -> None:
    verdict = check(cert_blob(principals=["root", "web"], permit_agent_forwarding=False))
    assert verdict.ok and verdict.identity is not None
    identity = verdict.identity
    assert (identity.user, identity.principals) == ("alice", ("root", "web"))
    assert identity.permit_port_forwarding and not identity.permit_agent_forwarding
    assert identity.valid_before > NOW and identity.valid_before.tzinfo is not None
    # The raw certificate travels along, for whoever decodes custom extensions later.
    text = b"ssh-ed25519-cert-v01@openssh.com " + base64.b64encode(identity.cert)
    assert asyncssh.import_certificate(text).principals == ["root", "web"]


def test_certificate_check_reasons() -> None:
    assert "names no logins" in check(cert_blob(principals=[])).reason
    assert "does not allow login as 'root'" in check(cert_blob(principals=["bob"])).reason
    host = CA.generate_host_certificate(KEY, "host", principals=["root"]).public_data
    assert "host certificate" in check(host).reason
    assert "plain public keys" in check(KEY.public_data).reason
    assert "could not be read" in check(b"\x00\x00\x00\x03bad").reason


def test_forever_certificate_has_an_aware_expiry() -> None:
    verdict = check(cert_blob(valid_before=0xFFFFFFFFFFFFFFFF))
    assert verdict.identity is not None and verdict.identity.valid_before.year == 9999


def test_environment_filter() -> None:
    accepted, refused = filter_client_env(
        {"LANG": "C", "LC_ALL": "C", "TERM": "vt100", "APP_MODE": "x", "LD_PRELOAD": "y",
         "PATH": "/tmp"},
        ["APP_*"],
    )
    assert accepted == {"LANG": "C", "LC_ALL": "C", "TERM": "vt100", "APP_MODE": "x"}
    assert sorted(refused) == ["LD_PRELOAD", "PATH"]


def test_destination_globs() -> None:
    permit = SessionPermit(port_forwarding=["db-*:5432", "10.0.0.*:*"])
    assert destination_allowed(permit, "DB-1", 5432)
    assert destination_allowed(permit, "10.0.0.7", 22)
    assert not destination_allowed(permit, "db-1", 22)
    assert destination_allowed(SessionPermit(port_forwarding=True), "anything", 1)
    assert not destination_allowed(SessionPermit(), "anything", 1)


async def test_cert_policy_follows_the_certificate() -> None:
    identity = check(cert_blob(permit_port_forwarding=False)).identity
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

    from limen.node import users

    own = pwd.getpwnam("nobody")
    monkeypatch.setattr(users.os, "geteuid", lambda: own.pw_uid)
    assert users.lookup_user("nobody").uid == own.pw_uid
    with pytest.raises(AccessDenied, match="without root privileges.*'nobody', not 'root'"):
        users.lookup_user("root")
    with pytest.raises(AccessDenied, match="no local user 'no-such-user'"):
        users.lookup_user("no-such-user")
