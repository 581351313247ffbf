"""The sparse adapters (LangChain's ``SparseEmbeddings``, LlamaIndex's sparse embedding and its Qdrant
``sparse_doc_fn`` / ``sparse_query_fn``) with the fake three-output encoder: the vectors equal m3search's own, locally
and through a real server's ``/api/v1/encode``; both frameworks' Qdrant vector stores (qdrant-client's local mode)
store them and search in hybrid mode. The real models (tiny BGE-M3, SPLADE-tiny) are in tests/slow."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from m3search.errors import ConfigError, RemoteError, RemoteRequestError
from m3search.integrations.langchain import M3SearchEmbeddings, M3SearchSparseEmbeddings
from m3search.integrations.llamaindex import M3SearchEmbedding, M3SearchSparseEmbedding
from m3search.models.encoders.base import Encoder
from m3search.models.registry import get_spec
from m3search.store.sqlite import SQLiteStore
from m3search.store.types import Document
from m3search.types import SparseVector
from tests.conftest import FAKE_M3_SPEC, FakeM3Encoder

TEXTS = ["the wing flow stays laminar", "heat transfer at high speed", "shock waves in supersonic flow",
         "a dog runs fast", "the cat sat on the mat", "boundary layer flow over a flat plate", "x"]
QUERY = "supersonic shock waves"
WIDE = "supersonic flow over the wing"  # shares words with several texts: a sparse ranking of several hits


def _fake(spec: Any = FAKE_M3_SPEC) -> Encoder:
    return FakeM3Encoder(spec)


def _pairs(vectors: list[SparseVector]) -> list[dict[int, float]]:
    return [v.to_dict() for v in vectors]


def _m3_documents(encoder: Encoder | None = None) -> list[dict[int, float]]:
    return _pairs([e.sparse for e in (encoder or _fake()).encode_documents(TEXTS, outputs=["sparse"])])


def _m3_query(text: str, encoder: Encoder | None = None) -> dict[int, float]:
    return _pairs([e.sparse for e in (encoder or _fake()).encode_queries([text], outputs=["sparse"])])[0]




def _chain_pairs(vectors: list[Any]) -> list[dict[int, float]]:
    return [dict(zip(v.indices, v.values, strict=True)) for v in vectors]


def _llama_pairs(ids_weights: tuple[list[list[int]], list[list[float]]]) -> list[dict[int, float]]:
    return [dict(zip(i, w, strict=True)) for i, w in zip(*ids_weights, strict=True)]


def test_local_sparse_vectors_equal_the_encoders_with_prefixes() -> None:
    prefixed = replace(get_spec("nomic-embed-text-v1.5"), max_tokens=64, outputs=("dense", "sparse"))
    chain = M3SearchSparseEmbeddings(encoder=_fake(prefixed))
    llama = M3SearchSparseEmbedding(encoder=_fake(prefixed), embed_batch_size=3)
    documents, query = _m3_documents(_fake(prefixed)), _m3_query(QUERY, _fake(prefixed))
    assert _m3_query(TEXTS[0], _fake(prefixed)) != documents[0]  # the query prefix changes the weights
    assert chain.model == llama.model_name == prefixed.name
    assert _chain_pairs(chain.embed_documents(TEXTS)) == documents
    assert _chain_pairs([chain.embed_query(QUERY)]) == [query]
    assert llama.get_text_embedding_batch(TEXTS) == documents
    assert llama.get_query_embedding(QUERY) == query and llama.get_text_embedding(TEXTS[1]) == documents[1]
    assert _llama_pairs(llama.sparse_doc_fn(TEXTS)) == documents
    assert _llama_pairs(llama.sparse_query_fn([QUERY, TEXTS[0]])) == [query, _m3_query(TEXTS[0], _fake(prefixed))]
    ids, weights = llama.sparse_doc_fn(TEXTS[:1])
    assert all(type(i) is int for i in ids[0]) and all(type(w) is float for w in weights[0])  # plain numbers

    async def both() -> tuple[Any, ...]:
        return (await chain.aembed_documents(TEXTS), await chain.aembed_query(QUERY),
                await llama.aget_text_embedding_batch(TEXTS), await llama.aget_query_embedding(QUERY))

    chain_docs, chain_query, llama_docs, llama_query = asyncio.run(both())
    assert _chain_pairs(chain_docs) == documents == llama_docs and _chain_pairs([chain_query]) == [query]
    assert llama_query == query


def test_models_without_sparse_output_are_refused() -> None:
    for make in (lambda: M3SearchSparseEmbeddings(model="all-minilm-l6-v2"),
                 lambda: M3SearchSparseEmbedding("all-minilm-l6-v2"),
                 lambda: M3SearchSparseEmbeddings(encoder=_fake(get_spec("hash")))):
        with pytest.raises(ConfigError, match=r"has no sparse vectors .*\(BGE-M3, SPLADE\)"):
            make()
    lazy = M3SearchSparseEmbeddings(model="bge-m3")  # nothing loads before the first embed
    assert not lazy.backend._local._encoder.loaded  # type: ignore[attr-defined]


def test_remote_sparse_vectors_equal_local_ones(serve: Callable[..., AbstractContextManager[str]]) -> None:
    documents, query = _m3_documents(), _m3_query(QUERY)
    with serve(api_keys=["k-one"]) as url:
        chain = M3SearchSparseEmbeddings("hash", base_url=url, api_key="k-one", batch_size=3)  # 3 requests
        llama = M3SearchSparseEmbedding(base_url=url, api_key="k-one", embed_batch_size=2)  # the default model
        assert "k-one" not in repr(chain) and "k-one" not in repr(llama.__dict__.get("_backend"))
        assert _chain_pairs(chain.embed_documents(TEXTS)) == documents
        assert _chain_pairs([chain.embed_query(QUERY)]) == [query]
        assert llama.get_text_embedding_batch(TEXTS) == documents and llama.get_query_embedding(QUERY) == query
        assert _llama_pairs(llama.sparse_doc_fn(TEXTS)) == documents
        assert _llama_pairs(llama.sparse_query_fn([QUERY])) == [query]
        assert _chain_pairs(asyncio.run(chain.aembed_documents(TEXTS))) == documents
        assert asyncio.run(llama.aget_query_embedding(QUERY)) == query
        with pytest.raises(RemoteRequestError, match="HTTP 401"):
            M3SearchSparseEmbeddings("hash", base_url=url).embed_query(QUERY)
        with pytest.raises(RemoteRequestError, match="HTTP 4"):  # the server's model has no sparse output
            M3SearchSparseEmbedding("all-minilm-l6-v2", base_url=url, api_key="k-one").get_query_embedding(QUERY)
    with pytest.raises(RemoteError, match="unreachable"):
        M3SearchSparseEmbeddings("hash", base_url=url, api_key="k-one").embed_documents(TEXTS)
    with pytest.raises(ConfigError, match="batch_size"):
        M3SearchSparseEmbeddings("hash", base_url=url, batch_size=0)


def _indexed_sparse(tmp_path: Path) -> dict[str, dict[int, float]]:
    """The sparse vectors m3search itself stores for TEXTS (documents t0..t6), by text."""
    from m3search.ingest.pipeline import index_documents

    with SQLiteStore(tmp_path / "m3.sqlite3") as store:
        index_documents(store, _fake(), "kb", [Document(f"t{i}", t, "test") for i, t in enumerate(TEXTS)])
        target = store.active_set("kb")
        rows = store.sparse_rows(target)
        by_chunk = {int(c): SparseVector(rows.indices[a:b], rows.values[a:b]).to_dict()
                    for c, a, b in zip(rows.chunk_ids, rows.indptr[:-1], rows.indptr[1:], strict=True)}
        texts = {h.chunk_id: h.text for h in store.hits([(c, 0.0) for c in by_chunk], "kb")}
    return {texts[c]: vector for c, vector in by_chunk.items()}


def _lexical_top(stored: dict[str, dict[int, float]], text: str, k: int) -> dict[str, float]:
    """The top ``k`` texts by m3search's lexical score (sum of weight products) for query ``text``; no ties."""
    query = _m3_query(text)
    scores = sorted(((sum(w * stored[t].get(i, 0.0) for i, w in query.items()), t) for t in TEXTS), reverse=True)
    top = [(s, t) for s, t in scores if s > 0]
    assert len(top) > k and top[k - 1][0] > top[k][0]  # a ranking of several hits, the cut not at a tie
    return {t: s for s, t in top[:k]}


def _close(weights: dict[int, float], expected: dict[int, float]) -> bool:
    return set(weights) == set(expected) and all(abs(weights[i] - expected[i]) < 1e-6 for i in expected)


def test_langchain_qdrant_hybrid_stores_m3searchs_sparse_vectors(tmp_path: Path) -> None:
    from langchain_qdrant import QdrantVectorStore, RetrievalMode

    stored = _indexed_sparse(tmp_path)
    store = QdrantVectorStore.from_texts(TEXTS, M3SearchEmbeddings(encoder=_fake()), location=":memory:",
                                         sparse_embedding=M3SearchSparseEmbeddings(encoder=_fake()),
                                         retrieval_mode=RetrievalMode.HYBRID, collection_name="kb")
    points, _ = store.client.scroll("kb", limit=100, with_vectors=True)
    assert len(points) == len(TEXTS)
    for point in points:
        sparse = point.vector[store.sparse_vector_name]  # type: ignore[index]
        text = point.payload["page_content"]  # type: ignore[index]
        assert _close(dict(zip(sparse.indices, sparse.values, strict=True)), stored[text]), text
    assert store.similarity_search(QUERY, k=1)[0].page_content == TEXTS[2]
    sparse_only = QdrantVectorStore(store.client, "kb", sparse_embedding=store.sparse_embeddings,
                                    retrieval_mode=RetrievalMode.SPARSE)
    found = sparse_only.similarity_search_with_score(WIDE, k=3)
    assert {d.page_content: s for d, s in found} == pytest.approx(_lexical_top(stored, WIDE, 3), rel=1e-5)


def test_llamaindex_qdrant_hybrid_stores_m3searchs_sparse_vectors(tmp_path: Path) -> None:
    from llama_index.core import Settings as LlamaSettings
    from llama_index.core import StorageContext, VectorStoreIndex
    from llama_index.core.schema import TextNode
    from llama_index.vector_stores.qdrant import QdrantVectorStore
    from qdrant_client import QdrantClient

    stored = _indexed_sparse(tmp_path)
    client = QdrantClient(":memory:")
    sparse = M3SearchSparseEmbedding(encoder=_fake())
    store = QdrantVectorStore("kb", client=client, enable_hybrid=True, batch_size=4,
                              sparse_doc_fn=sparse.sparse_doc_fn, sparse_query_fn=sparse.sparse_query_fn)
    LlamaSettings.llm = None
    index = VectorStoreIndex([TextNode(text=t) for t in TEXTS], embed_model=M3SearchEmbedding(encoder=_fake()),
                             storage_context=StorageContext.from_defaults(vector_store=store))
    points, _ = client.scroll("kb", limit=100, with_vectors=True)
    assert len(points) == len(TEXTS)
    for point in points:
        vector = point.vector[store.sparse_vector_name]  # type: ignore[index]
        text = next(t for t in TEXTS if f'"text": "{t}"' in point.payload["_node_content"])  # type: ignore[index]
        assert _close(dict(zip(vector.indices, vector.values, strict=True)), stored[text]), text
    retriever = index.as_retriever(vector_store_query_mode="hybrid", similarity_top_k=2, sparse_top_k=3)
    assert retriever.retrieve(QUERY)[0].node.get_content() == TEXTS[2]
    sparse_only = index.as_retriever(vector_store_query_mode="sparse", sparse_top_k=3, similarity_top_k=3)
    found = sparse_only.retrieve(WIDE)
    assert {n.node.get_content(): n.score for n in found} == pytest.approx(_lexical_top(stored, WIDE, 3), rel=1e-5)


def test_without_langchain_qdrant_only_the_sparse_adapter_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib
    import sys

    from m3search.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "langchain_qdrant", None)  # what an uninstalled package looks like to import
    monkeypatch.delitem(sys.modules, "m3search.integrations._langchain_sparse")
    monkeypatch.delitem(sys.modules, "m3search.integrations.langchain")
    module = importlib.import_module("m3search.integrations.langchain")
    assert module.M3SearchEmbeddings(encoder=_fake()).embed_query("x")  # the dense adapter still works
    with pytest.raises(MissingDependencyError, match=r"pip install 'm3search\[langchain\]'"):
        module.M3SearchSparseEmbeddings  # noqa: B018
    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        module.Nothing  # noqa: B018
