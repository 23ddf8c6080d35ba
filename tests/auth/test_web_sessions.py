"""What a web session keeps: the private key sealed under the cookie's token and bound to
its record, and a CSRF token that only the cookie's holder can compute."""

from __future__ import annotations

import asyncssh
import pytest

from limen.auth.web_sessions import csrf_matches, csrf_token, seal, unseal
from limen.errors import AccessDenied


def _key_bytes() -> bytes:
    return asyncssh.generate_private_key("ssh-ed25519").export_private_key("openssh")


def test_the_sealed_key_opens_only_with_its_token_and_only_in_its_record() -> None:
    key = _key_bytes()
    sealed = seal("token-a", "record-a", key)
    assert b"PRIVATE KEY" not in sealed.encode() and key not in sealed.encode()
    assert unseal("token-a", "record-a", sealed) == key
    with pytest.raises(AccessDenied):
        unseal("token-b", "record-a", sealed)  # someone else's cookie
    with pytest.raises(AccessDenied):
        unseal("token-a", "record-b", sealed)  # copied into another record
    assert seal("token-a", "record-a", key) != sealed  # a fresh nonce each time


def test_the_csrf_token_is_bound_to_the_session_token() -> None:
    token = csrf_token("cookie-1")
    assert csrf_matches("cookie-1", token)
    assert not csrf_matches("cookie-2", token)
    assert not csrf_matches("cookie-1", "")
    assert not csrf_matches("cookie-1", None)
    assert "cookie-1" not in token
