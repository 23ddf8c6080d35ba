"""The diagnostics address (`diag_addr`): /metrics, /healthz and /readyz over plain HTTP.

Off unless configured; meant for a loopback or management address that a Prometheus
server and a load balancer's health checks reach. /healthz answers while the event loop
turns (the process is alive); /readyz runs the service's readiness checks (backend
reachable, listeners up, the auth service reachable) and answers 503 naming the first
that fails, so a load balancer stops sending clients to an instance that cannot serve.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable, Generator

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from limen.diag.metrics import REGISTRY
from limen.tasks import serve_until_started

log = logging.getLogger(__name__)

# A check returns None when ready, or a sentence saying what is wrong.
ReadinessCheck = Callable[[], Awaitable[str | None]]
CHECK_SECONDS = 3.0


async def run_checks(checks: dict[str, ReadinessCheck]) -> dict[str, str]:
    """Each check's verdict: "ok" or why not (a check that hangs is a failure)."""
    results: dict[str, str] = {}
    for name, check in checks.items():
        try:
            async with asyncio.timeout(CHECK_SECONDS):
                problem = await check()
        except TimeoutError:
            problem = f"no answer within {CHECK_SECONDS:g} s"
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready", said
            problem = str(exc) or type(exc).__name__
        results[name] = problem or "ok"
    return results


def create_diag_app(checks: dict[str, ReadinessCheck]) -> Starlette:
    async def metrics(_request: Request) -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_request: Request) -> Response:
        results = await run_checks(checks)
        ready = all(v == "ok" for v in results.values())
        return JSONResponse({"ready": ready, "checks": results},
                            status_code=200 if ready else 503)

    return Starlette(routes=[
        Route("/metrics", metrics),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
    ])


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: `limen start` owns the process's signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class DiagServer:
    def __init__(self, sock: socket.socket, checks: dict[str, ReadinessCheck]) -> None:
        config = uvicorn.Config(create_diag_app(checks), log_config=None, access_log=False,
                                lifespan="off", server_header=False,
                                timeout_graceful_shutdown=2)
        self._server = _Server(config)
        self._sock = sock
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        return self._sock.getsockname()[1]

    async def start(self) -> None:
        self._task = await serve_until_started(self._server, self._sock, "diagnostics server")

    async def stop(self) -> None:
        if self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        self._sock.close()
