"""The search strategies: each turns a query into a final ranking plus the rankings it was made from.

Base retrievers are ``dense`` (dot product over the memory-resident matrix, HNSW above a size threshold),
``sparse`` (lexical weights, BGE-M3 or SPLADE), ``bm25`` (SQLite FTS5) and ``colbert`` (MaxSim over stored
multi-vectors, a reranker of candidates). The strategies combine them.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from m3search.errors import ConfigError, InputError, UnknownModelError
from m3search.models.encoders.scores import colbert_score
from m3search.models.registry import get_spec
from m3search.retrieval.defaults import hybrid_settings
from m3search.retrieval.filtering import BoolArray
from m3search.retrieval.fusion import Ranking, ranked, weighted
from m3search.retrieval.memory import SetIndex
from m3search.retrieval.types import DEFAULT_WEIGHTS, STRATEGIES, SearchRequest
from m3search.store.base import Store
from m3search.store.filters import Scalar
from m3search.store.types import EmbeddingSet
from m3search.types import Embedding, FloatArray, Output, SparseVector


@dataclass(frozen=True)
class Context:
    """Everything one search needs."""

    store: Store
    target: EmbeddingSet
    index: SetIndex
    text: str
    embedding: Embedding | None
    request: SearchRequest
    filters: dict[str, list[Scalar]]
    allowed: BoolArray | None
    mrl_dims: tuple[int, ...]
    pool: Executor  # runs a fusion's retrievers side by side (the searcher's runtime's threads)

    def dense_query(self) -> FloatArray:
        assert self.embedding is not None and self.embedding.dense is not None  # required_outputs asked for it
        return self.embedding.dense

    def sparse_query(self) -> SparseVector:
        assert self.embedding is not None and self.embedding.sparse is not None
        return self.embedding.sparse


@dataclass(frozen=True)
class Outcome:
    """The final ranking (best first) and the named rankings behind it."""

    final: Ranking
    parts: dict[str, Ranking]
    details: dict[str, object] = field(default_factory=dict)


def fusion_retrievers(outputs: tuple[str, ...]) -> tuple[str, ...]:
    """What ``hybrid`` and ``weighted`` fuse: dense and sparse, with bm25 standing in for a missing one."""
    base = tuple(r for r in ("dense", "sparse") if r in outputs)
    return base if len(base) == 2 else (*base, "bm25")


def retrievers_of(strategy: str, outputs: tuple[str, ...]) -> tuple[str, ...]:
    """The base retrievers ``strategy`` uses on a set with ``outputs``."""
    first = "dense" if "dense" in outputs else "sparse"
    return {
        "dense": ("dense",), "sparse": ("sparse",), "bm25": ("bm25",), "two_stage": ("dense",),
        "colbert": (first, "colbert"), "all": ("dense", "sparse", "colbert"),
    }.get(strategy, fusion_retrievers(outputs))


def required_outputs(strategy: str, target: EmbeddingSet) -> list[Output]:
    """The query outputs ``strategy`` needs; :class:`InputError` if the set lacks the stored vectors (suggesting
    what works: ColBERT vectors where the model has them, else the strategies this collection supports)."""
    outputs = target.config.outputs
    needed = [r for r in retrievers_of(strategy, outputs) if r != "bm25"]
    missing = [r for r in needed if r not in outputs]
    if missing:
        raise _missing_vectors(strategy, target, missing)
    return [o for o in ("dense", "sparse", "colbert") if o in needed]


def usable_strategies(outputs: tuple[str, ...], matryoshka: bool) -> list[str]:
    """The strategies a set holding ``outputs`` of a model with (or without) Matryoshka dims can serve."""
    return [s for s in STRATEGIES if all(r == "bm25" or r in outputs for r in retrievers_of(s, outputs))
            and (matryoshka or s != "two_stage")]


def _missing_vectors(strategy: str, target: EmbeddingSet, missing: list[str]) -> InputError:
    outputs, model = target.config.outputs, target.config.model
    what = (f"strategy '{strategy}' needs {', '.join(missing)} vectors, and collection '{target.collection}' "
            f"({model}) holds {', '.join(outputs)}")
    try:
        spec = get_spec(model)
        model_outputs: tuple[str, ...] = spec.outputs
        matryoshka = any(d < target.config.vector_dim for d in spec.mrl_dims)
    except UnknownModelError:  # a local model (never Matryoshka): suggest the strategies its collection serves
        model_outputs, matryoshka = tuple(outputs), False
    usable = ", ".join(usable_strategies(outputs, matryoshka))
    if not set(missing) <= set(model_outputs):
        return InputError(f"{what}; {model} cannot make {', '.join(m for m in missing if m not in model_outputs)} "
                          f"vectors: use one of {usable}")
    wanted = [o for o in ("dense", "sparse", "colbert") if o in outputs or o in missing]
    return InputError.explained(
        what, f"; use one of {usable}, or add them: reembed(store, encoder, "
              f"'{target.collection}', outputs={wanted})",
        cli=f"; use one of {usable}, or add them: 'm3search reembed -c "
            f"{target.collection} -m {model}" + (" --colbert'" if "colbert" in missing else "'"),
        http=f"; use one of {usable}, or add them with a new embedding set "
             f"(POST /api/v1/embedding-sets" + (', "colbert": true)' if "colbert" in missing else ")"))


def retrieve(ctx: Context, name: str, depth: int) -> Ranking:
    """The top ``depth`` of one base retriever (filters applied)."""
    if name == "dense":
        return ctx.index.dense(ctx.dense_query(), depth, ctx.allowed)
    if name == "sparse":
        return ctx.index.sparse(ctx.sparse_query(), depth, ctx.allowed)
    if name == "bm25":
        return ctx.index.bm25(ctx.text, depth, ctx.allowed)
    raise InputError(f"'{name}' is not a first-stage retriever")


def _single(name: str) -> Callable[[Context], Outcome]:
    def run(ctx: Context) -> Outcome:
        ranking = retrieve(ctx, name, ctx.request.k)
        return Outcome(ranking, {name: ranking})

    return run


def _depth(ctx: Context) -> int:
    return max(ctx.request.candidates, ctx.request.k)


def _retrieve_all(ctx: Context, names: tuple[str, ...]) -> dict[str, Ranking]:
    """The first stages of a fusion, side by side: HNSW search and sparse products run outside the GIL."""
    if len(names) < 2:
        return {name: retrieve(ctx, name, _depth(ctx)) for name in names}
    found = ctx.pool.map(lambda name: retrieve(ctx, name, _depth(ctx)), names)
    return dict(zip(names, found, strict=True))


def _hybrid(ctx: Context) -> Outcome:
    names = fusion_retrievers(ctx.target.config.outputs)
    parts = _retrieve_all(ctx, names)
    return Outcome(hybrid_settings(ctx.request, names).fuse(parts), parts)


def request_weights(request: SearchRequest, names: tuple[str, ...]) -> dict[str, float]:
    """The request's weights of ``names`` (missing ones weigh 0), or the defaults when it gives none."""
    given = request.weights
    return {n: float(given.get(n, 0.0)) if given is not None else DEFAULT_WEIGHTS[n] for n in names}


def _weights(ctx: Context, names: tuple[str, ...]) -> dict[str, float]:
    return request_weights(ctx.request, names)


def _weighted(ctx: Context) -> Outcome:
    names = fusion_retrievers(ctx.target.config.outputs)
    parts = _retrieve_all(ctx, names)
    return Outcome(weighted(parts, _weights(ctx, names)), parts)




def paper_scores(request: SearchRequest, ids: list[int], scores: dict[str, dict[int, float]]) -> Ranking:
    """``all``'s final ranking: each id's dense, sparse and ColBERT scores weighted (the BGE-M3 paper's 0.4 / 0.2 /
    0.4 unless the request says) and divided by the weight sum; a missing score counts 0."""
    weights = request_weights(request, ("dense", "sparse", "colbert"))
    total = sum(weights.values())
    if total <= 0 or min(weights.values()) < 0:
        raise InputError(f"weights must be non-negative and not all zero, not {weights}")
    return ranked({i: sum(w * scores[n].get(i, 0.0) for n, w in weights.items()) / total for i in ids})


def _maxsim(ctx: Context, ids: list[int]) -> dict[int, float]:
    assert ctx.embedding is not None and ctx.embedding.colbert is not None
    query = ctx.embedding.colbert
    stored = ctx.store.colbert_vectors(ctx.target, ids)
    return {i: colbert_score(query, stored[i]) for i in ids if i in stored}


def _colbert(ctx: Context) -> Outcome:
    first = retrievers_of("colbert", ctx.target.config.outputs)[0]
    candidates = retrieve(ctx, first, _depth(ctx))
    reranked = ranked(_maxsim(ctx, [i for i, _ in candidates]))
    return Outcome(reranked, {first: candidates, "colbert": reranked})


def _all(ctx: Context) -> Outcome:
    """The BGE-M3 paper's mode: dense and sparse candidates, rescored by the weighted sum of all three scores."""
    pool = {i for ranking in _retrieve_all(ctx, ("dense", "sparse")).values() for i, _ in ranking}
    ids = np.array(sorted(pool), dtype=np.int64)
    dense = ctx.index.dense_scores(ctx.dense_query(), ids)
    lexical = ctx.index.sparse_scores(ctx.sparse_query(), ids)
    colbert = _maxsim(ctx, ids.tolist())
    final = paper_scores(ctx.request, ids.tolist(), {"dense": dense, "sparse": lexical, "colbert": colbert})
    return Outcome(final, {"dense": ranked(dense), "sparse": ranked(lexical), "colbert": ranked(colbert)})


def _two_stage(ctx: Context) -> Outcome:
    """Matryoshka: the first ``coarse_dim`` dimensions pick ``coarse_k`` candidates, full vectors rescore them."""
    request, full = ctx.request, ctx.target.config.vector_dim
    if not ctx.mrl_dims:
        raise ConfigError(f"two_stage needs a Matryoshka-trained model; '{ctx.target.config.model}' is not, and "
                          f"truncating its vectors would ruin them (use the 'dense' strategy)")
    valid = [d for d in ctx.mrl_dims if d < full]
    coarse_dim = request.coarse_dim or (valid[len(valid) // 2] if valid else None)
    if coarse_dim is None or coarse_dim not in valid:
        raise ConfigError(f"coarse_dim must be one of the Matryoshka dimensions below {full} of "
                          f"'{ctx.target.config.model}': {', '.join(map(str, valid)) or 'none'}; not {coarse_dim}")
    coarse = ctx.index.coarse(ctx.dense_query(), coarse_dim, max(request.coarse_k, request.k), ctx.allowed)
    ids = np.array([i for i, _ in coarse], dtype=np.int64)
    rescored = ranked(ctx.index.dense_scores(ctx.dense_query(), ids))
    return Outcome(rescored, {f"coarse@{coarse_dim}": coarse, "dense": rescored},
                   {"coarse_dim": coarse_dim, "coarse_k": request.coarse_k})


STRATEGY_FUNCTIONS: dict[str, Callable[[Context], Outcome]] = {
    "dense": _single("dense"), "sparse": _single("sparse"), "bm25": _single("bm25"), "colbert": _colbert,
    "hybrid": _hybrid, "weighted": _weighted, "all": _all, "two_stage": _two_stage,
}
