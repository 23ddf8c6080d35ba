"""Only certificates from the node's user CA, valid now, naming the login, get in.

Every refusal is both visible to the client and reported to the observer with a reason.
"""

from __future__ import annotations

import time

import asyncssh

from tests.node.conftest import Node, write_plain_key


def refused(node: Node, result, reason_part: str) -> dict:
    assert result.returncode == 255
    assert b"Permission denied" in result.stderr
    event = node.observer.wait_for(
        "auth", lambda f: not f["success"] and reason_part in f["reason"]
    )
    assert event["login"] == "root" and event["addr.remote"].startswith("127.0.0.1:")
    assert not node.observer.named("session.start")
    return event


def test_certificate_login_is_reported(node: Node) -> None:
    creds = node.creds()
    assert node.client(creds).ssh("true").returncode == 0
    event = node.observer.wait_for("auth", lambda f: f["success"])
    assert event["user"] == creds.key.stem and event["login"] == "root"
    # The certificate as received (the auth service reads principals, serial and key
    # fingerprint from it, and believes the user name only because of it).
    assert creds.cert is not None
    assert event["cert"] == creds.cert.read_text().split()[1]
    assert asyncssh.import_certificate(creds.cert.read_bytes()).principals == [
        "root", "limen-test"]


def test_password_is_refused(node: Node) -> None:
    result = node.client().ssh("true", options=(
        "-o", "PubkeyAuthentication=no",
        "-o", "PreferredAuthentications=password,keyboard-interactive",
    ))
    refused(node, result, "no certificate was offered")


def test_plain_key_is_refused(node: Node) -> None:
    result = node.client(write_plain_key(node.pki, "plain")).ssh("true")
    event = refused(node, result, "plain public keys are not accepted")
    assert event["user"] is None


def test_certificate_from_another_ca_is_refused(node: Node) -> None:
    other_ca = asyncssh.generate_private_key("ssh-ed25519")
    result = node.client(node.creds(ca=other_ca)).ssh("true")
    event = refused(node, result, "untrusted certificate authority")
    assert event["user"].startswith("user")


def test_expired_certificate_is_refused(node: Node) -> None:
    now = time.time()
    creds = node.creds(valid_after=now - 7200, valid_before=now - 3600)
    refused(node, node.client(creds).ssh("true"), "the certificate expired at")


def test_certificate_not_yet_valid_is_refused(node: Node) -> None:
    now = time.time()
    creds = node.creds(valid_after=now + 3600, valid_before=now + 7200)
    refused(node, node.client(creds).ssh("true"), "is not valid before")


def test_certificate_without_the_login_is_refused(node: Node) -> None:
    creds = node.creds(principals=("alice",))
    refused(node, node.client(creds).ssh("true"), "does not allow login as 'root'")


def test_refusal_is_reported_once_per_key(node: Node) -> None:
    # OpenSSH asks about a key before it signs with it: one attempt, not two. (It then
    # offers the bare key behind the certificate too: a second key, a second event.)
    node.client(node.creds(principals=("alice",))).ssh("true")
    node.observer.wait_for("auth", lambda f: "plain public keys" in f["reason"])
    attempts = [(f["user"], f["reason"]) for f in node.observer.named("auth")]
    assert len(attempts) == len(set(attempts)) == 2
