"""LangChain embeddings over m3search (``pip install 'm3search[langchain]'``).

::

    from langchain_core.vectorstores import InMemoryVectorStore
    from m3search.integrations.langchain import M3SearchEmbeddings

    embeddings = M3SearchEmbeddings(model="bge-m3")                      # in-process encoder
    embeddings = M3SearchEmbeddings(base_url="http://127.0.0.1:8000")   # an m3search server
    store = InMemoryVectorStore(embedding=embeddings)

    retriever = M3SearchRetriever(collection="docs", strategy="hybrid", k=5)  # an m3search collection
    retriever = M3SearchRetriever(collection="docs", base_url="http://127.0.0.1:8000")
    documents = retriever.invoke("how do wings stall?")

    from langchain_qdrant import QdrantVectorStore, RetrievalMode           # Qdrant hybrid with BGE-M3's sparse
    from m3search.integrations.langchain import M3SearchSparseEmbeddings

    store = QdrantVectorStore.from_texts(texts, embeddings, sparse_embedding=M3SearchSparseEmbeddings("bge-m3"),
                                         retrieval_mode=RetrievalMode.HYBRID, location=":memory:")

``M3SearchSparseEmbeddings`` (langchain-qdrant's ``SparseEmbeddings``) is imported on first use, so the other
adapters do not need langchain-qdrant.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from m3search._optional import require

require("langchain_core", "langchain", "The LangChain adapter")

from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun  # noqa: E402
from langchain_core.documents import Document  # noqa: E402
from langchain_core.embeddings import Embeddings  # noqa: E402
from langchain_core.retrievers import BaseRetriever  # noqa: E402
from pydantic import PrivateAttr  # noqa: E402

from m3search.integrations._backend import DEFAULT_BATCH_SIZE, Backend, LocalBackend, RemoteBackend  # noqa: E402
from m3search.integrations._http import DEFAULT_TIMEOUT  # noqa: E402
from m3search.integrations._search import SearchBackend, search_backend, search_request  # noqa: E402
from m3search.models.encoders.base import Encoder  # noqa: E402
from m3search.retrieval.search import Searcher  # noqa: E402
from m3search.retrieval.types import SearchHit  # noqa: E402

if TYPE_CHECKING:
    from m3search.integrations._langchain_sparse import M3SearchSparseEmbeddings

__all__ = ["M3SearchEmbeddings", "M3SearchRetriever", "M3SearchSparseEmbeddings"]


def __getattr__(name: str) -> Any:
    """``M3SearchSparseEmbeddings`` on first use (it needs langchain-qdrant, also in the ``langchain`` extra)."""
    if name == "M3SearchSparseEmbeddings":
        from m3search.integrations._langchain_sparse import M3SearchSparseEmbeddings

        return M3SearchSparseEmbeddings
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class M3SearchEmbeddings(Embeddings):
    """LangChain embeddings backed by m3search: ``embed_query`` applies the model's query prefix,
    ``embed_documents`` its document prefix.

    Without ``base_url`` it runs the model in this process (loaded on first use); with ``base_url`` it calls that
    m3search server's ``/v1/embeddings`` (``api_key`` as bearer token), ``batch_size`` texts per request.

    Args:
        model: registry name or Hugging Face repo id (default: ``M3SEARCH_DEFAULT_MODEL`` locally, the server's
            default model remotely).
        base_url: an m3search server's URL; None embeds locally.
        api_key: the server's API key.
        dimensions: a Matryoshka dimension of the model.
        timeout: seconds per server request.
        batch_size: texts per server request.
        model_path: a local directory with the model's files.
        encoder: a ready local encoder (tests, custom models).
    """

    def __init__(self, model: str | None = None, *, base_url: str | None = None, api_key: str | None = None,
                 dimensions: int | None = None, timeout: float = DEFAULT_TIMEOUT,
                 batch_size: int = DEFAULT_BATCH_SIZE, model_path: str | Path | None = None,
                 encoder: Encoder | None = None) -> None:
        self.backend: Backend
        if base_url is not None:
            self.backend = RemoteBackend(base_url, model=model, api_key=api_key, dimensions=dimensions,
                                         timeout=timeout, batch_size=batch_size, extra="langchain")
        else:
            self.backend = LocalBackend(model, path=model_path, dimensions=dimensions, encoder=encoder)
        self.model = self.backend.model

    def __repr__(self) -> str:
        return f"M3SearchEmbeddings(backend={self.backend!r})"

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Document vectors (document prefix), in input order."""
        return self.backend.embed(texts, "document")

    def embed_query(self, text: str) -> list[float]:
        """The query vector (query prefix)."""
        return self.backend.embed([text], "query")[0]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """:meth:`embed_documents` without blocking the event loop."""
        return await self.backend.aembed(texts, "document")

    async def aembed_query(self, text: str) -> list[float]:
        """:meth:`embed_query` without blocking the event loop."""
        return (await self.backend.aembed([text], "query"))[0]


class M3SearchRetriever(BaseRetriever):
    """A LangChain retriever over an m3search collection: any strategy (hybrid by default: dense + sparse fused),
    with metadata filters and reranking, in this process or through a server's ``/api/v1/search``.

    Each hit becomes a ``Document`` whose ``page_content`` is the chunk's text and whose ``metadata`` is the
    document's metadata plus ``document_id``, ``chunk_id``, ``score`` (the fused score), ``breakdown``
    (each retriever's ``{"rank", "score"}``) and, with ``group_by="document"`` (the default: one hit per
    document, its best chunk), ``other_chunks`` (the document's other matching chunks: id, ordinal, offsets,
    score).

    Args:
        collection: the collection's name.
        strategy: dense, sparse, bm25, colbert, hybrid, weighted, all or two_stage.
        k: hits to return.
        filters: metadata filters (``{"key": value}`` or ``{"key": [values]}``).
        base_url: an m3search server's URL; None searches locally.
        api_key: the server's API key.
        timeout: seconds per server request.
        searcher: a ready local Searcher.
        db: the local SQLite index file (default: ``M3SEARCH_DB``).
        store_url: a local store URL instead (Qdrant).
        model: the local query model (default: the collection's).
        **options: other :class:`~m3search.retrieval.types.SearchRequest` fields (``rrf_k``, ``weights``,
            ``candidates``, ``coarse_dim``, ``rerank``...).
    """

    collection: str
    base_url: str | None = None
    _backend: SearchBackend = PrivateAttr()

    def __init__(self, collection: str, *, strategy: str = "hybrid", k: int = 10,
                 filters: dict[str, Any] | None = None, base_url: str | None = None, api_key: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT, searcher: Searcher | None = None, db: str | Path | None = None,
                 store_url: str | None = None, model: str | None = None, **options: Any) -> None:
        backend = search_backend(collection, search_request(strategy, k, filters, options), base_url=base_url,
                                 api_key=api_key, timeout=timeout, searcher=searcher, db=db, store_url=store_url,
                                 model=model, extra="langchain")
        fields: dict[str, Any] = {"collection": collection, "base_url": base_url}
        super().__init__(**fields)
        self._backend = backend

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun
                                ) -> list[Document]:
        return [_document(hit) for hit in self._backend.search(query)]

    async def _aget_relevant_documents(self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun
                                       ) -> list[Document]:
        return [_document(hit) for hit in await self._backend.asearch(query)]

    def close(self) -> None:
        """Close the store this retriever opened, or its server connections."""
        self._backend.close()


def _document(hit: SearchHit) -> Document:
    breakdown = {name: {"rank": c.rank, "score": c.score} for name, c in hit.breakdown.items()}
    metadata = {**hit.metadata, "document_id": hit.document_id, "chunk_id": hit.chunk_id, "score": hit.score,
                "breakdown": breakdown}
    if hit.other_chunks is not None:  # group_by="document": the document's other matching chunks
        metadata["other_chunks"] = [c.as_dict() for c in hit.other_chunks]
    return Document(page_content=hit.text, metadata=metadata, id=f"{hit.document_id}#{hit.chunk_id}")
