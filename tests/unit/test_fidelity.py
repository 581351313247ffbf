"""Fidelity figures per output and the refusal rule."""

from __future__ import annotations

import numpy as np
import pytest

from m3search.errors import FidelityError
from m3search.models.runtime.fidelity import check, measure, primary
from m3search.types import Embedding, SparseVector


def _emb(dense: list[float] | None = None, sparse: dict[int, float] | None = None,
         colbert: list[list[float]] | None = None) -> Embedding:
    vector = None
    if sparse is not None:
        keys = sorted(sparse)
        vector = SparseVector(np.array(keys, dtype=np.int64), np.array([sparse[k] for k in keys], dtype=np.float32))
    return Embedding(
        tokens=3, truncated=False,
        dense=None if dense is None else np.array(dense, dtype=np.float32),
        sparse=vector,
        colbert=None if colbert is None else np.array(colbert, dtype=np.float32),
    )


def test_identical_outputs_are_perfect() -> None:
    ref = [_emb([1, 0], {1: 0.5, 2: 0.2}, [[1, 0]]), _emb([0, 1], {3: 0.1}, [[0, 1], [1, 0]])]
    figures = measure(ref, ref)
    assert figures["dense_cos_mean"] == pytest.approx(1.0)
    assert figures["sparse_cos_mean"] == pytest.approx(1.0)
    assert figures["sparse_top10_overlap"] == 1.0
    assert figures["sparse_weight_error"] == 0.0
    assert figures["colbert_maxsim_error_mean"] == 0.0


def test_perturbations_show_per_output() -> None:
    ref = [_emb([1, 0], {1: 0.5, 2: 0.2}, [[1, 0]]), _emb([0, 1], {3: 0.1}, [[0.6, 0.8]])]
    got = [_emb([1, 1], {1: 0.5, 4: 0.2}, [[1, 0]]), _emb([0, 1], {3: 0.1}, [[0, 1]])]
    figures = measure(ref, got)
    assert figures["dense_cos_min"] == pytest.approx(1 / np.sqrt(2), abs=1e-6)
    assert figures["dense_cos_mean"] == pytest.approx((1 / np.sqrt(2) + 1) / 2, abs=1e-6)
    assert figures["sparse_top10_overlap"] == pytest.approx((1 / 2 + 1) / 2)
    assert figures["sparse_weight_error"] == pytest.approx(0.4 / 0.8, abs=1e-6)  # pooled: L1 0.4 of norms 0.8
    assert figures["colbert_maxsim_error_mean"] == pytest.approx(0.6, abs=1e-6)  # MaxSim of the one pair: 0.6 -> 0


def test_sparse_only_models_use_sparse_cosine() -> None:
    figures = measure([_emb(sparse={1: 1.0})], [_emb(sparse={1: 1.0, 2: 1.0})])
    assert "dense_cos_mean" not in figures
    assert primary(figures) == ("sparse mean cosine", pytest.approx(1 / np.sqrt(2)))


def test_check_refuses_below_threshold_unless_forced() -> None:
    figures = {"dense_cos_mean": 0.95}
    with pytest.raises(FidelityError, match=r"openvino/int8-static keeps dense mean cosine 0\.9500.*0\.9900"):
        check("openvino/int8-static", figures, 0.99, force=False)
    check("openvino/int8-static", figures, 0.99, force=True)
    check("openvino/int8-static", figures, 0.95, force=False)


def test_an_empty_reference_does_not_blow_up_the_weight_error() -> None:
    ref = [_emb(sparse={}), _emb(sparse={1: 1.0})]
    got = [_emb(sparse={5: 1e-3}), _emb(sparse={1: 1.0})]
    assert measure(ref, got)["sparse_weight_error"] == pytest.approx(1e-3, abs=1e-6)
