"""Results by document (``group_by="document"``, the default): one hit per document with its best chunk and the
other matching chunks located; k documents however many chunks each has; grouping after fusion and rerank; chunk
mode as before; the evaluation harness ranks documents through the same grouping."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from m3search.errors import InputError
from m3search.retrieval.beir import Dataset
from m3search.retrieval.evaluation import document_run
from m3search.retrieval.grouping import group_hits
from m3search.retrieval.memory import IndexCache
from m3search.retrieval.rerank import RerankerPool
from m3search.retrieval.search import Searcher
from m3search.retrieval.types import SearchHit, SearchRequest
from m3search.settings import get_settings
from m3search.store.sqlite import SQLiteStore
from m3search.store.types import Chunk, Document, EmbeddingConfig, PreparedDocument
from m3search.types import Embedding, SparseVector

CONFIG = EmbeddingConfig("synthetic", "0" * 40, 16, None, ("dense", "sparse"), "fp32")
DOCUMENTS, CHUNKS = 12, 30  # many chunks per document: the top chunks crowd into a few documents


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def _chunk_embedding(center: np.ndarray, rng: np.random.Generator) -> Embedding:
    tokens = np.sort(rng.choice(40, size=4, replace=False)).astype(np.int64)
    return Embedding(4, False, _unit(center + 0.05 * rng.standard_normal(16)),
                     SparseVector(tokens, rng.uniform(0.1, 1.0, 4).astype(np.float32)))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    """12 documents of 30 chunks; each document's chunks lie close together (document i around center i)."""
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((DOCUMENTS, 16))
    with SQLiteStore(tmp_path / "index.sqlite3") as opened:
        target = opened.create_collection("kb", CONFIG, 64, 0)
        docs = []
        for d in range(DOCUMENTS):
            texts = [f"doc{d} part {c} " + "word " * (c % 5) for c in range(CHUNKS)]
            starts = np.cumsum([0] + [len(t) + 1 for t in texts])
            chunks = [Chunk(c, t, int(starts[c]), int(starts[c]) + len(t), 4) for c, t in enumerate(texts)]
            docs.append(PreparedDocument(Document(f"d{d}", "\n".join(texts), "t"), chunks,
                                         [_chunk_embedding(centers[d], rng) for _ in texts]))
        opened.write_documents(target, docs)
        yield opened


def _query(seed: int = 1) -> Embedding:
    rng = np.random.default_rng(seed)
    return Embedding(4, False, _unit(rng.standard_normal(16)),
                     SparseVector(np.arange(0, 40, 3, dtype=np.int64), np.ones(14, dtype=np.float32)))


def _search(searcher: Searcher, **request: object) -> list[SearchHit]:
    return searcher.search_embedded("kb", "doc part", _query(), SearchRequest(**request)).hits  # type: ignore[arg-type]


def test_group_hits_keeps_each_documents_best_chunk_and_lists_the_others() -> None:
    hits = [SearchHit("a", 1, 0.9, "a1", ordinal=3, start=30, end=40), SearchHit("b", 7, 0.8, "b7", ordinal=0),
            SearchHit("a", 2, 0.7, "a2", ordinal=1, start=10, end=20), SearchHit("c", 9, 0.6, "c9"),
            SearchHit("b", 8, 0.5, "b8", ordinal=1, start=5, end=9)]
    grouped = group_hits(hits)
    assert [(h.document_id, h.chunk_id, h.score) for h in grouped] == [("a", 1, 0.9), ("b", 7, 0.8), ("c", 9, 0.6)]
    assert [(c.chunk_id, c.ordinal, c.start, c.end, c.score) for c in grouped[0].other_chunks or ()] == [
        (2, 1, 10, 20, 0.7)]
    assert grouped[2].other_chunks == ()
    assert [h.document_id for h in group_hits(hits, 2)] == ["a", "b"]
    data = grouped[1].as_dict()
    assert data["ordinal"] == 0 and data["other_chunks"] == [{"chunk_id": 8, "ordinal": 1, "start": 5, "end": 9,
                                                              "score": 0.5}]


@pytest.mark.parametrize("strategy", ["dense", "sparse", "hybrid", "weighted"])
def test_k_documents_one_hit_each_in_the_order_of_their_best_chunk(store: SQLiteStore, strategy: str) -> None:
    searcher = Searcher(store, cache=IndexCache())
    chunks = _search(searcher, strategy=strategy, k=DOCUMENTS * CHUNKS, candidates=DOCUMENTS * CHUNKS,
                     group_by="chunk")  # every chunk, best first
    for k in (1, 5, 10):
        result = searcher.search_embedded("kb", "doc part", _query(), SearchRequest(
            strategy, k=k, candidates=DOCUMENTS * CHUNKS))  # type: ignore[arg-type]
        found = result.hits
        ids = [h.document_id for h in found]
        assert len(ids) == k == len(set(ids))
        best: dict[str, SearchHit] = {}
        for hit in chunks:
            best.setdefault(hit.document_id, hit)
        assert [(h.document_id, h.chunk_id) for h in found] == [(h.document_id, h.chunk_id)
                                                                for h in list(best.values())[:k]]
        ranked = chunks[: result.details["chunks_ranked"]]
        for hit in found:  # the other matching chunks: the document's other chunks ranked, best first, located
            others = [h for h in ranked if h.document_id == hit.document_id and h.chunk_id != hit.chunk_id]
            assert [(c.chunk_id, c.ordinal, c.start, c.end) for c in hit.other_chunks or ()] == [
                (h.chunk_id, h.ordinal, h.start, h.end) for h in others]
            assert hit.text.startswith(f"{hit.document_id.replace('d', 'doc')} part {hit.ordinal} ")
            assert hit.start is not None and hit.end == hit.start + len(hit.text)


def test_a_document_search_looks_deeper_until_it_has_k_documents(store: SQLiteStore) -> None:
    searcher = Searcher(store, cache=IndexCache())
    first = _search(searcher, strategy="dense", k=30, group_by="chunk")
    assert len({h.document_id for h in first}) < 4  # 30 chunks (3 per wanted document) cover few documents
    result = searcher.search_embedded("kb", "", _query(), SearchRequest("dense", k=10, candidates=10))
    assert len({h.document_id for h in result.hits}) == len(result.hits) == 10
    assert result.details["group_by"] == "document" and result.details["k"] == 10
    assert result.details["chunks_ranked"] > 30
    everything = _search(searcher, strategy="dense", k=50)  # more documents than the collection has: all 12
    assert sorted(h.document_id for h in everything) == sorted(f"d{i}" for i in range(DOCUMENTS))
    assert all(len(h.other_chunks or ()) == CHUNKS - 1 for h in everything)


def test_chunk_mode_returns_every_matching_chunk_as_before(store: SQLiteStore) -> None:
    searcher = Searcher(store, cache=IndexCache())
    result = searcher.search_embedded("kb", "", _query(), SearchRequest("dense", k=20, group_by="chunk"))
    assert len(result.hits) == 20 and len({h.document_id for h in result.hits}) < 20
    assert all(h.other_chunks is None and "other_chunks" not in h.as_dict() for h in result.hits)
    assert result.details["group_by"] == "chunk"
    scores = [h.score for h in result.hits]
    assert scores == sorted(scores, reverse=True)
    with pytest.raises(InputError, match="group_by must be document or chunk"):
        SearchRequest(group_by="page").checked()  # type: ignore[arg-type]


class _LengthScorer:
    """A cross-encoder stand-in that prefers short chunks (the opposite of nothing the first stage knows)."""

    name = "ms-marco-minilm-l-6-v2"

    def score(self, query: str, passages: Sequence[str]) -> list[float]:
        return [-len(p) + 0.001 * (sum(map(ord, p)) % 97) for p in passages]


def test_documents_are_grouped_after_the_rerank(store: SQLiteStore) -> None:
    pool = RerankerPool(get_settings(), loader=lambda name, settings: _LengthScorer(), cache={})
    searcher = Searcher(store, cache=IndexCache(), rerankers=pool)
    request = {"strategy": "hybrid", "rerank": "ms-marco-minilm-l-6-v2", "rerank_k": 60}
    chunks = _search(searcher, k=60, group_by="chunk", **request)
    found = _search(searcher, k=2, **request)
    best: dict[str, SearchHit] = {}
    for hit in chunks:  # the reranked chunks, best first
        best.setdefault(hit.document_id, hit)
    assert [(h.document_id, h.chunk_id, h.score) for h in found] == [(h.document_id, h.chunk_id, h.score)
                                                                     for h in list(best.values())[:2]]
    assert all(h.rerank is not None and "rerank" in h.breakdown for h in found)
    first_stage = _search(searcher, strategy="hybrid", k=60, group_by="chunk")
    top_first = {}
    for hit in first_stage:
        top_first.setdefault(hit.document_id, hit.chunk_id)
    assert any(top_first[h.document_id] != h.chunk_id for h in found)  # the reranker chose another best chunk
    few = searcher.search_embedded("kb", "doc part", _query(), SearchRequest(
        "dense", k=5, rerank="ms-marco-minilm-l-6-v2", rerank_k=10))
    assert len({h.document_id for h in few.hits}) == len(few.hits) == 5  # 10 chunks covered fewer documents
    assert few.details["rerank"]["candidates"] == few.details["chunks_ranked"] > 10


def test_evaluation_runs_rank_documents_through_the_same_grouping(store: SQLiteStore) -> None:
    searcher = Searcher(store, cache=IndexCache())
    dataset = Dataset("synthetic", [], {"q1": "doc part"}, {"q1": {"d0": 1}})
    run = document_run(searcher, "kb", dataset, "dense", 10, [_query()], SearchRequest())
    grouped = _search(searcher, strategy="dense", k=10)
    assert run == {"q1": {h.document_id: h.score for h in grouped}}
    assert len(run["q1"]) == 10  # 10 documents even though their 30 best chunks cover far fewer


def test_search_cli_groups_by_document_unless_asked_for_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    from m3search.ingest.pipeline import index_documents
    from m3search.models.encoders.loader import load_encoder
    from tests.cli import run_cli

    monkeypatch.setenv("M3SEARCH_MAX_LENGTH", "16")  # short chunks: each document splits into several
    db = tmp_path / "cli.sqlite3"
    texts = {f"t{i}": " ".join(f"{w} wing flow" for w in ("lift", "drag", "heat", "plate", "jet")[: i + 2] * 4)
             for i in range(4)}
    with SQLiteStore(db) as opened:
        index_documents(opened, load_encoder("hash"), "kb", [Document(d, t, "t") for d, t in texts.items()])
        assert opened.counts("kb")[1] > 2 * len(texts)
    args = ["search", "-c", "kb", "wing flow", "--db", str(db), "--strategy", "bm25", "--k", "3", "--json"]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    documents = json.loads(out)
    assert documents["group_by"] == "document" and len({h["document_id"] for h in documents["hits"]}) == 3
    assert all(h["other_chunks"] and h["ordinal"] is not None for h in documents["hits"])
    code, out, _ = run_cli([*args, "--group-by", "chunk"], capsys)
    chunks = json.loads(out)
    assert code == 0 and chunks["group_by"] == "chunk" and len(chunks["hits"]) == 3
    assert len({h["document_id"] for h in chunks["hits"]}) < 3 and "other_chunks" not in chunks["hits"][0]
    code, out, _ = run_cli(args[:-1], capsys)
    assert code == 0 and out.count("also matches chunks #") == 3
    code, _, err = run_cli([*args, "--group-by", "page"], capsys)
    assert code == 2 and "group_by must be document or chunk" in err and "Traceback" not in err


def _table_documents(out: str) -> list[list[str]]:
    """The document column of each table the demo prints (one list per query)."""
    tables: list[list[str]] = []
    for line in out.splitlines():
        if line.startswith("┏"):
            tables.append([])
        found = re.match(r"^│\s+\d+ │\s+[\d.]+ │ (\S+)", line)
        if found and tables:
            tables[-1].append(found.group(1))
    return tables


def test_demo_prints_each_document_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    from m3search.cli.demo import QUERIES
    from tests.cli import run_cli

    monkeypatch.setenv("M3SEARCH_MAX_LENGTH", "32")  # short chunks: the FAQ answers split into several
    monkeypatch.setenv("COLUMNS", "200")
    db = str(tmp_path / "demo.sqlite3")
    code, out, err = run_cli(["demo", "--model", "hash", "--k", "5", "--db", db], capsys)
    assert code == 0, err
    tables = _table_documents(out)
    assert len(tables) == len(QUERIES) and all(len(t) == 5 == len(set(t)) for t in tables)
    assert "more chunk(s)" in out
    repeated = 0
    for query in QUERIES:  # the same searches by chunk repeat documents: what the demo showed before
        _, chunks, _ = run_cli(["search", "-c", "demo-hash", query, "--db", db, "--model", "hash", "--k", "5",
                                "--group-by", "chunk", "--json"], capsys)
        ids = [h["document_id"] for h in json.loads(chunks)["hits"]]
        repeated += len(ids) - len(set(ids))
    assert repeated > 0
