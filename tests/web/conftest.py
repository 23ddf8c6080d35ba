"""The browser for the web UI's browser tests (tests.support.chromium). Each person in a
test gets a browser context of their own (their own cookies)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.chromium import launched


@pytest.fixture(scope="module")
def chromium() -> Iterator[object]:
    with launched() as browser:
        yield browser
