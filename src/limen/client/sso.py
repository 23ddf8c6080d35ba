"""Single sign-on from the command line: `limen login --auth NAME`.

OpenID Connect: a fresh key and a secret nonce stay here; the proxy gets the public key,
the SHA-256 of the nonce and the address of a one-time listener on this machine's
loopback, and answers with the provider's sign-in URL. The browser signs in there,
passes through the proxy and lands on the listener with a one-time code. The CLI then
redeems the code with the nonce and a signature by its key, and only then receives its
certificate: whoever intercepts the redirect holds a code they cannot use.

LDAP: the directory password (and a TOTP code when the connector asks for one) go to
the proxy over the verified TLS connection, as a local login's password does.
"""

from __future__ import annotations

import hashlib
import html
import secrets
import threading
import webbrowser
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from limen.client import profile as profiles
from limen.client.api import APIClient
from limen.client.login import keep, new_key
from limen.errors import AccessDenied, BadParameter, ConnectionProblem

# The proxy verifies this exact message (the auth service's SSO service builds the same).
REDEEM_CONTEXT = b"limen-sso-redeem"
CALLBACK_TIMEOUT = 300.0


def connectors(client: APIClient) -> list[dict[str, Any]]:
    return client.get("/v1/sso/connectors")


def find_connector(client: APIClient, name: str) -> dict[str, Any]:
    known = connectors(client)
    for connector in known:
        if connector["name"] == name:
            return connector
    names = ", ".join(c["name"] for c in known) or "none"
    raise BadParameter(f"the cluster has no connector {name!r}; it has: {names}")


def default_connector(client: APIClient) -> dict[str, Any]:
    """The one marked default, or the only one there is."""
    known = connectors(client)
    chosen = [c for c in known if c["default"]] or (known if len(known) == 1 else [])
    if not chosen:
        names = ", ".join(c["name"] for c in known) or "none"
        raise BadParameter(f"the cluster has no default connector; name one with --auth NAME "
                           f"(it has: {names})")
    return chosen[0]


class CallbackListener:
    """A one-time HTTP listener on 127.0.0.1: the first request to its path is the answer."""

    def __init__(self) -> None:
        self.path = f"/callback/{secrets.token_urlsafe(16)}"
        self._answer: dict[str, str] | None = None
        self._done = threading.Event()
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                listener._handle(self)

            def log_message(self, *_args: Any) -> None:
                pass  # the query holds a one-time code: keep it out of the terminal

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{self.path}"

    def __enter__(self) -> CallbackListener:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(request.path)
        if parts.path != self.path or self._done.is_set():
            request.send_error(404)
            return
        self._answer = {k: v[0] for k, v in parse_qs(parts.query).items()}
        self._done.set()
        if "error" in self._answer:
            body = f"<p>Sign-in failed: {html.escape(self._answer['error'])}</p>"
        else:
            body = "<p>Signed in. You can close this window and return to the terminal.</p>"
        data = f"<!doctype html><title>Limen</title>{body}".encode()
        request.send_response(200)
        request.send_header("content-type", "text/html; charset=utf-8")
        request.send_header("content-length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)

    def wait(self, timeout: float) -> dict[str, str]:
        if not self._done.wait(timeout):
            raise ConnectionProblem(f"no answer from the browser within {timeout:g} s; run "
                                    "limen login again")
        assert self._answer is not None
        return self._answer


def open_browser(url: str) -> bool:
    """Python's webbrowser honours $BROWSER; False when no browser could be started."""
    try:
        return webbrowser.open(url)
    except webbrowser.Error:
        return False


def oidc_login(client: APIClient, connector: str, ttl: str | None,
               say: Callable[[str], None], browser: Callable[[str], bool] = open_browser,
               timeout: float = CALLBACK_TIMEOUT) -> profiles.Profile:
    key = new_key(connector)
    nonce = secrets.token_urlsafe(32)
    with CallbackListener() as listener:
        started = client.post("/v1/sso/oidc/start", {
            "connector": connector,
            "public_key": key.export_public_key("openssh").decode(),
            "client_callback": listener.url,
            "client_nonce_hash": hashlib.sha256(nonce.encode()).hexdigest(),
            "ttl": ttl,
        })
        url = started["auth_url"]
        if browser(url):
            say(f"Your browser opened to sign in. If it did not, open this URL:\n  {url}")
        else:
            say(f"Open this URL in a browser to sign in:\n  {url}")
        answer = listener.wait(timeout)
    if "error" in answer:
        raise AccessDenied(answer["error"])
    code = answer.get("code", "")
    state = started["state"]
    message = b"\0".join((REDEEM_CONTEXT, state.encode(), code.encode()))
    result = client.post("/v1/sso/redeem", {
        "state": state, "code": code, "client_nonce": nonce,
        "signature": key.sign(message, key.sig_algorithms[0]).hex(),
    })
    return keep(client, key, result, auth=connector)


def ldap_login(client: APIClient, connector: str, user: str, password: str, otp: str,
               ttl: str | None) -> profiles.Profile:
    key = new_key(user)
    result = client.post("/v1/sso/ldap/login", {
        "connector": connector, "user": user, "password": password, "otp": otp,
        "public_key": key.export_public_key("openssh").decode(), "ttl": ttl,
    })
    return keep(client, key, result, auth=connector)
