"""How far a precision mode strays from fp32, per output, on the bundled held-out sample.

- dense: cosine of each vector to its fp32 counterpart (mean and min);
- sparse: cosine of the weight vectors, overlap of the top-k token ids (k = 10), and relative L1 weight error
  (pooled: the sum of L1 distances over the sum of the reference's L1 norms);
- ColBERT: absolute error of MaxSim scores between neighbouring texts of the sample (text i scored against i+1).

The *primary* metric, the one compared with the threshold, is the dense mean cosine, or the sparse mean
cosine for sparse-only models.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from m3search.errors import FidelityError
from m3search.models.encoders.scores import colbert_score
from m3search.types import Embedding, FloatArray, SparseVector

TOP_K = 10


def _sparse_cosine(a: SparseVector, b: SparseVector) -> float:
    _, ia, ib = np.intersect1d(a.indices, b.indices, assume_unique=True, return_indices=True)
    norm = float(np.linalg.norm(a.values) * np.linalg.norm(b.values))
    if norm == 0.0:
        return 1.0 if a.values.size == b.values.size == 0 else 0.0
    return float(np.dot(a.values[ia], b.values[ib]) / norm)


def _top(vector: SparseVector, k: int) -> set[int]:
    order = np.argsort(-vector.values, kind="stable")[:k]
    return {int(i) for i in vector.indices[order]}


def _weight_errors(ref: SparseVector, got: SparseVector) -> tuple[float, float]:
    """(L1 distance of the two weight vectors, L1 norm of the reference)."""
    union = np.union1d(ref.indices, got.indices)
    a, b = np.zeros(union.size), np.zeros(union.size)
    a[np.searchsorted(union, ref.indices)] = ref.values
    b[np.searchsorted(union, got.indices)] = got.values
    return float(np.abs(a - b).sum()), float(np.abs(a).sum())


def _cosines(reference: list[FloatArray], candidate: list[FloatArray]) -> FloatArray:
    a, b = np.stack(reference).astype(np.float64), np.stack(candidate).astype(np.float64)
    norms = np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    result: FloatArray = (a * b).sum(axis=1) / norms
    return result


def _sparse_figures(reference: list[SparseVector], candidate: list[SparseVector]) -> dict[str, float]:
    pairs = list(zip(reference, candidate, strict=True))
    cos = np.array([_sparse_cosine(r, c) for r, c in pairs])
    overlap = [len(_top(r, TOP_K) & _top(c, TOP_K)) / max(1, min(TOP_K, r.indices.size)) for r, c in pairs]
    errors = [_weight_errors(r, c) for r, c in pairs]
    return {
        "sparse_cos_mean": float(cos.mean()),
        "sparse_cos_min": float(cos.min()),
        "sparse_top10_overlap": float(np.mean(overlap)),
        # pooled over the sample: a text whose reference weights are (nearly) empty cannot blow the ratio up
        "sparse_weight_error": float(sum(e[0] for e in errors) / max(sum(e[1] for e in errors), 1e-12)),
    }


def _colbert_figures(reference: list[FloatArray], candidate: list[FloatArray]) -> dict[str, float]:
    errors = [
        abs(colbert_score(reference[i], reference[i + 1]) - colbert_score(candidate[i], candidate[i + 1]))
        for i in range(len(reference) - 1)
    ]
    return {"colbert_maxsim_error_mean": float(np.mean(errors)), "colbert_maxsim_error_max": float(np.max(errors))}


def measure(reference: Sequence[Embedding], candidate: Sequence[Embedding]) -> dict[str, Any]:
    """Fidelity figures of ``candidate`` against ``reference`` (the same texts, the same outputs)."""
    result: dict[str, Any] = {"texts": len(reference)}
    dense = [e.dense for e in (*reference, *candidate) if e.dense is not None]
    if reference and len(dense) == 2 * len(reference):
        cos = _cosines(dense[: len(reference)], dense[len(reference) :])
        result.update(dense_cos_mean=float(cos.mean()), dense_cos_min=float(cos.min()))
    sparse = [e.sparse for e in (*reference, *candidate) if e.sparse is not None]
    if reference and len(sparse) == 2 * len(reference):
        result.update(_sparse_figures(sparse[: len(reference)], sparse[len(reference) :]))
    colbert = [e.colbert for e in (*reference, *candidate) if e.colbert is not None]
    if len(reference) > 1 and len(colbert) == 2 * len(reference):
        result.update(_colbert_figures(colbert[: len(reference)], colbert[len(reference) :]))
    return result


def primary(figures: dict[str, Any]) -> tuple[str, float]:
    """The metric compared with the threshold, and its value."""
    if "dense_cos_mean" in figures:
        return "dense mean cosine", float(figures["dense_cos_mean"])
    return "sparse mean cosine", float(figures["sparse_cos_mean"])


def check(mode: str, figures: dict[str, Any], threshold: float, *, force: bool) -> None:
    """Raise FidelityError when the primary metric is below ``threshold`` (unless forced)."""
    metric, value = primary(figures)
    if value < threshold and not force:
        raise FidelityError(mode, metric, value, threshold)
