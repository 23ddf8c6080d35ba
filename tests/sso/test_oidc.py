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


# -- keys, users and connectors ----------------------------------------------------------------


def test_a_rotated_signing_key_is_fetched_once_and_then_trusted(sso: SSOSetup) -> None:
    home = sso.cluster.new_home()
    # --auth alone: the cluster's default connector (okta); the provider's keys are cached.
    cached = sso.cluster.cli("login", "--proxy", sso.cluster.web_addr, "--auth", "--insecure",
                             home=home, env=sso.browser_env(home, "alice"))
    assert cached.returncode == 0, cached.stderr
    sso.oidc.restart(kid="key-2")  # the provider rotated its key; the port stays
    try:
        result = sso.cli_login(home, "alice", "okta")
        assert result.returncode == 0, result.stderr + sso.browser_log(home)
    finally:
        sso.oidc.restart(kid="key-1")


def test_an_sso_user_cannot_use_a_local_password_and_locks_apply(sso: SSOSetup) -> None:
    home = sso.cluster.new_home()
    assert sso.cli_login(home, "carol", "okta").returncode == 0
    local = sso.cluster.cli("login", "--proxy", sso.cluster.web_addr, "--user",
                            "carol@example.com", "--password-stdin", "--otp", "123456",
                            "--insecure", home=home, input="any password at all\n")
    assert local.returncode == 1
    assert "signs in through single sign-on: limen login --auth okta" in local.stderr

    locked = sso.cluster.admin("lock", "--user", "carol@example.com", "--message", "incident 7",
                               "--format", "json")
    assert locked.returncode == 0, locked.stderr
    try:
        refused = sso.cli_login(home, "carol", "okta")
        assert refused.returncode == 1
        assert "incident 7" in refused.stderr
    finally:
        lock = json.loads(locked.stdout)["metadata"]["name"]
        assert sso.cluster.admin("rm", f"lock/{lock}").returncode == 0


def test_another_account_with_the_same_name_claim_is_not_that_user(sso: SSOSetup) -> None:
    assert sso.cli_login(sso.cluster.new_home(), "carol", "okta").returncode == 0
    home = sso.cluster.new_home()
    twin = sso.cli_login(home, "carol-twin", "okta")
    assert twin.returncode == 1, twin.stdout
    assert "belongs to another account at the identity provider" in twin.stderr
    assert sso.cluster.events_of("user.login", code="T1000W", user="carol@example.com")
    user = json.loads(sso.cluster.admin("get", "user/carol@example.com", "--format",
                                        "json").stdout)
    assert user["spec"]["sso"]["subject"] == "carol"


def test_a_provider_cannot_take_over_a_local_users_name(sso: SSOSetup) -> None:
    token = sso.cluster.add_user("localonly", logins="localonly")
    assert token
    home = sso.cluster.new_home()
    result = sso.cli_login(home, "admin-impostor", "okta")
    assert result.returncode == 1
    assert "localonly is a local Limen user" in result.stderr
    user = json.loads(sso.cluster.admin("get", "user/localonly", "--format", "json").stdout)
    assert user["spec"]["kind"] == "local"
    assert "sso" not in user["spec"]


def test_when_the_mapping_no_longer_grants_a_role_the_user_is_refused_and_keeps_none(
    sso: SSOSetup,
) -> None:
    doc = sso.oidc_connector("okta-sre", claims_to_roles="[{claim: groups, value: ops, "
                             "roles: [access]}]", username_claim="preferred_username")
    assert sso.create("okta-sre", doc).returncode == 0
    home = sso.cluster.new_home()
    assert sso.cli_login(home, "carol", "okta-sre").returncode == 0
    # The admin changes the mapping: ops no longer grants anything.
    stricter = doc.replace("value: ops", "value: sre")
    changed = sso.create("okta-sre", stricter, "--force")
    assert changed.returncode == 0, changed.stderr
    refused = sso.cli_login(home, "carol", "okta-sre")
    assert refused.returncode == 1
    assert "does not map carol to any Limen role" in refused.stderr
    user = json.loads(sso.cluster.admin("get", "user/carol", "--format", "json").stdout)
    assert user["spec"]["roles"] == []
    assert user["spec"]["sso"]["connector"] == "okta-sre"
    assert sso.cluster.events_of("user.update", name="carol", action="sso_mapping", roles=[])
    assert sso.cluster.events_of("connector.updated", name="okta-sre", connector_kind="oidc")


def test_connectors_are_listed_without_secrets_and_guarded_by_the_connector_rule(
    sso: SSOSetup,
) -> None:
    with httpx.Client(verify=context([str(sso.cluster_ca)])) as http:
        listed = http.get(f"https://{sso.cluster.web_addr}/v1/sso/connectors").json()
    okta = next(c for c in listed if c["name"] == "okta")
    assert okta == {"name": "okta", "kind": "oidc", "display": "Test IdP", "default": True,
                    "second_factor": "none"}

    shown = sso.cluster.admin("get", "connector/okta", "--format", "json")
    assert shown.returncode == 0, shown.stderr
    spec = json.loads(shown.stdout)["spec"]
    assert spec["client_secret"] == {"file": str(sso.secret_file)}
    assert CLIENT_SECRET not in shown.stdout

    person = sso.cluster.create_user("plain-editor-less", roles="access", logins="x")
    assert sso.cluster.login(person).returncode == 0
    path = person.home / "evil.yaml"
    path.write_text(sso.oidc_connector("evil"))
    refused = sso.cluster.cli("create", "-f", str(path), home=person.home)
    assert refused.returncode == 1
    assert "connector" in refused.stderr
    assert sso.cluster.events_of("access.denied", user="plain-editor-less",
                                 resource="connector")
    assert sso.cluster.admin("get", "connector/evil").returncode == 1


@pytest.mark.parametrize(("change", "field", "problem"), [
    ("client_secret: {file: /x}", "spec.client_secret", None),
    ("client_secret: hunter2", "spec.client_secret", "a secret is never stored"),
    ("issuer_url: http://idp.example.com", "spec.issuer_url", "must be an https:// URL"),
    ("claims_to_roles: []", "spec.claims_to_roles", "at least 1"),
    ("colour: blue", "spec.colour", "unknown field"),
])
def test_a_malformed_connector_names_the_field_and_its_line(
    sso: SSOSetup, change: str, field: str, problem: str | None,
) -> None:
    key = change.split(":")[0]
    lines = [line for line in sso.oidc_connector("bad-one").splitlines()
             if not line.startswith(f"  {key}:")]
    lines.append(f"  {change}")
    result = sso.create("bad-one", "\n".join(lines) + "\n")
    if problem is None:
        assert result.returncode == 0, result.stderr
        assert sso.cluster.admin("rm", "connector/bad-one").returncode == 0
        assert sso.cluster.events_of("connector.deleted", name="bad-one")
        return
    assert result.returncode == 1
    line = len(lines)
    assert f"field '{field}' (line {line})" in result.stderr, result.stderr
    assert problem in result.stderr
    assert sso.cluster.admin("get", "connector/bad-one").returncode == 1


def test_a_sign_in_left_too_long_at_the_provider_expires(sso: SSOSetup) -> None:
    flow, callback = sign_in(sso, "alice")
    sso.cluster.clock.advance(11 * 60)  # sign-ins live 10 minutes
    try:
        with browser(sso) as http:
            response = http.get(callback)
    finally:
        sso.cluster.clock.advance(-11 * 60)
    assert response.status_code == 403
    assert "has expired" in response.json()["error"]["message"]


def test_an_unreachable_provider_is_a_clear_error(sso: SSOSetup) -> None:
    doc = sso.oidc_connector("okta-down", issuer_url="https://127.0.0.1:9")
    assert sso.create("okta-down", doc).returncode == 0
    result = sso.cli_login(sso.cluster.new_home(), "alice", "okta-down")
    assert result.returncode == 1
    assert "cannot reach the identity provider https://127.0.0.1:9" in result.stderr
    assert "Traceback" not in result.stderr
