"""Single sign-on from the web sign-in page: a button per connector; OpenID Connect in a
real browser (Chromium) against oidc-provider, LDAP against slapd; and the attacks on
the browser's part (a callback lured into another browser, a CLI's sign-in finished on
the web, a forged flow cookie, a cross-site form)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urljoin

import httpx
import pytest

from tests.sso.browser import context, sign_in_at_provider
from tests.sso.conftest import IDP_USERS, LDAPSetup, SSOSetup, start_flow
from tests.sso.slapd import PASSWORDS
from tests.support.chromium import launched
from tests.web.support import csrf_of

SESSION = "__Host-limen_session"
FLOW = "__Host-limen_sso"
TIMEOUT_MS = 45_000


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with launched() as browser:
        yield browser


class WebClient:
    """A browser spelled out in HTTP: trusts the provider's and the cluster's CAs, keeps
    its cookies, and sends this site's Origin on form posts."""

    def __init__(self, sso: SSOSetup) -> None:
        self.origin = f"https://{sso.cluster.web_addr}"
        self.http = httpx.Client(verify=context([str(sso.ca.path), str(sso.cluster_ca)]),
                                 timeout=30)

    def __enter__(self) -> WebClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def get(self, path: str) -> httpx.Response:
        return self.http.get(urljoin(self.origin, path))

    def post(self, path: str, data: dict[str, str]) -> httpx.Response:
        return self.http.post(urljoin(self.origin, path), data=data,
                              headers={"origin": self.origin})

    def start_oidc(self, connector: str = "okta") -> str:
        """The sign-in page's button: the provider's URL, and the flow cookie kept."""
        started = self.get(f"/web/sso/oidc/{connector}")
        assert started.status_code == 303, started.text
        assert self.http.cookies.get(FLOW)
        return started.headers["location"]

    def at_provider(self, auth_url: str, user: str) -> str:
        """Sign in at the provider; the URL it sends the browser back to (the proxy)."""
        return sign_in_at_provider(self.http, auth_url, user, IDP_USERS[user]["password"])

    def follow(self, url: str) -> httpx.Response:
        for _ in range(5):
            response = self.http.get(url)
            if not response.is_redirect:
                return response
            url = urljoin(url, response.headers["location"])
        raise AssertionError("too many redirects")

    @property
    def session(self) -> str:
        return self.http.cookies.get(SESSION, "")


def test_the_sign_in_page_has_a_button_per_connector_and_a_browser_signs_in_through_oidc(
        chromium: Any, sso: SSOSetup, ldap: LDAPSetup) -> None:
    browser = chromium.new_context(base_url=f"https://{sso.cluster.web_addr}",
                                   ignore_https_errors=True)
    browser.set_default_timeout(TIMEOUT_MS)
    try:
        page = browser.new_page()
        page.goto("/web/login")
        buttons = page.locator(".connectors a")
        for shown in ("Test IdP", "Corporate directory", "corp-starttls"):
            assert buttons.filter(has_text=re.compile(f"^{re.escape(shown)}$")).count() == 1
        assert page.get_by_role("link", name="Corporate directory").get_attribute(
            "href") == "/web/sso/ldap/corp"

        page.get_by_role("link", name="Test IdP").click()
        page.wait_for_selector("input[name=login]")  # the provider's own page
        assert sso.oidc.issuer.split("//")[1].split("/")[0] in page.url
        page.fill("input[name=login]", "carol")
        page.fill("input[name=password]", IDP_USERS["carol"]["password"])
        page.get_by_role("button", name="Sign in").click()
        # Back through the proxy's callback to the finish page, which moves on by itself
        # (a same-site hop, so the Strict session cookie goes along).
        try:
            page.wait_for_url(f"https://{sso.cluster.web_addr}/web/nodes", timeout=15000)
        except Exception:
            raise AssertionError(f"ended on {page.url}: {page.content()[:1500]}") from None
        page.get_by_text("carol@example.com").first.wait_for()
        cookies = {c["name"]: c for c in browser.cookies()}
        assert cookies[SESSION]["httpOnly"] and cookies[SESSION]["secure"]
        assert cookies[SESSION]["sameSite"] == "Strict"
        assert FLOW not in cookies  # spent
    finally:
        browser.close()
    login = sso.cluster.events_of("user.login", code="T1000I", user="carol@example.com")[-1]
    assert login["method"] == "oidc" and login["connector"] == "okta"


def test_a_callback_lured_into_another_browser_signs_nobody_in(sso: SSOSetup) -> None:
    with WebClient(sso) as attacker, WebClient(sso) as victim:
        callback = attacker.at_provider(attacker.start_oidc(), "carol")
        landed = victim.follow(callback)  # no flow cookie: this is not its sign-in
        assert landed.status_code == 403
        assert "not started in this browser" in landed.text
        assert not victim.session
        # The victim's own sign-in in progress does not adopt the attacker's code either.
        victim.start_oidc()
        callback = attacker.at_provider(attacker.start_oidc(), "carol")
        landed = victim.follow(callback)
        assert landed.status_code == 403 and not victim.session
        # And the attacker cannot replay the redirect the victim consumed.
        again = attacker.follow(callback)
        assert again.status_code == 403 and not attacker.session


def test_a_forged_flow_cookie_or_a_clis_sign_in_cannot_be_finished_on_the_web(
        sso: SSOSetup) -> None:
    with WebClient(sso) as http:
        cli_flow = start_flow(sso)  # the CLI's: its key is the CLI's own
        http.http.cookies.set(FLOW, f"{cli_flow.state}.guessed", domain="127.0.0.1")
        landed = http.get("/web/sso/finish?code=anything")
        assert landed.status_code == 403 and "not started in this browser" in landed.text
        assert not http.session

        auth_url = http.start_oidc()
        state = http.http.cookies[FLOW].split(".")[0]
        http.http.cookies.set(FLOW, f"{state}.not-the-flow-token", domain="127.0.0.1")
        landed = http.follow(http.at_provider(auth_url, "carol"))
        assert landed.status_code == 403 and "not started in this browser" in landed.text
        assert not http.session
        assert "Traceback" not in landed.text


def test_a_user_the_provider_maps_to_no_role_sees_why_on_the_sign_in_page(
        sso: SSOSetup) -> None:
    with WebClient(sso) as http:
        landed = http.follow(http.at_provider(http.start_oidc(), "mallory"))
        assert landed.status_code == 403
        assert "does not map mallory@example.com to any Limen role" in landed.text
        assert "Sign in to Limen" in landed.text  # the sign-in page, with the reason
        assert not http.session
        # Told once, and only to the browser that started the sign-in.
        again = http.get("/web/sso/finish")
        assert again.status_code == 403 and "does not map" not in again.text


def test_the_sign_in_page_shows_no_words_a_link_brings(sso: SSOSetup) -> None:
    with WebClient(sso) as http:
        lure = http.get("/web/sso/finish?error=Your+account+is+suspended%2C+call+555-0100"
                        "&error_description=x")
        assert lure.status_code == 403
        assert "555-0100" not in lure.text and "suspended" not in lure.text
        assert "not started in this browser" in lure.text


def test_ldap_signs_in_from_its_form_and_a_wrong_password_counts(ldap: LDAPSetup) -> None:
    sso = ldap.sso
    with WebClient(sso) as http:
        form = http.get("/web/sso/ldap/corp")
        assert form.status_code == 200 and "Sign in with Corporate directory" in form.text
        assert 'name="otp"' not in form.text
        wrong = http.post("/web/sso/ldap/corp", {
            "username": "dave", "password": "not-it", "csrf_token": csrf_of(form.text)})
        assert wrong.status_code == 403 and not http.session
        assert sso.cluster.events_of("user.login", code="T1000W", user="dave",
                                     method="ldap")
        signed_in = http.post("/web/sso/ldap/corp", {
            "username": "dave", "password": PASSWORDS["dave"],
            "csrf_token": csrf_of(http.get("/web/sso/ldap/corp").text)})
        assert signed_in.status_code == 303, signed_in.text
        assert signed_in.headers["location"] == "/web/nodes"
        assert "dave" in http.get("/web/nodes").text
        assert 'name="otp"' in http.get("/web/sso/ldap/corp-totp").text


def test_the_ldap_form_refuses_a_cross_site_post_and_unknown_connectors(
        ldap: LDAPSetup) -> None:
    sso = ldap.sso
    with WebClient(sso) as http:
        form = http.get("/web/sso/ldap/corp")
        forged = http.http.post(urljoin(http.origin, "/web/sso/ldap/corp"),
                                headers={"origin": "https://evil.example"},
                                data={"username": "dave", "password": PASSWORDS["dave"],
                                      "csrf_token": csrf_of(form.text)})
        assert forged.status_code == 403 and not http.session
        assert http.get("/web/sso/ldap/okta").status_code == 404  # an OIDC connector
        assert http.get("/web/sso/ldap/nope").status_code == 404
        assert http.get("/web/sso/oidc/corp").status_code in (400, 404)
