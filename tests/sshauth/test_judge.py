"""The one certificate reader and the judgements every SSH server shares."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncssh
import pytest

from limen.auth.ca import sign_host_cert, sign_user_cert
from limen.errors import AccessDenied, BadParameter
from limen.sshauth import TrustedKeys, judge_host, judge_user, read_certificate
from limen.sshauth.cert import NotACertificate

CA = asyncssh.generate_private_key("ssh-ed25519")
OTHER_CA = asyncssh.generate_private_key("ssh-ed25519")
KEY = asyncssh.generate_private_key("ssh-ed25519")
NOW = datetime.now(UTC).replace(microsecond=0)
TRUSTED = TrustedKeys([CA.convert_to_public()])


def user_cert(ca: asyncssh.SSHKey = CA, **kwargs) -> bytes:
    kwargs.setdefault("principals", ["root"])
    kwargs.setdefault("valid_after", int(NOW.timestamp()) - 60)
    kwargs.setdefault("valid_before", int(NOW.timestamp()) + 3600)
    return ca.generate_user_certificate(KEY, "alice", **kwargs).public_data


def host_cert(node_id: str = "n-1", role: str = "node", cluster: str = "c1",
              ca: asyncssh.SSHKey = CA, **times: datetime) -> bytes:
    cert = sign_host_cert(
        ca, KEY.convert_to_public(), key_id=node_id, principals=[node_id, "web-1"],
        valid_after=times.get("valid_after", NOW - timedelta(minutes=1)),
        valid_before=times.get("valid_before", NOW + timedelta(hours=1)),
        extensions={"role@limen": role, "cluster@limen": cluster},
    )
    return cert.public_data


def refusal(func, *args, **kwargs) -> str:
    with pytest.raises(AccessDenied) as caught:
        func(*args, **kwargs)
    return caught.value.message


def test_facts_of_a_user_certificate() -> None:
    facts = read_certificate(user_cert(principals=["root", "web"], permit_agent_forwarding=False,
                                       source_address=["192.0.2.0/24"]))
    assert (facts.key_id, facts.principals, facts.is_user) == ("alice", ("root", "web"), True)
    assert "port-forwarding" in facts.permits and "agent-forwarding" not in facts.permits
    assert facts.source_addresses == ("192.0.2.0/24",)
    assert facts.valid_before.tzinfo is not None
    assert facts.fingerprint == KEY.get_fingerprint("sha256")


def test_custom_extensions_survive_reading() -> None:
    cert = sign_user_cert(CA, KEY.convert_to_public(), key_id="bob", principals=["bob"],
                          valid_after=NOW, valid_before=NOW + timedelta(hours=1),
                          extensions={"roles@limen": '["access"]'})
    facts = read_certificate(cert.export_certificate().decode())
    assert facts.extensions["roles@limen"] == '["access"]'
    assert facts.permits == frozenset({"pty"})


def test_plain_keys_and_garbage_are_not_certificates() -> None:
    with pytest.raises(NotACertificate, match="plain public keys are not accepted"):
        read_certificate(KEY.public_data)
    with pytest.raises(BadParameter, match="could not be read"):
        read_certificate(b"\x00\x00\x00\x03bad")


def test_a_forged_signature_is_not_read() -> None:
    blob = bytearray(user_cert())
    blob[-5] ^= 0xFF  # inside the CA's signature
    with pytest.raises(BadParameter):
        read_certificate(bytes(blob))


def test_reading_again_is_remembered_and_a_forgery_of_it_still_refused() -> None:
    """What a blob says is kept once its signature checked out (logins and reports read
    the same certificate again and again); a changed blob is read, and refused, anew."""
    genuine = user_cert(principals=["root", "db"])
    first = read_certificate(genuine)
    assert read_certificate(bytearray(genuine)) is first  # the same facts, not read again
    for position in (-5, 60):  # in the CA's signature; in the signed fields
        forged = bytearray(genuine)
        forged[position] ^= 0x01
        with pytest.raises(BadParameter):
            read_certificate(bytes(forged))
        with pytest.raises(BadParameter):  # and again: a refusal is not remembered
            read_certificate(bytes(forged))
    assert read_certificate(genuine) is first


def test_user_judgements() -> None:
    facts = read_certificate(user_cert(principals=["root", "web"]))
    assert judge_user(facts, "web", TRUSTED, NOW, "192.0.2.1") == "web"
    assert "does not allow login as 'bob'" in refusal(judge_user, facts, "bob", TRUSTED, NOW,
                                                      None)
    # The jump host also takes the Limen user name and checks the first login.
    assert judge_user(facts, "alice", TRUSTED, NOW, None, key_id_logs_in=True) == "root"
    later = NOW + timedelta(hours=2)
    assert "expired at" in refusal(judge_user, facts, "root", TRUSTED, later, None)
    assert "not valid before" in refusal(judge_user, facts, "root", TRUSTED,
                                         NOW - timedelta(hours=1), None)
    untrusted = read_certificate(user_cert(ca=OTHER_CA))
    assert "not signed by this cluster's user CA" in refusal(judge_user, untrusted, "root",
                                                             TRUSTED, NOW, None)
    empty = read_certificate(user_cert(principals=[]))
    assert "names no logins" in refusal(judge_user, empty, "root", TRUSTED, NOW, None)
    pinned = read_certificate(user_cert(source_address=["192.0.2.0/24"]))
    assert "may not be used from 198.51.100.1" in refusal(judge_user, pinned, "root", TRUSTED,
                                                          NOW, "198.51.100.1")
    host = read_certificate(host_cert())
    assert "cannot be used to log in" in refusal(judge_user, host, "root", TRUSTED, NOW, None)
    revoked = refusal(judge_user, facts, "root", TRUSTED, NOW, None,
                      revoked=lambda cert: f"{cert.key_id} is locked")
    assert revoked == "alice is locked"


def test_forever_certificates_have_an_aware_expiry() -> None:
    facts = read_certificate(user_cert(valid_before=0xFFFFFFFFFFFFFFFF))
    assert facts.valid_before.year == 9999


def test_host_judgements() -> None:
    facts = read_certificate(host_cert())
    assert judge_host(facts, TRUSTED, NOW, cluster="c1") == "n-1"
    assert judge_host(facts, TRUSTED, NOW, cluster="c1", expected_id="n-1") == "n-1"
    assert "n-1's, not n-2's" in refusal(judge_host, facts, TRUSTED, NOW, cluster="c1",
                                         expected_id="n-2")
    assert "cluster 'c1', not c2" in refusal(judge_host, facts, TRUSTED, NOW, cluster="c2")
    proxy = read_certificate(host_cert(role="proxy"))
    assert "not a node's" in refusal(judge_host, proxy, TRUSTED, NOW, cluster="c1")
    assert judge_host(proxy, TRUSTED, NOW, cluster="c1", role="proxy") == "n-1"
    foreign = read_certificate(host_cert(ca=OTHER_CA))
    assert "host CA" in refusal(judge_host, foreign, TRUSTED, NOW, cluster="c1")
    user = read_certificate(user_cert())
    assert "user certificate" in refusal(judge_host, user, TRUSTED, NOW, cluster="c1")
    old = read_certificate(host_cert(valid_before=NOW - timedelta(seconds=1)))
    assert "expired" in refusal(judge_host, old, TRUSTED, NOW, cluster="c1")
    gone = refusal(judge_host, facts, TRUSTED, NOW, cluster="c1",
                   revoked=lambda cert: "node n-1 was removed")
    assert gone == "node n-1 was removed"
