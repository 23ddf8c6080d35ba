"""Benchmark (issue 11): first contentful paint of the web UI's sign-in and nodes pages
on loopback, against a static page of the same bytes served by the same server.

Run by hand from the repository root, as root (the node runs shells):

    .venv/bin/python bench/web.py [--runs 20]

It starts `limen start --roles auth,proxy` and a direct node on 127.0.0.1, signs a user
up, and drives Debian's Chromium (headless, through Playwright). Each sample is a fresh
browser context, so a cold cache, as for someone opening the page for the first time;
the nodes page's contexts carry the signed-in session's cookie. First contentful paint
is the browser's own figure (``performance.getEntriesByName('first-contentful-paint')``).

The baseline for each page is that page's own HTML, saved as a static file in the UI's
static folder for the run (and removed after): the same bytes, the same stylesheet and
scripts, the same headers and TLS, but no session lookup, no facade call and no template.
So the ratio is what rendering the page costs over serving it. The goal: under 1 s.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from common import PASSWORD, ROOT, bench_env, start_cluster

from limen import totp
from limen.client.api import APIClient

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
STATIC = ROOT / "src" / "limen" / "proxy" / "webui" / "static"
GOAL_MS = 1000.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="samples per page (default 20)")
    return parser.parse_args()


def first_contentful_paint(browser: Any, url: str, state: Any = None) -> float:
    """Milliseconds from navigation to first contentful paint, in a fresh context."""
    context = browser.new_context(ignore_https_errors=True, storage_state=state)
    try:
        page = context.new_page()
        page.goto(url, wait_until="load")
        paint = page.wait_for_function(
            "() => performance.getEntriesByName('first-contentful-paint')[0]?.startTime",
            timeout=10_000)
        return float(paint.json_value())
    finally:
        context.close()


def sample(measure: Callable[[], float], runs: int) -> float:
    measure()  # warm the server (imports, template compilation), not the browser
    return statistics.median(measure() for _ in range(runs))


def sign_up(web_addr: str, tls_ca: str, admin: APIClient) -> tuple[str, str]:
    issued = admin.post("/v1/users", {"name": "benchweb", "roles": ["access"],
                                      "logins": ["root"]})
    with APIClient(web_addr, tls_ca) as anonymous:
        secret = anonymous.post("/v1/signup/start", {"token": issued["token"]})["totp_secret"]
        anonymous.post("/v1/signup/finish", {"token": issued["token"], "password": PASSWORD,
                                             "otp": totp.code_at(secret, datetime.now(UTC))})
    return "benchweb", secret


def signed_in_state(browser: Any, base: str, user: str, secret: str) -> Any:
    context = browser.new_context(ignore_https_errors=True)
    page = context.new_page()
    page.goto(f"{base}/web/login")
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(PASSWORD)
    code = totp.code_at(secret, datetime.now(UTC) + timedelta(seconds=totp.STEP_SECONDS))
    page.get_by_label("Authenticator code").fill(code)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/web/nodes")
    state = context.storage_state()
    context.close()
    return state


def static_copy(browser: Any, url: str, state: Any) -> Path:
    """The page's HTML as served, saved among the static files."""
    context = browser.new_context(ignore_https_errors=True, storage_state=state)
    html = context.request.get(url).text()
    context.close()
    path = STATIC / f"bench-{secrets.token_hex(4)}.html"
    path.write_text(html)
    return path


def report(name: str, page_ms: float, static_ms: float) -> None:
    verdict = "under" if page_ms < GOAL_MS else "OVER"
    print(f"{name:<12} first contentful paint {page_ms:7.1f} ms   static baseline "
          f"{static_ms:7.1f} ms   ratio {page_ms / static_ms:5.2f}   ({verdict} the 1 s goal)")


def main() -> None:
    args = parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="limen-bench-web-") as tmp:
        cluster = start_cluster(Path(tmp), bench_env(), "bench.limen")
        copies: list[Path] = []
        try:
            cluster.start_node("bench-node", direct=True)
            with cluster.admin() as admin:
                user, secret = sign_up(cluster.web_addr, cluster.tls_ca(), admin)
            base = f"https://{cluster.web_addr}"
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                state = signed_in_state(browser, base, user, secret)
                print(f"{args.runs} samples per page, each in a fresh browser context "
                      "(cold cache), medians:")
                for name, path, cookies in (("sign-in", "/web/login", None),
                                            ("nodes", "/web/nodes", state)):
                    copy = static_copy(browser, base + path, cookies)
                    copies.append(copy)
                    page_ms = sample(
                        lambda p=path, c=cookies: first_contentful_paint(browser, base + p, c),
                        args.runs)
                    static_ms = sample(lambda c=copy: first_contentful_paint(
                        browser, f"{base}/web/static/{c.name}"), args.runs)
                    report(name, page_ms, static_ms)
                browser.close()
        finally:
            for copy in copies:
                copy.unlink(missing_ok=True)
            cluster.stop()


if __name__ == "__main__":
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"{CHROMIUM} is missing: apt-get install chromium")
    main()
