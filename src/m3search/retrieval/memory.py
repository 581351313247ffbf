"""Memory-resident indexes of one embedding set: the dense matrix, a CSC sparse matrix, an HNSW graph.

The store stays the system of record; these are loaded from it on first use and reused while the set's
generation (bumped by every write) is unchanged. The HNSW graph (:mod:`m3search.retrieval.ann`) serves dense
searches of sets with at least ``ann_threshold`` vectors; it is saved beside the database and rebuilt from the
store when missing or stale.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse as sp

from m3search.errors import DimensionError
from m3search.lazy import Lazy, LazyMap
from m3search.models.encoders.base import l2_normalize
from m3search.retrieval import ann
from m3search.retrieval.filtering import BoolArray, MetadataIndex, allowed_rows
from m3search.retrieval.fusion import Ranking, ranked
from m3search.retrieval.lexical import Bm25Index, column_scores
from m3search.store.base import Store
from m3search.store.filters import Scalar
from m3search.store.types import EmbeddingSet
from m3search.types import FloatArray, IntArray, SparseVector


def _top(scores: FloatArray, ids: IntArray, k: int, *, positive: bool = False) -> Ranking:
    """The ``k`` best (id, score), best first, ties by id; with ``positive``, only scores > 0."""
    if positive:
        keep = scores > 0
        scores, ids = scores[keep], ids[keep]
    if scores.shape[0] == 0 or k <= 0:
        return []
    if scores.shape[0] > k:
        part = np.argpartition(-scores, k - 1)[:k]
        scores, ids = scores[part], ids[part]
    return ranked(dict(zip(ids.tolist(), scores.tolist(), strict=True)))


class SetIndex:
    """The in-memory search structures of one set at one generation (thread-safe, built lazily)."""

    def __init__(self, store: Store, target: EmbeddingSet, generation: int, ann_dir: Path | None,
                 ann_threshold: int, previous: SetIndex | None = None) -> None:
        self.target = target
        self._previous = previous  # an older generation whose HNSW graph can be updated instead of rebuilt
        self.generation = generation
        self._store = store
        self._ann_dir = ann_dir
        self._ann_threshold = ann_threshold
        self._lock = threading.RLock()  # re-entrant: building the graph loads the matrix
        self._dense = Lazy(self._load_dense, self._lock)
        self._sparse = Lazy(self._load_sparse, self._lock)
        self._bm25 = Lazy(self._load_bm25, self._lock)
        self._metadata = Lazy(self._load_metadata, self._lock)
        self._coarse = LazyMap(self._truncated, self._lock)  # by Matryoshka dimension
        self._hnsw = Lazy(self._load_hnsw, self._lock)
        self.hnsw_built = False
        self.hnsw_updated = False

    def rebind(self, store: Store) -> None:
        self._store = store

    # dense -----------------------------------------------------------------------------------------

    def dense_arrays(self) -> tuple[IntArray, FloatArray]:
        """Chunk ids (ascending) and the matrix of their dense vectors."""
        return self._dense.get()

    def _load_dense(self) -> tuple[IntArray, FloatArray]:
        ids, matrix = self._store.dense_matrix(self.target)
        return np.asarray(ids, dtype=np.int64), np.ascontiguousarray(matrix)

    def _rows(self, ids: IntArray, chunk_ids: IntArray) -> IntArray:
        rows = np.searchsorted(ids, chunk_ids)
        rows = np.minimum(rows, max(len(ids) - 1, 0))
        return rows[ids[rows] == chunk_ids] if len(ids) else rows[:0]

    def dense(self, query: FloatArray, k: int, allowed: BoolArray | None = None) -> Ranking:
        """Top ``k`` by dot product: HNSW for large sets (post-filtered when filters leave enough), else exact."""
        ids, matrix = self.dense_arrays()
        large = bool(self._ann_threshold) and len(ids) >= self._ann_threshold
        if allowed is None:
            return self._dense_hnsw(query, k) if large else _top(matrix @ query, ids, k)
        keep = allowed_rows(allowed, ids)
        share = keep.mean() if len(ids) else 0.0
        if large and share >= 0.05:  # oversample the graph, keep the allowed: exact work only if too few
            found = [hit for hit in self._dense_hnsw(query, int(k / share * 3) + 10) if allowed[hit[0]]]
            if len(found) >= k:
                return found[:k]
        rows = np.flatnonzero(keep)
        return _top(matrix[rows] @ query, ids[rows], k)

    def dense_scores(self, query: FloatArray, chunk_ids: IntArray) -> dict[int, float]:
        ids, matrix = self.dense_arrays()
        rows = self._rows(ids, chunk_ids)
        return dict(zip(ids[rows].tolist(), (matrix[rows] @ query).tolist(), strict=True))

    def coarse(self, query: FloatArray, dim: int, k: int, allowed: BoolArray | None) -> Ranking:
        """Top ``k`` on the first ``dim`` dimensions, each vector re-normalised (Matryoshka truncation)."""
        ids, _ = self.dense_arrays()
        small = self._coarse.get(dim)
        head = query[:dim] / max(float(np.linalg.norm(query[:dim])), 1e-12)
        if allowed is not None:
            rows = np.flatnonzero(allowed_rows(allowed, ids))
            return _top(small[rows] @ head, ids[rows], k)
        return _top(small @ head, ids, k)

    def _truncated(self, dim: int) -> FloatArray:
        return l2_normalize(np.ascontiguousarray(self.dense_arrays()[1][:, :dim]))

    # HNSW ------------------------------------------------------------------------------------------

    def _dense_hnsw(self, query: FloatArray, k: int) -> Ranking:
        graph = self.hnsw()
        ids, matrix = self.dense_arrays()
        rows = self._rows(ids, graph.search(query, k))
        return _top(matrix[rows] @ query, ids[rows], k)  # exact scores of the found rows

    def hnsw(self) -> ann.Graph:
        """The HNSW graph: loaded if saved for this generation, else the previous generation's updated, else built;
        then saved."""
        return self._hnsw.get()

    def _load_hnsw(self) -> ann.Graph:
        ids, matrix = self.dense_arrays()
        stamp = {"set": self.target.id, "fingerprint": self.target.config.fingerprint, "generation": self.generation}
        stem = self._ann_dir / f"set-{self.target.id}" if self._ann_dir is not None else None
        graph = ann.load(stem, stamp, matrix) if stem is not None else None
        if graph is None:
            graph = self._updated_previous(ids, matrix)
            self.hnsw_updated = graph is not None
            if graph is None:
                graph = ann.build(ids, matrix)
                self.hnsw_built = True
            if stem is not None:
                ann.save(graph, stem, stamp)
        self._previous = None
        return graph

    @property
    def has_graph(self) -> bool:
        return self._hnsw.loaded

    def _updated_previous(self, ids: IntArray, matrix: FloatArray) -> ann.Graph | None:
        previous, self._previous = self._previous, None
        if previous is None:
            return None
        old_graph, old_dense = previous._hnsw.peek(), previous._dense.peek()
        if old_graph is None or old_dense is None:
            return None
        graph = ann.update(old_graph, old_dense, (ids, matrix))
        previous._hnsw.reset()  # the graph now belongs to this generation
        return graph

    # sparse ----------------------------------------------------------------------------------------

    def _load_sparse(self) -> tuple[IntArray, Any]:
        rows = self._store.sparse_rows(self.target)
        width = int(rows.indices.max()) + 1 if len(rows.indices) else 1
        matrix = sp.csr_matrix((rows.values, rows.indices, rows.indptr), shape=(len(rows.chunk_ids), width)).tocsc()
        return rows.chunk_ids, matrix

    def _sparse_all(self, query: SparseVector) -> tuple[IntArray, FloatArray]:
        ids, matrix = self._sparse.get()
        return ids, column_scores(matrix, query.indices, query.values.astype(np.float32))

    def sparse(self, query: SparseVector, k: int, allowed: BoolArray | None = None) -> Ranking:
        """Top ``k`` by lexical matching score (sum of weight products over shared tokens); only scores > 0."""
        ids, scores = self._sparse_all(query)
        if allowed is not None:
            keep = allowed_rows(allowed, ids)
            ids, scores = ids[keep], scores[keep]
        return _top(scores, ids, k, positive=True)

    def sparse_scores(self, query: SparseVector, chunk_ids: IntArray) -> dict[int, float]:
        ids, scores = self._sparse_all(query)
        rows = self._rows(ids, chunk_ids)
        return dict(zip(ids[rows].tolist(), scores[rows].tolist(), strict=True))

    # bm25 ------------------------------------------------------------------------------------------

    def bm25(self, text: str, k: int, allowed: BoolArray | None = None) -> Ranking:
        """Top ``k`` chunks by BM25 for any word of ``text``; only chunks holding one (score > 0)."""
        index = self._bm25.get()
        ids, scores = index.chunk_ids, index.scores(text)
        if allowed is not None:
            keep = allowed_rows(allowed, ids)
            ids, scores = ids[keep], scores[keep]
        return _top(scores, ids, k, positive=True)

    def _load_bm25(self) -> Bm25Index:
        return Bm25Index.build(self._store.term_counts(self.target.collection))

    # filters ---------------------------------------------------------------------------------------

    def allowed(self, filters: dict[str, list[Scalar]]) -> BoolArray:
        """A table indexed by chunk id: which chunks' documents match ``filters``."""
        return self._metadata.get().lookup(filters)

    def _load_metadata(self) -> MetadataIndex:
        return MetadataIndex(*self._store.chunk_metadata(self.target.collection))


class IndexCache:
    """Set indexes by (database, set), replaced when the set's generation moves; least recently used evicted."""

    def __init__(self, capacity: int = 4) -> None:
        self.capacity = capacity
        self._items: OrderedDict[tuple[str, int], SetIndex] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, store: Store, target: EmbeddingSet, ann_dir: Path | None, ann_threshold: int) -> SetIndex:
        generation = store.generation(target)
        key = (str(store.path if store.path is not None else id(store)), target.id)
        with self._lock:
            found = self._items.get(key)
            if found is not None and found.generation == generation and found.target == target:
                found.rebind(store)  # lazy loads go through the caller's (open) connection
                self._items.move_to_end(key)
                return found
            previous = found if found is not None and found.has_graph else None
            fresh = SetIndex(store, target, generation, ann_dir, ann_threshold, previous=previous)
            self._items[key] = fresh
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
            return fresh

    def clear(self) -> None:
        """Drop every set index (the next search loads them again from the store)."""
        with self._lock:
            self._items.clear()


def check_query_dim(target: EmbeddingSet, vector: FloatArray) -> None:
    if vector.shape[0] != target.config.vector_dim:
        raise DimensionError(f"a {vector.shape[0]}-d query cannot search set {target.id} of '{target.collection}', "
                         f"which holds {target.config.vector_dim}-d vectors")
