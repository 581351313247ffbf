"""What the HTTP API keeps beside the vectors: named embedding configurations, per-set options (name, auto-embed
rules), and document listings. Plain JSON bodies; the server validates them before they get here."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence
from typing import Any

from m3search.store.schema import transaction


class SQLiteCatalog:
    """Mixin of :class:`~m3search.store.sqlite.SQLiteStore` (which provides the connection and its lock)."""

    _db: sqlite3.Connection
    _lock: threading.RLock

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        raise NotImplementedError  # the store's own

    def named_configs(self) -> list[dict[str, Any]]:
        """Every named configuration, by name."""
        return [json.loads(r[0]) for r in self._rows("SELECT body FROM named_configs ORDER BY name")]

    def named_config(self, name: str) -> dict[str, Any] | None:
        rows = self._rows("SELECT body FROM named_configs WHERE name = ?", (name,))
        return json.loads(rows[0][0]) if rows else None

    def put_named_config(self, name: str, body: dict[str, Any]) -> bool:
        """Create or replace a named configuration; True if it was new."""
        with self._lock, transaction(self._db) as db:
            existed = db.execute("SELECT 1 FROM named_configs WHERE name = ?", (name,)).fetchone() is not None
            db.execute("INSERT INTO named_configs(name, body) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET "
                       "body = excluded.body, updated = datetime('now')", (name, json.dumps(body)))
        return not existed

    def delete_named_config(self, name: str) -> bool:
        with self._lock, transaction(self._db) as db:
            return db.execute("DELETE FROM named_configs WHERE name = ?", (name,)).rowcount > 0

    def set_options(self, set_id: int) -> dict[str, Any]:
        """A set's options (empty when none were given)."""
        rows = self._rows("SELECT body FROM set_options WHERE set_id = ?", (set_id,))
        return dict(json.loads(rows[0][0])) if rows else {}

    def put_set_options(self, set_id: int, body: dict[str, Any]) -> None:
        with self._lock, transaction(self._db) as db:
            db.execute("INSERT OR REPLACE INTO set_options(set_id, body) VALUES (?, ?)", (set_id, json.dumps(body)))

    def documents(self, name: str, limit: int, offset: int, doc_id: str | None = None) -> list[dict[str, Any]]:
        """Documents of collection ``name`` (id order), with their chunk counts; one document if ``doc_id``."""
        where, params = ("AND d.doc_id = ?", (doc_id,)) if doc_id is not None else ("", ())
        rows = self._rows(
            "SELECT d.doc_id, d.title, d.source, d.metadata, d.content_hash, d.created, d.updated, "
            "(SELECT count(*) FROM chunks k WHERE k.document_id = d.id) FROM documents d JOIN collections c "
            f"ON c.id = d.collection_id WHERE c.name = ? {where} ORDER BY d.id LIMIT ? OFFSET ?",
            (name, *params, limit, offset))
        return [{"id": r[0], "title": r[1], "source": r[2], "metadata": json.loads(r[3]), "content_hash": r[4],
                 "created": r[5], "updated": r[6], "chunks": r[7]} for r in rows]
