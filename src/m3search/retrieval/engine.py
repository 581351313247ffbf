"""The strategies run by a search engine (Qdrant) instead of m3search's in-memory indexes.

What the engine does: nearest neighbours in the named vectors (``dense``, ``sparse``), BM25 on the chunk text,
prefetch + ColBERT MaxSim rescoring (``colbert``, ``all``), filters. ``hybrid`` and ``weighted`` fuse the engine's
rankings here (Qdrant's RRF and DBSF take no per-retriever weights, and it has no min-max fusion) and ``all`` adds the
engine's dense, sparse and MaxSim scores of the prefetched candidates with the BGE-M3 weights, so every strategy
returns what the SQLite store returns for the same vectors. ``two_stage`` is not offered: Qdrant keeps one
dimension per named vector (its quantization with rescoring is the engine's equivalent).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from m3search.errors import ConfigError
from m3search.retrieval.defaults import hybrid_settings
from m3search.retrieval.fusion import Ranking, weighted
from m3search.retrieval.strategies import Outcome, fusion_retrievers, paper_scores, request_weights, retrievers_of
from m3search.retrieval.types import SearchRequest
from m3search.store.base import EngineStore
from m3search.store.filters import Scalar
from m3search.store.queries import COLBERT, DENSE, SPARSE, TEXT, Probe, Query, Where
from m3search.store.types import EmbeddingSet
from m3search.types import Embedding


@dataclass(frozen=True)
class EngineContext:
    store: EngineStore
    target: EmbeddingSet
    text: str
    embedding: Embedding | None
    request: SearchRequest
    filters: dict[str, list[Scalar]]

    @property
    def depth(self) -> int:
        return max(self.request.candidates, self.request.k)

    def probe(self, name: str, limit: int) -> Probe:
        """The first-stage query of retriever ``name`` (dense, sparse, bm25 or colbert)."""
        if name == "bm25":
            return Probe(TEXT, self.text, limit)
        value: Any = getattr(self.embedding, name, None)
        assert value is not None  # required_outputs checked the query has it
        return Probe({"dense": DENSE, "sparse": SPARSE, "colbert": COLBERT}[name], value, limit)

    def query(self, final: Probe, limit: int, prefetch: tuple[Probe, ...] = (),
              ids: list[int] | None = None) -> Query:
        return Query(final, limit, prefetch, Where(self.filters, ids=ids))

    def run(self, *queries: Query) -> list[Ranking]:
        """The queries in one batch call of the engine."""
        return list(self.store.query(self.target, *queries))

    def first_stage(self, name: str, limit: int) -> Query:
        return self.query(self.probe(name, limit), limit)

    def maxsim(self, ranking: Ranking) -> Ranking:
        """Qdrant's MaxSim sums over query vectors, BGE-M3's ``colbert_score`` averages: divide by their count."""
        assert self.embedding is not None and self.embedding.colbert is not None
        rows = max(len(self.embedding.colbert), 1)
        return [(i, score / rows) for i, score in ranking]


def _single(name: str) -> Callable[[EngineContext], Outcome]:
    def run(ctx: EngineContext) -> Outcome:
        ranking = ctx.run(ctx.first_stage(name, ctx.request.k))[0]
        return Outcome(ranking, {name: ranking})

    return run


def _hybrid(ctx: EngineContext) -> Outcome:
    """The engine runs the retrievers in one batch and m3search fuses them: Qdrant's RRF and DBSF take no
    per-retriever weights, and one fusion implementation gives the same ranking in every store."""
    names = fusion_retrievers(ctx.target.config.outputs)
    parts = dict(zip(names, ctx.run(*(ctx.first_stage(n, ctx.depth) for n in names)), strict=True))
    return Outcome(hybrid_settings(ctx.request, names).fuse(parts), parts)


def _weighted(ctx: EngineContext) -> Outcome:
    names = fusion_retrievers(ctx.target.config.outputs)
    parts = dict(zip(names, ctx.run(*(ctx.first_stage(n, ctx.depth) for n in names)), strict=True))
    return Outcome(weighted(parts, request_weights(ctx.request, names)), parts)


def _colbert(ctx: EngineContext) -> Outcome:
    first = retrievers_of("colbert", ctx.target.config.outputs)[0]
    rerank = ctx.query(ctx.probe("colbert", ctx.depth), ctx.depth, (ctx.probe(first, ctx.depth),))
    candidates, reranked = ctx.run(ctx.first_stage(first, ctx.depth), rerank)
    reranked = ctx.maxsim(reranked)
    return Outcome(reranked, {first: candidates, "colbert": reranked})


def _all(ctx: EngineContext) -> Outcome:
    """Dense and sparse prefetch, MaxSim over their candidates in the engine; the three scores of every candidate
    weighted as in the BGE-M3 paper (0.4 dense + 0.2 sparse + 0.4 ColBERT by default)."""
    paper_scores(ctx.request, [], {})  # bad weights are refused before the engine is asked anything
    stages = (ctx.probe("dense", ctx.depth), ctx.probe("sparse", ctx.depth))
    pool = sorted({i for ranking in ctx.run(*(ctx.query(s, ctx.depth) for s in stages)) for i, _ in ranking})
    if not pool:
        return Outcome([], {"dense": [], "sparse": [], "colbert": []})
    size = len(pool)
    colbert, dense, sparse = ctx.run(ctx.query(ctx.probe("colbert", size), size, stages),
                                     ctx.query(ctx.probe("dense", size), size, ids=pool),
                                     ctx.query(ctx.probe("sparse", size), size, ids=pool))
    colbert = ctx.maxsim(colbert)
    final = paper_scores(ctx.request, pool, {"dense": dict(dense), "sparse": dict(sparse), "colbert": dict(colbert)})
    return Outcome(final, {"dense": dense, "sparse": sparse, "colbert": colbert})


def _two_stage(ctx: EngineContext) -> Outcome:
    raise ConfigError("two_stage is not supported by Qdrant stores (one dimension per named vector); use 'dense' "
                      "(Qdrant's HNSW) or an SQLite store")


ENGINE_STRATEGIES: dict[str, Callable[[EngineContext], Outcome]] = {
    "dense": _single("dense"), "sparse": _single("sparse"), "bm25": _single("bm25"), "colbert": _colbert,
    "hybrid": _hybrid, "weighted": _weighted, "all": _all, "two_stage": _two_stage,
}
