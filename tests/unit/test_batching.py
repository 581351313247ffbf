from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from m3search.models.runtime.batching import plan_batches


def test_sorted_longest_first_and_budgeted() -> None:
    batches = plan_batches([5, 100, 7, 50, 6], batch_tokens=110, max_batch_size=10)
    assert batches == [[1], [3, 2], [4, 0]]


def test_long_input_gets_a_batch_of_its_own() -> None:
    assert plan_batches([8192, 10, 10], batch_tokens=4096, max_batch_size=64) == [[0], [1, 2]]


@given(
    st.lists(st.integers(1, 600), max_size=200),
    st.integers(1, 5000),
    st.integers(1, 50),
)
def test_every_index_once_and_budget_respected(lengths: list[int], budget: int, size: int) -> None:
    batches = plan_batches(lengths, budget, size)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        padded = max(lengths[i] for i in batch) * len(batch)
        assert len(batch) == 1 or (padded <= budget and len(batch) <= size)


@given(st.lists(st.integers(1, 600), max_size=200), st.integers(1, 50))
def test_ragged_lengths_do_not_share_a_batch(lengths: list[int], size: int) -> None:
    """Past MIN_SPLIT inputs, nothing shorter than MIN_FILL of the batch's width joins it: padding stays bounded."""
    from m3search.models.runtime.batching import MIN_FILL, MIN_SPLIT

    for batch in plan_batches(lengths, 10**9, size):
        width = lengths[batch[0]]
        assert all(lengths[i] >= MIN_FILL * width for i in batch[MIN_SPLIT:])


def test_a_merge_of_mixed_lengths_is_split_where_padding_would_grow() -> None:
    from m3search.models.runtime.batching import MIN_SPLIT

    lengths = [60] * MIN_SPLIT + [59, 30] + [29] * MIN_SPLIT + [10]
    batches = plan_batches(lengths, 10**6, 256)
    assert [len(b) for b in batches] == [MIN_SPLIT + 1, MIN_SPLIT + 1, 1]  # 30 and then 10 start new batches
    assert [lengths[b[0]] for b in batches] == [60, 30, 10]
    short = [60] * (MIN_SPLIT - 1) + [10]  # too few inputs to split: one batch
    assert plan_batches(short, 10**6, 256) == [list(range(MIN_SPLIT))]
