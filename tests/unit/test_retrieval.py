"""Search strategies over a store of synthetic vectors: each checked against a brute-force computation."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from m3search.errors import ConfigError, InputError
from m3search.ingest.pipeline import index_documents
from m3search.models.encoders.hashing import HashEncoder
from m3search.models.encoders.pooled import OnnxEncoder
from m3search.models.encoders.scores import colbert_score, lexical_matching_score
from m3search.models.registry import get_spec
from m3search.retrieval.fusion import dbsf, rrf, weighted
from m3search.retrieval.memory import IndexCache
from m3search.retrieval.search import Searcher
from m3search.retrieval.types import SearchRequest
from m3search.store.sqlite import SQLiteStore
from m3search.store.types import Chunk, Document, EmbeddingConfig, PreparedDocument
from m3search.types import Embedding, SparseVector
from tests.store_search import search_sparse, search_text

CONFIG = EmbeddingConfig("synthetic", "0" * 40, 16, None, ("dense", "sparse", "colbert"), "fp32")
WORDS = ["wing", "flow", "heat", "plate", "shock", "wave", "boundary", "layer", "jet", "nozzle"]


def _sparse(rng: np.random.Generator) -> SparseVector:
    tokens = np.sort(rng.choice(50, size=int(rng.integers(1, 8)), replace=False)).astype(np.int64)
    return SparseVector(tokens, rng.uniform(0.05, 1.0, len(tokens)).astype(np.float32))


def _embedding(rng: np.random.Generator) -> Embedding:
    dense = rng.standard_normal(16).astype(np.float32)
    colbert = rng.standard_normal((int(rng.integers(2, 6)), 16)).astype(np.float32)
    return Embedding(8, False, dense / np.linalg.norm(dense), _sparse(rng), colbert)


def _fill(store: SQLiteStore, n: int, seed: int = 0, name: str = "kb", config: EmbeddingConfig = CONFIG) -> list[
        PreparedDocument]:
    rng = np.random.default_rng(seed)
    target = store.create_collection(name, config, 64, 0) if name not in store.collections() \
        else store.active_set(name)
    docs = []
    for i in range(n):
        text = " ".join(rng.choice(WORDS, 6))
        doc = Document(f"d{i}", text, "test", metadata={"group": "even" if i % 2 == 0 else "odd", "n": i})
        emb = _embedding(rng)
        if config.outputs == ("dense",):
            emb = Embedding(8, False, emb.dense)
        docs.append(PreparedDocument(doc, [Chunk(0, text, 0, len(text), 8)], [emb]))
    store.write_documents(target, docs)
    return docs


@pytest.fixture
def store(tmp_path: Path) -> SQLiteStore:
    with SQLiteStore(tmp_path / "index.sqlite3") as opened:
        yield opened  # type: ignore[misc]


@pytest.fixture
def filled(store: SQLiteStore) -> tuple[SQLiteStore, list[PreparedDocument]]:
    return store, _fill(store, 60)


def _query(seed: int = 99) -> Embedding:
    return _embedding(np.random.default_rng(seed))


def _by_doc(docs: list[PreparedDocument]) -> dict[str, Embedding]:
    return {d.document.doc_id: d.embeddings[0] for d in docs}


def _searcher(store: SQLiteStore, **kwargs: object) -> Searcher:
    return Searcher(store, cache=IndexCache(), **kwargs)  # type: ignore[arg-type]


def test_dense_is_exact_top_k_with_filters(filled: tuple[SQLiteStore, list[PreparedDocument]]) -> None:
    store, docs = filled
    query = _query()
    assert query.dense is not None
    result = _searcher(store).search_embedded("kb", "", query, SearchRequest("dense", k=5))
    truth = sorted(_by_doc(docs).items(), key=lambda kv: -float(kv[1].dense @ query.dense))  # type: ignore[operator]
    assert [h.document_id for h in result.hits] == [d for d, _ in truth[:5]]
    assert result.hits[0].breakdown["dense"].rank == 1
    filtered = _searcher(store).search_embedded("kb", "", query, SearchRequest("dense", k=5, filters={"group": "odd"}))
    assert [h.document_id for h in filtered.hits] == [d for d, _ in truth if int(d[1:]) % 2 == 1][:5]
    assert all(h.metadata["group"] == "odd" for h in filtered.hits)


def test_sparse_matches_lexical_score_and_the_reference_search(
        filled: tuple[SQLiteStore, list[PreparedDocument]]) -> None:
    store, docs = filled
    query = _query(5)
    assert query.sparse is not None
    result = _searcher(store).search_embedded("kb", "", query, SearchRequest("sparse", k=8))
    truth = {d: lexical_matching_score(query.sparse, e.sparse) for d, e in _by_doc(docs).items()}  # type: ignore[arg-type]
    expected = sorted((d for d in truth if truth[d] > 0), key=lambda d: (-truth[d], int(d[1:])))[:8]
    assert [h.document_id for h in result.hits] == expected
    assert [h.score for h in result.hits] == pytest.approx([truth[d] for d in expected], rel=1e-5)
    reference = search_sparse(store, "kb", CONFIG, query.sparse, 8)
    assert [h.doc_id for h in reference] == expected


def test_bm25_with_filters(filled: tuple[SQLiteStore, list[PreparedDocument]]) -> None:
    store, docs = filled
    result = _searcher(store).search_embedded("kb", "shock nozzle", None,
                                              SearchRequest("bm25", k=50, filters={"n": [3, 4, 5, 6]}))
    words = {d.document.doc_id: set(d.document.text.split()) for d in docs}
    expected = {d for d in ("d3", "d4", "d5", "d6") if words[d] & {"shock", "nozzle"}}
    assert {h.document_id for h in result.hits} == expected
    assert all(h.breakdown["bm25"].score > 0 for h in result.hits)


@pytest.mark.parametrize("weights", [{"dense": 1.0, "sparse": 1.0}, {"dense": 0.7, "sparse": 0.3}])
def test_hybrid_is_weighted_rrf_of_dense_and_sparse_and_explains_each_hit(
        filled: tuple[SQLiteStore, list[PreparedDocument]], weights: dict[str, float]) -> None:
    store, _ = filled
    query = _query(7)
    searcher = _searcher(store)
    dense = searcher.search_embedded("kb", "", query, SearchRequest("dense", k=100))
    sparse = searcher.search_embedded("kb", "", query, SearchRequest("sparse", k=100))
    hybrid = searcher.search_embedded("kb", "", query, SearchRequest("hybrid", k=10, rrf_k=30, fusion="rrf",
                                                                     weights=weights))
    expected = rrf({"dense": [(h.chunk_id, h.score) for h in dense.hits],
                    "sparse": [(h.chunk_id, h.score) for h in sparse.hits]}, 30, weights)[:10]
    assert [(h.chunk_id, h.score) for h in hybrid.hits] == [(c, pytest.approx(s)) for c, s in expected]
    assert hybrid.retrievers == ("dense", "sparse") and hybrid.details["rrf_k"] == 30
    assert hybrid.details["fusion"] == "rrf" and hybrid.details["weights"] == weights
    for hit in hybrid.hits:
        parts = hit.breakdown
        assert hit.score == pytest.approx(sum(weights[n] / (30 + c.rank) for n, c in parts.items()))
        assert parts["dense"].score == pytest.approx(next(h.score for h in dense.hits if h.chunk_id == hit.chunk_id))


def test_hybrid_score_fusions_equal_the_fusion_functions(filled: tuple[SQLiteStore, list[PreparedDocument]]) -> None:
    store, _ = filled
    query = _query(9)
    searcher = _searcher(store)
    parts = {name: [(h.chunk_id, h.score) for h in
                    searcher.search_embedded("kb", "", query, SearchRequest(name, k=100)).hits]  # type: ignore[arg-type]
             for name in ("dense", "sparse")}
    weights = {"dense": 0.8, "sparse": 0.2}
    for fusion, function in (("minmax", weighted), ("dbsf", dbsf)):
        found = searcher.search_embedded("kb", "", query, SearchRequest("hybrid", k=10, fusion=fusion,  # type: ignore[arg-type]
                                                                        weights=weights))
        expected = function(parts, weights)[:10]
        assert [(h.chunk_id, h.score) for h in found.hits] == [(c, pytest.approx(s)) for c, s in expected]
        assert "rrf_k" not in found.details


def test_weighted_uses_normalised_scores(filled: tuple[SQLiteStore, list[PreparedDocument]]) -> None:
    store, _ = filled
    query = _query(8)
    only_dense = _searcher(store).search_embedded("kb", "", query,
                                                  SearchRequest("weighted", k=5, weights={"dense": 1.0}))
    dense = _searcher(store).search_embedded("kb", "", query, SearchRequest("dense", k=5))
    assert [h.chunk_id for h in only_dense.hits] == [h.chunk_id for h in dense.hits]
    assert only_dense.hits[0].score == pytest.approx(1.0)
    mixed = _searcher(store).search_embedded("kb", "", query, SearchRequest("weighted", k=5))
    assert all(0.0 <= h.score <= 1.0 for h in mixed.hits)
    with pytest.raises(InputError, match="unknown weight"):
        _searcher(store).search_embedded("kb", "", query, SearchRequest("weighted", weights={"dnese": 1.0}))


def test_colbert_reranks_dense_candidates_by_maxsim(filled: tuple[SQLiteStore, list[PreparedDocument]]) -> None:
    store, docs = filled
    query = _query(9)
    assert query.colbert is not None
    result = _searcher(store).search_embedded("kb", "", query, SearchRequest("colbert", k=5, candidates=60))
    truth = {d: colbert_score(query.colbert, e.colbert) for d, e in _by_doc(docs).items()}  # type: ignore[arg-type]
    assert [h.document_id for h in result.hits] == sorted(truth, key=lambda d: -truth[d])[:5]
    assert set(result.hits[0].breakdown) == {"dense", "colbert"}


def test_all_is_the_weighted_sum_of_the_three_bge_m3_scores(
        filled: tuple[SQLiteStore, list[PreparedDocument]]) -> None:
    store, docs = filled
    query = _query(10)
    result = _searcher(store).search_embedded("kb", "", query, SearchRequest("all", k=5, candidates=60))
    by_doc = _by_doc(docs)
    for hit in result.hits:
        e = by_doc[hit.document_id]
        dense = float(query.dense @ e.dense)  # type: ignore[operator]
        lexical = lexical_matching_score(query.sparse, e.sparse)  # type: ignore[arg-type]
        maxsim = colbert_score(query.colbert, e.colbert)  # type: ignore[arg-type]
        # ColBERT vectors are stored as float16: agreement to 1e-3
        assert hit.score == pytest.approx((0.4 * dense + 0.2 * lexical + 0.4 * maxsim) / 1.0, rel=1e-3)
        assert hit.breakdown["colbert"].score == pytest.approx(maxsim, rel=1e-3)


def test_strategies_needing_missing_vectors_are_refused(store: SQLiteStore) -> None:
    dense_only = replace(CONFIG, outputs=("dense",))
    _fill(store, 10, config=dense_only)
    searcher = _searcher(store)
    for strategy in ("sparse", "colbert", "all"):
        with pytest.raises(InputError, match="holds dense"):
            searcher.search_embedded("kb", "wing", _query(), SearchRequest(strategy))  # type: ignore[arg-type]
    hybrid = searcher.search_embedded("kb", "wing flow", Embedding(8, False, _query().dense), SearchRequest("hybrid"))
    assert hybrid.retrievers == ("dense", "bm25")
    with pytest.raises(InputError, match="unknown strategy"):
        SearchRequest("fuzzy").checked()  # type: ignore[arg-type]
    with pytest.raises(InputError, match="k must be"):
        SearchRequest(k=0).checked()


def test_new_writes_are_seen_by_the_next_search(filled: tuple[SQLiteStore, list[PreparedDocument]]) -> None:
    store, _ = filled
    searcher = _searcher(store)
    query = _query(11)
    before = searcher.search_embedded("kb", "", query, SearchRequest("dense", k=1)).hits[0]
    target = store.active_set("kb")
    twin = PreparedDocument(Document("twin", "twin", "test"), [Chunk(0, "twin", 0, 4, 1)], [query])
    store.write_documents(target, [twin])
    after = searcher.search_embedded("kb", "", query, SearchRequest("dense", k=1)).hits[0]
    assert after.document_id == "twin" and after.score == pytest.approx(1.0) and before.document_id != "twin"
    store.delete_documents("kb", ["twin"])
    assert searcher.search_embedded("kb", "", query, SearchRequest("dense", k=1)).hits[0].document_id != "twin"


def test_two_stage_uses_matryoshka_dims_and_refuses_others(
        tiny_encoder: Callable[..., OnnxEncoder], store: SQLiteStore) -> None:
    encoder = tiny_encoder()
    texts = ["the man is playing guitar", "a cat sat on a mat", "someone plays an instrument", "the dog runs fast"]
    index_documents(store, encoder, "tiny", [Document(f"t{i}", t, "test") for i, t in enumerate(texts)])
    searcher = Searcher(store, encoder, cache=IndexCache())
    full = searcher.search("tiny", "a man plays guitar", SearchRequest("dense", k=4))
    two = searcher.search("tiny", "a man plays guitar", SearchRequest("two_stage", k=4, coarse_dim=4, coarse_k=4))
    assert [h.chunk_id for h in two.hits] == [h.chunk_id for h in full.hits]  # rescored at full dimension
    assert two.details["coarse_dim"] == 4 and "coarse@4" in two.hits[0].breakdown
    with pytest.raises(ConfigError, match="Matryoshka dimensions below 8 of 'tiny': 4; not 3"):
        searcher.search("tiny", "guitar", SearchRequest("two_stage", coarse_dim=3))
    hashing = HashEncoder(replace(get_spec("hash"), dim=32), max_length=32)
    index_documents(store, hashing, "plain", [Document("p", "wing flow", "test")])
    with pytest.raises(ConfigError, match="not, and truncating"):
        Searcher(store, hashing, cache=IndexCache()).search("plain", "wing", SearchRequest("two_stage", coarse_dim=16))


def test_a_query_of_another_model_is_refused(tiny_encoder: Callable[..., OnnxEncoder], store: SQLiteStore) -> None:
    hashing = HashEncoder(replace(get_spec("hash"), dim=8), max_length=32)
    index_documents(store, hashing, "h", [Document("p", "the cat sat", "test")])
    with pytest.raises(Exception, match="reembed"):
        Searcher(store, tiny_encoder(), cache=IndexCache()).search("h", "cat", SearchRequest("dense"))


def test_hnsw_is_persisted_reused_and_rebuilt_when_stale(store: SQLiteStore, tmp_path: Path) -> None:
    config = replace(CONFIG, outputs=("dense",))
    target = store.create_collection("big", config, 64, 0)
    rng = np.random.default_rng(1)
    centers = rng.standard_normal((20, 16))
    vectors = (centers[rng.integers(0, 20, 3000)] + 0.3 * rng.standard_normal((3000, 16))).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    store.write_documents(target, [PreparedDocument(Document(f"v{i}", "x", "t"), [Chunk(0, "x", 0, 1, 1)],
                                                    [Embedding(1, False, v)]) for i, v in enumerate(vectors)])
    ann_dir = tmp_path / "ann"
    searcher = Searcher(store, ann_threshold=1000, ann_dir=ann_dir, cache=IndexCache())
    exact = Searcher(store, ann_threshold=0, cache=IndexCache())
    recall = []
    queries = (centers[rng.integers(0, 20, 30)] + 0.3 * rng.standard_normal((30, 16))).astype(np.float32)
    for q in queries:  # drawn like the data, as real queries are
        q /= np.linalg.norm(q)
        found = {h.chunk_id for h in searcher.search_embedded("big", "", Embedding(1, False, q),
                                                              SearchRequest("dense")).hits}
        truth = {h.chunk_id for h in exact.search_embedded("big", "", Embedding(1, False, q),
                                                           SearchRequest("dense")).hits}
        recall.append(len(found & truth) / 10)
    assert np.mean(recall) >= 0.95
    assert (ann_dir / f"set-{target.id}.usearch").exists()
    cache = IndexCache()
    again = Searcher(store, ann_threshold=1000, ann_dir=ann_dir, cache=cache)
    again.search_embedded("big", "", Embedding(1, False, vectors[0]), SearchRequest("dense"))
    assert not cache.get(store, target, ann_dir, 1000).hnsw_built  # loaded from disk, not rebuilt
    store.delete_documents("big", ["v0"])
    twin = PreparedDocument(Document("twin", "x", "t"), [Chunk(0, "x", 0, 1, 1)], [Embedding(1, False, vectors[0])])
    store.write_documents(target, [twin])
    hits = again.search_embedded("big", "", Embedding(1, False, vectors[0]), SearchRequest("dense")).hits
    assert hits[0].document_id == "twin" and "v0" not in {h.document_id for h in hits}
    updated = cache.get(store, target, ann_dir, 1000)
    assert updated.hnsw_updated and not updated.hnsw_built  # a small change: the graph was updated in place
    store.delete_documents("big", [f"v{i}" for i in range(1, 1000)])
    hits = again.search_embedded("big", "", Embedding(1, False, vectors[5]), SearchRequest("dense")).hits
    assert {h.document_id for h in hits}.isdisjoint({f"v{i}" for i in range(1000)})
    assert cache.get(store, target, ann_dir, 1000).hnsw_built  # a third of the set changed: rebuilt


def test_result_json_shape(filled: tuple[SQLiteStore, list[PreparedDocument]]) -> None:
    store, _ = filled
    payload = _searcher(store).search_embedded("kb", "wing", _query(), SearchRequest("hybrid", k=3)).as_dict()
    assert set(payload) >= {"hits", "strategy", "collection", "retrievers", "took_ms"}
    hit = payload["hits"][0]
    located = {"document_id", "chunk_id", "score", "text", "metadata", "breakdown", "ordinal", "start", "end"}
    assert set(hit) == located | {"other_chunks"} and payload["group_by"] == "document"
    assert set(hit["breakdown"][next(iter(hit["breakdown"]))]) == {"rank", "score"}
    chunks = _searcher(store).search_embedded("kb", "wing", _query(), SearchRequest("hybrid", k=3, group_by="chunk"))
    assert set(chunks.as_dict()["hits"][0]) == located and chunks.details["group_by"] == "chunk"


@pytest.mark.parametrize("lang", ["de", "fr"])
def test_memory_bm25_equals_fts5_bm25(store: SQLiteStore, lang: str) -> None:
    data = Path(__file__).parent.parent.parent / "benchmarks" / "data" / "debian-faq" / lang
    from m3search.retrieval.beir import load_dataset

    dataset = load_dataset(data)
    hashing = HashEncoder(replace(get_spec("hash"), dim=16), max_length=8192)
    index_documents(store, hashing, "faq", dataset.corpus)
    searcher = _searcher(store)
    for query in list(dataset.queries.values())[:40]:
        ours = searcher.search_embedded("faq", query, None, SearchRequest("bm25", k=10)).hits
        fts5 = search_text(store, "faq", query, 10)  # SQLite's own bm25(), one collection: same statistics
        assert [h.chunk_id for h in ours] == [c for c, _ in fts5], query
        assert [h.score for h in ours] == pytest.approx([s for _, s in fts5], rel=1e-4)


def test_memory_filters_match_the_sql_filters(store: SQLiteStore) -> None:
    from m3search.retrieval.filtering import MetadataIndex
    from m3search.store.filters import check_filters

    rng = np.random.default_rng(3)
    values: list[object] = ["a", "b", 1, 1.0, 2, True, False, None, [1], {"x": 1}, "1"]
    target = store.create_collection("meta", replace(CONFIG, outputs=("dense",)), 64, 0)
    docs = []
    for i in range(120):
        metadata = {key: values[int(rng.integers(len(values)))] for key in ("k1", "k2") if rng.random() < 0.8}
        docs.append(PreparedDocument(Document(f"m{i}", "x", "t", metadata=metadata), [Chunk(0, "x", 0, 1, 1)],
                                     [Embedding(1, False, np.ones(16, dtype=np.float32) / 4)]))
    store.write_documents(target, docs)
    memory = MetadataIndex(*store.chunk_metadata("meta"))
    for filters in ({"k1": "a"}, {"k1": 1}, {"k1": True}, {"k1": None}, {"k1": [False, "b"], "k2": 2},
                    {"k2": [None, "1", 1.0]}, {"absent": 1}, {"k1": 2.0}):
        checked = check_filters(filters)
        sql = set(store.filtered_chunk_ids("meta", checked).tolist())
        assert set(np.flatnonzero(memory.lookup(checked)).tolist()) == sql, filters


def test_filtered_search_on_the_hnsw_path_equals_exact(store: SQLiteStore, tmp_path: Path) -> None:
    config = replace(CONFIG, outputs=("dense",))
    target = store.create_collection("big", config, 64, 0)
    rng = np.random.default_rng(4)
    vectors = rng.standard_normal((2000, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    store.write_documents(target, [PreparedDocument(Document(f"v{i}", "x", "t", metadata={"part": i % 4}),
                                                    [Chunk(0, "x", 0, 1, 1)], [Embedding(1, False, v)])
                                   for i, v in enumerate(vectors)])
    graph = Searcher(store, ann_threshold=500, ann_dir=tmp_path / "ann", cache=IndexCache())
    exact = Searcher(store, ann_threshold=0, cache=IndexCache())
    overlap = []
    for q in vectors[:20]:
        request = SearchRequest("dense", k=10, filters={"part": [1, 2]})
        found = graph.search_embedded("big", "", Embedding(1, False, q), request).hits
        truth = exact.search_embedded("big", "", Embedding(1, False, q), request).hits
        assert len(found) == 10 and all(h.metadata["part"] in (1, 2) for h in found)
        overlap.append(len({h.chunk_id for h in found} & {h.chunk_id for h in truth}) / 10)
    assert np.mean(overlap) >= 0.9


def test_ann_graph_is_tuned_and_a_bad_file_is_rebuilt(tmp_path: Path) -> None:
    from m3search.retrieval import ann

    rng = np.random.default_rng(5)
    matrix = rng.standard_normal((3000, 16)).astype(np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    ids = np.arange(3000, dtype=np.int64) * 2  # chunk ids need not be dense
    graph = ann.build(ids, matrix)
    assert graph.dtype == "i8" and graph.ef in ann.EF_CHOICES
    assert graph.recall >= ann.RECALL_TARGET or graph.ef == ann.EF_CHOICES[-1]
    stamp = {"set": 1, "fingerprint": "f", "generation": 3}
    ann.save(graph, tmp_path / "set-1", stamp)
    loaded = ann.load(tmp_path / "set-1", stamp, matrix)
    assert loaded is not None and loaded.ef == graph.ef and loaded.index.expansion_search == graph.ef
    assert ann.load(tmp_path / "set-1", {**stamp, "generation": 4}, matrix) is None  # stale
    assert ann.load(tmp_path / "set-1", stamp, matrix[:-1]) is None  # another matrix
    saved = json.loads((tmp_path / "set-1.json").read_text())
    (tmp_path / "set-1.json").write_text(json.dumps({**saved, "format": 1}))  # keys were matrix rows then
    assert ann.load(tmp_path / "set-1", stamp, matrix) is None
    (tmp_path / "set-1.json").write_text(json.dumps(saved))
    (tmp_path / "set-1.usearch").write_bytes(b"garbage")
    assert ann.load(tmp_path / "set-1", stamp, matrix) is None  # unreadable: the caller rebuilds
    raw = matrix * 3  # not unit vectors: a float32 graph
    assert ann.build(ids, raw).dtype == "f32"


def test_ann_update_handles_reused_removed_and_new_ids() -> None:
    from m3search.retrieval import ann

    rng = np.random.default_rng(6)
    matrix = rng.standard_normal((2000, 16)).astype(np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    ids = np.arange(2000, dtype=np.int64)
    graph = ann.build(ids, matrix)
    fresh = -matrix[5]  # id 5 reused for another vector; id 7 gone; id 5000 new
    new_ids = np.append(np.delete(ids, 7), 5000)
    new_matrix = np.vstack([np.delete(matrix, 7, axis=0), matrix[7:8] * 0 + matrix[9]])
    new_matrix[5] = fresh
    updated = ann.update(graph, (ids, matrix), (new_ids, new_matrix))
    assert updated is not None
    assert updated.search(fresh, 1)[0] == 5 and 7 not in set(updated.search(matrix[7], 10).tolist())
    assert 5000 in set(updated.search(matrix[9], 2).tolist())
    assert ann.update(graph, (new_ids, new_matrix), (new_ids[:1000], new_matrix[:1000])) is None  # too much


def test_a_runtime_owns_indexes_threads_and_cross_encoders(filled: tuple[SQLiteStore, list[PreparedDocument]]
                                                           ) -> None:
    """A searcher given its own runtime leaves the process-wide one alone; close() shuts the threads down and drops
    the caches, and the next search makes them again."""
    from m3search.retrieval import runtime as runtime_module

    store, _ = filled
    default = runtime_module.default_runtime()
    before = (default.indexes._items.copy(), default._pool)
    own = runtime_module.RetrievalRuntime()
    searcher = Searcher(store, runtime=own)
    assert searcher.rerankers._cache is own.scorers
    first = searcher.search_embedded("kb", "wing flow", _query(), SearchRequest("hybrid", k=5))
    pool = own._pool
    assert pool is not None and len(own.indexes._items) == 1 and len(first.hits) == 5
    assert (default.indexes._items, default._pool) == before
    own.scorers[("x", "", "", 0)] = object()  # type: ignore[assignment]
    own.close()
    assert own._pool is None and not own.indexes._items and not own.scorers
    with pytest.raises(RuntimeError, match="shutdown"):
        pool.submit(print)
    again = searcher.search_embedded("kb", "wing flow", _query(), SearchRequest("hybrid", k=5))
    assert again.hits == first.hits and own._pool is not None and own._pool is not pool
    own.close()
