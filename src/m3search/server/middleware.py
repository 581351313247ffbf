"""One ASGI middleware around every request: correlation id, API-key check, body-size limit, JSON access log and
request metrics. Plain ASGI (no per-request task or body copy), so it costs microseconds."""

from __future__ import annotations

import hmac
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.exceptions import HTTPException

from m3search.memory import trim_heap
from m3search.server.errors import error_response
from m3search.server.metrics import Metrics

LOGGER = logging.getLogger("m3search.server")
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

OPEN_PATHS = frozenset({"/health", "/", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/favicon.ico"})
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
TRIM_AFTER_BYTES = 1 << 20  # after a request body this large, free heap memory is returned to the system


class RequestMiddleware:
    """Everything every request goes through, in this order: id, auth, size limit, the app, log and metrics."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics, api_keys: list[str], max_body: int,
                 max_headers: int = 32_768) -> None:
        self.app = app
        self.max_headers = max_headers
        self.metrics = metrics
        self.keys = [k.encode() for k in api_keys]
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        given = headers.get("x-request-id", "")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = {"code": 500}
        start = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            size = sum(len(k) + len(v) for k, v in scope.get("headers", []))
            refusal = self._refusal(scope["path"], headers) if size <= self.max_headers else error_response(
                431, f"request headers of {size} bytes are larger than the limit of {self.max_headers} "
                f"(M3SEARCH_MAX_HEADER_BYTES)", "invalid_request_error", "headers_too_large")
            if refusal is not None:
                await refusal(scope, receive, send_with_id)
            else:
                await self.app(scope, self._limited(receive, state), send_with_id)
        finally:
            self._record(scope, state, status["code"], time.perf_counter() - start, request_id)
            if state.get("body_bytes", 0) >= TRIM_AFTER_BYTES:
                trim_heap()  # a large body's parsing leaves freed memory spread over the heaps: give it back

    def _refusal(self, path: str, headers: dict[str, str]) -> Any:
        """The response that refuses this request before the app sees it, or None."""
        if self.keys and path not in OPEN_PATHS and not path.startswith("/static/"):
            scheme, _, token = headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not self._known(token.strip().encode()):
                return error_response(401, "missing or invalid API key: send 'Authorization: Bearer KEY' with a "
                                      "key from M3SEARCH_API_KEYS", "authentication_error", "invalid_api_key",
                                      {"WWW-Authenticate": "Bearer"})
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body:
            return error_response(413, f"request body of {length} bytes is larger than the limit of "
                                  f"{self.max_body} (M3SEARCH_MAX_REQUEST_BYTES)", code="payload_too_large")
        return None

    def _known(self, token: bytes) -> bool:
        """Constant-time comparison against every key (no early exit that would tell which one matched)."""
        found = False
        for key in self.keys:
            found |= hmac.compare_digest(token, key)
        return found

    def _limited(self, receive: Receive, state: dict[str, Any]) -> Receive:
        """``receive`` that refuses bodies over the limit even without (or with a false) Content-Length, and counts
        the body's bytes into ``state["body_bytes"]``."""
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                state["body_bytes"] = seen
                if seen > self.max_body:
                    raise HTTPException(413, f"request body is larger than the limit of {self.max_body} bytes "
                                             f"(M3SEARCH_MAX_REQUEST_BYTES)")
            return message

        return limited

    def _record(self, scope: Scope, state: dict[str, Any], status: int, seconds: float, request_id: str) -> None:
        route = getattr(scope.get("route"), "path", None) or "unmatched"
        self.metrics.requests.labels(method=scope["method"], route=route, status=str(status)).inc()
        self.metrics.latency.labels(route=route).observe(seconds)
        LOGGER.info("request", extra={
            "request_id": request_id, "method": scope["method"], "path": scope["path"], "route": route,
            "status": status, "duration_ms": round(seconds * 1000, 3), "tokens": state.get("tokens"),
        })
