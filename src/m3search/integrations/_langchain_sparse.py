"""``M3SearchSparseEmbeddings``: langchain-qdrant's ``SparseEmbeddings`` over m3search (imported lazily by
:mod:`m3search.integrations.langchain`, so that the dense adapter does not need langchain-qdrant)."""

from __future__ import annotations

from pathlib import Path

from m3search._optional import require

require("langchain_qdrant", "langchain", "The LangChain sparse adapter")

from langchain_qdrant import SparseEmbeddings, SparseVector  # noqa: E402

from m3search.integrations._backend import DEFAULT_BATCH_SIZE  # noqa: E402
from m3search.integrations._http import DEFAULT_TIMEOUT  # noqa: E402
from m3search.integrations._sparse import SparseBackend, sparse_backend  # noqa: E402
from m3search.models.encoders.base import Encoder  # noqa: E402
from m3search.types import SparseVector as M3SparseVector  # noqa: E402


class M3SearchSparseEmbeddings(SparseEmbeddings):
    """langchain-qdrant sparse embeddings backed by m3search: BGE-M3's lexical weights or SPLADE's, the vectors
    m3search indexes itself (token id -> weight). Give it to ``QdrantVectorStore(..., sparse_embedding=...,
    retrieval_mode=RetrievalMode.HYBRID)`` (or ``SPARSE``).

    Without ``base_url`` it runs the model in this process (loaded on first use); with ``base_url`` it calls that
    m3search server's ``/api/v1/encode`` (``api_key`` as bearer token), ``batch_size`` texts per request.

    Args:
        model: a model with sparse output (``bge-m3``, ``splade-tiny``, ...; default: ``M3SEARCH_DEFAULT_MODEL``
            locally, the server's default model remotely).
        base_url: an m3search server's URL; None encodes locally.
        api_key: the server's API key.
        timeout: seconds per server request.
        batch_size: texts per server request.
        model_path: a local directory with the model's files.
        encoder: a ready local encoder (tests, custom models).
    """

    def __init__(self, model: str | None = None, *, base_url: str | None = None, api_key: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT, batch_size: int = DEFAULT_BATCH_SIZE,
                 model_path: str | Path | None = None, encoder: Encoder | None = None) -> None:
        self.backend: SparseBackend = sparse_backend(model, base_url=base_url, api_key=api_key, timeout=timeout,
                                                     batch_size=batch_size, model_path=model_path,
                                                     encoder=encoder, extra="langchain")
        self.model = self.backend.model

    def __repr__(self) -> str:
        return f"M3SearchSparseEmbeddings(backend={self.backend!r})"

    def embed_documents(self, texts: list[str]) -> list[SparseVector]:
        """Document sparse vectors (document prefix), in input order."""
        return [_vector(v) for v in self.backend.embed(texts, "document")]

    def embed_query(self, text: str) -> SparseVector:
        """The query's sparse vector (query prefix)."""
        return _vector(self.backend.embed([text], "query")[0])

    async def aembed_documents(self, texts: list[str]) -> list[SparseVector]:
        """:meth:`embed_documents` without blocking the event loop."""
        return [_vector(v) for v in await self.backend.aembed(texts, "document")]

    async def aembed_query(self, text: str) -> SparseVector:
        """:meth:`embed_query` without blocking the event loop."""
        return _vector((await self.backend.aembed([text], "query"))[0])


def _vector(vector: M3SparseVector) -> SparseVector:
    return SparseVector(indices=[int(i) for i in vector.indices], values=[float(x) for x in vector.values])
