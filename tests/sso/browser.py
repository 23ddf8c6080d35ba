"""A scripted browser: what a person does at the provider's sign-in page, as HTTP requests.

Used two ways: as ``$BROWSER`` for `limen login --auth` (Python's webbrowser runs it with
the URL; it signs in, follows the provider's redirect through the proxy and lands on the
CLI's localhost listener), and from tests that stop at the proxy's callback to attack it.

Environment for the $BROWSER use: LIMEN_TEST_IDP_USER, LIMEN_TEST_IDP_PASSWORD,
LIMEN_TEST_CAS (CA files to trust, separated by ':'), LIMEN_TEST_BROWSER_LOG (a file
that receives the pages it ended on).
"""

from __future__ import annotations

import os
import re
import ssl
import sys
from urllib.parse import urljoin, urlsplit

import httpx


def context(cafiles: list[str]) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    for cafile in cafiles:
        ctx.load_verify_locations(cafile)
    return ctx


def sign_in_at_provider(http: httpx.Client, auth_url: str, user: str, password: str) -> str:
    """Sign in at the provider; returns where it redirects the browser next (the proxy)."""
    provider = urlsplit(auth_url).netloc
    url = auth_url
    for _ in range(10):
        response = http.get(url)
        if response.is_redirect:
            url = urljoin(url, response.headers["location"])
            if urlsplit(url).netloc != provider:
                return url
            continue
        form = re.search(r'<form method="post" action="([^"]+)"', response.text)
        if form is None:
            raise AssertionError(f"no sign-in form at {url}: {response.status_code} "
                                 f"{response.text[:300]}")
        posted = http.post(urljoin(url, form.group(1)),
                           data={"login": user, "password": password})
        if not posted.is_redirect:
            raise AssertionError(f"the provider refused the sign-in: {posted.text[:300]}")
        url = urljoin(url, posted.headers["location"])
        if urlsplit(url).netloc != provider:
            return url
    raise AssertionError("the provider kept redirecting")


def follow(http: httpx.Client, url: str) -> httpx.Response:
    """Follow redirects (the proxy's callback, then the CLI's listener) to the last page."""
    for _ in range(5):
        response = http.get(url)
        if not response.is_redirect:
            return response
        url = urljoin(url, response.headers["location"])
    raise AssertionError("too many redirects")


def main(url: str) -> int:
    cafiles = [p for p in os.environ.get("LIMEN_TEST_CAS", "").split(":") if p]
    log = os.environ.get("LIMEN_TEST_BROWSER_LOG")
    try:
        with httpx.Client(verify=context(cafiles), timeout=30) as http:
            callback = sign_in_at_provider(http, url, os.environ["LIMEN_TEST_IDP_USER"],
                                           os.environ["LIMEN_TEST_IDP_PASSWORD"])
            final = follow(http, callback)
        text = f"{final.status_code} {final.url}\n{final.text}\n"
    except Exception as exc:  # noqa: BLE001 - reported to the test through the log
        text = f"browser failed: {exc!r}\n"
    if log:
        with open(log, "a") as fh:
            fh.write(text)
    return 0  # always "opened": a failure shows in the CLI's output and the log


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
