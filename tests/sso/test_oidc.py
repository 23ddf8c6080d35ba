"""Signing in through an OpenID Connect provider (oidc-provider, started by the tests)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncssh
import httpx
import pytest

from limen.client.api import APIClient
from limen.errors import AccessDenied
from tests.sso.browser import context, sign_in_at_provider
from tests.sso.conftest import IDP_USERS, Flow, SSOSetup, start_flow
from tests.sso.oidc_server import CLIENT_SECRET
from tests.support.cluster import CLIResult
from tests.support.ssh_access import NODE, clean_env


def test_a_user_in_a_mapped_group_signs_in_and_reaches_a_node_with_stock_ssh(
    sso: SSOSetup,
) -> None:
    home = sso.cluster.new_home()
    result = sso.cli_login(home, "alice", "okta", "--format", "json")
    assert result.returncode == 0, result.stderr + sso.browser_log(home)
    status = json.loads(result.stdout)
    assert status["user"] == "alice@example.com"
    assert status["roles"] == ["access"]
    assert "limen-test" in status["logins"]
    shown = subprocess.run(["ssh-keygen", "-L", "-f", status["cert_path"]],
                           capture_output=True, text=True, check=True).stdout
    assert 'Key ID: "alice@example.com"' in shown

    printed = sso.cluster.cli("config", home=home)
    assert printed.returncode == 0, printed.stderr
    config = home / "ssh_config"
    config.write_text(printed.stdout)
    ran = subprocess.run(["ssh", "-F", str(config), "-o", "BatchMode=yes",
                          f"limen-test@{NODE}", "echo", "hello-from-sso"],
                         capture_output=True, text=True, env=clean_env(), timeout=60,
                         stdin=subprocess.DEVNULL)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "hello-from-sso"


# -- the browser's part, attacked -------------------------------------------------------------


def browser(sso: SSOSetup) -> httpx.Client:
    return httpx.Client(verify=context([str(sso.ca.path), str(sso.cluster_ca)]), timeout=30)


def proxy_answer(http: httpx.Client, callback_url: str) -> dict[str, str]:
    """Where the proxy sends the browser after the provider: the CLI's callback's query."""
    response = http.get(callback_url)
    assert response.status_code == 303, response.text
    location = response.headers["location"]
    assert location.startswith("http://127.0.0.1:9/callback/test?")
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def sign_in(sso: SSOSetup, user: str, flow: Flow | None = None) -> tuple[Flow, str]:
    flow = flow or start_flow(sso)
    with browser(sso) as http:
        callback = sign_in_at_provider(http, flow.auth_url, user, IDP_USERS[user]["password"])
    return flow, callback


def redeem(sso: SSOSetup, flow: Flow, code: str, nonce: str | None = None,
           key: asyncssh.SSHKey | None = None) -> CLIResult | dict[str, Any]:
    signer = key or flow.key
    message = b"\0".join((b"limen-sso-redeem", flow.state.encode(), code.encode()))
    with APIClient(sso.cluster.web_addr, sso.cluster_ca.read_text()) as api:
        return api.post("/v1/sso/redeem", {
            "state": flow.state, "code": code, "client_nonce": nonce or flow.nonce,
            "signature": signer.sign(message, signer.sig_algorithms[0]).hex()})


@pytest.fixture
def provider_mode(sso: SSOSetup) -> Iterator[Callable[..., None]]:
    yield sso.oidc.set_mode
    sso.oidc.set_mode("pass")


ID_TOKEN_ATTACKS = [
    pytest.param("tamper", {"groups": ["ops"]}, {}, "signature does not verify", id="tampered"),
    pytest.param("resign", {"exp": 1_000_000_000, "iat": 999_990_000}, {}, "has expired",
                 id="expired"),
    pytest.param("resign", {"aud": "other-app"}, {}, "issued to another client (audience)",
                 id="wrong-audience"),
    pytest.param("resign", {"iss": "https://idp.attacker.example"}, {}, "another issuer",
                 id="wrong-issuer"),
    pytest.param("resign", {"nonce": "not-this-sign-in"}, {}, "nonce does not match",
                 id="wrong-nonce"),
    pytest.param("resign", {}, {"kid": "a-key-nobody-published"},
                 "a key the provider does not publish", id="unknown-key"),
    pytest.param("alg_none", {"groups": ["ops"]}, {}, "'none' is not accepted", id="alg-none"),
]


@pytest.mark.parametrize(("mode", "claims", "header", "refusal"), ID_TOKEN_ATTACKS)
def test_an_id_token_that_fails_a_check_is_refused(
    sso: SSOSetup, provider_mode: Callable[..., None], mode: str, claims: dict[str, Any],
    header: dict[str, Any], refusal: str,
) -> None:
    provider_mode(mode, claims, header)
    before = len(sso.cluster.events_of("cert.create"))
    flow, callback = sign_in(sso, "mallory")
    with browser(sso) as http:
        answer = proxy_answer(http, callback)
    assert "code" not in answer
    assert refusal in answer["error"]
    refused = sso.cluster.events_of("user.login", code="T1000W", connector="okta")
    assert refusal in refused[-1]["error"]
    assert len(sso.cluster.events_of("cert.create")) == before
    assert not sso.cluster.events_of("user.create", name="mallory@example.com",
                                     connector="okta")


def test_a_wrong_state_is_refused(sso: SSOSetup) -> None:
    flow, callback = sign_in(sso, "alice")
    forged = callback.replace(flow.state, flow.state[:-4] + "AAAA")
    with browser(sso) as http:
        response = http.get(forged)
        assert response.status_code == 403
        assert "unknown or has expired (state)" in response.json()["error"]["message"]
        # The sign-in the provider really answered still works once.
        assert "code" in proxy_answer(http, callback)


def test_a_replayed_redirect_and_a_replayed_code_are_refused(sso: SSOSetup) -> None:
    flow, callback = sign_in(sso, "alice")
    with browser(sso) as http:
        first = proxy_answer(http, callback)
        assert "code" in first
        again = http.get(callback)
        assert again.status_code == 403
        assert "already answered" in again.json()["error"]["message"]
        # The provider's code spent, under a fresh sign-in's state: the provider refuses it.
        fresh = start_flow(sso)
        code = parse_qs(urlsplit(callback).query)["code"][0]
        replayed = proxy_answer(http, callback.replace(flow.state, fresh.state)
                                .replace(f"code={code}", f"code={code}"))
        assert "code" not in replayed
        assert "refused the authorization code" in replayed["error"]


def test_an_intercepted_redirect_cannot_be_redeemed_without_the_nonce_and_key(
    sso: SSOSetup,
) -> None:
    flow, callback = sign_in(sso, "alice")
    with browser(sso) as http:
        code = proxy_answer(http, callback)["code"]
    thief = asyncssh.generate_private_key("ssh-ed25519")
    with pytest.raises(AccessDenied, match="not by the key the certificate is for"):
        redeem(sso, flow, code, key=thief)
    # One try: the sign-in is gone, even for the right nonce and key.
    with pytest.raises(AccessDenied, match="unknown, expired or already redeemed"):
        redeem(sso, flow, code)

    flow, callback = sign_in(sso, "alice")
    with browser(sso) as http:
        code = proxy_answer(http, callback)["code"]
    with pytest.raises(AccessDenied, match="wrong client nonce"):
        redeem(sso, flow, code, nonce="guessed")

    flow, callback = sign_in(sso, "alice")
    with browser(sso) as http:
        code = proxy_answer(http, callback)["code"]
    result = redeem(sso, flow, code)
    assert isinstance(result, dict) and result["user"] == "alice@example.com"
    with pytest.raises(AccessDenied):
        redeem(sso, flow, code)


def test_a_user_in_no_mapped_group_is_refused_with_the_reason(sso: SSOSetup) -> None:
    home = sso.cluster.new_home()
    result = sso.cli_login(home, "mallory", "okta")
    assert result.returncode == 1
    assert "does not map mallory@example.com to any Limen role" in result.stderr
    assert "Traceback" not in result.stderr
    refused = sso.cluster.events_of("user.login", code="T1000W", user="mallory@example.com")
    assert refused[-1]["connector"] == "okta"
    assert refused[-1]["claims"] == {"groups": ["marketing"]}
    assert not (home / "keys").exists() or not list((home / "keys").rglob("*-cert.pub"))


def test_the_audit_log_names_the_connector_and_the_deciding_claims_never_tokens(
    sso: SSOSetup,
) -> None:
    home = sso.cluster.new_home()
    result = sso.cli_login(home, "carol", "okta")
    assert result.returncode == 0, result.stderr + sso.browser_log(home)
    success = sso.cluster.events_of("user.login", code="T1000I", user="carol@example.com")[-1]
    assert success["method"] == "oidc"
    assert success["connector"] == "okta"
    assert success["claims"] == {"groups": ["ops"]}
    created = sso.cluster.events_of("user.create", name="carol@example.com")
    assert created and created[0]["connector"] == "okta"
    text = json.dumps(sso.cluster.events())
    assert "eyJ" not in text  # no JWT (ID or access token) anywhere in the log
    assert CLIENT_SECRET not in text
