"""The web UI's promises, checked over HTTP and a hand-made WebSocket against a real
cluster: the session cookie's flags and what the backend keeps of it, CSRF and Origin
refusals (audited, nothing changed), the headers every page carries, a locked user's
terminal ending within 5 s, a user who may not reach a node getting neither the row nor
a terminal, and sign-out and user deletion ending the web session."""

from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import InvalidStatus

from limen.audit import schema
from limen.sshauth import read_certificate
from tests.support.cluster import ClusterHarness, LimenUser
from tests.support.ssh_access import unique, wait_until
from tests.web.support import Browser, Terminal, csrf_of

COOKIE = "__Host-limen_session"


@pytest.fixture
def browser(cluster: ClusterHarness) -> Browser:
    web = Browser(cluster)
    yield web
    web.close()


def _person(cluster: ClusterHarness, prefix: str, roles: str = "access") -> LimenUser:
    return cluster.create_user(unique(prefix), roles, "root")


def _web_sessions(cluster: ClusterHarness) -> list[bytes]:
    assert cluster.service.backend is not None
    items = cluster.run(cluster.service.backend.range("/web_sessions/"))
    return [item.key.encode() + b"\n" + item.value for item in items]


def _cookie_attributes(response: httpx.Response) -> tuple[str, set[str]]:
    header = next(v for k, v in response.headers.multi_items()
                  if k == "set-cookie" and v.startswith(COOKIE + "="))
    value, *attributes = [part.strip() for part in header.split(";")]
    return value.split("=", 1)[1], {a.lower() for a in attributes}


def test_sign_in_sets_a_strict_session_cookie_and_keeps_only_its_hash(
        cluster: ClusterHarness, browser: Browser) -> None:
    alice = _person(cluster, "webcookie")
    response = browser.sign_in(alice)
    assert response.status_code == 303 and response.headers["location"] == "/web/nodes"

    token, attributes = _cookie_attributes(response)
    assert {"httponly", "secure", "samesite=strict", "path=/"} <= attributes
    # No lifetime of its own (the server's session ends with the certificate), no Domain.
    assert not any(a.startswith(("max-age", "expires", "domain")) for a in attributes)

    stored = [s for s in _web_sessions(cluster)
              if hashlib.sha256(token.encode()).hexdigest().encode() in s]
    assert len(stored) == 1
    assert token.encode() not in stored[0]  # only the hash names it
    assert b"PRIVATE KEY" not in stored[0]  # the key is sealed with the token

    cert_line = stored[0].split(b'"cert":"')[1].split(b'"')[0].decode()
    cert = read_certificate(cert_line)
    assert cert.key_id == alice.name and cert.extensions["origin@limen"] == "web"
    assert cluster.events_of("user.login", user=alice.name, success=True)
    assert browser.page("/web/nodes").status_code == 200


def test_state_changing_requests_need_this_origin_and_the_sessions_csrf_token(
        cluster: ClusterHarness, browser: Browser) -> None:
    editor = _person(cluster, "webcsrf", roles="access,editor")
    browser.sign_in(editor)
    token = browser.csrf("/web/users")

    def users() -> list[str]:
        return [u["metadata"]["name"] for u in cluster.admin("users", "ls", "--format",
                                                             "json").json()]

    victim = unique("csrfvictim")
    refusals = len(cluster.events_of("access.denied", user=editor.name, resource="web"))
    no_token = browser.http.post("/web/users", data={"name": victim, "roles": "access"})
    assert no_token.status_code == 403
    assert "did not come from a page of this site" in no_token.text
    wrong_origin = browser.http.post("/web/users", data={"name": victim, "csrf_token": token},
                                     headers={"origin": "https://evil.example"})
    assert wrong_origin.status_code == 403
    other_token = browser.http.post("/web/users", data={"name": victim, "csrf_token": "0" * 64})
    assert other_token.status_code == 403
    assert victim not in users()  # nothing changed
    denied = cluster.events_of("access.denied", user=editor.name, resource="web")
    assert len(denied) == refusals + 3
    assert "evil.example" in denied[-2]["error"]

    made = browser.http.post("/web/users", data={"name": victim, "roles": "access",
                                                 "csrf_token": token})
    assert made.status_code == 200 and "/web/invite/" in made.text
    assert victim in users()

    # Signing in needs the form's own token too (a login forced from another site).
    stranger = httpx.post(f"{browser.origin}/web/login", verify=False,  # noqa: S501
                          headers={"origin": browser.origin},
                          data={"username": editor.name, "password": "x", "otp": "1"})
    assert stranger.status_code == 403

    # A WebSocket from another site's page is refused before it opens.
    with pytest.raises(InvalidStatus) as refused:
        browser.socket("node=node1&login=root", origin="https://evil.example")
    assert refused.value.response.status_code == 403
    # ...and one whose first message lacks the session's token is closed unanswered.
    terminal = browser.terminal("node1", "root", csrf="not-the-token")
    terminal.wait_closed(10)
    assert terminal.close_info[0] == 4403 and not terminal.ready


def test_pages_carry_a_strict_content_security_policy_and_the_usual_headers(
        cluster: ClusterHarness, browser: Browser) -> None:
    login = browser.page("/web/login")
    policy = login.headers["content-security-policy"]
    assert "script-src 'self';" in policy and "unsafe" not in policy
    assert "style-src 'self';" in policy and "frame-ancestors 'none'" in policy
    for name, value in {"x-frame-options": "DENY", "x-content-type-options": "nosniff",
                        "referrer-policy": "same-origin",
                        "cross-origin-opener-policy": "same-origin"}.items():
        assert login.headers[name] == value
    assert "strict-transport-security" in login.headers
    assert "<script>" not in login.text and " style=" not in login.text

    browser.sign_in(_person(cluster, "webhdr"))
    terminal_page = browser.page("/web/terminal?node=node1&login=root")
    nonce = terminal_page.headers["content-security-policy"].split("'nonce-")[1].split("'")[0]
    assert f'content="{nonce}"' in terminal_page.text  # for the style-element shim only
    assert "unsafe" not in terminal_page.headers["content-security-policy"]

    api = browser.page("/v1/ping")
    assert api.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
    home = browser.http.get("/")
    assert home.status_code == 303 and home.headers["location"] == "/web/"


def test_a_locked_users_web_terminal_ends_within_5_seconds_saying_why(
        cluster: ClusterHarness, browser: Browser) -> None:
    bob = _person(cluster, "weblock")
    browser.sign_in(bob)
    terminal = browser.terminal("node1", "root")
    terminal.read_until(lambda t: t.ready, 20, "the terminal to open")
    terminal.send("echo up-$((40+2))\n")
    terminal.read_until(lambda t: "up-42" in t.text, 60, "the command's output")

    locked = cluster.admin("lock", "--user", bob.name, "--message", "incident 77")
    assert locked.returncode == 0, locked.stderr
    since = time.monotonic()
    terminal.wait_closed(5)
    assert terminal.closed_at is not None and terminal.closed_at - since <= 5
    assert "incident 77" in terminal.text  # the node said why, in the terminal
    assert terminal.closed and "incident 77" in terminal.closed["message"]

    start = wait_until(lambda: cluster.events_of("session.start", user=bob.name), 10,
                       "session.start")
    assert start[0]["origin"] == "web" and start[0]["login"] == "root"
    wait_until(lambda: cluster.events_of("session.end", user=bob.name), 10, "session.end")
    # The web session ended with the lock: the next page says why.
    after = browser.page("/web/nodes")
    assert after.status_code == 401 and "incident 77" in after.text


def test_a_user_who_may_not_reach_a_node_gets_neither_its_row_nor_a_terminal(
        cluster: ClusterHarness, browser: Browser, tmp_path: Path) -> None:
    role = unique("prodonly")
    (tmp_path / "role.yaml").write_text(
        f"kind: role\nversion: v7\nmetadata:\n  name: {role}\nspec:\n  allow:\n"
        "    logins: [root]\n    node_labels: {env: prod}\n")
    assert cluster.admin("create", "-f", str(tmp_path / "role.yaml")).returncode == 0
    carol = _person(cluster, "webnoreach", roles=role)
    browser.sign_in(carol)

    nodes = browser.page("/web/nodes")
    assert nodes.status_code == 200 and "node1" not in nodes.text
    node_id = cluster.service.node.identity.node_id  # type: ignore[union-attr]
    for target in ("node1", node_id):
        terminal = browser.terminal(target, "root")
        terminal.wait_closed(20)
        assert terminal.close_info[0] == 4403 and not terminal.ready
        assert terminal.closed and "do not allow access to node node1" in \
            terminal.closed["message"]
        assert terminal.output == b""
    refused = cluster.events_of("proxy.connect", user=carol.name, allowed=False)
    assert len(refused) == 2 and "node1" in refused[0]["reason"]
    assert not cluster.events_of("session.start", user=carol.name)


def test_signing_out_or_deleting_the_user_ends_the_web_session_and_its_terminal(
        cluster: ClusterHarness, browser: Browser) -> None:
    dave = _person(cluster, "webout")
    browser.sign_in(dave)
    terminal = browser.terminal("node1", "root")
    terminal.read_until(lambda t: t.ready, 20, "the terminal to open")
    old_cookie = browser.session_cookie

    out = browser.http.post("/web/logout", data={"csrf_token": browser.csrf()})
    assert out.status_code == 303 and "signed_out" in out.headers["location"]
    terminal.wait_closed(10)
    assert terminal.closed and "you signed out" in terminal.closed["message"]
    browser.http.cookies.set(COOKIE, old_cookie, domain=cluster.web_addr.split(":")[0])
    stale = browser.page("/web/nodes")
    assert stale.status_code == 401 and "you are signed out" in stale.text

    browser.http.cookies.clear()
    browser.sign_in(dave)
    assert browser.page("/web/nodes").status_code == 200
    again = browser.terminal("node1", "root")
    again.read_until(lambda t: t.ready, 20, "the terminal to open")
    assert cluster.admin("users", "rm", dave.name).returncode == 0
    again.wait_closed(15)  # the terminal's next check of its session finds it gone
    assert again.closed and "no longer exists" in again.closed["message"]
    gone = browser.page("/web/nodes")  # the terminal's check already removed the session
    assert gone.status_code == 401 and "you are signed out" in gone.text
    assert csrf_of(gone.text)  # the sign-in form, ready for someone else


def test_join_opens_a_terminal_running_the_agreed_command_on_the_sessions_node(
        cluster: ClusterHarness, browser: Browser) -> None:
    """The contract with session sharing: joining runs ``join SID --mode MODE`` as an exec
    command on the node of that session (what the node then does is the node's)."""
    owner = _person(cluster, "webowner")
    owner_browser = Browser(cluster)
    try:
        owner_browser.sign_in(owner)
        owned = owner_browser.terminal("node1", "root")
        owned.read_until(lambda t: t.ready, 20, "the owner's terminal")
        sid = wait_until(lambda: cluster.events_of("session.start", user=owner.name), 10,
                         "the owner's session.start")[0]["sid"]

        watcher = _person(cluster, "webwatch", roles="access,auditor")
        browser.sign_in(watcher)
        assert f'name="join" value="{sid}"' in browser.page("/web/sessions").text
        joined = Terminal(browser.socket(f"join={sid}&mode=observer&login=root"))
        joined.socket.send(json.dumps({"type": "hello", "csrf": browser.csrf()}))
        joined.read_until(lambda t: t.ready or t.closed_at is not None, 20, "the join")

        command = f"join {sid} --mode observer"

        def joined_events() -> list[dict]:
            started = [e for e in cluster.events_of("session.start", user=watcher.name)
                       if e.get("command") == command]
            return started or cluster.events_of("session.join", user=watcher.name, sid=sid)

        event = wait_until(joined_events, 10, "the node running the join")[0]
        assert event["server_hostname"] == "node1" and event.get("origin", "web") == "web"

        # Someone who may not see the session cannot join it, and no mode but the three.
        outsider = _person(cluster, "webout2")
        other = Browser(cluster)
        try:
            other.sign_in(outsider)
            for query in (f"join={sid}&mode=observer&login=root",
                          f"join={sid}&mode=owner&login=root"):
                refused = Terminal(other.socket(query))
                refused.socket.send(json.dumps({"type": "hello", "csrf": other.csrf()}))
                refused.wait_closed(10)
                assert not refused.ready and refused.closed
            assert not cluster.events_of("session.start", user=outsider.name)
        finally:
            other.close()
    finally:
        owner_browser.close()


def test_the_audit_page_pages_through_events_and_admin_pages_need_their_rules(
        cluster: ClusterHarness, browser: Browser) -> None:
    auditor = _person(cluster, "webpages", roles="access,auditor")
    browser.sign_in(auditor)
    assert cluster.service.auth is not None
    audit = cluster.service.auth.ctx.audit
    for n in range(60):  # more than a page of this person's events
        cluster.run(audit.emit(schema.AccessRefused(user=auditor.name, resource="paging",
                                                    verb="list", error=f"event {n}")))
    cluster.run(audit.flush())  # searches read the store, which indexes just after the files
    first = browser.page(f"/web/audit?since=24h&user={auditor.name}")
    assert first.status_code == 200
    older = re.search(r'rel="next" href="\?([^"]+)"', first.text)
    assert older, "more than a page of events, so a link to older ones"
    second = browser.page("/web/audit?" + older.group(1).replace("&amp;", "&"))
    assert second.status_code == 200 and "an older page" in second.text
    uids = re.compile(r'"uid": "([0-9a-f-]+)"')
    assert set(uids.findall(first.text)).isdisjoint(uids.findall(second.text))
    mistyped = browser.page("/web/audit?since=yesterday-ish")
    assert mistyped.status_code == 400 and "is not a time" in mistyped.text

    # No rule on users: no link to the page, and the page itself is refused (audited).
    assert 'href="/web/users"' not in first.text
    refused = browser.page("/web/users")
    assert refused.status_code == 403
    assert cluster.events_of("access.denied", user=auditor.name, resource="user")


def test_signed_in_pages_do_not_spend_the_anonymous_rate_limit_but_wrong_cookies_do(
        cluster: ClusterHarness, browser: Browser) -> None:
    erin = _person(cluster, "webrate")
    browser.sign_in(erin)
    assert cluster.service._web_state is not None
    limiter = cluster.service._web_state.limiter
    saved = limiter.rate, limiter.burst
    limiter.rate, limiter.burst = 0.0, 3.0  # three anonymous requests, no refill
    limiter._buckets.clear()
    try:
        for _ in range(10):
            assert browser.page("/web/nodes").status_code == 200
        stranger = Browser(cluster)
        try:
            codes = []
            for _ in range(4):  # a guesser sends a cookie again although told it is bad
                stranger.http.cookies.set(COOKIE, "made-up",
                                          domain=cluster.web_addr.split(":")[0])
                codes.append(stranger.page("/web/nodes").status_code)
        finally:
            stranger.close()
        assert codes == [401, 401, 401, 429]
    finally:
        limiter.rate, limiter.burst = saved
        limiter._buckets.clear()
