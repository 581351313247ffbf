from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from m3search.models.batching import plan_batches


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
