"""Length-sorted, token-budget batching that restores input order."""

from __future__ import annotations

from collections.abc import Sequence


def plan_batches(lengths: Sequence[int], batch_tokens: int, max_batch_size: int) -> list[list[int]]:
    """Group input indices into batches whose padded size stays within ``batch_tokens``.

    Inputs are taken longest first, so each batch pads to its first item's length and similar lengths
    share a batch (little padding). An input longer than the budget gets a batch of its own, which bounds
    memory for long documents. The caller restores the original order from the indices.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        if current:
            padded = lengths[current[0]] * (len(current) + 1)
            if padded > batch_tokens or len(current) >= max_batch_size:
                batches.append(current)
                current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches
