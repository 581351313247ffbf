"""The SQLite store's reads: bulk vector loads for in-memory indexes, hits, filters, and plain searches.

Every read of several statements runs in one deferred transaction, so it sees one snapshot (WAL) even while
another connection writes.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from m3search.errors import StoreError
from m3search.store import codec
from m3search.store.filters import Scalar, filter_sql
from m3search.store.schema import transaction
from m3search.store.types import Chunk, Document, EmbeddingConfig, EmbeddingSet, Hit, PreparedDocument
from m3search.types import Embedding, FloatArray, IntArray, SparseVector


@dataclass(frozen=True)
class SparseRows:
    """A set's sparse vectors as CSR arrays: row ``i`` is chunk ``chunk_ids[i]``."""

    chunk_ids: IntArray
    indptr: IntArray
    indices: IntArray
    values: FloatArray


@dataclass(frozen=True)
class TermCounts:
    """How often each FTS5 term occurs in each chunk of a collection, as CSR arrays (rows: ``chunk_ids``)."""

    chunk_ids: IntArray
    terms: list[str]
    indptr: IntArray
    term_ids: IntArray
    counts: IntArray


class SQLiteReads:
    """Read methods of :class:`~m3search.store.sqlite.SQLiteStore`."""

    _db: sqlite3.Connection
    _lock: threading.RLock

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def check_model(self, name: str, config: EmbeddingConfig) -> EmbeddingSet:
        raise NotImplementedError  # the store's own

    @contextmanager
    def _snapshot(self) -> Iterator[None]:
        """One read snapshot: a deferred transaction, or the one already open on this connection."""
        with self._lock:
            if self._db.in_transaction:
                yield
            else:
                with transaction(self._db, write=False):
                    yield

    def generation(self, target: EmbeddingSet) -> int:
        """The set's change counter: anything built from its vectors at another generation is stale."""
        rows = self._rows("SELECT generation FROM embedding_sets WHERE id = ?", (target.id,))
        if not rows:
            raise StoreError(f"set {target.id} of '{target.collection}' no longer exists")
        return int(rows[0][0])

    def _check_fingerprints(self, table: str, target: EmbeddingSet) -> None:
        other = self._rows(f"SELECT 1 FROM {table} WHERE set_id = ? AND fingerprint != ? LIMIT 1",
                           (target.id, target.config.fingerprint))
        if other:
            raise StoreError(f"set {target.id} of '{target.collection}' holds vectors of another fingerprint; "
                             f"run 'm3search reembed --collection {target.collection}'")

    def dense_matrix(self, target: EmbeddingSet) -> tuple[list[int], FloatArray]:
        """Chunk ids and their dense vectors in ``target`` (rows of another fingerprint are refused)."""
        with self._snapshot():
            self._check_fingerprints("dense_vectors", target)
            rows = self._rows("SELECT chunk_id, dtype, vector FROM dense_vectors WHERE set_id = ? "
                              "ORDER BY chunk_id", (target.id,))
        if not rows:
            return [], np.zeros((0, target.config.vector_dim), dtype=np.float32)
        dtypes = {r[1] for r in rows}
        if len(dtypes) == 1:  # one decode of all rows, not one per row
            flat = np.frombuffer(b"".join(r[2] for r in rows), dtype=codec.DTYPES[dtypes.pop()])
            matrix = flat.astype(np.float32).reshape(len(rows), -1)
        else:
            matrix = np.stack([codec.dense_from(r[2], r[1]) for r in rows])
        return [int(r[0]) for r in rows], matrix

    def sparse_rows(self, target: EmbeddingSet) -> SparseRows:
        """Every sparse vector of ``target``, ordered by chunk id, as CSR arrays."""
        with self._snapshot():
            self._check_fingerprints("sparse_vectors", target)
            rows = self._rows("SELECT chunk_id, indices, weights FROM sparse_vectors WHERE set_id = ? "
                              "ORDER BY chunk_id", (target.id,))
        lengths = np.array([len(r[1]) // 8 for r in rows], dtype=np.int64)
        indptr = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        indices = np.frombuffer(b"".join(r[1] for r in rows), dtype="<i8").astype(np.int64)
        values = np.frombuffer(b"".join(r[2] for r in rows), dtype="<f4").astype(np.float32)
        return SparseRows(np.array([r[0] for r in rows], dtype=np.int64), indptr, indices, values)

    def colbert_vectors(self, target: EmbeddingSet, chunk_ids: Sequence[int]) -> dict[int, FloatArray]:
        """The ColBERT vectors of some chunks of ``target`` (chunks without any are absent)."""
        if not chunk_ids:
            return {}
        marks = ",".join("?" * len(chunk_ids))
        rows = self._rows(f"SELECT chunk_id, fingerprint, rows, vectors FROM colbert_vectors WHERE set_id = ? "
                          f"AND chunk_id IN ({marks})", (target.id, *chunk_ids))
        if any(r[1] != target.config.fingerprint for r in rows):
            raise StoreError(f"set {target.id} of '{target.collection}' holds ColBERT vectors of another "
                             f"fingerprint; run 'm3search reembed --collection {target.collection}'")
        return {int(r[0]): codec.colbert_from(r[3], int(r[2])) for r in rows}

    def term_counts(self, name: str) -> TermCounts:
        """The FTS5 index's term counts of every chunk of ``name`` (read through ``fts5vocab``)."""
        with self._lock:
            self._db.execute("CREATE VIRTUAL TABLE IF NOT EXISTS temp.m3_terms USING fts5vocab(main, chunks_fts, "
                             "instance)")
            with self._snapshot():
                chunk_ids = self.filtered_chunk_ids(name, {})
                rows = self._rows("SELECT doc, term FROM temp.m3_terms")
        vocabulary: dict[str, int] = {}
        docs = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        terms = np.fromiter((vocabulary.setdefault(r[1], len(vocabulary)) for r in rows), dtype=np.int64,
                            count=len(rows))
        keep = np.isin(docs, chunk_ids)  # the FTS table holds every collection's chunks
        positions = np.searchsorted(chunk_ids, docs[keep])
        width = max(len(vocabulary), 1)
        keys, counts = np.unique(positions * width + terms[keep], return_counts=True)
        rows_of = keys // width
        indptr = np.zeros(len(chunk_ids) + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows_of, minlength=len(chunk_ids)), out=indptr[1:])
        return TermCounts(chunk_ids, list(vocabulary), indptr, (keys % width).astype(np.int64),
                          counts.astype(np.int64))

    def filtered_chunk_ids(self, name: str, filters: dict[str, list[Scalar]]) -> IntArray:
        """Ids of the chunks of ``name`` whose document metadata matches every filter."""
        condition, params = filter_sql(filters)
        rows = self._rows("SELECT k.id FROM chunks k JOIN documents d ON d.id = k.document_id JOIN collections c "
                          f"ON c.id = d.collection_id WHERE c.name = ? AND {condition or '1'} ORDER BY k.id",
                          (name, *params))
        return np.array([r[0] for r in rows], dtype=np.int64)

    def export_documents(self, name: str, page: int = 500) -> Iterator[PreparedDocument]:
        """Every document of ``name`` (id order) with its chunks and active-set vectors (for ``migrate-store``),
        read ``page`` documents at a time."""
        active = self.active_set(name)
        last = 0
        while docs := self._rows("SELECT d.id, d.doc_id, d.source, d.title, d.metadata, d.content_hash FROM documents "
                                 "d JOIN collections c ON c.id = d.collection_id WHERE c.name = ? AND d.id > ? "
                                 "ORDER BY d.id LIMIT ?", (name, last, page)):
            last = docs[-1][0]
            marks = ",".join("?" * len(docs))
            chunks = self._rows(f"SELECT document_id, id, ordinal, text, char_start, char_end, token_count FROM "
                                f"chunks WHERE document_id IN ({marks}) ORDER BY document_id, ordinal",
                                [d[0] for d in docs])
            vectors = self._chunk_vectors(active, [int(c[1]) for c in chunks])
            by_doc: dict[int, list[Any]] = {}
            for row in chunks:
                by_doc.setdefault(row[0], []).append(row)
            for did, doc_id, source, title, metadata, content_hash in docs:
                rows = by_doc.get(did, [])
                yield PreparedDocument(
                    Document(doc_id, "", source, title, json.loads(metadata), content_hash),
                    [Chunk(r[2], r[3], r[4], r[5], r[6]) for r in rows],
                    [Embedding(r[6], False, *vectors.get(int(r[1]), (None, None, None))) for r in rows])

    def _chunk_vectors(self, target: EmbeddingSet, ids: list[int]
                       ) -> dict[int, tuple[FloatArray | None, SparseVector | None, FloatArray | None]]:
        if len(ids) > 900:  # SQLite's bound parameters per statement: 999 before 3.32
            return {k: v for start in range(0, len(ids), 900)
                    for k, v in self._chunk_vectors(target, ids[start:start + 900]).items()}
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        found: dict[int, list[Any]] = {i: [None, None, None] for i in ids}
        for chunk_id, dtype, blob in self._rows(f"SELECT chunk_id, dtype, vector FROM dense_vectors WHERE set_id = ? "
                                                f"AND chunk_id IN ({marks})", (target.id, *ids)):
            found[chunk_id][0] = codec.dense_from(blob, dtype)
        for chunk_id, indices, weights in self._rows(f"SELECT chunk_id, indices, weights FROM sparse_vectors WHERE "
                                                     f"set_id = ? AND chunk_id IN ({marks})", (target.id, *ids)):
            found[chunk_id][1] = codec.sparse_from(indices, weights)
        colbert = self.colbert_vectors(target, ids) if "colbert" in target.config.outputs else {}
        for chunk_id, matrix in colbert.items():
            found[chunk_id][2] = matrix
        return {i: (v[0], v[1], v[2]) for i, v in found.items() if any(x is not None for x in v)}

    def active_set(self, name: str) -> EmbeddingSet:
        raise NotImplementedError  # the store's own

    def chunk_metadata(self, name: str) -> tuple[IntArray, list[dict[str, Any]]]:
        """Chunk ids of ``name`` (ascending) and their documents' metadata."""
        rows = self._rows("SELECT k.id, d.metadata FROM chunks k JOIN documents d ON d.id = k.document_id JOIN "
                          "collections c ON c.id = d.collection_id WHERE c.name = ? ORDER BY k.id", (name,))
        return np.array([r[0] for r in rows], dtype=np.int64), [json.loads(r[1]) for r in rows]

    def hits(self, scored: Sequence[tuple[int, float]], collection: str | None = None) -> list[Hit]:
        """Hits (document id, text, metadata) for scored chunk ids, in the given order (chunk ids are unique in
        the file, so ``collection`` is not needed here)."""
        if not scored:
            return []
        marks = ",".join("?" * len(scored))
        rows = self._rows(f"SELECT k.id, d.doc_id, k.text, d.metadata, k.ordinal, k.char_start, k.char_end "
                          f"FROM chunks k JOIN documents d ON d.id = k.document_id WHERE k.id IN ({marks})",
                          [c for c, _ in scored])
        found = {int(r[0]): r[1:] for r in rows}  # one query, not one per hit
        return [Hit(c, found[c][0], float(score), found[c][1], json.loads(found[c][2]), *found[c][3:])
                for c, score in scored if c in found]
