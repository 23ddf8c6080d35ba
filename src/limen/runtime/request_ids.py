"""A request id for every HTTP request: in each log line written while it is handled
(through limen.runtime.logs.request_id) and in the response's X-Request-ID header, so an
operator can find the lines of the request a person reports. At debug level each request
is one line: method, route, status and duration.

The id is always made here: a client's header could inject text into the logs. The line
names the route's template (``/v1/tokens/{token}``), never the path a client sent, which
may carry a token.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from limen.runtime import logs

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger(__name__)


class RequestIds:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = uuid.uuid4().hex[:16]
        token = logs.request_id.set(request_id)
        started = time.perf_counter()
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message["headers"] = [*message.get("headers", []),
                                      (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = getattr(scope.get("route"), "path", None) or "(no route)"
            log.debug("%s %s -> %s in %.1f ms", scope.get("method"), route, status or "none",
                      (time.perf_counter() - started) * 1000)
            logs.request_id.reset(token)
