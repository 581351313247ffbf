"""LlamaIndex embeddings over m3search (``pip install 'm3search[llamaindex]'``).

::

    from llama_index.core import VectorStoreIndex
    from m3search.integrations.llamaindex import M3SearchEmbedding

    embed_model = M3SearchEmbedding(model_name="bge-m3")                    # in-process encoder
    embed_model = M3SearchEmbedding(base_url="http://127.0.0.1:8000")      # an m3search server
    index = VectorStoreIndex.from_documents(documents, embed_model=embed_model)

    retriever = M3SearchRetriever("docs", strategy="hybrid", k=5)          # an m3search collection
    nodes = retriever.retrieve("how do wings stall?")

    from llama_index.vector_stores.qdrant import QdrantVectorStore         # Qdrant hybrid with BGE-M3's sparse
    from m3search.integrations.llamaindex import M3SearchSparseEmbedding

    sparse = M3SearchSparseEmbedding("bge-m3")                             # or base_url="http://127.0.0.1:8000"
    store = QdrantVectorStore("docs", client=client, enable_hybrid=True,
                              sparse_doc_fn=sparse.sparse_doc_fn, sparse_query_fn=sparse.sparse_query_fn)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from m3search._optional import require

require("llama_index.core", "llamaindex", "The LlamaIndex adapter")

from llama_index.core.base.base_retriever import BaseRetriever  # noqa: E402
from llama_index.core.base.embeddings.base import BaseEmbedding  # noqa: E402
from llama_index.core.base.embeddings.base_sparse import BaseSparseEmbedding, SparseEmbedding  # noqa: E402
from llama_index.core.callbacks import CallbackManager  # noqa: E402
from llama_index.core.schema import NodeRelationship, NodeWithScore, QueryBundle, RelatedNodeInfo, TextNode  # noqa: E402
from pydantic import Field, PrivateAttr  # noqa: E402

from m3search.integrations._backend import DEFAULT_BATCH_SIZE, Backend, LocalBackend, RemoteBackend  # noqa: E402
from m3search.integrations._http import DEFAULT_TIMEOUT  # noqa: E402
from m3search.integrations._search import SearchBackend, search_backend, search_request  # noqa: E402
from m3search.integrations._sparse import IdsAndWeights, SparseBackend, ids_and_weights, sparse_backend  # noqa: E402
from m3search.models.encoders.base import Encoder  # noqa: E402
from m3search.retrieval.search import Searcher  # noqa: E402
from m3search.retrieval.types import SearchHit  # noqa: E402

__all__ = ["M3SearchEmbedding", "M3SearchRetriever", "M3SearchSparseEmbedding"]
_HIT_KEYS = ["document_id", "chunk_id", "breakdown", "other_chunks"]


class M3SearchEmbedding(BaseEmbedding):
    """A LlamaIndex embedding model backed by m3search: queries get the model's query prefix, texts (nodes) its
    document prefix.

    Without ``base_url`` it runs the model in this process (loaded on first use); with ``base_url`` it calls that
    m3search server's ``/v1/embeddings`` (``api_key`` as bearer token).

    Args:
        model_name: registry name or Hugging Face repo id (default: ``M3SEARCH_DEFAULT_MODEL`` locally, the
            server's default model remotely).
        base_url: an m3search server's URL; None embeds locally.
        api_key: the server's API key.
        dimensions: a Matryoshka dimension of the model.
        timeout: seconds per server request.
        model_path: a local directory with the model's files.
        encoder: a ready local encoder (tests, custom models).
        **kwargs: LlamaIndex's own fields (``embed_batch_size``, ``callback_manager``, ...).
    """

    base_url: str | None = Field(default=None, description="m3search server URL; None embeds in this process")
    api_key: str | None = Field(default=None, description="the server's API key", repr=False, exclude=True)
    dimensions: int | None = Field(default=None, description="a Matryoshka dimension of the model")
    timeout: float = Field(default=DEFAULT_TIMEOUT, gt=0, description="seconds per server request")
    embed_batch_size: int = Field(default=DEFAULT_BATCH_SIZE, gt=0, le=2048, description="texts per batch")
    _backend: Backend = PrivateAttr()

    def __init__(self, model_name: str | None = None, *, base_url: str | None = None, api_key: str | None = None,
                 dimensions: int | None = None, timeout: float = DEFAULT_TIMEOUT,
                 model_path: str | Path | None = None, encoder: Encoder | None = None, **kwargs: Any) -> None:
        backend: Backend
        if base_url is not None:
            backend = RemoteBackend(base_url, model=model_name, api_key=api_key, dimensions=dimensions,
                                    timeout=timeout, batch_size=kwargs.get("embed_batch_size", DEFAULT_BATCH_SIZE),
                                    extra="llamaindex")
        else:
            backend = LocalBackend(model_name, path=model_path, dimensions=dimensions, encoder=encoder)
        fields: dict[str, Any] = {"base_url": base_url, "api_key": api_key, "dimensions": dimensions,
                                  "timeout": timeout}  # this class's own fields (BaseEmbedding's init lacks them)
        super().__init__(model_name=backend.model or "server-default", **fields, **kwargs)
        self._backend = backend

    @classmethod
    def class_name(cls) -> str:
        return "M3SearchEmbedding"

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._backend.embed([query], "query")[0]

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return (await self._backend.aembed([query], "query"))[0]

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._backend.embed([text], "document")[0]

    async def _aget_text_embedding(self, text: str) -> list[float]:
        return (await self._backend.aembed([text], "document"))[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._backend.embed(texts, "document")

    async def _aget_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return await self._backend.aembed(texts, "document")


class M3SearchSparseEmbedding(BaseSparseEmbedding):
    """A LlamaIndex sparse embedding backed by m3search: BGE-M3's lexical weights or SPLADE's, the vectors
    m3search indexes itself (``{token id: weight}``); queries get the model's query prefix, texts its document one.

    :meth:`sparse_doc_fn` and :meth:`sparse_query_fn` are the hooks of LlamaIndex's ``QdrantVectorStore`` hybrid
    mode (``enable_hybrid=True, sparse_doc_fn=..., sparse_query_fn=...``): token ids and weights per text.

    Without ``base_url`` it runs the model in this process (loaded on first use); with ``base_url`` it calls that
    m3search server's ``/api/v1/encode`` (``api_key`` as bearer token).

    Args:
        model_name: a model with sparse output (``bge-m3``, ``splade-tiny``, ...; default:
            ``M3SEARCH_DEFAULT_MODEL`` locally, the server's default model remotely).
        base_url: an m3search server's URL; None encodes locally.
        api_key: the server's API key.
        timeout: seconds per server request.
        model_path: a local directory with the model's files.
        encoder: a ready local encoder (tests, custom models).
        **kwargs: LlamaIndex's own fields (``embed_batch_size``, ...).
    """

    base_url: str | None = Field(default=None, description="m3search server URL; None encodes in this process")
    api_key: str | None = Field(default=None, description="the server's API key", repr=False, exclude=True)
    timeout: float = Field(default=DEFAULT_TIMEOUT, gt=0, description="seconds per server request")
    embed_batch_size: int = Field(default=DEFAULT_BATCH_SIZE, gt=0, le=2048, description="texts per batch")
    _backend: SparseBackend = PrivateAttr()

    def __init__(self, model_name: str | None = None, *, base_url: str | None = None, api_key: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT, model_path: str | Path | None = None,
                 encoder: Encoder | None = None, **kwargs: Any) -> None:
        backend = sparse_backend(model_name, base_url=base_url, api_key=api_key, timeout=timeout,
                                 batch_size=kwargs.get("embed_batch_size", DEFAULT_BATCH_SIZE),
                                 model_path=model_path, encoder=encoder, extra="llamaindex")
        fields: dict[str, Any] = {"base_url": base_url, "api_key": api_key, "timeout": timeout}
        super().__init__(model_name=backend.model or "server-default", **fields, **kwargs)
        self._backend = backend

    @classmethod
    def class_name(cls) -> str:
        return "M3SearchSparseEmbedding"

    def sparse_doc_fn(self, texts: list[str]) -> IdsAndWeights:
        """``QdrantVectorStore``'s ``sparse_doc_fn``: the documents' token ids and weights (document prefix)."""
        return ids_and_weights(self._backend.embed(texts, "document"))

    def sparse_query_fn(self, texts: list[str]) -> IdsAndWeights:
        """``QdrantVectorStore``'s ``sparse_query_fn``: the queries' token ids and weights (query prefix)."""
        return ids_and_weights(self._backend.embed(texts, "query"))

    def _get_query_embedding(self, query: str) -> SparseEmbedding:
        return self._backend.embed([query], "query")[0].to_dict()

    async def _aget_query_embedding(self, query: str) -> SparseEmbedding:
        return (await self._backend.aembed([query], "query"))[0].to_dict()

    def _get_text_embedding(self, text: str) -> SparseEmbedding:
        return self._backend.embed([text], "document")[0].to_dict()

    async def _aget_text_embedding(self, text: str) -> SparseEmbedding:
        return (await self._backend.aembed([text], "document"))[0].to_dict()

    def _get_text_embeddings(self, texts: list[str]) -> list[SparseEmbedding]:
        return [v.to_dict() for v in self._backend.embed(texts, "document")]

    async def _aget_text_embeddings(self, texts: list[str]) -> list[SparseEmbedding]:
        return [v.to_dict() for v in await self._backend.aembed(texts, "document")]


class M3SearchRetriever(BaseRetriever):
    """A LlamaIndex retriever over an m3search collection: any strategy (hybrid by default: dense + sparse fused),
    with metadata filters and reranking, in this process or through a server's ``/api/v1/search``.

    Each hit becomes a ``NodeWithScore``: a ``TextNode`` (id ``document_id#chunk_id``, the chunk's text, the
    document's metadata plus ``document_id``, ``chunk_id``, ``breakdown`` and, with ``group_by="document"``
    (the default: one hit per document, its best chunk), ``other_chunks``, all kept out of the LLM's and the
    embedder's view; its SOURCE relationship is the document) with the fused score.

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
        callback_manager: LlamaIndex's callback manager.
        **options: other :class:`~m3search.retrieval.types.SearchRequest` fields (``rrf_k``, ``weights``,
            ``candidates``, ``coarse_dim``, ``rerank``...).
    """

    def __init__(self, collection: str, *, strategy: str = "hybrid", k: int = 10,
                 filters: dict[str, Any] | None = None, base_url: str | None = None, api_key: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT, searcher: Searcher | None = None, db: str | Path | None = None,
                 store_url: str | None = None, model: str | None = None,
                 callback_manager: CallbackManager | None = None, **options: Any) -> None:
        self.backend: SearchBackend = search_backend(
            collection, search_request(strategy, k, filters, options), base_url=base_url, api_key=api_key,
            timeout=timeout, searcher=searcher, db=db, store_url=store_url, model=model, extra="llamaindex")
        super().__init__(callback_manager=callback_manager)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return [_node(hit) for hit in self.backend.search(query_bundle.query_str)]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return [_node(hit) for hit in await self.backend.asearch(query_bundle.query_str)]

    def close(self) -> None:
        """Close the store this retriever opened, or its server connections."""
        self.backend.close()


def _node(hit: SearchHit) -> NodeWithScore:
    breakdown = {name: {"rank": c.rank, "score": c.score} for name, c in hit.breakdown.items()}
    metadata = {**hit.metadata, "document_id": hit.document_id, "chunk_id": hit.chunk_id, "breakdown": breakdown}
    if hit.other_chunks is not None:  # group_by="document": the document's other matching chunks
        metadata["other_chunks"] = [c.as_dict() for c in hit.other_chunks]
    node = TextNode(id_=f"{hit.document_id}#{hit.chunk_id}", text=hit.text, metadata=metadata,
                    excluded_llm_metadata_keys=_HIT_KEYS, excluded_embed_metadata_keys=_HIT_KEYS,
                    relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=hit.document_id)})
    return NodeWithScore(node=node, score=hit.score)
