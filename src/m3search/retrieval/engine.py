"""The strategies run by a search engine (Qdrant) instead of m3search's in-memory indexes.

What the engine does: nearest neighbours in the named vectors (``dense``, ``sparse``), BM25 on the chunk text,
``prefetch`` + RRF/DBSF fusion (``hybrid``), prefetch + ColBERT MaxSim rescoring (``colbert``, ``all``), filters.
``weighted`` fuses the engine's rankings here (Qdrant has no min-max weighted fusion) and ``all`` adds the
engine's dense, sparse and MaxSim scores of the prefetched candidates with the BGE-M3 weights, so every strategy
returns what the SQLite store returns for the same vectors. ``two_stage`` is not offered: Qdrant keeps one
dimension per named vector (its quantization with rescoring is the engine's equivalent).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from m3search.errors import ConfigError, InputError
from m3search.retrieval.fusion import Ranking, weighted
from m3search.retrieval.strategies import Outcome, fusion_retrievers, retrievers_of
from m3search.retrieval.types import DEFAULT_WEIGHTS, SearchRequest
from m3search.store.filters import Scalar
from m3search.store.qdrant.driver import COLBERT, DENSE, SPARSE, TEXT, Probe, Query, Where
from m3search.store.types import EmbeddingSet
from m3search.types import Embedding


class EngineStore(Protocol):
    """A store that searches in its engine (``searches_in_engine = True``)."""

    def query(self, target: EmbeddingSet, query: Query) -> list[tuple[int, float]]: ...


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

    def run(self, final: Probe | str, limit: int, prefetch: tuple[Probe, ...] = (),
            ids: list[int] | None = None) -> Ranking:
        where = Where(self.filters, ids=ids)
        return self.store.query(self.target, Query(final, limit, prefetch, where,  # type: ignore[arg-type]
                                                   rrf_k=self.request.rrf_k))

    def retrieve(self, name: str, limit: int) -> Ranking:
        return self.run(self.probe(name, limit), limit)

    def maxsim(self, limit: int, prefetch: tuple[Probe, ...]) -> Ranking:
        """ColBERT scores of the prefetched candidates: Qdrant's MaxSim sums over query vectors, BGE-M3's
        ``colbert_score`` averages, so the engine's scores are divided by the query's vector count."""
        assert self.embedding is not None and self.embedding.colbert is not None
        rows = max(len(self.embedding.colbert), 1)
        return [(i, score / rows) for i, score in self.run(self.probe("colbert", limit), limit, prefetch)]


def _single(name: str) -> Callable[[EngineContext], Outcome]:
    def run(ctx: EngineContext) -> Outcome:
        ranking = ctx.retrieve(name, ctx.request.k)
        return Outcome(ranking, {name: ranking})

    return run


def _hybrid(ctx: EngineContext) -> Outcome:
    names = fusion_retrievers(ctx.target.config.outputs)
    parts = {name: ctx.retrieve(name, ctx.depth) for name in names}  # the breakdown's per-retriever ranks
    fused = ctx.run(ctx.request.fusion, ctx.depth, tuple(ctx.probe(n, ctx.depth) for n in names))
    return Outcome(fused, parts)


def _weighted(ctx: EngineContext) -> Outcome:
    names = fusion_retrievers(ctx.target.config.outputs)
    parts = {name: ctx.retrieve(name, ctx.depth) for name in names}
    given = ctx.request.weights
    weights = {n: float(given.get(n, 0.0)) if given is not None else DEFAULT_WEIGHTS[n] for n in names}
    return Outcome(weighted(parts, weights), parts)


def _colbert(ctx: EngineContext) -> Outcome:
    first = retrievers_of("colbert", ctx.target.config.outputs)[0]
    candidates = ctx.retrieve(first, ctx.depth)
    reranked = ctx.maxsim(ctx.depth, (ctx.probe(first, ctx.depth),))
    return Outcome(reranked, {first: candidates, "colbert": reranked})


def _all(ctx: EngineContext) -> Outcome:
    """Dense and sparse prefetch, MaxSim over their candidates in the engine; the three scores of every candidate
    weighted as in the BGE-M3 paper (0.4 dense + 0.2 sparse + 0.4 ColBERT by default)."""
    stages = (ctx.probe("dense", ctx.depth), ctx.probe("sparse", ctx.depth))
    pool = sorted({i for stage in stages for i, _ in ctx.run(stage, ctx.depth)})
    if not pool:
        return Outcome([], {"dense": [], "sparse": [], "colbert": []})
    colbert = ctx.maxsim(len(pool), stages)
    dense = ctx.run(ctx.probe("dense", len(pool)), len(pool), ids=pool)
    sparse = ctx.run(ctx.probe("sparse", len(pool)), len(pool), ids=pool)
    given = ctx.request.weights
    weights = {n: float(given.get(n, 0.0)) if given is not None else DEFAULT_WEIGHTS[n]
               for n in ("dense", "sparse", "colbert")}
    total = sum(weights.values())
    if total <= 0 or min(weights.values()) < 0:
        raise InputError(f"weights must be non-negative and not all zero, not {weights}")
    scores = {name: dict(r) for name, r in (("dense", dense), ("sparse", sparse), ("colbert", colbert))}
    final = {i: sum(w * scores[n].get(i, 0.0) for n, w in weights.items()) / total for i in pool}
    ranked = sorted(final.items(), key=lambda item: (-item[1], item[0]))
    return Outcome(ranked, {"dense": dense, "sparse": sparse, "colbert": colbert})


def _two_stage(ctx: EngineContext) -> Outcome:
    raise ConfigError("two_stage is not supported by Qdrant stores (one dimension per named vector); use 'dense' "
                      "(Qdrant's HNSW) or an SQLite store")


ENGINE_STRATEGIES: dict[str, Callable[[EngineContext], Outcome]] = {
    "dense": _single("dense"), "sparse": _single("sparse"), "bm25": _single("bm25"), "colbert": _colbert,
    "hybrid": _hybrid, "weighted": _weighted, "all": _all, "two_stage": _two_stage,
}
