"""Reference searches straight on an SQLite store's tables, for tests to compare m3search's retrieval with: exact
dense search, lexical matching over the stored sparse vectors, and SQLite's own FTS5 bm25()."""

from __future__ import annotations

import re

import numpy as np

from m3search.retrieval.fusion import ranked
from m3search.store import codec
from m3search.store.filters import Scalar, filter_sql
from m3search.store.sqlite import SQLiteStore
from m3search.store.types import EmbeddingConfig, Hit
from m3search.types import FloatArray, SparseVector

_WORD = re.compile(r"\w+")


def search_dense(store: SQLiteStore, name: str, config: EmbeddingConfig, query: FloatArray, k: int) -> list[Hit]:
    """Exact dot-product search over the active set, which must have been made by ``config``."""
    with store._snapshot():  # one snapshot: vectors and texts agree
        active = store.check_model(name, config)
        ids, matrix = store.dense_matrix(active)
        if not ids:
            return []
        scores = matrix @ np.asarray(query, dtype=np.float32)
        top = np.argsort(-scores, kind="stable")[:k]
        return store.hits([(ids[i], float(scores[i])) for i in top])


def search_sparse(store: SQLiteStore, name: str, config: EmbeddingConfig, query: SparseVector, k: int) -> list[Hit]:
    """Lexical matching (sum of weight products over shared tokens) of every stored sparse vector of the active set:
    chunks sharing a token with ``query``, best first, ties by chunk id."""
    weights = dict(zip(query.indices.tolist(), query.values.tolist(), strict=True))
    scores: dict[int, float] = {}
    with store._snapshot():
        active = store.check_model(name, config)
        for chunk_id, indices, values in store._rows("SELECT chunk_id, indices, weights FROM sparse_vectors "
                                                     "WHERE set_id = ?", (active.id,)):
            vector = codec.sparse_from(indices, values)
            shared = [(t, w) for t, w in zip(vector.indices.tolist(), vector.values.tolist(), strict=True)
                      if t in weights]
            if shared:
                scores[int(chunk_id)] = sum(w * weights[t] for t, w in shared)
        return store.hits(ranked(scores)[:k])


def fts_query(text: str) -> str:
    """An FTS5 query matching any word of ``text`` (words as ``\\w+``, each quoted, duplicates dropped)."""
    words = dict.fromkeys(w.lower() for w in _WORD.findall(text))
    return " OR ".join('"' + w + '"' for w in words)


def search_text(store: SQLiteStore, name: str, query: str, k: int,
                filters: dict[str, list[Scalar]] | None = None) -> list[tuple[int, float]]:
    """BM25 (FTS5, k1 = 1.2, b = 0.75) over the chunk text of one collection: (chunk id, score), best first."""
    terms = fts_query(query)
    if not terms:
        return []
    condition, params = filter_sql(filters or {})
    return [(int(r[0]), float(r[1])) for r in store._rows(
        "SELECT f.rowid, -bm25(chunks_fts) FROM chunks_fts f JOIN chunks k ON k.id = f.rowid JOIN documents "
        "d ON d.id = k.document_id JOIN collections c ON c.id = d.collection_id WHERE chunks_fts MATCH ? "
        f"AND c.name = ? AND {condition or '1'} ORDER BY bm25(chunks_fts), f.rowid LIMIT ?",
        (terms, name, *params, k))]
