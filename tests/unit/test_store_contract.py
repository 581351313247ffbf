"""One contract, three stores: SQLite, qdrant-edge (Qdrant's real engine, in-process) and qdrant-client's local
mode. The local mode is Qdrant's pure-Python test double of a server, not the engine: it exercises m3search's
client code path (the one a Qdrant server or cluster uses), not Qdrant's search.

Same documents in -> same exact-search results out, for every strategy the stores share; filters; the model-switch
flow with the same status output; migrate-store round trips."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from m3search.errors import CollectionNotFoundError, ConfigError, ModelMismatchError, StoreError
from m3search.ingest.pipeline import index_documents
from m3search.ingest.reembed import reembed
from m3search.retrieval.defaults import save_fusion, saved_fusion
from m3search.retrieval.fusion import FusionSettings
from m3search.retrieval.search import Searcher
from m3search.retrieval.types import SearchRequest
from m3search.store.base import Store, in_engine
from m3search.store.filters import check_filters
from m3search.store.migrate import migrate_collection
from m3search.store.qdrant.driver import Deployment
from m3search.store.status import collection_status
from m3search.store.types import Chunk, Document, EmbeddingConfig, PreparedDocument
from m3search.store.urls import open_store
from m3search.types import Embedding, SparseVector
from tests.conftest import FAKE_M3_SPEC, FakeM3Encoder
from tests.references import import_or_skip

import_or_skip("qdrant_edge", "qdrant-edge-py is in the dev extra")
import_or_skip("qdrant_client", "qdrant-client is in the dev extra")

KINDS = ["sqlite", "edge", "local"]
CONFIG = EmbeddingConfig("synthetic", "0" * 40, 16, None, ("dense", "sparse", "colbert"), "fp32")
WORDS = ["wing", "flow", "heat", "plate", "shock", "wave", "boundary", "layer", "jet", "nozzle", "rare"]


def url_of(kind: str, root: Path) -> str:
    return {"sqlite": f"sqlite:///{root}/index.sqlite3", "edge": f"qdrant+edge:///{root}/edge",
            "local": f"qdrant+local:///{root}/local"}[kind]


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store(kind: str, tmp_path: Path) -> Iterator[Store]:
    with open_store(url_of(kind, tmp_path), exact=True) as opened:  # type: ignore[attr-defined]
        yield opened


def _embedding(rng: np.random.Generator) -> Embedding:
    dense = rng.standard_normal(16).astype(np.float32)
    tokens = np.sort(rng.choice(50, size=int(rng.integers(1, 8)), replace=False)).astype(np.int64)
    sparse = SparseVector(tokens, rng.uniform(0.05, 1.0, len(tokens)).astype(np.float32))
    colbert = rng.standard_normal((int(rng.integers(2, 6)), 16)).astype(np.float32)
    return Embedding(8, False, dense / np.linalg.norm(dense), sparse, colbert)


def fill(store: Store, n: int = 60, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    target = store.create_collection("kb", CONFIG, 64, 0)
    docs = []
    for i in range(n):
        text = " ".join(rng.choice(WORDS[:-1], 6)) + (" rare" if i % 17 == 0 else "")
        meta = {"group": "even" if i % 2 == 0 else "odd", "n": i, "score": i / 2, "flag": i % 3 == 0,
                "maybe": None if i % 5 == 0 else "x"}
        chunks = [Chunk(0, text, 0, len(text), 8), Chunk(1, text[::-1], 0, len(text), 8)]
        docs.append(PreparedDocument(Document(f"d{i}", text, "test", metadata=meta), chunks,
                                     [_embedding(rng), _embedding(rng)]))
    for offset in range(0, n, 16):
        store.write_documents(target, docs[offset: offset + 16])


def hits(store: Store, strategy: str, seed: int = 1, **request: object) -> list[tuple[str, str, float]]:
    """(document, chunk text, score) best first; equal scores in text order on every store."""
    query = _embedding(np.random.default_rng(seed))
    result = Searcher(store).search_embedded("kb", "rare heat", query,
                                             SearchRequest(strategy, **{"group_by": "chunk", **request}))
    return sorted(((h.document_id, h.text, h.score) for h in result.hits), key=lambda x: (-round(x[2], 5), x[:2]))


def _above_last(ranked: list[tuple[str, str, float]]) -> list[tuple[str, str, float]]:
    return [h for h in ranked if ranked and h[2] > ranked[-1][2] + 1e-6 * max(1.0, abs(ranked[-1][2]))]


def assert_same(found: list[tuple[str, str, float]], expected: list[tuple[str, str, float]]) -> None:
    """Same hits in the same order, scores equal up to float32 arithmetic (Qdrant's SIMD MaxSim differs from numpy's
    by up to ~3e-4 relative). Hits tied with the last one are left out: which of them made the cut is each store's
    tie order."""
    found, expected = _above_last(found), _above_last(expected)
    assert [h[:2] for h in found] == [h[:2] for h in expected]
    np.testing.assert_allclose([h[2] for h in found], [h[2] for h in expected], rtol=1e-3, atol=1e-6)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    with open_store(url_of("sqlite", tmp_path_factory.mktemp("ref"))) as ref:  # type: ignore[attr-defined]
        fill(ref)
        yield ref


@pytest.mark.parametrize("strategy,extra", [
    ("dense", {}), ("sparse", {}), ("colbert", {}), ("hybrid", {}), ("hybrid", {"fusion": "dbsf"}),
    ("hybrid", {"rrf_k": 5}), ("weighted", {}), ("all", {}), ("dense", {"filters": {"group": "even"}}),
    ("hybrid", {"filters": {"n": [1, 2, 3, 4, 5, 6, 7, 8]}}), ("sparse", {"filters": {"score": 2.5}}),
    ("dense", {"filters": {"flag": True}}), ("dense", {"filters": {"maybe": None}}),
    ("all", {"filters": {"group": ["odd"]}}), ("hybrid", {"weights": {"dense": 0.8, "sparse": 0.2}}),
    ("hybrid", {"fusion": "rrf", "rrf_k": 10, "weights": {"dense": 0.3, "sparse": 0.7}}),
    ("hybrid", {"fusion": "minmax", "weights": {"dense": 0.6, "sparse": 0.4}}),
    ("hybrid", {"fusion": "dbsf", "weights": {"dense": 0.5, "sparse": 1.5}, "filters": {"group": "odd"}}),
])
def test_same_documents_give_the_same_exact_results(store: Store, reference: Store, strategy: str,
                                                     extra: dict[str, object]) -> None:
    fill(store)
    for seed in (1, 2, 3):
        found = hits(store, strategy, seed, k=12, candidates=30, **extra)
        assert_same(found, hits(reference, strategy, seed, k=12, candidates=30, **extra))
        assert len(found) > 0


def test_filters_keep_only_matching_documents(store: Store) -> None:
    fill(store)
    result = Searcher(store).search_embedded("kb", "", _embedding(np.random.default_rng(4)),
                                             SearchRequest("dense", k=50, filters={"n": [3, 4, 5], "flag": False},
                                                           group_by="chunk"))
    assert sorted(h.document_id for h in result.hits) == ["d4", "d4", "d5", "d5"]
    nothing = Searcher(store).search_embedded("kb", "", _embedding(np.random.default_rng(4)),
                                              SearchRequest("dense", filters={"group": "none"}))
    assert nothing.hits == []


LIST_METADATA = {"ab": {"tags": ["a", "b"]}, "scalar": {"tags": "a"}, "mixed": {"tags": ["b", True, 3]},
                 "nested": {"tags": [["a"]]}, "object": {"tags": {"x": "a"}}, "nulls": {"tags": [None, "c"]},
                 "null": {"tags": None}, "empty": {"tags": []}, "none": {}}


@pytest.mark.parametrize(("filters", "expected"), [
    ({"tags": "a"}, ["ab", "scalar"]), ({"tags": ["b", "c"]}, ["ab", "mixed", "nulls"]),
    ({"tags": 1}, ["mixed"]), ({"tags": True}, ["mixed"]), ({"tags": 3.0}, ["mixed"]), ({"tags": None}, ["null"]),
    ({"tags": "x"}, []),
])
def test_list_valued_metadata_matches_by_membership(store: Store, filters: dict[str, object],
                                                    expected: list[str]) -> None:
    """Issue 19: a filter value matches a stored list containing it, the same on every store and every path (the
    store's filter: SQL or Qdrant's; the in-memory index of dense search; bm25's)."""
    target = store.create_collection("kb", CONFIG, 64, 0)
    rng = np.random.default_rng(5)
    store.write_documents(target, [
        PreparedDocument(Document(name, "wing flow", "test", metadata=meta), [Chunk(0, "wing flow", 0, 9, 2)],
                         [_embedding(rng)]) for name, meta in LIST_METADATA.items()])
    ids = store.filtered_chunk_ids("kb", check_filters(filters))
    assert sorted(h.doc_id for h in store.hits([(int(i), 1.0) for i in ids], "kb")) == expected
    for strategy in ("dense", "bm25"):
        result = Searcher(store).search_embedded("kb", "wing", _embedding(rng),
                                                 SearchRequest(strategy, k=20, filters=filters))  # type: ignore[arg-type]
        assert sorted(h.document_id for h in result.hits) == expected, strategy


@pytest.mark.parametrize("strategy", ["dense", "sparse", "hybrid", "all"])
def test_results_by_document_group_the_chunk_results(store: Store, strategy: str) -> None:
    """One hit per document on every store: the document's best chunk, located (ordinal, offsets) from the store,
    with its other matching chunk listed; k documents, in the order of each one's best chunk."""
    fill(store)
    query = _embedding(np.random.default_rng(5))
    searcher = Searcher(store)
    chunks = searcher.search_embedded("kb", "rare heat", query,
                                      SearchRequest(strategy, k=120, candidates=120, group_by="chunk")).hits
    result = searcher.search_embedded("kb", "rare heat", query, SearchRequest(strategy, k=20, candidates=120))
    firsts = {}
    for hit in chunks:
        firsts.setdefault(hit.document_id, hit)
    assert result.details["group_by"] == "document" and len(result.hits) == min(20, len(firsts))  # all that match
    assert strategy == "sparse" or any(hit.other_chunks for hit in result.hits)  # sparse: few chunks match
    assert [(h.document_id, h.chunk_id) for h in result.hits] == [(h.document_id, h.chunk_id)
                                                                  for h in list(firsts.values())[:20]]
    for hit in result.hits:
        assert hit.score == pytest.approx(firsts[hit.document_id].score, rel=1e-5)
        assert hit.ordinal == (0 if hit.text.split()[0] in WORDS else 1)  # chunk 1 is the reversed text
        assert (hit.start, hit.end) == (0, len(hit.text))
        others = [h for h in chunks[: result.details["chunks_ranked"]]  # the document's other chunks ranked
                  if h.document_id == hit.document_id and h.chunk_id != hit.chunk_id]
        assert [(c.chunk_id, c.ordinal, c.start, c.end) for c in hit.other_chunks or ()] == [
            (h.chunk_id, 1 - hit.ordinal, 0, len(h.text)) for h in others]
        assert [c.score for c in hit.other_chunks or ()] == pytest.approx([h.score for h in others], rel=1e-5)


def test_bm25_ranks_documents_with_the_query_words(store: Store) -> None:
    fill(store)
    result = Searcher(store).search_embedded("kb", "rare", None, SearchRequest("bm25", k=20))
    assert {h.document_id for h in result.hits} == {f"d{i}" for i in range(0, 60, 17)}
    assert all("rare" in h.text for h in result.hits)


def test_documents_replace_and_delete(store: Store) -> None:
    fill(store, n=10)
    assert store.counts("kb") == (10, 20)
    target = store.active_set("kb")
    rng = np.random.default_rng(9)
    store.write_documents(target, [PreparedDocument(Document("d3", "new text", "t"), [Chunk(0, "new text", 0, 8, 2)],
                                                    [_embedding(rng)])])
    assert store.counts("kb") == (10, 19)
    assert store.content_hashes("kb")["d3"] == Document("d3", "new text", "t").content_hash
    assert store.delete_documents("kb", ["d3", "d4", "missing"]) == 2
    assert store.counts("kb") == (8, 16)
    assert store.vector_count(target) == 16
    with pytest.raises(CollectionNotFoundError):
        store.active_set("nope")


def test_a_replaced_document_keeps_its_creation_time(store: Store) -> None:
    fill(store, n=4)
    target = store.active_set("kb")
    first = store.documents("kb", 1, 0, doc_id="d2")[0]
    time.sleep(1.1)  # the stores keep seconds
    store.write_documents(target, [PreparedDocument(Document("d2", "new text", "t"), [Chunk(0, "new text", 0, 8, 2)],
                                                    [_embedding(np.random.default_rng(3))])])
    again = store.documents("kb", 1, 0, doc_id="d2")[0]
    assert again["created"] == first["created"] and again["updated"] > first["updated"]
    assert again["content_hash"] != first["content_hash"]


def _index(store: Store, encoder: FakeM3Encoder, texts: list[str]) -> None:
    docs = [Document(f"t{i}", text, "test", metadata={"i": i}) for i, text in enumerate(texts)]
    index_documents(store, encoder, "kb", docs)


TEXTS = ["jet engines push air", "wing flow over a plate", "shock waves in nozzles", "heat transfer in layers",
         "boundary layer theory of flight", "the jet stream in weather"]


def test_model_switch_flow(store: Store) -> None:
    old, new = FakeM3Encoder(FAKE_M3_SPEC), FakeM3Encoder(FAKE_M3_SPEC, dim=32)
    _index(store, old, TEXTS)
    first = collection_status(store, "kb")
    building = store.start_set("kb", EmbeddingConfig("hash", FAKE_M3_SPEC.revision, 64, 32, ("dense", "sparse"),
                                                     "none"))
    _index(store, old, [*TEXTS, "a new document about jets"])  # written while the new set is built: pending there
    status = collection_status(store, "kb")
    assert [s["status"] for s in status["sets"]] == ["active", "building"]
    assert status["pending"] == 7 and status["sets"][1]["progress"] == 0.0
    with pytest.raises(StoreError, match="not complete"):
        store.activate(building)
    report = reembed(store, new, "kb", batch=3)
    assert report.activated and report.embedded == 7
    with pytest.raises(ModelMismatchError):
        Searcher(store, old).search("kb", "jet", SearchRequest("dense"))
    found = Searcher(store, new).search("kb", "jet engines", SearchRequest("hybrid", k=3))
    assert found.hits[0].document_id == "t0"
    after = collection_status(store, "kb")
    assert [(s["status"], s["vectors"], s["progress"], s["dim"]) for s in after["sets"]] == [
        ("retired", 7, 1.0, 64), ("active", 7, 1.0, 32)]
    assert set(after) == set(first) and after["documents"] == 7 and after["pending"] == 0
    assert store.gc("kb") == 1 and len(store.sets("kb")) == 1


@pytest.mark.parametrize("destination", ["edge", "local", "sqlite"])
def test_migrate_store_round_trip(kind: str, destination: str, tmp_path: Path) -> None:
    with open_store(url_of(kind, tmp_path / "a"), exact=True) as source, \
            open_store(url_of(destination, tmp_path / "b"), exact=True) as target:  # type: ignore[attr-defined]
        fill(source, n=25)
        if kind == "sqlite":  # read a page at a time: the same documents as in one page
            paged = [(d.document.doc_id, [c.text for c in d.chunks]) for d in source.export_documents("kb", page=4)]  # type: ignore[call-arg]
            assert paged == [(d.document.doc_id, [c.text for c in d.chunks]) for d in source.export_documents("kb")]
            assert len(paged) == 25
        report = migrate_collection(source, target, "kb", batch_docs=7)
        assert (report.documents, report.chunks, report.vectors) == (25, 50, 50)
        assert target.content_hashes("kb") == source.content_hashes("kb")
        assert target.active_set("kb").config == CONFIG
        for strategy in ("dense", "sparse", "all"):
            assert_same(hits(target, strategy), hits(source, strategy))
        with pytest.raises(StoreError, match="already exists"):
            migrate_collection(source, target, "kb")


def test_unknown_store_urls_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown store URL"):
        open_store("mysql://localhost/db")
    with pytest.raises(ConfigError, match="names no path"):
        open_store("qdrant+edge://")
    with pytest.raises(StoreError, match="cannot reach Qdrant"):
        open_store("http://127.0.0.1:9").collections()


@pytest.mark.parametrize("kind", ["edge", "local"])
def test_int8_quantized_collections_rescore_to_the_same_top_hits(kind: str, tmp_path: Path,
                                                                  reference: Store) -> None:
    with open_store(url_of(kind, tmp_path), deployment=Deployment(quantization="int8")) as quantized:  # type: ignore[attr-defined]
        fill(quantized)
        for seed in (1, 2):
            assert [h[0] for h in hits(quantized, "dense", seed, k=5)] == [h[0] for h in hits(reference, "dense",
                                                                                               seed, k=5)]


def test_pending_walks_forward_and_sees_chunks_added_meanwhile(store: Store) -> None:
    """Batches of a building set: each returns the next chunks without a vector there, including ones indexed after
    the walk began; a batch written only in part is offered again."""
    fill(store, n=5)
    building = store.start_set("kb", EmbeddingConfig("synthetic", "1" * 40, 16, None, ("dense", "sparse"), "fp32"))
    rng = np.random.default_rng(3)
    first = store.pending(building, 4)
    store.write_vectors(building, [(i, _embedding(rng)) for i, _ in first[:2]])  # half of the batch
    second = store.pending(building, 4)
    assert [i for i, _ in second][:2] == [i for i, _ in first][2:]
    store.write_vectors(building, [(i, _embedding(rng)) for i, _ in second])
    store.write_documents(store.active_set("kb"), [PreparedDocument(
        Document("late", "late text", "t"), [Chunk(0, "late text", 0, 9, 2)], [_embedding(rng)])])
    rest = []
    while batch := store.pending(building, 3):
        store.write_vectors(building, [(i, _embedding(rng)) for i, _ in batch])
        rest += [text for _, text in batch]
    assert "late text" in rest and store.pending_count(building) == 0
    assert store.vector_count(building) == 11


def test_saved_fusion_settings_give_the_same_results_in_every_store(store: Store, reference: Store) -> None:
    """eval --tune's saved settings live with the collection in each store and fuse the same way everywhere."""
    fill(store)
    tuned = FusionSettings("rrf", {"dense": 0.2, "sparse": 0.8}, 7)
    default = hits(store, "hybrid", 4, k=12, candidates=30)
    save_fusion(store, store.active_set("kb"), tuned)
    assert saved_fusion(store, store.active_set("kb")) == tuned
    found = hits(store, "hybrid", 4, k=12, candidates=30)
    assert found != default
    assert_same(found, hits(reference, "hybrid", 4, k=12, candidates=30, fusion="rrf", rrf_k=7,
                            weights={"dense": 0.2, "sparse": 0.8}))


def test_capabilities_are_declared(kind: str, store: Store, tmp_path: Path) -> None:
    """What retrieval asks a store is declared on it: SQLite keeps a file and HNSW graphs beside it and is searched
    by m3search's indexes; Qdrant searches in its engine (so it is an EngineStore) and keeps neither."""
    assert in_engine(store) == (kind != "sqlite") == store.searches_in_engine
    if kind == "sqlite":
        assert store.path is not None and store.path.samefile(tmp_path / "index.sqlite3")
        assert store.ann_dir == store.path.with_name("index.sqlite3.ann")
        assert Searcher(store).ann_dir == store.ann_dir
    else:
        assert store.path is None and store.ann_dir is None
        assert in_engine(store) and callable(store.query)
    target = store.create_collection("kb", CONFIG, 64, 0)
    store.put_set_options(target.id, {"note": 1})
    assert store.set_options(target.id) == {"note": 1}
