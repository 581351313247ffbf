"""Properties of reciprocal rank fusion and weighted fusion (hypothesis), and filter parsing."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from m3search.errors import InputError
from m3search.retrieval.fusion import (
    FUSION_METHODS,
    FusionSettings,
    dbsf,
    max_normalised,
    min_max,
    ranked,
    rrf,
    weighted,
)
from m3search.store.filters import check_filters, filter_sql, parse_filter

ids = st.lists(st.integers(0, 40), unique=True, max_size=25)


def _ranking(items: list[int]) -> list[tuple[int, float]]:
    return [(item, float(len(items) - rank)) for rank, item in enumerate(items)]


rankings = st.dictionaries(st.sampled_from(["dense", "sparse", "bm25"]), ids.map(_ranking), min_size=1)


@given(rankings, st.integers(0, 100))
def test_rrf_covers_every_id_once_and_is_sorted(parts: dict[str, list[tuple[int, float]]], k: int) -> None:
    fused = rrf(parts, k)
    assert sorted(i for i, _ in fused) == sorted({i for r in parts.values() for i, _ in r})
    assert all(a[1] >= b[1] for a, b in itertools.pairwise(fused))
    assert all(0 < s <= len(parts) / (k + 1) * (1 + 1e-12) for _, s in fused)  # a sum of 1/(k+1) may round up


@given(rankings, st.integers(0, 100))
def test_rrf_does_not_depend_on_the_order_of_retrievers(parts: dict[str, list[tuple[int, float]]], k: int) -> None:
    one, other = dict(rrf(parts, k)), dict(rrf(dict(reversed(list(parts.items()))), k))
    assert one.keys() == other.keys()  # sums in another order may differ in the last bit, not more
    assert all(one[i] == pytest.approx(other[i], rel=1e-12) for i in one)


@given(rankings)
def test_an_id_first_everywhere_is_first(parts: dict[str, list[tuple[int, float]]]) -> None:
    top = [(999, 1e9)]
    boosted = {name: top + list(r) for name, r in parts.items()}
    assert rrf(boosted)[0][0] == 999
    assert weighted(boosted)[0][0] == 999


@given(ids.filter(lambda x: len(x) >= 2), ids, st.data())
def test_moving_an_id_up_never_lowers_its_rrf_score(first: list[int], second: list[int], data: st.DataObject) -> None:
    position = data.draw(st.integers(1, len(first) - 1))
    moved = [*first[:position - 1], first[position], first[position - 1], *first[position + 1:]]
    before = dict(rrf({"a": _ranking(first), "b": _ranking(second)}))
    after = dict(rrf({"a": _ranking(moved), "b": _ranking(second)}))
    assert after[first[position]] >= before[first[position]]


@given(ids.filter(bool), st.floats(0.1, 100), st.floats(-100, 100))
def test_weighted_ignores_the_scale_of_scores(items: list[int], scale: float, shift: float) -> None:
    ranking = _ranking(items)
    scaled = [(i, s * scale + shift) for i, s in ranking]
    assert [i for i, _ in weighted({"a": ranking})] == [i for i, _ in weighted({"a": scaled})]
    assert min_max(scaled) == pytest.approx(min_max(ranking))


@given(rankings, st.floats(0.1, 10))
def test_weighted_order_is_invariant_to_scaling_all_weights(parts: dict[str, list[tuple[int, float]]],
                                                             c: float) -> None:
    weights = {name: 1.0 + n for n, name in enumerate(parts)}
    one = weighted(parts, weights)
    other = weighted(parts, {n: w * c for n, w in weights.items()})
    assert [s for _, s in one] == pytest.approx([s for _, s in other])
    assert all(0.0 <= s <= 1.0 + 1e-9 for _, s in one)


@given(rankings, st.sampled_from(FUSION_METHODS), st.floats(0.1, 10), st.integers(0, 100))
def test_every_fusion_order_is_invariant_to_scaling_all_weights(parts: dict[str, list[tuple[int, float]]],
                                                                method: str, c: float, k: int) -> None:
    weights = {name: 1.0 + n for n, name in enumerate(parts)}
    one = FusionSettings(method, weights, k).fuse(parts)  # type: ignore[arg-type]
    other = FusionSettings(method, {n: w * c for n, w in weights.items()}, k).fuse(parts)  # type: ignore[arg-type]
    scale = 1.0 if method in ("minmax", "max") else c  # these divide by the weights' sum
    assert [s * scale for _, s in one] == pytest.approx([s for _, s in other])
    assert sorted(i for i, _ in one) == sorted({i for r in parts.values() for i, _ in r})


@given(rankings, st.sampled_from(FUSION_METHODS))
def test_a_retriever_weighing_zero_changes_no_order(parts: dict[str, list[tuple[int, float]]], method: str) -> None:
    """Weight 0 is "leave this retriever out": the others' order stands; its own ids follow, scoring 0."""
    names = list(parts)
    alone = FusionSettings(method, {names[0]: 1.0}).fuse({names[0]: parts[names[0]]})  # type: ignore[arg-type]
    fused = FusionSettings(method, {names[0]: 1.0}).fuse(parts)  # type: ignore[arg-type]
    assert all(s == 0 for i, s in fused if i not in dict(alone))
    if alone and alone[-1][1] > 0:  # (the last of a min-max or DBSF scale may score 0 or less, tying the others)
        assert [i for i, _ in fused[: len(alone)]] == [i for i, _ in alone]
        assert [s for _, s in fused[: len(alone)]] == pytest.approx([s for _, s in alone])


@given(ids.filter(lambda x: len(x) >= 2), ids.filter(lambda x: len(x) >= 2), st.sampled_from(FUSION_METHODS))
def test_a_heavy_enough_weight_puts_that_retrievers_top_first(first: list[int], second: list[int],
                                                              method: str) -> None:
    parts = {"a": _ranking(first), "b": _ranking(second)}
    fused = FusionSettings(method, {"a": 1.0, "b": 1e-6}, 60).fuse(parts)  # type: ignore[arg-type]
    assert fused[0][0] == first[0]


def test_weighted_rrf_and_dbsf_known_values() -> None:
    fused = dict(rrf({"a": [(1, 0.9), (2, 0.8)], "b": [(2, 5.0), (3, 1.0)]}, k=10, weights={"a": 2.0, "b": 0.5}))
    assert fused[1] == pytest.approx(2 / 11) and fused[2] == pytest.approx(2 / 12 + 0.5 / 11)
    assert fused[3] == pytest.approx(0.5 / 12)
    parts = {"a": [(1, 3.0), (2, 1.0)], "b": [(2, 2.0)]}
    plain, heavy = dict(dbsf(parts)), dict(dbsf(parts, {"a": 3.0, "b": 1.0}))
    assert heavy[1] == pytest.approx(3 * plain[1]) and heavy[2] == pytest.approx(3 * (plain[2] - 0.5) + 0.5)
    assert FusionSettings("minmax", {"a": 0.25, "b": 0.75}).fuse(parts) == weighted(parts, {"a": 0.25, "b": 0.75})
    fused = dict(max_normalised(parts, {"a": 0.25, "b": 0.75}))
    assert fused == {1: pytest.approx(0.25), 2: pytest.approx(0.25 / 3 + 0.75)}
    assert dict(max_normalised({"a": [(1, -2.0), (2, -4.0)]})) == {1: -0.5, 2: -1.0}  # order kept for negatives
    assert dict(max_normalised({"a": [(1, 0.0)], "b": [(2, 1.0)]})) == {1: 0.0, 2: 0.5}

    assert FusionSettings("rrf", {"a": 1.0}, 5).as_dict() == {"fusion": "rrf", "weights": {"a": 1.0}, "rrf_k": 5}
    assert "rrf_k" not in FusionSettings("dbsf", {"a": 1.0}).as_dict()
    with pytest.raises(InputError, match="fusion must be"):
        FusionSettings("magic", {"a": 1.0}).fuse(parts)  # type: ignore[arg-type]


def test_max_lets_a_retriever_that_cannot_tell_its_candidates_apart_move_nothing() -> None:
    flat = [(i, 10.0 - 0.001 * i) for i in range(5)]  # near-equal scores: about its full weight to each
    sharp = [(4, 5.0), (3, 2.0), (2, 1.0), (1, 0.5), (0, 0.1)]
    parts = {"flat": flat, "sharp": sharp}
    assert [i for i, _ in max_normalised(parts, {"flat": 0.7, "sharp": 0.3})] == [4, 3, 2, 1, 0]
    minmax = FusionSettings("minmax", {"flat": 0.7, "sharp": 0.3}).fuse(parts)
    assert minmax[0][0] == 0  # min-max stretches the flat list over [0, 1] and lets it decide

def test_rrf_known_values_and_bad_arguments() -> None:
    fused = dict(rrf({"a": [(1, 0.9), (2, 0.8)], "b": [(2, 5.0), (3, 1.0)]}, k=60))
    assert fused[2] == pytest.approx(1 / 62 + 1 / 61) and fused[1] == pytest.approx(1 / 61)
    with pytest.raises(InputError):
        rrf({"a": [(1, 1.0)]}, k=-1)
    with pytest.raises(InputError):
        weighted({"a": [(1, 1.0)]}, {"a": 0.0})


def test_filters_are_validated_and_parameterised() -> None:
    assert parse_filter("year=1999") == ("year", 1999)
    assert parse_filter("lang=en") == ("lang", "en")
    assert parse_filter("draft=false") == ("draft", False)
    with pytest.raises(InputError, match="key=value"):
        parse_filter("nokey")
    with pytest.raises(InputError, match="values must be"):
        check_filters({"a": {"nested": 1}})
    with pytest.raises(InputError, match="empty list"):
        check_filters({"a": []})
    sql, params = filter_sql(check_filters({"x'; DROP TABLE chunks; --": "v", "b": [True, None]}))
    assert "DROP" not in sql and params[0] == "$.\"x'; DROP TABLE chunks; --\"" and 1 in params


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=1, max_size=40), st.integers(1, 50), st.booleans())
def test_in_memory_top_k_is_the_fused_order(values: list[int], k: int, positive: bool) -> None:
    """The memory indexes' top k and the fusions order alike: best first, ties (many here) by id; the k best scores
    (which of the ids tied at the k-th score are kept is the partition's choice)."""
    from m3search.retrieval.memory import _top

    scores = np.array(values, dtype=np.float32) - 1
    ids = np.arange(len(values), dtype=np.int64)[::-1].copy()
    kept = {int(i): float(s) for i, s in zip(ids, scores, strict=True) if s > 0 or not positive}
    top = _top(scores, ids, k, positive=positive)
    assert list(top) == ranked(dict(top))
    assert [s for _, s in top] == [s for _, s in ranked(kept)[:k]]
