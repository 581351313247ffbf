"""The two sparse backends behind the sparse adapters: lexical weights (BGE-M3's sparse head, SPLADE) from the local
encoder, or from an m3search server's ``/api/v1/encode``.

Both return :class:`~m3search.types.SparseVector` (token ids ascending, weights > 0), the vectors m3search itself
indexes and searches; the adapters turn them into each framework's form.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from m3search.errors import RemoteError
from m3search.integrations._backend import DEFAULT_BATCH_SIZE, LocalBackend, batches, check_batch_size
from m3search.integrations._http import DEFAULT_TIMEOUT, ServerClient
from m3search.models.encoders.base import Encoder, Kind
from m3search.settings import Settings
from m3search.types import SparseVector

ENCODE_PATH = "/api/v1/encode"
IdsAndWeights = tuple[list[list[int]], list[list[float]]]


class SparseBackend(Protocol):
    """What a sparse adapter needs: one model name and sync + async sparse encoding of queries or documents."""

    model: str

    def embed(self, texts: Sequence[str], kind: Kind) -> list[SparseVector]:
        """Sparse vectors of ``texts`` in input order, with the prefix of ``kind``."""
        ...

    async def aembed(self, texts: Sequence[str], kind: Kind) -> list[SparseVector]:
        """The same as :meth:`embed`, without blocking the event loop."""
        ...


class LocalSparseBackend:
    """The in-process encoder's sparse output (built on first use); the model must have one (BGE-M3, SPLADE),
    else :class:`~m3search.errors.ConfigError` here.

    Args:
        model: registry name or Hugging Face repo id (default: ``M3SEARCH_DEFAULT_MODEL``).
        path: a directory with the model's files (skips resolution).
        encoder: an encoder to use as is.
        settings: explicit settings (default: read from the environment on first use).
    """

    def __init__(self, model: str | None = None, *, path: str | Path | None = None, encoder: Encoder | None = None,
                 settings: Settings | None = None) -> None:
        self._local = LocalBackend(model, path=path, encoder=encoder, settings=settings, output="sparse")
        self.model = self._local.model

    def __repr__(self) -> str:
        return f"LocalSparseBackend(model={self.model!r})"

    @property
    def encoder(self) -> Encoder:
        """The encoder (its model files load on its first encode)."""
        return self._local.encoder

    def embed(self, texts: Sequence[str], kind: Kind) -> list[SparseVector]:
        return [e.sparse for e in self._local.encode(texts, kind) if e.sparse is not None]

    async def aembed(self, texts: Sequence[str], kind: Kind) -> list[SparseVector]:
        return await asyncio.to_thread(self.embed, list(texts), kind)


class RemoteSparseBackend:
    """An m3search server's ``POST /api/v1/encode`` with ``outputs: ["sparse"]`` and ``kind`` (the model's query or
    document prefix), ``batch_size`` texts per request; errors are those of
    :class:`~m3search.integrations._http.ServerClient` (a model without sparse output is the server's 4xx).

    Args:
        base_url: the server's URL (``http://127.0.0.1:8000``).
        model: a model the server knows (default: the server's default model).
        api_key: sent as ``Authorization: Bearer ...`` (never in ``repr`` or errors).
        timeout: seconds per request (connect + answer).
        batch_size: texts per request.
        extra: the extra that carries httpx here (named when it is missing).
    """

    def __init__(self, base_url: str, *, model: str | None = None, api_key: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT, batch_size: int = DEFAULT_BATCH_SIZE, extra: str = "llm") -> None:
        check_batch_size(batch_size)
        self.client = ServerClient(base_url, api_key=api_key, timeout=timeout, extra=extra)
        self.model = model or ""
        self.batch_size = batch_size

    def __repr__(self) -> str:  # keeps the key out of logs
        return f"RemoteSparseBackend(base_url={self.client.base_url!r}, model={self.model!r})"

    def embed(self, texts: Sequence[str], kind: Kind) -> list[SparseVector]:
        vectors: list[SparseVector] = []
        with self.client.sync_session() as post:
            for chunk in batches(texts, self.batch_size):
                vectors.extend(self._vectors(post(ENCODE_PATH, self._body(chunk, kind)), len(chunk)))
        return vectors

    async def aembed(self, texts: Sequence[str], kind: Kind) -> list[SparseVector]:
        vectors: list[SparseVector] = []
        async with self.client.session() as post:
            for chunk in batches(texts, self.batch_size):
                vectors.extend(self._vectors(await post(ENCODE_PATH, self._body(chunk, kind)), len(chunk)))
        return vectors

    def _body(self, texts: list[str], kind: Kind) -> dict[str, Any]:
        body: dict[str, Any] = {"texts": texts, "outputs": ["sparse"], "kind": kind}
        if self.model:
            body["model"] = self.model
        return body

    def _vectors(self, body: Any, expected: int) -> list[SparseVector]:
        where = f"m3search server {self.client.base_url}"
        try:
            rows = sorted(body["data"], key=lambda item: int(item["index"]))
            vectors = [SparseVector(np.asarray(row["sparse"]["indices"], dtype=np.int64),
                                    np.asarray(row["sparse"]["values"], dtype=np.float32)) for row in rows]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise RemoteError(f"{where} answered something that is not a list of sparse vectors") from exc
        if len(vectors) != expected or any(len(v.indices) != len(v.values) for v in vectors):
            raise RemoteError(f"{where} returned {len(vectors)} sparse vectors for {expected} inputs")
        return vectors


def sparse_backend(model: str | None, *, base_url: str | None, api_key: str | None, timeout: float,
                   batch_size: int, model_path: str | Path | None, encoder: Encoder | None,
                   extra: str) -> LocalSparseBackend | RemoteSparseBackend:
    """A :class:`RemoteSparseBackend` when ``base_url`` is given, else a :class:`LocalSparseBackend`."""
    if base_url is not None:
        return RemoteSparseBackend(base_url, model=model, api_key=api_key, timeout=timeout, batch_size=batch_size,
                                   extra=extra)
    return LocalSparseBackend(model, path=model_path, encoder=encoder)


def ids_and_weights(vectors: Sequence[SparseVector]) -> IdsAndWeights:
    """The form of LlamaIndex's Qdrant ``sparse_doc_fn`` / ``sparse_query_fn``: token ids and weights per text."""
    return ([[int(i) for i in v.indices] for v in vectors], [[float(x) for x in v.values] for v in vectors])
