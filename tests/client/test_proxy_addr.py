"""Every form of --proxy a person may paste becomes HOST:PORT, or a clear error."""

from __future__ import annotations

import pytest

from limen.client.proxy_addr import normalize_proxy
from limen.errors import BadParameter


@pytest.mark.parametrize(("typed", "expected"), [
    ("https://proxy.example.com:3080", "proxy.example.com:3080"),
    ("https://proxy.example.com:443/", "proxy.example.com:443"),
    ("https://proxy.example.com", "proxy.example.com:3080"),
    ("proxy.example.com:4443", "proxy.example.com:4443"),
    ("proxy.example.com", "proxy.example.com:3080"),
    (" 10.0.0.5 ", "10.0.0.5:3080"),
    ("[2001:db8::1]:3080", "[2001:db8::1]:3080"),
    ("[2001:db8::1]", "[2001:db8::1]:3080"),
    ("2001:db8::1", "[2001:db8::1]:3080"),
    ("https://[::1]:9000/", "[::1]:9000"),
])
def test_accepted_forms(typed: str, expected: str) -> None:
    assert normalize_proxy(typed) == expected


@pytest.mark.parametrize(("typed", "said"), [
    ("http://proxy:3080", "speaks https, not http"),
    ("https://proxy:3080/web/login", "without a path"),
    ("proxy:http", "port that is not a number"),
    ("proxy:0", "out of range"),
    ("", "empty"),
    (":3080", "names no host"),
    ("2001:db8::1:3080:x", "[ADDRESS]:PORT"),
])
def test_refused_forms_say_why(typed: str, said: str) -> None:
    with pytest.raises(BadParameter, match=None) as caught:
        normalize_proxy(typed)
    assert said in caught.value.message
