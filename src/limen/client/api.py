"""A small synchronous HTTPS client for the proxy's API, verifying through the cluster CA."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx

from limen.client import trust
from limen.client.proxy_addr import normalize_proxy
from limen.errors import ConnectionProblem, LimenError, from_json

TIMEOUT = httpx.Timeout(30.0, connect=10.0)


class APIClient:
    def __init__(self, proxy: str, ca_pem: str, token: str | None = None) -> None:
        proxy = normalize_proxy(proxy)
        self.proxy = proxy
        self.ca_pem = ca_pem
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(
            base_url=f"https://{proxy}",
            verify=trust.verifying_context(ca_pem),
            headers=headers,
            timeout=TIMEOUT,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> APIClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            response = self._http.request(method, path, json=body)
        except httpx.ConnectError as exc:
            raise ConnectionProblem(_connect_message(self.proxy, exc)) from None
        except httpx.HTTPError as exc:
            raise ConnectionProblem(f"talking to the proxy at {self.proxy} failed: {exc}") from None
        return _decode(response)

    def get(self, path: str) -> Any:
        return self.call("GET", path)

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self.call("POST", path, body or {})

    def delete(self, path: str) -> Any:
        return self.call("DELETE", path)

    def stream_lines(self, path: str, params: dict[str, Any] | None = None) -> Iterator[str]:
        """A text body line by line as it arrives (recordings can be large)."""
        try:
            with self._http.stream("GET", path, params=params) as response:
                if not response.is_success:
                    response.read()
                    _decode(response)
                yield from response.iter_lines()
        except httpx.ConnectError as exc:
            raise ConnectionProblem(_connect_message(self.proxy, exc)) from None
        except httpx.HTTPError as exc:
            raise ConnectionProblem(f"talking to the proxy at {self.proxy} failed: {exc}") from None


def _connect_message(proxy: str, exc: Exception) -> str:
    text = str(exc)
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return (
            f"the proxy at {proxy} presented a certificate that the cluster CA you trust did "
            "not sign; refusing to talk to it (if the cluster was rebuilt, run limen logout "
            "and log in again)"
        )
    host = proxy.rpartition(":")[0].strip("[]")
    port = proxy.rpartition(":")[2]
    if any(s in text for s in ("Name or service not known", "Temporary failure in name",
                               "nodename nor servname", "No address associated")):
        return f"cannot reach the proxy at https://{proxy}: the host name {host!r} does not resolve"
    if "Connection refused" in text:
        return (f"cannot reach the proxy at https://{proxy}: connection refused (nothing "
                f"listens on port {port} of {host}; the proxy's web port is 3080 unless "
                "its config says otherwise)")
    return f"cannot reach the proxy at https://{proxy}: {text or type(exc).__name__}"


def _decode(response: httpx.Response) -> Any:
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if response.is_success:
        return payload
    raise from_json(payload, f"the proxy answered HTTP {response.status_code}")


def fetch_ca(proxy: str) -> dict[str, Any]:
    """Read /v1/ping without trusting anything yet: the caller must pin or confirm the CA."""
    proxy = normalize_proxy(proxy)
    try:
        with httpx.Client(verify=trust.insecure_context(), timeout=TIMEOUT) as http:
            response = http.get(f"https://{proxy}/v1/ping")
    except httpx.HTTPError as exc:
        raise ConnectionProblem(_connect_message(proxy, exc)) from None
    try:
        return _decode(response)
    except LimenError:
        raise
    except Exception as exc:  # noqa: BLE001 - anything odd here means "not a Limen proxy"
        raise ConnectionProblem(f"{proxy} does not look like a Limen proxy") from exc
