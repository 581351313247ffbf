"""The two embedding backends behind the adapters: the local encoder, and an m3search server's ``/v1/embeddings``.

Both embed queries with the model's query prefix and documents with its document prefix, and return dense vectors
as lists of floats (what LlamaIndex and LangChain expect).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from m3search.errors import ConfigError, RemoteError
from m3search.integrations._http import DEFAULT_TIMEOUT, ServerClient
from m3search.lazy import Lazy
from m3search.models.encoders.base import Encoder, Kind
from m3search.models.encoders.loader import load_encoder
from m3search.models.local import lookup_spec
from m3search.settings import Settings, get_settings
from m3search.types import Embedding, Output

Vector = list[float]
DEFAULT_BATCH_SIZE = 64
PATH = "/v1/embeddings"


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
    """The in-process encoder, built on first use (thread-safe) by
    :func:`~m3search.models.encoders.loader.load_encoder`.

    Args:
        model: registry name or Hugging Face repo id (default: ``M3SEARCH_DEFAULT_MODEL``).
        path: a directory with the model's files (skips resolution).
        dimensions: a Matryoshka dimension of the model (default: its full dimension).
        encoder: an encoder to use as is (then ``model``, ``path`` and ``dimensions`` are not used).
        settings: explicit settings (default: read from the environment on first use).
        output: the model output this backend gives (``dense``, or ``sparse`` for the sparse adapters).
    """

    def __init__(self, model: str | None = None, *, path: str | Path | None = None, dimensions: int | None = None,
                 encoder: Encoder | None = None, settings: Settings | None = None, output: Output = "dense") -> None:
        chosen = model or (settings or get_settings()).default_model
        spec = encoder.spec if encoder is not None else lookup_spec(chosen, settings)
        if output not in spec.outputs:
            hint = "a dense model for embeddings" if output == "dense" else \
                f"a model with {output} output (BGE-M3, SPLADE)"
            raise ConfigError(f"model '{spec.name}' has no {output} vectors (it produces {', '.join(spec.outputs)}); "
                              f"choose {hint}")
        self.output = output
        if encoder is None and path is None:
            spec.check_dim(dimensions)  # a wrong dimension fails here, not at the first embed
        self.model = spec.name
        self._path, self._dimensions, self._settings = path, dimensions, settings
        self._encoder = Lazy(self._load)
        if encoder is not None:
            self._encoder.set(encoder)

    @property
    def encoder(self) -> Encoder:
        """The encoder (its model files load on its first encode)."""
        return self._encoder.get()

    def _load(self) -> Encoder:
        return load_encoder(self.model, path=self._path, dim=self._dimensions, settings=self._settings)

    @property
    def dim(self) -> int:
        """The length of the vectors this backend returns."""
        return self.encoder.dim

    def encode(self, texts: Sequence[str], kind: Kind) -> list[Embedding]:
        """Embeddings of ``texts`` with this backend's output only, with the prefix of ``kind``."""
        encoder = self.encoder
        encode = encoder.encode_queries if kind == "query" else encoder.encode_documents
        return encode(list(texts), outputs=[self.output])

    def embed(self, texts: Sequence[str], kind: Kind) -> list[Vector]:
        return [e.dense.tolist() for e in self.encode(texts, kind) if e.dense is not None]

    async def aembed(self, texts: Sequence[str], kind: Kind) -> list[Vector]:
        return await asyncio.to_thread(self.embed, list(texts), kind)


class RemoteBackend:
    """An m3search server's OpenAI-compatible ``POST /v1/embeddings`` with ``input_type`` set (the m3search
    extension that applies the model's query or document prefix; a server that does not echo it is refused).

    Long input lists go in requests of ``batch_size`` texts; errors are those of
    :class:`~m3search.integrations._http.ServerClient`.

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
        check_batch_size(batch_size)
        self.client = ServerClient(base_url, api_key=api_key, timeout=timeout, extra=extra)
        self.model = model or ""
        self.batch_size = batch_size
        self._dimensions = dimensions

    def __repr__(self) -> str:  # keeps the key out of logs
        return (f"RemoteBackend(base_url={self.client.base_url!r}, model={self.model!r}, "
                f"dimensions={self._dimensions})")

    def embed(self, texts: Sequence[str], kind: Kind) -> list[Vector]:
        vectors: list[Vector] = []
        with self.client.sync_session() as post:
            for chunk in self._chunks(texts):
                vectors.extend(self._vectors(post(PATH, self._body(chunk, kind)), len(chunk), kind))
        return vectors

    async def aembed(self, texts: Sequence[str], kind: Kind) -> list[Vector]:
        vectors: list[Vector] = []
        async with self.client.session() as post:
            for chunk in self._chunks(texts):
                vectors.extend(self._vectors(await post(PATH, self._body(chunk, kind)), len(chunk), kind))
        return vectors

    def _chunks(self, texts: Sequence[str]) -> list[list[str]]:
        return batches(texts, self.batch_size)

    def _body(self, texts: list[str], kind: Kind) -> dict[str, Any]:
        body: dict[str, Any] = {"input": texts, "input_type": kind, "encoding_format": "float"}
        if self.model:
            body["model"] = self.model
        if self._dimensions is not None:
            body["dimensions"] = self._dimensions
        return body

    def _vectors(self, body: Any, expected: int, kind: Kind) -> list[Vector]:
        where = f"m3search server {self.client.base_url}"
        try:
            rows = sorted(body["data"], key=lambda item: int(item["index"]))
            vectors = [[float(x) for x in row["embedding"]] for row in rows]
            echoed = body.get("input_type")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise RemoteError(f"{where} answered something that is not an embeddings list") from exc
        if echoed != kind:
            raise RemoteError(f"{where} does not apply query/document prefixes (no 'input_type' support: an older "
                              f"m3search or another server); upgrade it, or embed locally", code="no_input_type")
        if len(vectors) != expected:
            raise RemoteError(f"{where} returned {len(vectors)} vectors for {expected} inputs")
        return vectors


def check_batch_size(batch_size: object) -> None:
    """:class:`ConfigError` unless ``batch_size`` is a positive integer."""
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, not {batch_size!r}")


def batches(texts: Sequence[str], size: int) -> list[list[str]]:
    """``texts`` in lists of at most ``size``, in order (one request each)."""
    items = list(texts)
    return [items[i: i + size] for i in range(0, len(items), size)]
