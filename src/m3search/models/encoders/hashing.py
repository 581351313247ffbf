"""The hash fallback: deterministic feature hashing of words. No weights, no network, not semantic."""

from __future__ import annotations

import numpy as np

from m3search.models.encoders.base import Batch, BatchOutput, Encoder, l2_normalize
from m3search.models.registry import ModelSpec
from m3search.models.runtime.tokenize import HashTokenizer
from m3search.types import Output


class HashEncoder(Encoder):
    """Signed feature hashing of lower-cased words into ``spec.dim`` buckets, L2-normalised."""

    def __init__(self, spec: ModelSpec, **kwargs: object) -> None:
        super().__init__(spec, HashTokenizer, **kwargs)  # type: ignore[arg-type]

    def encode_batch(self, batch: Batch, outputs: frozenset[Output]) -> BatchOutput:
        ids = batch.input_ids.astype(np.uint64)
        mask = batch.attention_mask.astype(np.float32)
        buckets = (ids % np.uint64(self.spec.dim)).astype(np.int64)
        signs = np.where((ids >> np.uint64(40)) & np.uint64(1), 1.0, -1.0).astype(np.float32) * mask
        dense = np.zeros((ids.shape[0], self.spec.dim), dtype=np.float32)
        rows = np.repeat(np.arange(ids.shape[0]), ids.shape[1])
        np.add.at(dense, (rows, buckets.ravel()), signs.ravel())
        return BatchOutput(dense=l2_normalize(dense))
