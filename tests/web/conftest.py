"""The browser for the web UI's browser tests: Debian's Chromium, driven by Playwright.

Playwright's own browser download cannot work here (and is never run): ``scripts/test``
installs Debian's ``chromium`` package, and Playwright drives that binary headless. Each
launch gets a fresh temporary profile (user-data-dir) from Playwright; each person in a
test gets a browser context of their own (their own cookies).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]


@pytest.fixture(scope="module")
def chromium() -> Iterator[object]:
    """One headless Chromium for a module's tests (closed before other modules run, so
    Playwright's event loop never meets the asyncio tests')."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: ./scripts/test installs Debian's chromium package")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                             args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
