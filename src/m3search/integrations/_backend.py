"""The two embedding backends behind the adapters: the local encoder, and an m3search server's ``/v1/embeddings``.

Both embed queries with the model's query prefix and documents with its document prefix, and return dense vectors
as lists of floats (what LlamaIndex and LangChain expect).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from m3search._optional import require
from m3search.errors import ConfigError, RemoteError, RemoteRequestError
from m3search.models.encoder import Encoder, Kind
from m3search.models.loader import load_encoder
from m3search.models.registry import get_spec
from m3search.settings import Settings, get_settings

Vector = list[float]
DEFAULT_TIMEOUT = 60.0
DEFAULT_BATCH_SIZE = 64


class Backend(Protocol):
    """What an adapter needs: one model name and sync + async embedding of queries or documents."""

    model: str

    def embed(self, texts: Sequence[str], kind: Kind) -> list[Vector]:
        """Dense vectors of ``texts`` in input order, with the prefix of ``kind``."""
        ...

    async def aembed(self, texts: Sequence[str], kind: Kind) -> list[Vector]:
        """The same as :meth:`embed`, without blocking the event loop."""
        ...


class LocalBackend:
    """The in-process encoder, built on first use (thread-safe) by :func:`~m3search.models.loader.load_encoder`.

    Args:
        model: registry name or Hugging Face repo id (default: ``M3SEARCH_DEFAULT_MODEL``).
        path: a directory with the model's files (skips resolution).
        dimensions: a Matryoshka dimension of the model (default: its full dimension).
        encoder: an encoder to use as is (then ``model``, ``path`` and ``dimensions`` are not used).
        settings: explicit settings (default: read from the environment on first use).
    """

    def __init__(self, model: str | None = None, *, path: str | Path | None = None, dimensions: int | None = None,
                 encoder: Encoder | None = None, settings: Settings | None = None) -> None:
        spec = encoder.spec if encoder is not None else get_spec(model or (settings or get_settings()).default_model)
        if "dense" not in spec.outputs:
            raise ConfigError(f"model '{spec.name}' has no dense vectors (it produces {', '.join(spec.outputs)}); "
                              f"choose a dense model for embeddings")
        if encoder is None and path is None:
            spec.check_dim(dimensions)  # a wrong dimension fails here, not at the first embed
        self.model = spec.name
        self._path, self._dimensions, self._settings = path, dimensions, settings
        self._encoder = encoder
        self._lock = threading.Lock()

    @property
    def encoder(self) -> Encoder:
        """The encoder (its model files load on its first encode)."""
        if self._encoder is None:
            with self._lock:
                if self._encoder is None:
                    self._encoder = load_encoder(self.model, path=self._path, dim=self._dimensions,
                                                 settings=self._settings)
        return self._encoder

    @property
    def dim(self) -> int:
        """The length of the vectors this backend returns."""
        return self.encoder.dim

    def embed(self, texts: Sequence[str], kind: Kind) -> list[Vector]:
        encoder = self.encoder
        encode = encoder.encode_queries if kind == "query" else encoder.encode_documents
        return [e.dense.tolist() for e in encode(list(texts), outputs=["dense"]) if e.dense is not None]

    async def aembed(self, texts: Sequence[str], kind: Kind) -> list[Vector]:
        return await asyncio.to_thread(self.embed, list(texts), kind)


class RemoteBackend:
    """An m3search server's OpenAI-compatible ``POST /v1/embeddings`` over httpx, with ``input_type`` set.

    Long input lists go in requests of ``batch_size`` texts. Errors become :class:`~m3search.errors.RemoteError`
    (unreachable, timed out, 5xx, a server that cannot apply prefixes) or
    :class:`~m3search.errors.RemoteRequestError` (4xx: a bad key, model, dimension or input).

    Args:
        base_url: the server's URL (``http://127.0.0.1:8000``; a trailing ``/v1`` is accepted).
        model: a model the server knows (default: the server's default model).
        api_key: sent as ``Authorization: Bearer ...`` (never in ``repr`` or errors).
        dimensions: a Matryoshka dimension of the model.
        timeout: seconds per request (connect + answer).
        batch_size: texts per request.
        extra: the extra that carries httpx here (named when it is missing).
    """

    def __init__(self, base_url: str, *, model: str | None = None, api_key: str | None = None,
                 dimensions: int | None = None, timeout: float = DEFAULT_TIMEOUT,
                 batch_size: int = DEFAULT_BATCH_SIZE, extra: str = "llm") -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"the m3search server URL must be http(s)://..., not {base_url!r}")
        if not timeout > 0 or batch_size < 1:
            raise ConfigError(f"timeout must be positive and batch_size at least 1, not {timeout}, {batch_size}")
        base = base_url.rstrip("/")
        self.base_url = base.removesuffix("/v1")
        self.model = model or ""
        self._api_key, self._dimensions = api_key, dimensions
        self.timeout, self.batch_size = timeout, batch_size
        self._httpx = require("httpx", extra, "Embedding through an m3search server")
        self._client: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # keeps the key out of logs
        return f"RemoteBackend(base_url={self.base_url!r}, model={self.model!r}, dimensions={self._dimensions})"

    def embed(self, texts: Sequence[str], kind: Kind) -> list[Vector]:
        with self._lock:
            if self._client is None:
                self._client = self._httpx.Client(timeout=self.timeout)
            client = self._client
        vectors: list[Vector] = []
        for chunk in self._chunks(texts):
            try:
                response = client.post(self._url, json=self._body(chunk, kind), headers=self._headers)
            except self._httpx.HTTPError as exc:
                raise self._transport_error(exc) from exc
            vectors.extend(self._vectors(response, len(chunk), kind))
        return vectors

    async def aembed(self, texts: Sequence[str], kind: Kind) -> list[Vector]:
        vectors: list[Vector] = []
        # one client per call: an AsyncClient belongs to the event loop it was made in, and callers may run several
        async with self._httpx.AsyncClient(timeout=self.timeout) as client:
            for chunk in self._chunks(texts):
                try:
                    response = await client.post(self._url, json=self._body(chunk, kind), headers=self._headers)
                except self._httpx.HTTPError as exc:
                    raise self._transport_error(exc) from exc
                vectors.extend(self._vectors(response, len(chunk), kind))
        return vectors

    def close(self) -> None:
        """Close the pooled connections of the sync client (a later call opens new ones)."""
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    @property
    def _url(self) -> str:
        return f"{self.base_url}/v1/embeddings"

    @property
    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    def _chunks(self, texts: Sequence[str]) -> list[list[str]]:
        items = list(texts)
        return [items[i: i + self.batch_size] for i in range(0, len(items), self.batch_size)]

    def _body(self, texts: list[str], kind: Kind) -> dict[str, Any]:
        body: dict[str, Any] = {"input": texts, "input_type": kind, "encoding_format": "float"}
        if self.model:
            body["model"] = self.model
        if self._dimensions is not None:
            body["dimensions"] = self._dimensions
        return body

    def _transport_error(self, exc: Exception) -> RemoteError:
        if isinstance(exc, self._httpx.TimeoutException):
            return RemoteError(f"m3search server {self.base_url} did not answer within {self.timeout:g} s; "
                               f"raise timeout= or send fewer texts per request (batch_size=)", code="timeout")
        return RemoteError(f"m3search server {self.base_url} is unreachable ({type(exc).__name__}); start it "
                           f"with 'm3search serve' or fix the URL", code="unreachable")

    def _vectors(self, response: Any, expected: int, kind: Kind) -> list[Vector]:
        where = f"m3search server {self.base_url}"
        status = int(response.status_code)
        if status >= 400:
            raise _status_error(where, status, response)
        try:
            body = response.json()
            rows = sorted(body["data"], key=lambda item: int(item["index"]))
            vectors = [[float(x) for x in row["embedding"]] for row in rows]
        except (ValueError, KeyError, TypeError) as exc:
            raise RemoteError(f"{where} answered something that is not an embeddings list", status=status) from exc
        if body.get("input_type") != kind:
            raise RemoteError(f"{where} does not apply query/document prefixes (no 'input_type' support: an older "
                              f"m3search or another server); upgrade it, or embed locally", status=status,
                              code="no_input_type")
        if len(vectors) != expected:
            raise RemoteError(f"{where} returned {len(vectors)} vectors for {expected} inputs", status=status)
        return vectors


def _status_error(where: str, status: int, response: Any) -> RemoteError:
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
