"""BM25 in memory, from the FTS5 index's own term counts.

SQLite FTS5 scores an ``OR`` query by visiting every row that holds any query term, so a common word makes a
query over 100k chunks take hundreds of milliseconds. This index reads the per-chunk term counts once from FTS5
(``fts5vocab``), keeps BM25 term weights in a CSC matrix, and scores a query with one sparse product: FTS5's
formula (k1 = 1.2, b = 0.75, idf = ln((N - n + 0.5) / (n + 0.5)) floored at 1e-6), computed over the
collection's chunks (FTS5's own ``bm25()`` counts every collection of the file).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import sparse as sp

from m3search.store.reads import TermCounts
from m3search.types import FloatArray, IntArray

K1 = 1.2
B = 0.75
_TOKEN = re.compile(r"[^\W_]+")  # unicode61: runs of letters and digits; '_' and marks separate


def column_scores(matrix: Any, columns: IntArray, weights: FloatArray) -> FloatArray:
    """``matrix[:, columns] @ weights`` for a CSC matrix, as a dense vector over its rows (columns beyond the
    matrix are ignored). scipy's column slicing measured faster than gathering postings into a ``bincount``."""
    keep = columns < matrix.shape[1]
    if not keep.any():
        return np.zeros(matrix.shape[0], dtype=np.float32)
    return np.asarray(matrix[:, columns[keep]] @ weights[keep], dtype=np.float32).ravel()


def fts_tokens(text: str) -> list[str]:
    """Tokens as FTS5's default ``unicode61`` tokenizer makes them: case-folded, diacritics removed."""
    folded = unicodedata.normalize("NFKD", text.lower())
    plain = "".join(c for c in folded if not unicodedata.combining(c))
    return list(dict.fromkeys(_TOKEN.findall(unicodedata.normalize("NFC", plain))))


@dataclass(frozen=True)
class Bm25Index:
    """BM25 weights of every (chunk, term) of one collection."""

    chunk_ids: IntArray
    vocabulary: dict[str, int]
    idf: FloatArray
    weights: Any  # scipy CSC matrix, chunks x terms: tf (k1 + 1) / (tf + k1 (1 - b + b dl / avgdl))

    @classmethod
    def build(cls, counts: TermCounts) -> Bm25Index:
        n_chunks, n_terms = len(counts.chunk_ids), len(counts.terms)
        tf = sp.csr_matrix((counts.counts.astype(np.float32), counts.term_ids, counts.indptr),
                           shape=(n_chunks, max(n_terms, 1)))
        lengths = np.asarray(tf.sum(axis=1), dtype=np.float64).ravel()
        average = lengths.mean() if n_chunks and lengths.mean() > 0 else 1.0
        norm = K1 * (1 - B + B * lengths / average)
        rows = np.repeat(np.arange(n_chunks), np.diff(tf.indptr))
        data = tf.data * (K1 + 1) / (tf.data + norm[rows])
        weights = sp.csr_matrix((data.astype(np.float32), tf.indices, tf.indptr), shape=tf.shape).tocsc()
        hits = np.bincount(tf.indices, minlength=tf.shape[1]).astype(np.float64)
        idf = np.log((n_chunks - hits + 0.5) / (hits + 0.5))
        idf = np.where(idf <= 0, 1e-6, idf).astype(np.float32)
        return cls(counts.chunk_ids, {t: i for i, t in enumerate(counts.terms)}, idf, weights)

    def scores(self, text: str) -> FloatArray:
        """The BM25 score of every chunk (``chunk_ids`` order) for ``text`` (any of its words)."""
        terms = np.array([self.vocabulary[t] for t in fts_tokens(text) if t in self.vocabulary], dtype=np.int64)
        if terms.size == 0:
            return np.zeros(len(self.chunk_ids), dtype=np.float32)
        return column_scores(self.weights, terms, self.idf[terms])
