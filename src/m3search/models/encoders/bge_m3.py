"""BGE-M3: dense, sparse (lexical weights) and ColBERT vectors from one ONNX pass.

Post-processing follows the reference implementation (FlagEmbedding ``BGEM3FlagModel``):
- dense: the CLS hidden state, L2-normalised;
- sparse: ``relu(sparse_linear(h))`` per token, the max weight per token id, special tokens removed, zeros dropped;
- ColBERT: ``colbert_linear(h[:, 1:])`` for the non-padding tokens after CLS, each vector L2-normalised.
Only the requested outputs are fetched from the session (ONNX Runtime prunes the unused heads).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from m3search.models.encoders.base import Batch, BatchOutput, l2_normalize
from m3search.models.encoders.pooled import OnnxEncoder
from m3search.models.encoders.scores import DEFAULT_WEIGHTS, M3Scores, compute_score
from m3search.models.prepare.export import M3_OUTPUTS
from m3search.types import FloatArray, IntArray, Output, SparseVector

# Tokens whose lexical weight the reference drops: <s> (CLS), </s> (EOS), <pad>, <unk>.
UNUSED_TOKENS = ("<s>", "</s>", "<pad>", "<unk>", "[CLS]", "[SEP]", "[PAD]", "[UNK]")
_GRAPH_OUTPUT: dict[Output, str] = dict(zip(("dense", "sparse", "colbert"), M3_OUTPUTS, strict=True))


class BGEM3Encoder(OnnxEncoder):
    """The BGE-M3 encoder; ``outputs`` selects any of dense, sparse and colbert."""

    _unused: IntArray | None = None

    def unused_token_ids(self) -> IntArray:
        """Ids of the special tokens removed from lexical weights."""
        if self._unused is None:
            ids = (self.hf_tokenizer.token_to_id(t) for t in UNUSED_TOKENS)
            self._unused = np.array(sorted({i for i in ids if i is not None}), dtype=np.int64)
        return self._unused

    def encode_batch(self, batch: Batch, outputs: frozenset[Output]) -> BatchOutput:
        wanted = [o for o in ("dense", "sparse", "colbert") if o in outputs]
        arrays = dict(zip(wanted, self.run(batch, [_GRAPH_OUTPUT[o] for o in wanted]), strict=True))
        lengths = batch.attention_mask.sum(axis=1)
        dense = l2_normalize(np.asarray(arrays["dense"], dtype=np.float32)) if "dense" in arrays else None
        sparse = None
        if "sparse" in arrays:
            unused = self.unused_token_ids()
            sparse = [
                lexical_weights(batch.input_ids[r, :n], arrays["sparse"][r, :n], unused)
                for r, n in enumerate(lengths)
            ]
        colbert = None
        if "colbert" in arrays:
            colbert = [l2_normalize(np.asarray(arrays["colbert"][r, : n - 1], dtype=np.float32))
                       for r, n in enumerate(lengths)]
        return BatchOutput(dense=dense, sparse=sparse, colbert=colbert)

    def compute_score(
        self,
        pairs: list[tuple[str, str]],
        *,
        weights: tuple[float, float, float] = DEFAULT_WEIGHTS,
        max_query_length: int | None = None,
        max_passage_length: int | None = None,
    ) -> list[M3Scores]:
        """Scores of (query, passage) pairs: dense, sparse, colbert and the weighted combinations."""
        everything: list[Output] = ["dense", "sparse", "colbert"]
        queries = self.encode_queries([q for q, _ in pairs], outputs=everything, max_length=max_query_length)
        passages = self.encode_documents([p for _, p in pairs], outputs=everything, max_length=max_passage_length)
        return [compute_score(q, p, weights) for q, p in zip(queries, passages, strict=True)]

    def sparse_tokens(self, sparse: SparseVector) -> dict[str, float]:
        """Lexical weights keyed by token text (as the reference's ``convert_id_to_token``)."""
        tok = self.hf_tokenizer
        return {tok.decode([int(i)]): float(w) for i, w in zip(sparse.indices, sparse.values, strict=True)}


def lexical_weights(ids: IntArray, weights: Any, unused: IntArray) -> SparseVector:
    """Max weight per token id over one input's tokens, without special tokens or zero weights."""
    values = np.asarray(weights, dtype=np.float32)
    keep = ~np.isin(ids, unused) & ((values > 0) | ~np.isfinite(values))  # NaN kept for the guard
    ids, values = ids[keep], values[keep]
    if ids.size == 0:
        return SparseVector(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32))
    order = np.argsort(ids, kind="stable")
    ids, values = ids[order], values[order]
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    maxima: FloatArray = np.maximum.reduceat(values, starts).astype(np.float32)
    return SparseVector(ids[starts].astype(np.int64), maxima)
