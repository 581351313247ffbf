"""JSON over HTTP to an m3search server (httpx, sync and async), every failure a typed m3search error."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from m3search._optional import require
from m3search.errors import ConfigError, RemoteError, RemoteRequestError

DEFAULT_TIMEOUT = 60.0
SyncPost = Callable[[str, dict[str, Any]], Any]
AsyncPost = Callable[[str, dict[str, Any]], Awaitable[Any]]


class ServerClient:
    """Posts JSON to one m3search server and returns the decoded answer.

    Errors: :class:`~m3search.errors.RemoteError` when the server is unreachable, times out, fails (5xx, 429) or
    answers something that is not JSON; :class:`~m3search.errors.RemoteRequestError` (also an ``InputError``) for
    4xx answers: a missing or wrong key, an unknown model, a bad dimension or input. Both carry ``status`` and the
    server's error ``code``.

    Args:
        base_url: the server's URL (``http://127.0.0.1:8000``; a trailing ``/v1`` is accepted).
        api_key: sent as ``Authorization: Bearer ...`` (never in ``repr`` or errors).
        timeout: seconds per request (connect + answer).
        extra: the extra that carries httpx here (named when it is missing).
    """

    def __init__(self, base_url: str, *, api_key: str | None = None, timeout: float = DEFAULT_TIMEOUT,
                 extra: str = "llm") -> None:
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"the m3search server URL must be http(s)://..., not {base_url!r}")
        if not timeout > 0:
            raise ConfigError(f"timeout must be a positive number of seconds, not {timeout}")
        self.base_url = base_url.rstrip("/").removesuffix("/v1")
        self.timeout = timeout
        self._api_key = api_key
        self._httpx = require("httpx", extra, "Calling an m3search server")

    def __repr__(self) -> str:  # keeps the key out of logs
        return f"ServerClient(base_url={self.base_url!r}, timeout={self.timeout})"

    @contextmanager
    def sync_session(self) -> Iterator[SyncPost]:
        """A ``post`` over one httpx Client (pooled connections for several requests, closed at the end)."""
        with self._httpx.Client(timeout=self.timeout) as client:

            def post(path: str, body: dict[str, Any]) -> Any:
                try:
                    response = client.post(self.base_url + path, json=body, headers=self._headers)
                except self._httpx.HTTPError as exc:
                    raise self._transport_error(exc) from exc
                return self._answer(response)

            yield post

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncPost]:
        """The async :meth:`sync_session` (an AsyncClient belongs to the running event loop: one per session)."""
        async with self._httpx.AsyncClient(timeout=self.timeout) as client:

            async def post(path: str, body: dict[str, Any]) -> Any:
                try:
                    response = await client.post(self.base_url + path, json=body, headers=self._headers)
                except self._httpx.HTTPError as exc:
                    raise self._transport_error(exc) from exc
                return self._answer(response)

            yield post

    def post(self, path: str, body: dict[str, Any]) -> Any:
        """POST ``body`` to ``path`` and return the JSON answer."""
        with self.sync_session() as post:
            return post(path, body)

    async def apost(self, path: str, body: dict[str, Any]) -> Any:
        """One async POST (see :meth:`session` for several)."""
        async with self.session() as post:
            return await post(path, body)

    @property
    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    def _transport_error(self, exc: Exception) -> RemoteError:
        if isinstance(exc, self._httpx.TimeoutException):
            return RemoteError(f"m3search server {self.base_url} did not answer within {self.timeout:g} s; "
                               f"raise timeout= or send less per request", code="timeout")
        return RemoteError(f"m3search server {self.base_url} is unreachable ({type(exc).__name__}); start it "
                           f"with 'm3search serve' or fix the URL", code="unreachable")

    def _answer(self, response: Any) -> Any:
        where = f"m3search server {self.base_url}"
        status = int(response.status_code)
        if status >= 400:
            raise status_error(where, status, response)
        try:
            return response.json()
        except ValueError as exc:
            raise RemoteError(f"{where} answered something that is not JSON (HTTP {status})", status=status) from exc


def status_error(where: str, status: int, response: Any) -> RemoteError:
    """The typed error of an HTTP error answer (the server's ``{"error": {"message", "code"}}`` when present)."""
    try:
        error = response.json()["error"]
        message, code = str(error["message"]), error.get("code")
    except (ValueError, KeyError, TypeError):
        message, code = response.text[:200], None
    if status == 401:
        return RemoteRequestError(f"{where} refused the API key (HTTP 401): {message}; pass api_key=",
                                  status=status, code=code)
    if status == 429:
        return RemoteError(f"{where} is busy (HTTP 429): {message}", status=status, code=code)
    if status < 500:
        return RemoteRequestError(f"{where} refused the request (HTTP {status}): {message}", status=status,
                                  code=code)
    return RemoteError(f"{where} failed (HTTP {status}): {message}; see the server's log", status=status,
                       code=code)
