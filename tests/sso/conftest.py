"""One cluster and one OpenID Connect provider for the single sign-on tests.

The cluster is the SSO tests' own (they move its clock); the provider is oidc-provider
from npm, started with Node on 127.0.0.1 over HTTPS with a CA of the test's own.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.sso.oidc_server import CLIENT_ID, CLIENT_SECRET, OIDCProvider
from tests.sso.pki import TestCA
from tests.sso.slapd import BASE, SERVICE_DN, SERVICE_PASSWORD, Slapd
from tests.support.cluster import CLIResult, ClusterHarness
from tests.support.ssh_access import LOCAL_LOGIN, ensure_local_user

BROWSER = Path(__file__).parent / "browser.py"

# The provider's people: claims as an OpenID Connect provider would send them.
IDP_USERS: dict[str, dict[str, Any]] = {
    "alice": {"password": "alice-at-the-idp", "claims": {
        "email": "alice@example.com", "email_verified": True, "preferred_username": "alice",
        "groups": ["ops", "staff"], "logins": [LOCAL_LOGIN]}},
    "mallory": {"password": "mallory-at-the-idp", "claims": {
        "email": "mallory@example.com", "preferred_username": "mallory",
        "groups": ["marketing"], "logins": [LOCAL_LOGIN]}},
    "carol": {"password": "carol-at-the-idp", "claims": {
        "email": "carol@example.com", "preferred_username": "carol",
        "groups": ["ops"], "logins": [LOCAL_LOGIN]}},
    # Another account at the provider whose email claim is carol's: not carol.
    "carol-twin": {"password": "twin-at-the-idp", "claims": {
        "email": "carol@example.com", "preferred_username": "carol2",
        "groups": ["ops"], "logins": [LOCAL_LOGIN]}},
    # Claims to be a local user's name: must not take over that account.
    "admin-impostor": {"password": "impostor-at-the-idp", "claims": {
        "email": "localonly", "preferred_username": "localonly", "groups": ["ops"]}},
}


@dataclass
class SSOSetup:
    cluster: ClusterHarness
    ca: TestCA
    oidc: OIDCProvider
    secret_file: Path

    @property
    def redirect_url(self) -> str:
        return f"https://{self.cluster.web_addr}/v1/sso/oidc/callback"

    @property
    def cluster_ca(self) -> Path:
        return self.cluster.data_dir / "ca" / "tls_ca.crt"

    def create(self, name: str, text: str, *flags: str) -> CLIResult:
        path = self.cluster.base / f"{name}.yaml"
        path.write_text(text)
        return self.cluster.admin("create", "-f", str(path), *flags)

    def oidc_connector(self, name: str, **spec: str) -> str:
        fields = {
            "issuer_url": self.oidc.issuer, "client_id": CLIENT_ID,
            "client_secret": f"{{file: {self.secret_file}}}",
            "redirect_url": self.redirect_url, "ca_file": str(self.ca.path),
            "scopes": "[openid, email, profile, groups, logins]",
            "claims_to_roles": "[{claim: groups, value: ops, roles: [access]}]",
            "traits": "{logins: logins}",
        } | spec
        body = "\n".join(f"  {k}: {v}" for k, v in fields.items())
        return f"kind: oidc\nversion: v1\nmetadata:\n  name: {name}\nspec:\n{body}\n"

    def browser_env(self, home: Path, user: str) -> dict[str, str]:
        """`$BROWSER` for the CLI: the scripted browser, signing in as `user`."""
        script = home / "browser.sh"
        script.write_text(f'#!/bin/sh\nexec {sys.executable} {BROWSER} "$1"\n')
        script.chmod(0o755)
        return {
            "BROWSER": str(script),
            "LIMEN_TEST_IDP_USER": user,
            "LIMEN_TEST_IDP_PASSWORD": IDP_USERS[user]["password"],
            "LIMEN_TEST_CAS": f"{self.ca.path}:{self.cluster_ca}",
            "LIMEN_TEST_BROWSER_LOG": str(home / "browser.log"),
        }

    @staticmethod
    def browser_log(home: Path) -> str:
        log = home / "browser.log"
        return log.read_text() if log.exists() else "(the browser never ran)"

    def cli_login(self, home: Path, user: str, connector: str, *extra: str) -> CLIResult:
        return self.cluster.cli("login", "--proxy", self.cluster.web_addr, "--auth", connector,
                                "--insecure", *extra, home=home,
                                env=self.browser_env(home, user))


@pytest.fixture(scope="session")
def sso(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSOSetup]:
    ensure_local_user(LOCAL_LOGIN)
    base = tmp_path_factory.mktemp("sso")
    cluster = ClusterHarness(base / "cluster").start()
    try:
        ca = TestCA(base / "pki", "test-idp")
        secret = base / "oidc-client.secret"
        secret.write_text(CLIENT_SECRET + "\n")
        redirect = f"https://{cluster.web_addr}/v1/sso/oidc/callback"
        provider = OIDCProvider(base, ca.server("idp"), redirect, IDP_USERS).start()
        try:
            setup = SSOSetup(cluster, ca, provider, secret)
            created = setup.create("okta", setup.oidc_connector(
                "okta", display="'Test IdP'", default="true"))
            assert created.returncode == 0, created.stderr
            yield setup
        finally:
            provider.stop()
    finally:
        cluster.stop()


@dataclass
class Flow:
    """A sign-in started the way the CLI starts one, for tests that attack its steps."""

    state: str
    auth_url: str
    key: Any
    nonce: str
    client_callback: str


def start_flow(setup: SSOSetup, connector: str = "okta") -> Flow:
    import hashlib
    import secrets

    import asyncssh

    from limen.client.api import APIClient

    key = asyncssh.generate_private_key("ssh-ed25519")
    nonce = secrets.token_urlsafe(32)
    callback = "http://127.0.0.1:9/callback/test"  # never dialed: the tests stop before
    with APIClient(setup.cluster.web_addr, setup.cluster_ca.read_text()) as api:
        started = api.post("/v1/sso/oidc/start", {
            "connector": connector, "public_key": key.export_public_key("openssh").decode(),
            "client_callback": callback,
            "client_nonce_hash": hashlib.sha256(nonce.encode()).hexdigest(),
        })
    return Flow(started["state"], started["auth_url"], key, nonce, callback)


@dataclass
class LDAPSetup:
    sso: SSOSetup
    slapd: Slapd

    def connector(self, name: str, **spec: str) -> str:
        fields = {
            "url": self.slapd.ldaps_url, "ca_file": str(self.sso.ca.path),
            "bind_dn": f"'{SERVICE_DN}'", "bind_password": f"{{env: {BIND_ENV}}}",
            "user_search": f"{{base_dn: 'ou=people,{BASE}', "
                           "filter: '(&(objectClass=inetOrgPerson)(uid={username}))'}",
            "group_search": f"{{base_dn: 'ou=groups,{BASE}'}}",
            "groups_to_roles": "[{group: ops, roles: [access]}, "
                               "{group: '^sre|admins$', roles: [auditor]}]",
            "traits": "{logins: uid}",
        } | spec
        body = "\n".join(f"  {k}: {v}" for k, v in fields.items())
        return f"kind: ldap\nversion: v1\nmetadata:\n  name: {name}\nspec:\n{body}\n"

    def login(self, home: Path, connector: str, user: str, password: str,
              *extra: str) -> CLIResult:
        return self.sso.cluster.cli(
            "login", "--proxy", self.sso.cluster.web_addr, "--auth", connector, "--user", user,
            "--password-stdin", "--insecure", *extra, home=home, input=password + "\n")


BIND_ENV = "LIMEN_TEST_LDAP_BIND_PASSWORD"


@pytest.fixture(scope="session")
def ldap(sso: SSOSetup, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LDAPSetup]:
    import os

    base = tmp_path_factory.mktemp("slapd")
    # A certificate for 127.0.0.1 only: a connector that says "localhost" must be refused.
    server = Slapd(base, sso.ca.server("ldap", hosts=("127.0.0.1",))).start()
    os.environ[BIND_ENV] = SERVICE_PASSWORD  # the in-process auth service reads it
    try:
        setup = LDAPSetup(sso, server)
        other_ca = TestCA(base / "other", "not-the-directorys")
        for name, spec in {
            "corp": {"display": "'Corporate directory'"},
            "corp-starttls": {"url": server.ldap_url, "start_tls": "true"},
            "corp-wrong-ca": {"ca_file": str(other_ca.path)},
            "corp-wrong-name": {"url": server.ldaps_url.replace("127.0.0.1", "localhost")},
            "corp-totp": {"second_factor": "totp"},
        }.items():
            created = sso.create(name, setup.connector(name, **spec))
            assert created.returncode == 0, created.stderr
        yield setup
    finally:
        os.environ.pop(BIND_ENV, None)
        server.stop()
