"""How a node talks to the auth service: in-process, or over the proxy's HTTPS API.

Both links speak with the node's own identity (builtin "node"), so the auth service
applies the same checks whichever way the node runs.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any, Protocol

import asyncssh
import httpx

from limen import tcpkeepalive
from limen.auth.facade import AuthFacade
from limen.auth.identity import Identity
from limen.auth.node_credentials import sign_renewal
from limen.auth.node_renewal import Renewed
from limen.auth.server import AuthServer
from limen.client import trust
from limen.errors import ConnectionProblem, LimenError, from_json
from limen.resources import Session

log = logging.getLogger(__name__)

# The access feed is quiet most of the time: the proxy pings it every FEED_PING_SECONDS
# (it pings every 20 s a node that does not ask), and a feed silent for longer than
# FEED_READ_TIMEOUT is taken for broken and opened again. Each ping costs the proxy a
# wake-up per node; a removal or lock ends the feed at once, not at a ping. Between
# pings the kernel's TCP keepalives (limen.tcpkeepalive) hold the connection open
# through NAT and notice a vanished proxy within about two minutes.
FEED_PING_SECONDS = 300
FEED_READ_TIMEOUT = 330.0


class ClusterLink(Protocol):
    async def heartbeat(self, addr: str | None, connection: str) -> dict[str, Any]:
        """Presence; the answer (a remote link's) lists the cluster's proxies too."""
        ...
    async def renew(self, host_key: asyncssh.SSHKey, node_id: str, now: datetime) -> Renewed:
        """New credentials; a remote link proves the host key and uses the new token."""
        ...
    async def report_event(self, name: str, fields: dict[str, Any]) -> None: ...
    async def report_events(self, events: list[tuple[str, dict[str, Any]]]
                            ) -> list[LimenError | None]:
        """Several events in one call: each one's refusal, or None where it was taken."""
        ...
    async def upsert_session(self, session: Session) -> None: ...
    async def recording_update(self, session_id: str, meta: dict[str, Any]) -> dict[str, Any]: ...
    async def recordings_whole(self, recordings: list[tuple[str, dict[str, Any]]]
                               ) -> list[dict[str, Any] | LimenError]: ...
    async def recording_append(self, session_id: str, offset: int, data: bytes) -> int: ...
    def access_feed(self) -> AsyncIterator[dict[str, Any]]: ...
    async def close(self) -> None: ...


class LocalLink:
    """The node runs in the auth service's own process.

    It calls the auth service through the same facade the HTTPS API uses, with the
    node's identity, so an in-process node meets exactly the checks a remote one meets.
    """

    def __init__(self, auth: AuthServer, node_id: str) -> None:
        self.api = AuthFacade(auth, Identity(user=node_id, builtin="node"))

    async def heartbeat(self, addr: str | None, connection: str) -> dict[str, Any]:
        await self.api.heartbeat(addr, connection)
        return {}  # in the auth service's process: no other proxy to learn of

    async def renew(self, host_key: asyncssh.SSHKey, node_id: str, now: datetime) -> Renewed:
        return await self.api.renew_local_node()

    async def report_event(self, name: str, fields: dict[str, Any]) -> None:
        await self.api.report_event(name, fields)

    async def report_events(self, events: list[tuple[str, dict[str, Any]]]
                            ) -> list[LimenError | None]:
        return await self.api.report_events(events)

    async def upsert_session(self, session: Session) -> None:
        await self.api.upsert_session(session)

    async def recording_update(self, session_id: str, meta: dict[str, Any]) -> dict[str, Any]:
        return await self.api.update_recording(session_id, meta)

    async def recordings_whole(self, recordings: list[tuple[str, dict[str, Any]]]
                               ) -> list[dict[str, Any] | LimenError]:
        return await self.api.update_recordings(recordings)

    async def recording_append(self, session_id: str, offset: int, data: bytes) -> int:
        return await self.api.append_recording(session_id, offset, data)

    async def access_feed(self) -> AsyncIterator[dict[str, Any]]:
        feed = await self.api.watch_access()
        async with contextlib.aclosing(feed):  # ends the backend watch with the caller
            async for message in feed:
                yield message

    async def close(self) -> None:
        return None


class RemoteLink:
    """The node runs elsewhere and reaches the auth service through the proxy."""

    def __init__(self, proxy: str, ca_pem: str, token: str, *, timeout: float = 15.0,
                 connect_timeout: float = 5.0,
                 feed_read_timeout: float = FEED_READ_TIMEOUT) -> None:
        self.proxy = proxy
        self.joined_proxy = proxy
        # Other proxies of the cluster (their web addresses, limen.tunnel.peers): when the
        # current one cannot be connected to, the next call goes to another. Only a
        # failure to connect moves on, so no request is ever sent twice.
        self.fallbacks: Callable[[], list[str]] = lambda: []
        self._token = token
        self._feed_timeout = httpx.Timeout(feed_read_timeout, connect=connect_timeout)
        self._http = httpx.AsyncClient(
            base_url=f"https://{proxy}",
            headers={"authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            transport=httpx.AsyncHTTPTransport(
                verify=trust.verifying_context(ca_pem),
                # Kept between heartbeats (60 s apart while the node has sessions), and
                # given up before the proxy's 75 s would close it under a request.
                limits=httpx.Limits(max_connections=100, max_keepalive_connections=20,
                                    keepalive_expiry=70.0),
                socket_options=tcpkeepalive.socket_options(),  # the feed's, above all
            ),
        )

    def use_token(self, token: str) -> None:
        """Speak with a renewed API token from now on (the old one no longer works)."""
        self._token = token
        self._http.headers["authorization"] = f"Bearer {token}"

    def _move_on(self) -> bool:
        """Use the next proxy of the cluster after the current one; False if none other."""
        candidates = list(dict.fromkeys([self.joined_proxy, *self.fallbacks()]))
        if len(candidates) < 2:
            return False
        at = candidates.index(self.proxy) if self.proxy in candidates else -1
        self.proxy = candidates[(at + 1) % len(candidates)]
        self._http.base_url = httpx.URL(f"https://{self.proxy}")
        log.warning("the proxy did not answer; the node now talks to %s", self.proxy)
        return True

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        tries = 1 + len(self.fallbacks())
        for _ in range(tries):
            try:
                return await self._http.request(method, path, **kwargs)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                failure: httpx.HTTPError = exc
                if not self._move_on():
                    break
            except httpx.HTTPError as exc:
                failure = exc
                break
        raise ConnectionProblem(f"cannot reach the proxy at {self.proxy}: {_why(failure)}")

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        response = await self._request(method, path, json=body)
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if not response.is_success:
            raise from_json(payload, f"the proxy answered HTTP {response.status_code}")
        return payload

    async def heartbeat(self, addr: str | None, connection: str) -> dict[str, Any]:
        answer = await self._call("POST", "/v1/nodes/heartbeat",
                                  {"addr": addr, "connection": connection})
        return answer if isinstance(answer, dict) else {}

    async def renew(self, host_key: asyncssh.SSHKey, node_id: str, now: datetime) -> Renewed:
        proof = sign_renewal(host_key, node_id, self._token, now)
        answer = await self._call("POST", "/v1/nodes/renew", proof)
        renewed = Renewed(answer["host_cert"], answer["api_token"], answer["expires"])
        self.use_token(renewed.api_token)
        return renewed

    async def report_event(self, name: str, fields: dict[str, Any]) -> None:
        await self._call("POST", "/v1/events", {"event": name, "fields": fields})

    async def report_events(self, events: list[tuple[str, dict[str, Any]]]
                            ) -> list[LimenError | None]:
        answer = await self._call("POST", "/v1/events/batch", {
            "events": [{"event": name, "fields": fields} for name, fields in events]})
        results = answer.get("results") if isinstance(answer, dict) else None
        if not isinstance(results, list) or len(results) != len(events):
            raise ConnectionProblem("the proxy's answer to a batch of events is malformed")
        return [None if isinstance(r, dict) and r.get("ok") is True else from_json(r)
                for r in results]

    async def upsert_session(self, session: Session) -> None:
        await self._call("PUT", f"/v1/sessions/{session.name}", session.to_public())

    async def recording_update(self, session_id: str, meta: dict[str, Any]) -> dict[str, Any]:
        return await self._call("PUT", f"/v1/recordings/{session_id}", meta)

    async def recordings_whole(self, recordings: list[tuple[str, dict[str, Any]]]
                               ) -> list[dict[str, Any] | LimenError]:
        answer = await self._call("POST", "/v1/recordings/batch", {"recordings": [
            {**meta, "session_id": session_id} for session_id, meta in recordings]})
        results = answer.get("results") if isinstance(answer, dict) else None
        if not isinstance(results, list) or len(results) != len(recordings):
            raise ConnectionProblem("the proxy's answer to a batch of recordings is malformed")
        return [from_json(r) if not isinstance(r, dict) or "error" in r else r for r in results]

    async def recording_append(self, session_id: str, offset: int, data: bytes) -> int:
        response = await self._request(
            "POST", f"/v1/recordings/{session_id}/data", params={"offset": offset},
            content=data, headers={"content-type": "application/octet-stream"},
        )
        payload = _json_or_none(response)
        if not response.is_success:
            raise from_json(payload, f"the proxy answered HTTP {response.status_code}")
        return int(payload["size"])

    async def access_feed(self) -> AsyncIterator[dict[str, Any]]:
        """The auth service's feed as newline-delimited JSON; pings keep it honest."""
        try:
            async with self._http.stream("GET", "/v1/watch/access",
                                         params={"ping": FEED_PING_SECONDS},
                                         timeout=self._feed_timeout) as response:
                async for message in self._feed_lines(response):
                    yield message
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            self._move_on()  # the cache reconnects, to the next proxy
            raise ConnectionProblem("cannot reach the proxy for the access feed: "
                                    f"{_why(exc)}") from None
        except httpx.HTTPError as exc:  # connected, then silent or cut off
            raise ConnectionProblem(f"the access feed broke: {_why(exc)}") from None
        raise ConnectionProblem("the access feed ended")

    async def _feed_lines(self, response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
        if not response.is_success:
            await response.aread()
            raise from_json(_json_or_none(response), "the access feed was refused")
        async for line in response.aiter_lines():
            if line.strip():
                message = json.loads(line)
                if message.get("op") != "ping":
                    yield message

    async def close(self) -> None:
        await self._http.aclose()


def _why(exc: httpx.HTTPError) -> str:
    """What went wrong, in words: httpx's timeouts carry an empty message."""
    if isinstance(exc, httpx.ConnectTimeout):
        return "it did not take the connection in time (TLS handshake or TCP connect)"
    if isinstance(exc, httpx.TimeoutException):
        return "it did not answer in time"
    return str(exc) or type(exc).__name__


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
