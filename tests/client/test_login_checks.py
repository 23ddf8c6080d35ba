"""The certificate fields `limen ssh` reads by hand before it hands over to OpenSSH's ssh:
they match what asyncssh reads from the same certificate, for every key type a login may
hold, and damaged input is refused in words (ValueError), never with another exception."""

from __future__ import annotations

import base64
import contextlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncssh
import pytest
from hypothesis import given
from hypothesis import strategies as st

from limen.auth.ca import sign_user_cert
from limen.client.login_checks import choose_login, parse_cert, read_cert
from limen.errors import AccessDenied

pytestmark = pytest.mark.timeout(60)

CA = asyncssh.generate_private_key("ssh-ed25519")
NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def _cert_text(key_type: str, **options: object) -> str:
    key = asyncssh.generate_private_key(key_type, **({"key_size": 2048} if key_type == "ssh-rsa"
                                                      else {}))
    cert = sign_user_cert(
        CA, key.convert_to_public(), key_id="alice", principals=["root", "deploy"],
        valid_after=NOW - timedelta(minutes=1), valid_before=NOW + timedelta(hours=8),
        **options,  # type: ignore[arg-type]
    )
    return cert.export_certificate("openssh").decode()


@pytest.mark.parametrize("key_type", ["ssh-ed25519", "ecdsa-sha2-nistp256",
                                      "ecdsa-sha2-nistp384", "ssh-rsa"])
def test_fields_match_what_asyncssh_reads(key_type: str) -> None:
    text = _cert_text(key_type, permit_port_forwarding=True)
    ours = parse_cert(text)
    theirs = asyncssh.import_certificate(text)
    assert ours.principals == tuple(theirs.principals) == ("root", "deploy")
    assert (ours.valid_after, ours.valid_before) == (
        theirs._valid_after, theirs._valid_before)  # asyncssh keeps them private
    assert ours.valid_before - ours.valid_after == 8 * 3600 + 60
    assert ours.extensions == frozenset({"permit-pty", "permit-port-forwarding"})
    assert ours.permits("permit-port-forwarding")
    assert not ours.permits("permit-agent-forwarding")


def test_expired_and_future_certificates_are_refused_with_the_way_out(tmp_path: Path) -> None:
    path = tmp_path / "cert"
    path.write_text(_cert_text("ssh-ed25519"))
    assert read_cert(path, "proxy:3080", now=NOW.timestamp()).principals == ("root", "deploy")
    with pytest.raises(AccessDenied, match="has expired; run limen login --proxy proxy:3080"):
        read_cert(path, "proxy:3080", now=(NOW + timedelta(hours=9)).timestamp())
    with pytest.raises(AccessDenied, match="not valid yet"):
        read_cert(path, "proxy:3080", now=(NOW - timedelta(hours=1)).timestamp())


def test_an_unreadable_certificate_is_a_sentence(tmp_path: Path) -> None:
    path = tmp_path / "cert"
    for text in ("", "not a certificate", "ssh-ed25519 AAAA", "ssh-ed25519-cert-v01@openssh"
                 ".com !!!"):
        path.write_text(text)
        with pytest.raises(AccessDenied, match="cannot be read"):
            read_cert(path, "proxy:3080")
    with pytest.raises(AccessDenied, match="cannot be read"):
        read_cert(tmp_path / "missing", "proxy:3080")


def test_a_certificate_whose_inner_type_differs_from_its_label_is_refused() -> None:
    kind, blob = _cert_text("ssh-ed25519").split()[:2]
    relabelled = f"ecdsa-sha2-nistp256-cert-v01@openssh.com {blob}"
    with pytest.raises(ValueError, match="unsupported"):
        parse_cert(relabelled)


CERT = _cert_text("ssh-ed25519")


@given(st.data())
def test_truncated_or_damaged_blobs_raise_value_error_only(data: st.DataObject) -> None:
    kind, blob = CERT.split()[:2]
    raw = bytearray(base64.b64decode(blob))
    cut = data.draw(st.integers(0, len(raw)))
    damaged = raw[:cut]
    if damaged and data.draw(st.booleans()):
        at = data.draw(st.integers(0, len(damaged) - 1))
        damaged[at] = data.draw(st.integers(0, 255))
    with contextlib.suppress(ValueError):
        parse_cert(f"{kind} {base64.b64encode(bytes(damaged)).decode()}")


def test_the_login_must_be_one_the_certificate_names() -> None:
    assert choose_login(["root", "deploy"], "deploy") == "deploy"
    with pytest.raises(AccessDenied, match="does not allow login 'admin'"):
        choose_login(["root", "deploy"], "admin")
