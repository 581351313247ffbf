"""The SQLite schema as numbered migrations, applied on open inside one transaction each.

``PRAGMA user_version`` holds the schema version. A database newer than this code refuses to open. Vectors are
little-endian binary blobs (float32 or float16), never JSON.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from m3search.errors import SchemaVersionError, StoreError


def m001_tables(db: sqlite3.Connection) -> None:
    _script(
        db,
        """
        CREATE TABLE collections (
            id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, chunk_tokens INTEGER NOT NULL,
            chunk_overlap INTEGER NOT NULL, created TEXT NOT NULL DEFAULT (datetime('now')));
        CREATE TABLE embedding_configs (
            id INTEGER PRIMARY KEY, fingerprint TEXT NOT NULL UNIQUE, model TEXT NOT NULL, revision TEXT NOT NULL,
            dim INTEGER NOT NULL, truncate_dim INTEGER, outputs TEXT NOT NULL, quantization TEXT NOT NULL);
        CREATE TABLE embedding_sets (
            id INTEGER PRIMARY KEY, collection_id INTEGER NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
            config_id INTEGER NOT NULL REFERENCES embedding_configs(id),
            status TEXT NOT NULL CHECK (status IN ('building', 'active', 'retired')),
            created TEXT NOT NULL DEFAULT (datetime('now')), activated TEXT, retired TEXT);
        CREATE UNIQUE INDEX one_active_set ON embedding_sets(collection_id) WHERE status = 'active';
        CREATE UNIQUE INDEX one_building_set ON embedding_sets(collection_id) WHERE status = 'building';
        CREATE TABLE documents (
            id INTEGER PRIMARY KEY, collection_id INTEGER NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
            doc_id TEXT NOT NULL, source TEXT NOT NULL, title TEXT NOT NULL DEFAULT '', content_hash TEXT NOT NULL,
            metadata TEXT NOT NULL DEFAULT '{}', created TEXT NOT NULL DEFAULT (datetime('now')),
            updated TEXT NOT NULL DEFAULT (datetime('now')), UNIQUE (collection_id, doc_id));
        CREATE TABLE chunks (
            id INTEGER PRIMARY KEY, document_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
            ordinal INTEGER NOT NULL, text TEXT NOT NULL, char_start INTEGER NOT NULL, char_end INTEGER NOT NULL,
            token_count INTEGER NOT NULL, UNIQUE (document_id, ordinal));
        CREATE TABLE dense_vectors (
            set_id INTEGER NOT NULL REFERENCES embedding_sets(id) ON DELETE CASCADE,
            chunk_id INTEGER NOT NULL REFERENCES chunks(id) ON DELETE CASCADE,
            fingerprint TEXT NOT NULL, dtype TEXT NOT NULL CHECK (dtype IN ('float32', 'float16')),
            vector BLOB NOT NULL, PRIMARY KEY (set_id, chunk_id)) WITHOUT ROWID;
        CREATE INDEX dense_by_chunk ON dense_vectors(chunk_id);
        CREATE TABLE sparse_vectors (
            set_id INTEGER NOT NULL REFERENCES embedding_sets(id) ON DELETE CASCADE,
            chunk_id INTEGER NOT NULL REFERENCES chunks(id) ON DELETE CASCADE,
            fingerprint TEXT NOT NULL, indices BLOB NOT NULL, weights BLOB NOT NULL,
            PRIMARY KEY (set_id, chunk_id)) WITHOUT ROWID;
        CREATE INDEX sparse_by_chunk ON sparse_vectors(chunk_id);
        CREATE TABLE postings (
            set_id INTEGER NOT NULL, token INTEGER NOT NULL, chunk_id INTEGER NOT NULL, weight REAL NOT NULL,
            PRIMARY KEY (set_id, token, chunk_id)) WITHOUT ROWID;
        CREATE INDEX postings_by_chunk ON postings(chunk_id);
        CREATE TABLE colbert_vectors (
            set_id INTEGER NOT NULL REFERENCES embedding_sets(id) ON DELETE CASCADE,
            chunk_id INTEGER NOT NULL REFERENCES chunks(id) ON DELETE CASCADE,
            fingerprint TEXT NOT NULL, rows INTEGER NOT NULL, vectors BLOB NOT NULL,
            PRIMARY KEY (set_id, chunk_id)) WITHOUT ROWID;
        CREATE INDEX colbert_by_chunk ON colbert_vectors(chunk_id);
        """,
    )


def m002_fts(db: sqlite3.Connection) -> None:
    """Full-text search over chunk text (FTS5, external content), filled from the chunks already stored."""
    _script(
        db,
        """
        CREATE VIRTUAL TABLE chunks_fts USING fts5(text, content='chunks', content_rowid='id');
        INSERT INTO chunks_fts(rowid, text) SELECT id, text FROM chunks;
        CREATE TRIGGER chunks_fts_insert AFTER INSERT ON chunks BEGIN
            INSERT INTO chunks_fts(rowid, text) VALUES (new.id, new.text);
        END;
        CREATE TRIGGER chunks_fts_delete AFTER DELETE ON chunks BEGIN
            INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES ('delete', old.id, old.text);
        END;
        CREATE TRIGGER postings_delete AFTER DELETE ON chunks BEGIN
            DELETE FROM postings WHERE chunk_id = old.id;
        END;
        """,
    )


def m003_generation(db: sqlite3.Connection) -> None:
    """A per-set counter, bumped by every write that changes the set's vectors: in-memory and on-disk search
    indexes (HNSW, sparse matrices) built for one generation are known stale at the next."""
    db.execute("ALTER TABLE embedding_sets ADD COLUMN generation INTEGER NOT NULL DEFAULT 0")


def m004_catalog(db: sqlite3.Connection) -> None:
    """Named embedding configurations of the HTTP API (``/api/v1/embedding-configs``: a model with its
    Matryoshka choices), and per-set names and auto-embed rules (``/api/v1/embedding-sets``)."""
    _script(
        db,
        """
        CREATE TABLE named_configs (
            name TEXT PRIMARY KEY, body TEXT NOT NULL, created TEXT NOT NULL DEFAULT (datetime('now')),
            updated TEXT NOT NULL DEFAULT (datetime('now')));
        CREATE TABLE set_options (
            set_id INTEGER PRIMARY KEY REFERENCES embedding_sets(id) ON DELETE CASCADE, body TEXT NOT NULL);
        """,
    )


def m005_drop_postings(db: sqlite3.Connection) -> None:
    """Drop the sparse postings table (token -> chunk weights, written beside every sparse vector since m001): only
    tests searched it; sparse searches use the in-memory CSC matrix built from ``sparse_vectors``. The trigger that
    kept it in step with deleted chunks goes first (it would fail once the table is gone)."""
    _script(
        db,
        """
        DROP TRIGGER IF EXISTS postings_delete;
        DROP TABLE IF EXISTS postings;
        """,
    )


def _script(db: sqlite3.Connection, script: str) -> None:
    """Run statements one by one (``executescript`` would COMMIT the migration's transaction first)."""
    statement = ""
    for line in script.splitlines(keepends=True):
        statement += line
        if sqlite3.complete_statement(statement):
            db.execute(statement)
            statement = ""


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [m001_tables, m002_fts, m003_generation, m004_catalog,
                                                          m005_drop_postings]
VERSION = len(MIGRATIONS)


def connect(path: Path, *, migrate_to: int = VERSION) -> sqlite3.Connection:
    """Open (creating if needed) the database at ``path``, in WAL mode, migrated to ``migrate_to``.

    Raises:
        SchemaVersionError: the file was written by a newer m3search.
        StoreError: the file is not an SQLite database or cannot be opened.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(str(path), timeout=30.0, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA busy_timeout = 30000")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("PRAGMA foreign_keys = ON")
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
    except (sqlite3.Error, OSError) as exc:
        raise StoreError(f"cannot open the index database {path}: {exc}") from exc
    if version > VERSION:
        db.close()
        raise SchemaVersionError(
            f"{path} has schema version {version}, newer than this m3search understands ({VERSION}); "
            f"upgrade m3search to use it"
        )
    for number in range(version, migrate_to):
        with transaction(db):
            MIGRATIONS[number](db)
            db.execute(f"PRAGMA user_version = {number + 1}")
    return db


@contextmanager
def transaction(db: sqlite3.Connection, *, write: bool = True) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, or ``ROLLBACK`` on any exception (nothing half-written).

    With ``write=False`` a deferred transaction: every read inside sees one snapshot (WAL), even while
    another connection commits.
    """
    try:
        db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
    except sqlite3.OperationalError as exc:
        raise storage_error(exc) from exc
    try:
        yield db
        db.execute("COMMIT")
    except BaseException as exc:
        if db.in_transaction:
            db.execute("ROLLBACK")
        if isinstance(exc, sqlite3.OperationalError):
            raise storage_error(exc) from exc
        raise


def storage_error(exc: sqlite3.OperationalError) -> StoreError:
    """A typed error that names the fix for SQLite's operational failures (the transaction was rolled back)."""
    text = str(exc)
    if "locked" in text or "busy" in text:
        return StoreError(f"the index database is locked by another process ({text}); nothing was written: run the "
                          f"command again when the other writer has finished")
    if "full" in text or "disk I/O" in text:
        return StoreError(f"the index database could not be written ({text}); nothing of this batch was written: "
                          f"free disk space (or raise the file size limit) and run the command again: it continues "
                          f"where it stopped")
    return StoreError(f"the index database failed: {text}")
