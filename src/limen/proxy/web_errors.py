"""The HTTPS API's errors: one JSON body for every failure, and the same in its schema.

Every failure is ``{"error": {"kind", "message"}}`` with the status that errors.py gives
the kind, never a stack trace. Each route lists the statuses it can answer with
(``errors(...)``), so the published OpenAPI schema documents every one of them with
this body; FastAPI's own 422 for invalid input is answered (and documented) as 400.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException

from limen.errors import Busy, LimenError

log = logging.getLogger(__name__)


class ErrorDetail(BaseModel):
    kind: str
    message: str


class ErrorBody(BaseModel):
    """What every failed request answers."""

    error: ErrorDetail


_MEANING = {
    400: "The request is malformed or a value is out of range (kind bad_parameter).",
    403: "No valid login, or the caller's roles do not allow this (kind access_denied).",
    404: "The thing asked for does not exist (kind not_found).",
    409: "It exists already, or someone changed it meanwhile (already_exists, "
         "compare_failed).",
    429: "Too many unauthenticated requests from this address (kind limit_exceeded).",
    502: "A peer the request needs (an identity provider) could not be reached or answered "
         "nonsense (kind connection_problem).",
    503: "The proxy is at capacity for this request; try again after the Retry-After "
         "header's seconds (kind busy).",
}

# What every route that needs a login can answer: no or a bad login, or (without a login)
# the per-address limit on anonymous requests.
SIGNED_IN = (403, 429)
# Routes that carry their own credential (token, password) and are rate limited.
ANONYMOUS = (400, 403, 429)


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` of a route that may fail with these statuses."""
    return {code: {"model": ErrorBody, "description": _MEANING[code]}
            for code in sorted(set(codes))}


def _error(status: int, kind: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"kind": kind, "message": message}}, status_code=status)


def _first_problem(errors_: list[Any], skip: tuple[str, ...] = ()) -> tuple[str, str]:
    first = errors_[0] if errors_ else {}
    field = ".".join(str(p) for p in first.get("loc", ()) if p not in skip)
    return field, first.get("msg", "is not valid")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(LimenError)
    async def limen_error(_request: Request, exc: LimenError) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, Busy) else None
        return JSONResponse(exc.to_json(), status_code=exc.http_status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def bad_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        field, problem = _first_problem(list(exc.errors()), skip=("body",))
        return _error(400, "bad_parameter", f"invalid request: field '{field}': {problem}")

    @app.exception_handler(ValidationError)
    async def invalid_model(_request: Request, exc: ValidationError) -> JSONResponse:
        field, problem = _first_problem(list(exc.errors()))
        return _error(400, "bad_parameter", f"invalid {exc.title}: field '{field}': {problem}")

    @app.exception_handler(HTTPException)
    async def routing(_request: Request, exc: HTTPException) -> JSONResponse:
        """Unknown paths and methods: the same body as every other error."""
        kind = "not_found" if exc.status_code == 404 else "bad_parameter"
        message = {404: "no such API path", 405: "this path does not take that method"}.get(
            exc.status_code, str(exc.detail)
        )
        return JSONResponse({"error": {"kind": kind, "message": message}},
                            status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def internal(_request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error: %s", type(exc).__name__, exc_info=exc)
        return _error(500, "error", "internal error; see the server log")


def document_errors(app: FastAPI) -> None:
    """Publish the schema as the API behaves: no FastAPI 422 answers (invalid input is
    a 400 here), and optional parameters that are absent rather than null (a query
    string cannot say null; FastAPI writes ``str | None`` as "string or null")."""

    def schema() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version, routes=app.routes)
            for path in document.get("paths", {}).values():
                for operation in path.values():
                    operation.get("responses", {}).pop("422", None)
                    for parameter in operation.get("parameters", []):
                        _not_null(parameter)
            for unused in ("HTTPValidationError", "ValidationError"):
                document.get("components", {}).get("schemas", {}).pop(unused, None)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = schema  # type: ignore[method-assign]


def _not_null(parameter: dict[str, Any]) -> None:
    schema = parameter.get("schema", {})
    choices = [c for c in schema.get("anyOf", []) if c.get("type") != "null"]
    if "anyOf" in schema and len(choices) == 1:
        del schema["anyOf"]
        schema.update(choices[0])
