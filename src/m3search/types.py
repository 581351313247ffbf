"""Typed, frozen results returned by encoders."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]

Output = Literal["dense", "sparse", "colbert"]
OnOverflow = Literal["truncate", "error"]


@dataclass(frozen=True)
class SparseVector:
    """Lexical weights: token ids (ascending) and their weights (all > 0)."""

    indices: IntArray
    values: FloatArray

    def to_dict(self) -> dict[int, float]:
        """Token id -> weight, as plain Python numbers."""
        return {int(i): float(v) for i, v in zip(self.indices, self.values, strict=True)}

    def __len__(self) -> int:
        return int(self.indices.shape[0])


@dataclass(frozen=True)
class Embedding:
    """What an encoder computed for one input text.

    Attributes:
        dense: the pooled vector (normalised if the model says so), or None if not requested.
        sparse: lexical weights, or None.
        colbert: one vector per token (rows), or None.
        tokens: tokens the model saw (after truncation, special tokens included).
        truncated: whether the input was cut to fit max_length.
    """

    tokens: int
    truncated: bool
    dense: FloatArray | None = None
    sparse: SparseVector | None = None
    colbert: FloatArray | None = field(default=None, repr=False)
