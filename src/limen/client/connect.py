"""Reach a proxy: trust its CA (stored, pinned, confirmed or --insecure), then talk TLS."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

from limen.client import profile as profiles
from limen.client import trust
from limen.client.api import APIClient, fetch_ca
from limen.client.proxy_addr import normalize_proxy
from limen.errors import AccessDenied


@dataclass(frozen=True)
class TrustOptions:
    ca_pin: str | None = None
    insecure: bool = False


def _ask(question: str) -> bool:
    if not sys.stdin.isatty():
        return False
    print(question, end=" ", file=sys.stderr, flush=True)
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def open_client(
    proxy: str,
    options: TrustOptions,
    token: str | None = None,
    confirm: Callable[[str], bool] = _ask,
) -> tuple[APIClient, bool]:
    """A client verified through the cluster CA; True when the CA is new to this profile.

    A stored CA always wins: it is checked against --ca-pin when one is given, and
    --insecure never overrides it.
    """
    proxy = normalize_proxy(proxy)
    profile = profiles.load(proxy)
    stored = profile.trusted_ca()
    if stored is not None:
        if options.ca_pin:
            trust.check_pin(stored, options.ca_pin)
        return APIClient(proxy, stored, token), False
    ca_pem = fetch_ca(proxy)["tls_ca"]
    if options.ca_pin:
        trust.check_pin(ca_pem, options.ca_pin)
    elif not options.insecure:
        pin = trust.pin_of(ca_pem)
        if not confirm(f"The cluster at {proxy} has CA {pin}.\nTrust it? [y/N]"):
            raise AccessDenied(
                f"not trusting the proxy at {proxy}: its CA is {pin}. Check it with your "
                "admin, then pass --ca-pin (or --insecure for a test cluster)"
            )
    return APIClient(proxy, ca_pem, token), True
