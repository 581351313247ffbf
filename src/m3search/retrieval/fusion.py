"""Fusing ranked lists: reciprocal rank fusion and normalised weighted score sums.

A ranking is a sequence of ``(id, score)``, best first. Ties in the fused list are broken by id, so results
are deterministic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, get_args

from m3search.errors import InputError

Ranking = Sequence[tuple[int, float]]
Id = TypeVar("Id", int, str)  # chunk ids in searches, document ids in evaluation runs

# RRF's k: 60 is the value of the original paper (Cormack et al., 2009) and the default of Elasticsearch,
# OpenSearch, Azure AI Search, Milvus, Qdrant and LanceDB; smaller values favour the top ranks.
DEFAULT_RRF_K = 60

FusionMethod = Literal["max", "rrf", "dbsf", "minmax"]
FUSION_METHODS: tuple[FusionMethod, ...] = get_args(FusionMethod)


def _check_weights(names: Sequence[str], weights: Mapping[str, float] | None) -> dict[str, float]:
    chosen = {name: 1.0 for name in names} if weights is None else {n: float(weights.get(n, 0.0)) for n in names}
    if any(w < 0 for w in chosen.values()) or sum(chosen.values()) <= 0:
        raise InputError(f"weights must be non-negative and not all zero, not {chosen}")
    return chosen


def ranked(scores: Mapping[Id, float]) -> list[tuple[Id, float]]:
    """``scores`` as a ranking: best first, ties by id (every ranking of m3search is ordered so: deterministic)."""
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))


def rrf(rankings: Mapping[str, Ranking], k: int = DEFAULT_RRF_K,
        weights: Mapping[str, float] | None = None) -> list[tuple[int, float]]:
    """Reciprocal rank fusion: each id scores ``sum(weight / (k + rank))`` over the rankings it appears in.

    Only ranks matter, so retrievers with incomparable score scales (cosine, lexical weights, BM25) fuse
    without tuning. An id repeated within one ranking counts once, at its best rank.
    """
    if k < 0:
        raise InputError(f"rrf_k must be >= 0, not {k}")
    chosen = _check_weights(list(rankings), weights)
    scores: dict[int, float] = {}
    for name, ranking in rankings.items():
        seen: set[int] = set()
        for rank, (item, _) in enumerate(ranking, start=1):
            if item in seen:
                continue
            seen.add(item)
            scores[item] = scores.get(item, 0.0) + chosen[name] / (k + rank)
    return ranked(scores)


def min_max(ranking: Ranking) -> dict[int, float]:
    """Scores scaled to [0, 1] within the ranking (all equal: 1)."""
    if not ranking:
        return {}
    values = [score for _, score in ranking]
    low, high = min(values), max(values)
    span = high - low
    return {item: (score - low) / span if span > 0 else 1.0 for item, score in ranking}


def weighted(rankings: Mapping[str, Ranking], weights: Mapping[str, float] | None = None
             ) -> list[tuple[int, float]]:
    """Weighted sum of min-max normalised scores, divided by the sum of weights (a result in [0, 1]).

    An id missing from a ranking gets 0 from it (it scored below that retriever's candidates).
    """
    chosen = _check_weights(list(rankings), weights)
    total = sum(chosen.values())
    scores: dict[int, float] = {}
    for name, ranking in rankings.items():
        for item, value in min_max(ranking).items():
            scores[item] = scores.get(item, 0.0) + chosen[name] * value / total
    return ranked(scores)


def dbsf(rankings: Mapping[str, Ranking], weights: Mapping[str, float] | None = None) -> list[tuple[int, float]]:
    """Distribution-based score fusion (Qdrant's ``Fusion.DBSF``): each ranking's scores are mapped from
    [mean - 3 sd, mean + 3 sd] (sample sd) to [0, 1], then summed (times the ranking's weight: 1 each unless
    ``weights`` say); a ranking of one score (or equal ones) gives 0.5.

    Unlike min-max, one outlier does not squash the other scores of its ranking.
    """
    chosen = _check_weights(list(rankings), weights)
    scores: dict[int, float] = {}
    for name, ranking in rankings.items():
        values = [score for _, score in ranking]
        if not values:
            continue
        mean = sum(values) / len(values)
        sd = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else 0.0
        for item, score in ranking:
            scaled = (score - mean + 3 * sd) / (6 * sd) if sd > 0 else 0.5
            scores[item] = scores.get(item, 0.0) + chosen[name] * scaled
    return ranked(scores)


def max_normalised(rankings: Mapping[str, Ranking], weights: Mapping[str, float] | None = None
                   ) -> list[tuple[int, float]]:
    """Weighted sum of scores divided by each ranking's largest absolute score (Lee's "max" normalisation: the
    top hit of each retriever scores 1), divided by the sum of weights.

    Unlike min-max, a retriever whose candidates all score alike (it cannot tell them apart) gives them all about
    its full weight, so it moves nothing: the other retriever decides.
    """
    chosen = _check_weights(list(rankings), weights)
    total = sum(chosen.values())
    scores: dict[int, float] = {}
    for name, ranking in rankings.items():
        scale = max((abs(score) for _, score in ranking), default=0.0)
        for item, score in ranking:
            scores[item] = scores.get(item, 0.0) + chosen[name] * (score / scale if scale > 0 else 0.0) / total
    return ranked(scores)


@dataclass(frozen=True)
class FusionSettings:
    """How ``hybrid`` fuses its retrievers' rankings: the method, each retriever's weight and RRF's k.

    ``method`` is ``max`` (weighted sum of scores divided by each retriever's top score), ``rrf`` (weighted
    reciprocal rank fusion), ``dbsf`` (weighted distribution-based score fusion) or ``minmax`` (weighted sum of
    min-max normalised scores, what the ``weighted`` strategy does). A retriever missing from ``weights`` weighs 0.
    """

    method: FusionMethod
    weights: Mapping[str, float]
    rrf_k: int = DEFAULT_RRF_K

    def fuse(self, rankings: Mapping[str, Ranking]) -> list[tuple[int, float]]:
        """The fused ranking, best first (ties by id)."""
        weights = {name: float(self.weights.get(name, 0.0)) for name in rankings}
        if self.method == "max":
            return max_normalised(rankings, weights)
        if self.method == "rrf":
            return rrf(rankings, self.rrf_k, weights)
        if self.method == "dbsf":
            return dbsf(rankings, weights)
        if self.method == "minmax":
            return weighted(rankings, weights)
        raise InputError(f"fusion must be one of {', '.join(FUSION_METHODS)}, not {self.method!r}")

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"fusion": ..., "weights": {...}, "rrf_k": ...}`` (rrf_k only for rrf)."""
        found: dict[str, Any] = {"fusion": self.method, "weights": dict(self.weights)}
        if self.method == "rrf":
            found["rrf_k"] = self.rrf_k
        return found

    def describe(self) -> str:
        weights = ", ".join(f"{name}={value:g}" for name, value in self.weights.items())
        return f"{self.method} ({weights}{f', rrf_k={self.rrf_k}' if self.method == 'rrf' else ''})"



# hybrid's built-in fusion when neither the request nor the collection (eval --tune) says: chosen by
# benchmarks/bench_quality.py (choose_default) as the setting whose worst nDCG@10 margin over the best single
# retriever, over Cranfield and the Debian FAQ en/de/fr/de->en, is largest; see docs/fusion.md.
DEFAULT_METHOD: FusionMethod = "max"
DEFAULT_PAIR_WEIGHTS: dict[tuple[str, str], dict[str, float]] = {
    ("dense", "bm25"): {"dense": 0.7, "bm25": 0.3},  # measured with all-MiniLM-L6-v2
    ("sparse", "bm25"): {"sparse": 0.3, "bm25": 0.7},  # measured with SPLADE-tiny (a 2-layer model: bm25 leads)
    ("dense", "sparse"): {"dense": 0.7, "sparse": 0.3},  # BGE-M3: not measured (no weights offline); dense + lexical
}


def default_fusion(names: Sequence[str]) -> FusionSettings:
    """The built-in fusion of retrievers ``names`` (equal weights for a combination not measured)."""
    weights = DEFAULT_PAIR_WEIGHTS.get((names[0], names[1]) if len(names) == 2 else ("", ""))
    return FusionSettings(DEFAULT_METHOD, dict(weights) if weights else {name: 1.0 for name in names}, DEFAULT_RRF_K)
