"""The Qdrant store's reads: engine searches, hits, bulk vector reads, document listings, and the HTTP API's
catalog (named configurations, set options), all from Qdrant payloads and the store's catalog."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from m3search.errors import StoreError
from m3search.store.filters import Scalar
from m3search.store.qdrant.driver import Driver, field_kind
from m3search.store.queries import COLBERT, DENSE, SPARSE, TEXT, Query, Where
from m3search.store.reads import SparseRows, TermCounts
from m3search.store.types import Chunk, Document, EmbeddingConfig, EmbeddingSet, Hit, PreparedDocument
from m3search.types import Embedding, FloatArray, IntArray

_DOC_FIELDS = ["doc_id", "title", "source", "metadata", "content_hash", "written", "created"]


def config_of(body: dict[str, Any]) -> EmbeddingConfig:
    return EmbeddingConfig(body["model"], body["revision"], int(body["dim"]), body["truncate_dim"],
                           tuple(body["outputs"]), body["quantization"])


def primary(config: EmbeddingConfig) -> str:
    """The named vector whose presence means a chunk is embedded in a set: dense, else sparse."""
    return DENSE if "dense" in config.outputs else SPARSE


class QdrantReads:
    """Read methods of :class:`~m3search.store.qdrant.store.QdrantStore`."""

    driver: Driver
    exact: bool
    _catalog: dict[str, Any]
    _lock: threading.RLock

    def active_set(self, name: str) -> EmbeddingSet:
        raise NotImplementedError  # the store's own

    def check_model(self, name: str, config: EmbeddingConfig) -> EmbeddingSet:
        raise NotImplementedError  # the store's own

    def _save(self) -> None:
        raise NotImplementedError  # the store's own

    @staticmethod
    def qname_of(collection: str, set_id: int) -> str:
        return f"m3_{collection}_{set_id}"

    def qname(self, target: EmbeddingSet) -> str:
        """The Qdrant collection of a set."""
        return self.qname_of(target.collection, target.id)

    def _records(self, name: str) -> str:
        return self.qname(self.active_set(name))

    # searches in the engine ---------------------------------------------------------------------------------

    def query(self, target: EmbeddingSet, *queries: Query) -> list[list[tuple[int, float]]]:
        """Run ``queries`` on ``target``'s collection in one batch; filtered metadata keys get a payload index on
        first use."""
        qname = self.qname(target)
        for query in queries:
            self._index_filters(qname, query.where.filters)
        return self.driver.query(qname, [replace(q, exact=q.exact or self.exact) for q in queries])

    def _index_filters(self, qname: str, filters: dict[str, list[Scalar]] | Any) -> None:
        known = self._catalog["indexed"].setdefault(qname, {})
        kinds = {f"filter.{k}": field_kind(v) for k, v in filters.items() if f"filter.{k}" not in known}
        new = {k: kind for k, kind in kinds.items() if kind is not None}
        if not new:
            return
        with self._lock:
            for key, kind in new.items():
                self.driver.index_field(qname, key, kind)
                known[key] = kind
            self._save()

    def hits(self, scored: Sequence[tuple[int, float]], collection: str | None = None) -> list[Hit]:
        if not scored:
            return []
        if collection is None:
            raise StoreError("a Qdrant store needs the collection to look hits up in")
        found = {p.id: p.payload for p in self.driver.retrieve(self._records(collection), [c for c, _ in scored],
                                                                vectors=False)}
        return [Hit(c, found[c]["doc_id"], float(s), found[c][TEXT], found[c].get("metadata") or {},
                    found[c].get("ordinal"), found[c].get("start"), found[c].get("end"))
                for c, s in scored if c in found]

    # bulk reads -------------------------------------------------------------------------------------------

    def _vectors(self, target: EmbeddingSet, name: str) -> Iterator[tuple[int, Any]]:
        for point in self.driver.scroll(self.qname(target), Where(has_vector=name), payload=["fingerprint"],
                                        vectors=[name]):
            if point.payload.get("fingerprint") != target.config.fingerprint:
                raise StoreError(f"set {target.id} of '{target.collection}' holds vectors of another fingerprint; "
                                 f"run 'm3search reembed --collection {target.collection}'")
            yield point.id, point.vectors[name]

    def dense_matrix(self, target: EmbeddingSet) -> tuple[list[int], FloatArray]:
        rows = list(self._vectors(target, DENSE))
        if not rows:
            return [], np.zeros((0, target.config.vector_dim), dtype=np.float32)
        return [i for i, _ in rows], np.stack([v for _, v in rows]).astype(np.float32)

    def sparse_rows(self, target: EmbeddingSet) -> SparseRows:
        rows = list(self._vectors(target, SPARSE))
        indptr = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum([len(v) for _, v in rows], out=indptr[1:])
        indices = np.concatenate([v.indices for _, v in rows]) if rows else np.zeros(0, dtype=np.int64)
        values = np.concatenate([v.values for _, v in rows]) if rows else np.zeros(0, dtype=np.float32)
        return SparseRows(np.array([i for i, _ in rows], dtype=np.int64), indptr, indices.astype(np.int64),
                          values.astype(np.float32))

    def colbert_vectors(self, target: EmbeddingSet, chunk_ids: Sequence[int]) -> dict[int, FloatArray]:
        if not chunk_ids:
            return {}
        found = self.driver.retrieve(self.qname(target), chunk_ids, vectors=[COLBERT])
        return {p.id: np.asarray(p.vectors[COLBERT], dtype=np.float32) for p in found if COLBERT in p.vectors}

    def term_counts(self, name: str) -> TermCounts:
        raise StoreError("a Qdrant store scores bm25 in the engine; it has no FTS5 term counts")

    def filtered_chunk_ids(self, name: str, filters: dict[str, list[Scalar]]) -> IntArray:
        ids = [p.id for p in self.driver.scroll(self._records(name), Where(filters), payload=False, vectors=False)]
        return np.array(sorted(ids), dtype=np.int64)

    def chunk_metadata(self, name: str) -> tuple[IntArray, list[dict[str, Any]]]:
        points = sorted(self.driver.scroll(self._records(name), Where(), payload=["metadata"], vectors=False),
                        key=lambda p: p.id)
        return np.array([p.id for p in points], dtype=np.int64), [p.payload.get("metadata") or {} for p in points]

    # documents --------------------------------------------------------------------------------------------

    def _documents(self, name: str, where: Where) -> dict[str, dict[str, Any]]:
        """Documents (first chunk's order) with their payload fields and chunk counts."""
        docs: dict[str, dict[str, Any]] = {}
        points = sorted(self.driver.scroll(self._records(name), where, payload=_DOC_FIELDS, vectors=False),
                        key=lambda p: p.id)
        for point in points:
            doc = docs.setdefault(point.payload["doc_id"], {**point.payload, "chunks": 0})
            doc["chunks"] += 1
        return docs

    def counts(self, name: str) -> tuple[int, int]:
        records = self._records(name)
        documents = {p.payload["doc_id"] for p in self.driver.scroll(records, Where(), payload=["doc_id"],
                                                                      vectors=False)}
        return len(documents), self.driver.count(records, Where())

    def content_hashes(self, name: str) -> dict[str, str]:
        return {p.payload["doc_id"]: p.payload["content_hash"] for p in self.driver.scroll(
            self._records(name), Where(), payload=["doc_id", "content_hash"], vectors=False)}

    def documents(self, name: str, limit: int, offset: int, doc_id: str | None = None) -> list[dict[str, Any]]:
        """Documents of ``name`` in the order they were first written, with chunk counts (the SQLite listing)."""
        docs = list(self._documents(name, Where(doc_ids=[doc_id] if doc_id is not None else None)).values())
        return [{"id": d["doc_id"], "title": d["title"], "source": d["source"], "metadata": d["metadata"],
                 "content_hash": d["content_hash"], "created": d.get("created") or d["written"],
                 "updated": d["written"],
                 "chunks": d["chunks"]} for d in docs[offset: offset + limit]]

    def export_documents(self, name: str) -> Iterator[PreparedDocument]:
        """Every document of ``name`` with its chunks and active-set vectors (for ``migrate-store``)."""
        active = self.active_set(name)
        wanted = [v for v in (DENSE, SPARSE, COLBERT) if v in active.config.outputs]
        points = sorted(self.driver.scroll(self.qname(active), Where(), payload=True, vectors=wanted),
                        key=lambda p: p.id)
        by_doc: dict[str, list[Any]] = {}
        for point in points:
            by_doc.setdefault(point.payload["doc_id"], []).append(point)
        for doc_id, chunks in by_doc.items():
            first = chunks[0].payload
            chunks.sort(key=lambda p: p.payload["ordinal"])
            yield PreparedDocument(
                Document(doc_id, "", first["source"], first["title"], first["metadata"] or {}, first["content_hash"]),
                [Chunk(p.payload["ordinal"], p.payload[TEXT], p.payload["start"], p.payload["end"],
                       p.payload["tokens"]) for p in chunks],
                [Embedding(p.payload["tokens"], False, p.vectors.get(DENSE), p.vectors.get(SPARSE),
                           p.vectors.get(COLBERT)) for p in chunks])

    # the HTTP API's catalog -------------------------------------------------------------------------------

    def named_configs(self) -> list[dict[str, Any]]:
        return [dict(body) for _, body in sorted(self._catalog["named_configs"].items())]

    def named_config(self, name: str) -> dict[str, Any] | None:
        found = self._catalog["named_configs"].get(name)
        return dict(found) if found is not None else None

    def put_named_config(self, name: str, body: dict[str, Any]) -> bool:
        with self._lock:
            new = name not in self._catalog["named_configs"]
            self._catalog["named_configs"][name] = body
            self._save()
        return new

    def delete_named_config(self, name: str) -> bool:
        with self._lock:
            found = self._catalog["named_configs"].pop(name, None) is not None
            self._save()
        return found

    def set_options(self, set_id: int) -> dict[str, Any]:
        return dict(self._catalog["set_options"].get(str(set_id), {}))

    def put_set_options(self, set_id: int, body: dict[str, Any]) -> None:
        with self._lock:
            self._catalog["set_options"][str(set_id)] = body
            self._save()
