"""The HTTP edge of the error hierarchy: every error, on every route, is ``{"error": {"message", "type", "code"}}``
with a 4xx status for the caller's mistakes; a 500 says only that it is internal (details go to the log)."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from m3search import errors as e

LOGGER = logging.getLogger("m3search.server")

# Most specific first: (exception, status, type, code).
_TABLE: list[tuple[type[e.M3SearchError], int, str, str]] = [
    (e.InputTooLongError, 413, "invalid_request_error", "input_too_long"),
    (e.PayloadTooLargeError, 413, "invalid_request_error", "payload_too_large"),
    (e.DocumentError, 400, "invalid_request_error", "invalid_document"),
    (e.InputError, 400, "invalid_request_error", "invalid_input"),
    (e.DimensionError, 400, "invalid_request_error", "invalid_dimensions"),
    (e.UnknownModelError, 404, "invalid_request_error", "model_not_found"),
    (e.ModelNotFoundError, 503, "server_error", "model_not_available"),
    (e.FidelityError, 503, "server_error", "model_not_available"),
    (e.ModelFormatError, 503, "server_error", "model_not_available"),
    (e.NonFiniteEmbeddingError, 500, "server_error", "non_finite_embedding"),
    (e.CollectionNotFoundError, 404, "not_found_error", "collection_not_found"),
    (e.NotFoundError, 404, "not_found_error", "not_found"),
    (e.ModelMismatchError, 409, "conflict_error", "model_mismatch"),
    (e.SchemaVersionError, 500, "server_error", "schema_version"),
    (e.StoreError, 409, "conflict_error", "store_conflict"),
    (e.OverloadedError, 429, "rate_limit_error", "queue_full"),
    (e.MissingDependencyError, 501, "server_error", "missing_dependency"),
    (e.ConfigError, 400, "invalid_request_error", "invalid_parameter"),
    (e.M3SearchError, 400, "invalid_request_error", "invalid_request"),
]
_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
          405: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error"}


def error_response(status: int, message: str, type_: str | None = None, code: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    message = message.encode("utf-8", "backslashreplace").decode("utf-8")  # a lone surrogate echoed stays JSON
    body = {"error": {"message": message, "type": type_ or _TYPES.get(status, "server_error"), "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def translate(exc: e.M3SearchError) -> JSONResponse:
    for kind, status, type_, code in _TABLE:
        if isinstance(exc, kind):
            headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, e.OverloadedError) else None
            return error_response(status, exc.message("http"), type_, code, headers)
    raise AssertionError("unreachable: M3SearchError is in the table")


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for item in exc.errors()[:5]:
        where = ".".join(str(p) for p in item.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {item.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)


def install(app: FastAPI) -> None:
    """Register the handlers that give every error the one JSON format."""

    async def domain(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, e.M3SearchError)
        return translate(exc)

    async def validation(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(400, _validation_message(exc), code="invalid_request")

    async def http(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        return error_response(exc.status_code, str(exc.detail), headers=dict(exc.headers or {}))

    async def internal(request: Request, exc: Exception) -> JSONResponse:
        LOGGER.exception("internal error", extra={"request_id": getattr(request.state, "request_id", None)})
        return error_response(500, "internal server error (see the server log)", "server_error", "internal")

    app.add_exception_handler(e.M3SearchError, domain)
    app.add_exception_handler(RequestValidationError, validation)
    app.add_exception_handler(HTTPException, http)
    app.add_exception_handler(Exception, internal)
