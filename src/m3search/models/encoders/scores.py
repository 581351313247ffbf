"""BGE-M3 relevance scores, equal to the reference implementation (FlagEmbedding ``BGEM3FlagModel``).

- dense: dot product of the normalised dense vectors;
- sparse: lexical matching score, the sum over shared tokens of query weight x passage weight;
- colbert: MaxSim, each query vector's best dot product over the passage vectors, averaged over query vectors;
- weighted combinations ``sparse+dense`` and ``colbert+sparse+dense`` with weights (dense, sparse, colbert),
  default (0.4, 0.2, 0.4) as in the BGE-M3 README, each divided by the sum of the weights it uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from m3search.errors import ConfigError
from m3search.types import Embedding, FloatArray, SparseVector

DEFAULT_WEIGHTS = (0.4, 0.2, 0.4)


@dataclass(frozen=True)
class M3Scores:
    """The scores of one query-passage pair."""

    dense: float
    sparse: float
    colbert: float
    sparse_dense: float
    colbert_sparse_dense: float

    def as_dict(self) -> dict[str, float]:
        """Keys as in the reference: dense, sparse, colbert, sparse+dense, colbert+sparse+dense."""
        return {"dense": self.dense, "sparse": self.sparse, "colbert": self.colbert,
                "sparse+dense": self.sparse_dense, "colbert+sparse+dense": self.colbert_sparse_dense}


def lexical_matching_score(query: SparseVector, passage: SparseVector) -> float:
    """Sum over shared token ids of the product of their weights."""
    _, qi, pi = np.intersect1d(query.indices, passage.indices, assume_unique=True, return_indices=True)
    return float(np.dot(query.values[qi].astype(np.float64), passage.values[pi].astype(np.float64)))


def colbert_score(query: FloatArray, passage: FloatArray) -> float:
    """MaxSim: for each query vector the best dot product with a passage vector, averaged over the query."""
    if query.shape[0] == 0 or passage.shape[0] == 0:
        return 0.0
    return float((query @ passage.T).max(axis=1).sum() / query.shape[0])


def compute_score(
    query: Embedding, passage: Embedding, weights: tuple[float, float, float] = DEFAULT_WEIGHTS
) -> M3Scores:
    """All BGE-M3 scores of a pair; both embeddings need dense, sparse and colbert outputs."""
    if len(weights) != 3 or min(weights) < 0 or sum(weights[:2]) <= 0:
        raise ConfigError(f"weights must be three non-negative numbers (dense, sparse, colbert), not {weights}")
    if query.dense is None or query.sparse is None or query.colbert is None or passage.dense is None \
            or passage.sparse is None or passage.colbert is None:
        raise ConfigError("compute_score needs dense, sparse and colbert outputs for both texts")
    dense = float(query.dense @ passage.dense)
    sparse = lexical_matching_score(query.sparse, passage.sparse)
    colbert = colbert_score(query.colbert, passage.colbert)
    w_dense, w_sparse, w_colbert = weights
    return M3Scores(
        dense=dense,
        sparse=sparse,
        colbert=colbert,
        sparse_dense=(w_dense * dense + w_sparse * sparse) / (w_dense + w_sparse),
        colbert_sparse_dense=(w_dense * dense + w_sparse * sparse + w_colbert * colbert) / sum(weights),
    )
