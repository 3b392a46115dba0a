"""The HTTP edge of errors: domain exceptions -> status codes and one JSON shape.

Every error body is ``{"error": {"code": "...", "message": "..."}}``. Library code raises domain exceptions
(``AudioError`` subclasses, ``UnknownDatabase``, ``QueueFull``, ...) that know nothing of HTTP; this module
alone decides their status. Anything unexpected is logged with its traceback and answered with a clean 500.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.admission import ClientDisconnected, DeadlineExceeded
from api.audio_input import AudioTooLong, InvalidAudio, UnsupportedAudio
from api.batching import BatcherClosed, QueueFull
from api.limits import BodyTooLarge
from api.routes.audio import SegmentNotFound, SegmentUnreadable
from api.search import InvalidQuery, RequestTooLarge
from api.security import Unauthorized
from api.state import NotReady
from miner.audio import AudioError
from miner.databases import UnknownDatabase, WrongDatabaseKind
from miner.spaces import SpaceMismatchError

__all__ = ["ERROR_STATUS", "error_response", "install_error_handlers"]

log = logging.getLogger(__name__)

# Domain exception -> (HTTP status, error code); an exception takes the entry of its nearest class in its MRO.
ERROR_STATUS: dict[type[Exception], tuple[int, str]] = {
    Unauthorized: (401, "unauthorized"),
    UnknownDatabase: (404, "unknown_database"),
    SegmentNotFound: (404, "segment_not_found"),
    BodyTooLarge: (413, "payload_too_large"),
    AudioTooLong: (413, "audio_too_long"),
    RequestTooLarge: (413, "request_too_large"),
    UnsupportedAudio: (415, "unsupported_media_type"),
    InvalidAudio: (422, "invalid_audio"),
    AudioError: (422, "invalid_audio"),
    WrongDatabaseKind: (422, "wrong_database_kind"),
    SegmentUnreadable: (422, "segment_unreadable"),
    InvalidQuery: (422, "invalid_query"),
    SpaceMismatchError: (422, "space_mismatch"),
    QueueFull: (503, "overloaded"),
    DeadlineExceeded: (503, "deadline_exceeded"),
    ClientDisconnected: (499, "client_closed_request"),
    NotReady: (503, "not_ready"),
    BatcherClosed: (503, "shutting_down"),
}

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
    503: "unavailable",
}


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """A JSON error response in the API's one error shape."""
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def _headers_for(exc: BaseException) -> dict[str, str] | None:
    if isinstance(exc, QueueFull | NotReady | BatcherClosed | DeadlineExceeded):
        retry = getattr(exc, "retry_after", 1.0)
        return {"Retry-After": str(max(1, round(retry)))}
    if isinstance(exc, Unauthorized):
        return {"WWW-Authenticate": 'Bearer realm="miner", charset="UTF-8"'}
    return None


def _status_of(exc: BaseException) -> tuple[int, str]:
    for cls in type(exc).__mro__:
        if cls in ERROR_STATUS:
            return ERROR_STATUS[cls]
    return 500, "internal_error"  # unreachable: the handler is registered only for the classes above


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    status, code = _status_of(exc)
    if status >= 500 or status == 499:
        log.warning("%s %s -> %d %s: %s", request.method, request.url.path, status, code, exc)
    return error_response(status, code, str(exc), headers=_headers_for(exc))


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)  # registered for this class only
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "request"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return error_response(422, "validation_error", "; ".join(parts) or "invalid request")


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)  # registered for this class only
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = str(exc.detail) if exc.detail else code.replace("_", " ")
    if exc.status_code == 400 and "parsing the body" in message:
        message += ": send multipart/form-data with the fields this endpoint documents (see /docs)"
    return error_response(exc.status_code, code, message, headers=getattr(exc, "headers", None))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    # Starlette re-raises the exception after this answer and uvicorn then drops the connection: say so, so a
    # keep-alive client opens a new one instead of failing its next request on a reset connection.
    return error_response(
        500,
        "internal_error",
        "internal server error; the server log has the details",
        headers={"Connection": "close"},
    )


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn every exception into the JSON error shape."""
    for cls in ERROR_STATUS:
        app.add_exception_handler(cls, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
