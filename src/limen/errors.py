"""One error tree for all of Limen.

Every failure a person or a client can see is a ``LimenError`` with a kind:

- ``NotFound``           the thing asked for does not exist (HTTP 404)
- ``AlreadyExists``      a create met an existing thing (HTTP 409)
- ``CompareFailed``      a compare-and-swap lost a race; read again and retry (HTTP 409)
- ``AccessDenied``       authentication or authorization refused (HTTP 403)
- ``BadParameter``       input is malformed or out of range (HTTP 400)
- ``ConnectionProblem``  a peer could not be reached or spoke nonsense (HTTP 502)
- ``LimitExceeded``      a rate or size limit was hit (HTTP 429)

Exceptions from outside libraries are translated at the boundary
(``raise AccessDenied("...") from exc``) so callers handle one tree. The message
is a sentence meant for a person: no secrets, no stack traces.
"""

from __future__ import annotations


class LimenError(Exception):
    """Base of every error Limen raises on purpose."""

    kind = "error"
    http_status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_json(self) -> dict[str, str]:
        return {"error": {"kind": self.kind, "message": self.message}}


class NotFound(LimenError):
    kind = "not_found"
    http_status = 404


class AlreadyExists(LimenError):
    kind = "already_exists"
    http_status = 409


class CompareFailed(LimenError):
    kind = "compare_failed"
    http_status = 409


class AccessDenied(LimenError):
    kind = "access_denied"
    http_status = 403


class BadParameter(LimenError):
    kind = "bad_parameter"
    http_status = 400


class ConnectionProblem(LimenError):
    kind = "connection_problem"
    http_status = 502


class LimitExceeded(LimenError):
    kind = "limit_exceeded"
    http_status = 429


class Busy(LimenError):
    """The server is at capacity for this kind of request: try again after
    ``retry_after`` seconds (the HTTP API sends it as Retry-After)."""

    kind = "busy"
    http_status = 503

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


_BY_KIND: dict[str, type[LimenError]] = {
    cls.kind: cls
    for cls in (
        NotFound,
        AlreadyExists,
        CompareFailed,
        AccessDenied,
        BadParameter,
        ConnectionProblem,
        LimitExceeded,
        Busy,
    )
}


def from_json(payload: object, fallback: str = "the server returned an error") -> LimenError:
    """Rebuild an error from the API's JSON body ``{"error": {"kind", "message"}}``."""
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        err = payload["error"]
        cls = _BY_KIND.get(str(err.get("kind")), LimenError)
        return cls(str(err.get("message") or fallback))
    return LimenError(fallback)
