"""Debian's Chromium, driven by Playwright, for the tests that need a real browser.

Playwright's own browser download cannot work here (and is never run): ``scripts/test``
installs Debian's ``chromium`` package, and Playwright drives that binary headless. Each
launch gets a fresh temporary profile (user-data-dir) from Playwright.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]


@contextlib.contextmanager
def launched() -> Iterator[object]:
    """One headless Chromium; a module-scoped fixture holds it, so it is closed before
    other modules run and Playwright's event loop never meets the asyncio tests'."""
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
