"""Search requests and results: what a caller asks for and what each hit says about why it ranked."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast, get_args

from m3search.errors import InputError, ParameterError
from m3search.limits import MAX_CANDIDATES, MAX_K, MAX_RERANK_K
from m3search.models.encoders.scores import DEFAULT_WEIGHTS as M3_WEIGHTS
from m3search.models.rerank.registry import LLM, find_reranker, list_rerankers
from m3search.retrieval.fusion import FUSION_METHODS, FusionMethod
from m3search.store.filters import Filters, Scalar, check_filters

Strategy = Literal["dense", "sparse", "bm25", "colbert", "hybrid", "weighted", "all", "two_stage"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)
Fusion = FusionMethod
GroupBy = Literal["document", "chunk"]
GROUP_BY: tuple[str, ...] = get_args(GroupBy)

# The BGE-M3 README's weights for dense, sparse and ColBERT scores (defined once, in models.scores) by retriever
# name; bm25 stands in for sparse when a model has no sparse output.
DEFAULT_WEIGHTS: dict[str, float] = {**dict(zip(("dense", "sparse", "colbert"), M3_WEIGHTS, strict=True)),
                                     "bm25": M3_WEIGHTS[1]}


def check_strategy(name: object) -> Strategy:
    """``name`` if it is one of :data:`STRATEGIES`; :class:`InputError` otherwise."""
    if name not in STRATEGIES:
        raise InputError(f"unknown strategy {name!r}; use one of {', '.join(STRATEGIES)}")
    return cast(Strategy, name)


@dataclass(frozen=True)
class SearchRequest:
    """One search.

    Attributes:
        strategy: see :data:`STRATEGIES` and the strategy table of docs/retrieval.md.
        k: hits to return.
        filters: metadata filters (``{"key": value}`` or ``{"key": [values]}``), applied by every strategy.
        fusion: how ``hybrid`` fuses: ``max`` (weighted scores, each retriever's divided by its top one), ``rrf``
            (weighted ranks), ``dbsf`` (weighted distribution-based score fusion, Qdrant's) or ``minmax`` (weighted
            min-max normalised scores); None = the collection's saved setting (``m3search eval --tune``), else the
            built-in default (docs/fusion.md).
        rrf_k: the constant of reciprocal rank fusion (``hybrid`` with ``rrf``); None = as ``fusion``.
        weights: per-retriever weights (``hybrid``, ``weighted``, ``all``); missing names weigh 0; None = the
            defaults (``hybrid``: as ``fusion``).
        candidates: how deep each retriever of a fusion or rerank looks.
        coarse_dim: Matryoshka dimension of the first stage (``two_stage``); must be one of the model's.
        coarse_k: candidates kept by the first stage (``two_stage``).
        rerank: a cross-encoder's registry name, or ``"llm"`` (the configured chat endpoint); None = no rerank.
        rerank_k: first-stage candidates the reranker reorders (at least ``k``).
        group_by: ``document`` (one hit per document: its best chunk, the other matching chunks listed; ``k``
            documents) or ``chunk`` (every matching chunk is a hit; ``k`` chunks).

    Limits: :mod:`m3search.limits`.
    """

    strategy: Strategy = "hybrid"
    k: int = 10
    filters: Filters | None = None
    rrf_k: int | None = None
    weights: Mapping[str, float] | None = None
    candidates: int = 100
    coarse_dim: int | None = None
    coarse_k: int = 100
    fusion: Fusion | None = None
    rerank: str | None = None
    rerank_k: int = 50
    group_by: GroupBy = "document"

    def checked(self) -> tuple[SearchRequest, dict[str, list[Scalar]]]:
        """Validate; returns the request and its normalised filters, or raises :class:`InputError`."""
        check_strategy(self.strategy)
        for name, most in (("k", MAX_K), ("candidates", MAX_CANDIDATES), ("coarse_k", MAX_CANDIDATES),
                           ("rerank_k", MAX_RERANK_K)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= most:
                raise ParameterError(name, f"must be an integer from 1 to {most}, not {value!r}")
        if self.rrf_k is not None and (not isinstance(self.rrf_k, int) or isinstance(self.rrf_k, bool) or
                                       self.rrf_k < 0):
            raise ParameterError("rrf_k", f"must be an integer >= 0, not {self.rrf_k!r}")
        if self.fusion is not None and self.fusion not in FUSION_METHODS:
            raise InputError(f"fusion must be one of {', '.join(FUSION_METHODS)}, not {self.fusion!r}")
        if self.group_by not in GROUP_BY:
            raise InputError(f"group_by must be document or chunk, not {self.group_by!r}")
        self._check_rerank()
        if self.weights is not None:
            unknown = sorted(set(self.weights) - set(DEFAULT_WEIGHTS))
            if unknown:
                raise InputError(f"unknown weight(s) {', '.join(unknown)}; use {', '.join(DEFAULT_WEIGHTS)}")
        return self, check_filters(self.filters)

    def _check_rerank(self) -> None:
        if self.rerank is None:
            return
        if not isinstance(self.rerank, str) or (self.rerank != LLM and find_reranker(self.rerank) is None):
            known = ", ".join([s.name for s in list_rerankers()] + [LLM])
            raise InputError.explained(f"unknown reranker {self.rerank!r}; use one of {known}",
                                       " (see m3search.models.rerank.registry.list_rerankers())",
                                       cli=" (see 'm3search models list --rerankers')", http="")
        if self.rerank_k < self.k:
            raise ParameterError("rerank_k", f"({self.rerank_k}) must be at least k ({self.k}): the reranker can "
                                             f"only return candidates the first stage found")


@dataclass(frozen=True)
class RerankNote:
    """How a hit was reranked: by which model, ``ok`` or ``failed-open`` (first-stage order kept) and why."""

    by: str
    status: Literal["ok", "failed-open"]
    reason: str | None = None


@dataclass(frozen=True)
class Contribution:
    """A retriever's view of one hit: its rank (1 = best) and raw score there."""

    rank: int
    score: float


@dataclass(frozen=True)
class ChunkMatch:
    """Another matching chunk of a document hit: where it is (ordinal, character span) and its final score."""

    chunk_id: int
    ordinal: int | None
    start: int | None
    end: int | None
    score: float

    def as_dict(self) -> dict[str, Any]:
        return {"chunk_id": self.chunk_id, "ordinal": self.ordinal, "start": self.start, "end": self.end,
                "score": self.score}


@dataclass(frozen=True)
class SearchHit:
    """One result: the chunk, its document, the final score and the per-retriever breakdown.

    ``ordinal``, ``start`` and ``end`` locate the chunk in its document (None when unknown); ``other_chunks`` is
    set in ``group_by="document"`` results: the document's other matching chunks, best first (this hit is its
    best chunk)."""

    document_id: str
    chunk_id: int
    score: float
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)
    breakdown: dict[str, Contribution] = field(default_factory=dict)
    rerank: RerankNote | None = None
    ordinal: int | None = None
    start: int | None = None
    end: int | None = None
    other_chunks: tuple[ChunkMatch, ...] | None = None

    def as_dict(self) -> dict[str, Any]:
        breakdown: dict[str, dict[str, Any]] = {name: {"rank": c.rank, "score": c.score}
                                                for name, c in self.breakdown.items()}
        if self.rerank is not None:  # the rerank's rank and score (None when it failed open), and its status
            breakdown["rerank"] = {**breakdown.get("rerank", {"rank": None, "score": None}),
                                   "by": self.rerank.by, "status": self.rerank.status, "reason": self.rerank.reason}
        found = {"document_id": self.document_id, "chunk_id": self.chunk_id, "score": self.score, "text": self.text,
                 "metadata": self.metadata, "breakdown": breakdown}
        if self.ordinal is not None:
            found.update(ordinal=self.ordinal, start=self.start, end=self.end)
        if self.other_chunks is not None:
            found["other_chunks"] = [c.as_dict() for c in self.other_chunks]
        return found


@dataclass(frozen=True)
class SearchResult:
    """The hits of one search, and what produced them."""

    collection: str
    strategy: str
    retrievers: tuple[str, ...]
    hits: list[SearchHit]
    took_ms: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"collection": self.collection, "strategy": self.strategy, "retrievers": list(self.retrievers),
                "took_ms": round(self.took_ms, 3), **self.details, "hits": [h.as_dict() for h in self.hits]}
