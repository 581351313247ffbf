"""The SQLite store: one file, the system of record for collections, documents, chunks and vectors.

Every write is one transaction (``BEGIN IMMEDIATE``): a document appears with all its chunks and vectors or not
at all. Every vector row carries its set's fingerprint, and reads check it, so vectors of two model
configurations are never mixed. One connection per store, guarded by a lock; open one store per thread or
process for concurrent readers (WAL lets them read while a writer writes).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from m3search.errors import CollectionNotFoundError, StoreError
from m3search.store import codec
from m3search.store.base import StoreBase
from m3search.store.catalog import SQLiteCatalog
from m3search.store.reads import SQLiteReads
from m3search.store.schema import connect, transaction
from m3search.store.types import EmbeddingConfig, EmbeddingSet, PreparedDocument
from m3search.types import Embedding

_SET_QUERY = """
    SELECT s.id, c.name, s.status, e.model, e.revision, e.dim, e.truncate_dim, e.outputs, e.quantization
    FROM embedding_sets s JOIN collections c ON c.id = s.collection_id JOIN embedding_configs e ON e.id = s.config_id
"""


# Chunks of a collection (?1) without a dense or sparse vector in a set (?2).
_PENDING = """
    FROM chunks k JOIN documents d ON d.id = k.document_id JOIN collections c ON c.id = d.collection_id
    WHERE c.name = ?1
      AND NOT EXISTS (SELECT 1 FROM dense_vectors v WHERE v.set_id = ?2 AND v.chunk_id = k.id)
      AND NOT EXISTS (SELECT 1 FROM sparse_vectors v WHERE v.set_id = ?2 AND v.chunk_id = k.id)
"""


# Every set of a collection (?) changes when documents are written or deleted (chunks cascade).
_BUMP_COLLECTION = "UPDATE embedding_sets SET generation = generation + 1 WHERE collection_id = ?"


class SQLiteStore(StoreBase, SQLiteReads, SQLiteCatalog):
    """The default :class:`~m3search.store.base.Store` (searches and bulk reads: :class:`SQLiteReads`)."""

    path: Path

    def __init__(self, path: Path, *, dense_dtype: str = "float32") -> None:
        if dense_dtype not in codec.DTYPES:
            raise StoreError(f"dense_dtype must be float32 or float16, not {dense_dtype!r}")
        self.path = path
        self.dense_dtype = dense_dtype
        self._db = connect(path)
        self._lock = threading.RLock()

    def close(self) -> None:
        self._db.close()

    # collections and sets ------------------------------------------------------------------------

    def collections(self) -> list[str]:
        return [r[0] for r in self._rows("SELECT name FROM collections ORDER BY name")]

    def collection_settings(self, name: str) -> tuple[int, int]:
        """(chunk_tokens, chunk_overlap) of a collection."""
        rows = self._rows("SELECT chunk_tokens, chunk_overlap FROM collections WHERE name = ?", (name,))
        if not rows:
            raise CollectionNotFoundError(name)
        return int(rows[0][0]), int(rows[0][1])

    def create_collection(self, name: str, config: EmbeddingConfig, chunk_tokens: int, overlap: int) -> EmbeddingSet:
        """A new collection with an empty active set of ``config``."""
        if not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise StoreError(f"collection names use letters, digits, '-', '_' and '.', not {name!r}")
        with self._lock, transaction(self._db) as db:
            try:
                cid = db.execute("INSERT INTO collections(name, chunk_tokens, chunk_overlap) VALUES (?, ?, ?)",
                                 (name, chunk_tokens, overlap)).lastrowid
            except sqlite3.IntegrityError as exc:
                raise StoreError(f"collection '{name}' already exists") from exc
            db.execute("INSERT INTO embedding_sets(collection_id, config_id, status, activated) "
                       "VALUES (?, ?, 'active', datetime('now'))", (cid, self._config_id(db, config)))
        return self.active_set(name)

    def delete_collection(self, name: str) -> None:
        """Delete a collection with its documents, chunks, sets and vectors."""
        self.collection_settings(name)
        with self._lock, transaction(self._db) as db:
            db.execute("DELETE FROM collections WHERE name = ?", (name,))

    def _config_id(self, db: sqlite3.Connection, config: EmbeddingConfig) -> int:
        db.execute(
            "INSERT OR IGNORE INTO embedding_configs(fingerprint, model, revision, dim, truncate_dim, outputs, "
            "quantization) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (config.fingerprint, config.model, config.revision, config.dim, config.truncate_dim,
             json.dumps(list(config.outputs)), config.quantization),
        )
        return int(db.execute("SELECT id FROM embedding_configs WHERE fingerprint = ?",
                              (config.fingerprint,)).fetchone()[0])

    def _sets(self, where: str, params: Sequence[Any]) -> list[EmbeddingSet]:
        return [
            EmbeddingSet(r[0], r[1], EmbeddingConfig(r[3], r[4], r[5], r[6], tuple(json.loads(r[7])), r[8]), r[2])
            for r in self._rows(_SET_QUERY + " WHERE " + where + " ORDER BY s.id", params)
        ]

    def sets(self, name: str) -> list[EmbeddingSet]:
        self.collection_settings(name)  # raises for an unknown collection
        return self._sets("c.name = ?", (name,))

    def active_set(self, name: str) -> EmbeddingSet:
        found = self._sets("c.name = ? AND s.status = 'active'", (name,))
        if not found:
            raise CollectionNotFoundError(name)
        return found[0]

    def embedding_set(self, set_id: int) -> EmbeddingSet | None:
        """The set with this id, in any collection and status."""
        found = self._sets("s.id = ?", (set_id,))
        return found[0] if found else None

    def building_set(self, name: str) -> EmbeddingSet | None:
        found = self._sets("c.name = ? AND s.status = 'building'", (name,))
        return found[0] if found else None

    def start_set(self, name: str, config: EmbeddingConfig) -> EmbeddingSet:
        """The ``building`` set of ``config`` for a model change: resumed if it exists, else created.

        A building set of another configuration is dropped (its work was for a change no longer wanted).
        """
        if self.active_set(name).config.fingerprint == config.fingerprint:
            raise StoreError(f"collection '{name}' already uses {config.describe()}")
        building = self.building_set(name)
        if building is not None and building.config.fingerprint == config.fingerprint:
            return building
        with self._lock, transaction(self._db) as db:
            if building is not None:
                db.execute("DELETE FROM embedding_sets WHERE id = ?", (building.id,))
            cid = db.execute("SELECT id FROM collections WHERE name = ?", (name,)).fetchone()[0]
            db.execute("INSERT INTO embedding_sets(collection_id, config_id, status) VALUES (?, ?, 'building')",
                       (cid, self._config_id(db, config)))
        result = self.building_set(name)
        assert result is not None  # created just above
        return result

    def activate(self, building: EmbeddingSet) -> None:
        """Make a complete building set active and retire the active one, atomically."""
        with self._lock, transaction(self._db) as db:
            if self._pending_count(db, building) > 0:
                raise StoreError(f"set {building.id} of '{building.collection}' is not complete")
            db.execute("UPDATE embedding_sets SET status = 'retired', retired = datetime('now') "
                       "WHERE status = 'active' AND collection_id = (SELECT collection_id FROM embedding_sets "
                       "WHERE id = ?)", (building.id,))
            db.execute("UPDATE embedding_sets SET status = 'active', activated = datetime('now') WHERE id = ?",
                       (building.id,))

    def gc(self, name: str) -> int:
        """Drop the retired sets of a collection (and their vectors); returns how many."""
        retired = [s for s in self.sets(name) if s.status == "retired"]
        with self._lock, transaction(self._db) as db:
            for old in retired:
                db.execute("DELETE FROM embedding_sets WHERE id = ?", (old.id,))
        return len(retired)

    # documents -----------------------------------------------------------------------------------

    def content_hashes(self, name: str) -> dict[str, str]:
        rows = self._rows("SELECT d.doc_id, d.content_hash FROM documents d JOIN collections c "
                          "ON c.id = d.collection_id WHERE c.name = ?", (name,))
        return {r[0]: r[1] for r in rows}

    def write_documents(self, target: EmbeddingSet, docs: Sequence[PreparedDocument]) -> None:
        """Insert or replace ``docs`` with their chunks and vectors (of ``target``) in one transaction."""
        for doc in docs:
            for emb in doc.embeddings:
                self._check_dim(target, emb)
        with self._lock, transaction(self._db) as db:
            cid = db.execute("SELECT id FROM collections WHERE name = ?", (target.collection,)).fetchone()[0]
            db.execute(_BUMP_COLLECTION, (cid,))
            for doc in docs:
                d = doc.document
                old = db.execute("SELECT id, created FROM documents WHERE collection_id = ? AND doc_id = ?",
                                 (cid, d.doc_id)).fetchone()
                db.execute("DELETE FROM documents WHERE collection_id = ? AND doc_id = ?", (cid, d.doc_id))
                # A replaced document keeps its row id (its place in listings) and its creation time.
                did = db.execute(
                    "INSERT INTO documents(id, collection_id, doc_id, source, title, content_hash, metadata, created) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, COALESCE(?, datetime('now')))",
                    (old[0] if old else None, cid, d.doc_id, d.source, d.title, d.content_hash,
                     json.dumps(d.metadata, ensure_ascii=False), old[1] if old else None),
                ).lastrowid
                for chunk, emb in zip(doc.chunks, doc.embeddings, strict=True):
                    chunk_id = db.execute(
                        "INSERT INTO chunks(document_id, ordinal, text, char_start, char_end, token_count) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        (did, chunk.ordinal, chunk.text, chunk.start, chunk.end, chunk.tokens),
                    ).lastrowid
                    self._insert_vectors(db, target, int(chunk_id or 0), emb)

    def delete_documents(self, name: str, doc_ids: Sequence[str]) -> int:
        """Delete documents (with their chunks and vectors in every set); returns how many existed."""
        self.collection_settings(name)
        with self._lock, transaction(self._db) as db:
            cid = db.execute("SELECT id FROM collections WHERE name = ?", (name,)).fetchone()[0]
            db.execute(_BUMP_COLLECTION, (cid,))
            marks = ",".join("?" * len(doc_ids))
            cursor = db.execute(f"DELETE FROM documents WHERE collection_id = ? AND doc_id IN ({marks})",
                                (cid, *doc_ids))
            return int(cursor.rowcount)

    # vectors -------------------------------------------------------------------------------------

    def _insert_vectors(self, db: sqlite3.Connection, target: EmbeddingSet, chunk_id: int, emb: Embedding) -> None:
        fp = target.config.fingerprint
        if emb.dense is not None:
            db.execute("INSERT OR REPLACE INTO dense_vectors VALUES (?, ?, ?, ?, ?)",
                       (target.id, chunk_id, fp, self.dense_dtype, codec.dense_blob(emb.dense, self.dense_dtype)))
        if emb.sparse is not None:
            db.execute("INSERT OR REPLACE INTO sparse_vectors VALUES (?, ?, ?, ?, ?)",
                       (target.id, chunk_id, fp, *codec.sparse_blobs(emb.sparse)))
        if emb.colbert is not None:
            db.execute("INSERT OR REPLACE INTO colbert_vectors VALUES (?, ?, ?, ?, ?)",
                       (target.id, chunk_id, fp, emb.colbert.shape[0], codec.colbert_blob(emb.colbert)))

    def _pending_count(self, db: sqlite3.Connection, target: EmbeddingSet) -> int:
        return int(db.execute("SELECT count(*)" + _PENDING, (target.collection, target.id)).fetchone()[0])

    def pending(self, target: EmbeddingSet, limit: int) -> list[tuple[int, str]]:
        """Up to ``limit`` (chunk id, text) of the collection that have no vector in ``target`` yet."""
        rows = self._rows("SELECT k.id, k.text" + _PENDING + " ORDER BY k.id LIMIT ?3",
                          (target.collection, target.id, limit))
        return [(int(r[0]), r[1]) for r in rows]

    def pending_count(self, target: EmbeddingSet) -> int:
        with self._lock:
            return self._pending_count(self._db, target)

    def write_vectors(self, target: EmbeddingSet, rows: Sequence[tuple[int, Embedding]]) -> None:
        """Vectors of existing chunks into ``target``, in one transaction (chunks deleted meanwhile are skipped)."""
        for _, emb in rows:
            self._check_dim(target, emb)
        with self._lock, transaction(self._db) as db:
            db.execute("UPDATE embedding_sets SET generation = generation + 1 WHERE id = ?", (target.id,))
            for chunk_id, emb in rows:
                if db.execute("SELECT 1 FROM chunks WHERE id = ?", (chunk_id,)).fetchone():
                    self._insert_vectors(db, target, chunk_id, emb)

    def counts(self, name: str) -> tuple[int, int]:
        """(documents, chunks) of a collection."""
        row = self._rows("SELECT count(DISTINCT d.id), count(k.id) FROM documents d JOIN collections c "
                         "ON c.id = d.collection_id LEFT JOIN chunks k ON k.document_id = d.id WHERE c.name = ?",
                         (name,))[0]
        return int(row[0]), int(row[1])

    def vector_count(self, target: EmbeddingSet) -> int:
        row = self._rows("SELECT (SELECT count(*) FROM dense_vectors WHERE set_id = ?) + (SELECT count(*) FROM "
                         "sparse_vectors WHERE set_id = ? AND chunk_id NOT IN (SELECT chunk_id FROM dense_vectors "
                         "WHERE set_id = ?))", (target.id, target.id, target.id))[0]
        return int(row[0])

    def integrity_check(self) -> str:
        return str(self._rows("PRAGMA integrity_check")[0][0])
