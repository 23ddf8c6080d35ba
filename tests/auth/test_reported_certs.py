"""A certificate a node passes on backs a user only if the cluster's user CA signed it as a
user certificate for that user and login, valid at the time; anything else says why not."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import asyncssh
import pytest

from limen.auth.ca import sign_host_cert, sign_user_cert
from limen.auth.reported_certs import back_user
from limen.errors import BadParameter

NOW = datetime(2030, 5, 1, 12, tzinfo=UTC)
USER_CA = asyncssh.generate_private_key("ssh-ed25519")
KEY = asyncssh.generate_private_key("ssh-ed25519").convert_to_public()


def _text(cert: asyncssh.SSHCertificate) -> str:
    return base64.b64encode(bytes(cert.public_data)).decode()


def _user_cert(ca: asyncssh.SSHKey = USER_CA, principals: tuple[str, ...] = ("root", "alice"),
               **validity: datetime) -> str:
    return _text(sign_user_cert(
        ca, KEY, key_id="alice", principals=list(principals), serial=42,
        valid_after=validity.get("valid_after", NOW - timedelta(hours=1)),
        valid_before=validity.get("valid_before", NOW + timedelta(hours=1)),
    ))


def test_a_genuine_certificate_backs_its_user_and_login() -> None:
    backed = back_user(_user_cert(), "root", USER_CA, NOW)
    assert (backed.user, backed.login, backed.serial) == ("alice", "root", 42)
    assert backed.key_fingerprint == KEY.get_fingerprint("sha256")
    assert backed.principals == ("root", "alice")


@pytest.mark.parametrize(("cert", "login", "at", "why"), [
    (_user_cert(ca=asyncssh.generate_private_key("ssh-ed25519")), "root", NOW,
     "not signed by the cluster's user CA"),
    (_user_cert(), "postgres", NOW, "does not allow the login 'postgres'"),
    (_user_cert(), None, NOW, "does not allow the login None"),
    (_user_cert(valid_before=NOW), "root", NOW, "was not valid at"),
    (_user_cert(valid_after=NOW + timedelta(minutes=5)), "root", NOW, "was not valid at"),
    (_user_cert(), "root", NOW + timedelta(hours=2), "was not valid at"),
    ("bm90IGEgY2VydGlmaWNhdGU=", "root", NOW, "could not be read"),
    ("***", "root", NOW, "could not be read"),
    (123, "root", NOW, "must be base64 text"),
    ("A" * 20_000, "root", NOW, "must be base64 text"),
])
def test_anything_else_leaves_the_name_a_claim(cert: object, login: object, at: datetime,
                                               why: str) -> None:
    with pytest.raises(BadParameter, match=why):
        back_user(cert, login, USER_CA, at)


def test_a_host_certificate_or_a_broken_signature_backs_nobody() -> None:
    host = sign_host_cert(USER_CA, KEY, key_id="alice", principals=["root"],
                          valid_after=NOW - timedelta(hours=1),
                          valid_before=NOW + timedelta(hours=1))
    with pytest.raises(BadParameter, match="not a user certificate"):
        back_user(_text(host), "root", USER_CA, NOW)
    blob = bytearray(base64.b64decode(_user_cert()))
    blob[-3] ^= 0x01  # inside the CA's signature
    with pytest.raises(BadParameter, match="could not be read"):
        back_user(base64.b64encode(bytes(blob)).decode(), "root", USER_CA, NOW)
