"""The Qdrant store: the :class:`~m3search.store.base.Store` contract over an embedded engine or a server/cluster.

Layout: every embedding set is one Qdrant collection ``m3_<collection>_<set id>`` with named vectors ``dense``
(dot product of normalised vectors = cosine), ``sparse`` (BGE-M3/SPLADE weights) and, when stored, ``colbert``
(multivector, MaxSim). A point is a chunk: its payload carries document id, source, title, content hash, metadata,
chunk text (with a BM25 text index), ordinal, character offsets, token count and the set's fingerprint.

The active set's collection is the record of the collection's documents: every chunk is there, with its vectors
or (pending) without. A model change fills a building set's collection from those records, then swaps the active
pointer (the catalog; with a server also the alias ``m3_<collection>``), so searches switch in one step.

A write is upsert-then-delete per batch (Qdrant has no multi-point transactions): new chunks are visible before
the document's old chunks go, so a document is never missing; a crash between the two leaves old chunks that the
next write of that document removes. One writing process at a time: the catalog is cached in the process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from copy import deepcopy
from typing import Any

from m3search.errors import CollectionNotFoundError, StoreError
from m3search.store.base import StoreBase
from m3search.store.qdrant.driver import Driver, Layout, Point, filter_payload
from m3search.store.qdrant.records import QdrantReads, config_of, primary
from m3search.store.queries import COLBERT, DENSE, SPARSE, TEXT, Where
from m3search.store.types import EmbeddingConfig, EmbeddingSet, PreparedDocument
from m3search.types import Embedding

_EMPTY: dict[str, Any] = {"version": 1, "next_chunk": 1, "next_set": 1, "collections": {}, "sets": {},
                          "named_configs": {}, "set_options": {}, "indexed": {}}


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())


class QdrantStore(StoreBase, QdrantReads):
    """A store whose vectors, payloads and searches live in Qdrant (see the module's description)."""

    searches_in_engine = True

    def __init__(self, driver: Driver, *, exact: bool = False) -> None:
        self.driver = driver
        self.exact = exact  # exact (brute-force) searches instead of HNSW: the contract tests compare results
        self._lock = threading.RLock()
        self._catalog = driver.load_catalog() or deepcopy(_EMPTY)
        self._generations: dict[int, int] = {}
        self._cursor: dict[int, int] = {}  # per set: every chunk id below is embedded (see pending)
        self._handed_out: dict[int, list[int]] = {}  # per set: the ids the last pending() returned

    def close(self) -> None:
        self.driver.close()

    def _save(self) -> None:
        self.driver.save_catalog(self._catalog)

    # collections and sets ------------------------------------------------------------------------

    def collections(self) -> list[str]:
        with self._lock:
            return sorted(self._catalog["collections"])

    def collection_settings(self, name: str) -> tuple[int, int]:
        found = self._catalog["collections"].get(name)
        if found is None:
            raise CollectionNotFoundError(name)
        return int(found["chunk_tokens"]), int(found["overlap"])

    def _new_set(self, name: str, config: EmbeddingConfig, status: str) -> int:
        set_id = int(self._catalog["next_set"])
        self._catalog["next_set"] = set_id + 1
        colbert = config.dim if "colbert" in config.outputs else None
        self.driver.create(self.qname_of(name, set_id), Layout(
            config.vector_dim if "dense" in config.outputs else None, "sparse" in config.outputs, colbert))
        self._catalog["sets"][str(set_id)] = {
            "collection": name, "status": status, "created": _now(), "activated": None, "retired": None,
            "config": {"model": config.model, "revision": config.revision, "dim": config.dim,
                       "truncate_dim": config.truncate_dim, "outputs": list(config.outputs),
                       "quantization": config.quantization}}
        return set_id

    def create_collection(self, name: str, config: EmbeddingConfig, chunk_tokens: int, overlap: int) -> EmbeddingSet:
        if not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise StoreError(f"collection names use letters, digits, '-', '_' and '.', not {name!r}")
        with self._lock:
            if name in self._catalog["collections"]:
                raise StoreError(f"collection '{name}' already exists")
            set_id = self._new_set(name, config, "active")
            self._catalog["sets"][str(set_id)]["activated"] = _now()
            self._catalog["collections"][name] = {"chunk_tokens": chunk_tokens, "overlap": overlap,
                                                  "created": _now()}
            self._save()
            self.driver.alias(f"m3_{name}", self.qname_of(name, set_id))
        return self.active_set(name)

    def delete_collection(self, name: str) -> None:
        self.collection_settings(name)
        with self._lock:
            for found in self.sets(name):
                self._drop_set(found)
            del self._catalog["collections"][name]
            self._save()

    def _drop_set(self, found: EmbeddingSet) -> None:
        qname = self.qname(found)
        self._catalog["sets"].pop(str(found.id), None)
        self._catalog["set_options"].pop(str(found.id), None)
        self._catalog["indexed"].pop(qname, None)
        self.driver.drop(qname)

    def sets(self, name: str) -> list[EmbeddingSet]:
        self.collection_settings(name)
        with self._lock:  # a writer thread may be adding a set
            found = sorted(self._catalog["sets"].items(), key=lambda x: int(x[0]))
        return [self._set(int(i), s) for i, s in found if s["collection"] == name]

    @staticmethod
    def _set(set_id: int, body: dict[str, Any]) -> EmbeddingSet:
        return EmbeddingSet(set_id, body["collection"], config_of(body["config"]), body["status"])

    def _find(self, name: str, status: str) -> EmbeddingSet | None:
        found = [s for s in self.sets(name) if s.status == status]
        return found[0] if found else None

    def active_set(self, name: str) -> EmbeddingSet:
        found = self._find(name, "active")
        if found is None:
            raise CollectionNotFoundError(name)
        return found

    def building_set(self, name: str) -> EmbeddingSet | None:
        return self._find(name, "building")

    def embedding_set(self, set_id: int) -> EmbeddingSet | None:
        body = self._catalog["sets"].get(str(set_id))
        return self._set(set_id, body) if body is not None else None

    def start_set(self, name: str, config: EmbeddingConfig) -> EmbeddingSet:
        """A building set (a new Qdrant collection) of ``config``: resumed if it exists, else created."""
        if self.active_set(name).config.fingerprint == config.fingerprint:
            raise StoreError(f"collection '{name}' already uses {config.describe()}")
        with self._lock:
            building = self.building_set(name)
            if building is not None and building.config.fingerprint == config.fingerprint:
                return building
            if building is not None:
                self._drop_set(building)
            set_id = self._new_set(name, config, "building")
            self._save()
        result = self.embedding_set(set_id)
        assert result is not None
        return result

    def activate(self, building: EmbeddingSet) -> None:
        """Swap the pointer (catalog, and the alias on a server) from the active set to a complete building one."""
        with self._lock:
            if self.pending_count(building) > 0:
                raise StoreError(f"set {building.id} of '{building.collection}' is not complete")
            old = self.active_set(building.collection)
            self._catalog["sets"][str(old.id)].update(status="retired", retired=_now())
            self._catalog["sets"][str(building.id)].update(status="active", activated=_now())
            self._save()
            self.driver.alias(f"m3_{building.collection}", self.qname(building))

    def gc(self, name: str) -> int:
        retired = [s for s in self.sets(name) if s.status == "retired"]
        with self._lock:
            for old in retired:
                self._drop_set(old)
            self._save()
        return len(retired)

    # documents -----------------------------------------------------------------------------------

    def _live(self, name: str) -> list[EmbeddingSet]:
        return [s for s in self.sets(name) if s.status != "retired"]

    def _allocate(self, count: int) -> int:
        first = int(self._catalog["next_chunk"])
        self._catalog["next_chunk"] = first + count
        self._save()
        return first

    def write_documents(self, target: EmbeddingSet, docs: Sequence[PreparedDocument]) -> None:
        """Chunks into the active set's collection (the records), vectors into ``target``'s; then the documents'
        previous chunks are deleted from every live set."""
        for doc in docs:
            for emb in doc.embeddings:
                self._check_dim(target, emb)
        with self._lock:
            active = self.active_set(target.collection)
            fingerprint = target.config.fingerprint
            chunk_id = self._allocate(sum(len(d.chunks) for d in docs))
            records, vectors, fresh = [], [], []
            now = _now()
            known = self._documents(target.collection, Where(doc_ids=[d.document.doc_id for d in docs]))
            for doc in docs:
                d = doc.document
                old = known.get(d.doc_id)  # a replaced document keeps its creation time
                created = (old.get("created") or old["written"]) if old is not None else now
                for chunk, emb in zip(doc.chunks, doc.embeddings, strict=True):
                    payload = {"doc_id": d.doc_id, "source": d.source, "title": d.title,
                               "content_hash": d.content_hash, "metadata": d.metadata,
                               "filter": filter_payload(d.metadata), TEXT: chunk.text,
                               "ordinal": chunk.ordinal, "start": chunk.start, "end": chunk.end,
                               "tokens": chunk.tokens, "fingerprint": fingerprint, "written": now,
                               "created": created}
                    point = Point(chunk_id, payload, _vectors(emb, target.config.outputs))
                    fresh.append(chunk_id)
                    chunk_id += 1
                    if target.id == active.id:
                        records.append(point)
                    else:
                        records.append(Point(point.id, {**payload, "fingerprint": active.config.fingerprint}))
                        vectors.append(point)
            self.driver.upsert(self.qname(active), records)
            if vectors:
                self.driver.upsert(self.qname(target), vectors)
            self._remove_old(target.collection, [d.document.doc_id for d in docs], fresh)
            self._bump(target.collection)

    def _remove_old(self, name: str, doc_ids: Sequence[str], keep: Sequence[int]) -> None:
        if not doc_ids:
            return
        kept = set(keep)
        for live in self._live(name):
            qname = self.qname(live)
            old = [p.id for p in self.driver.scroll(qname, Where(doc_ids=doc_ids), payload=False, vectors=False)
                   if p.id not in kept]
            if old:
                self.driver.delete(qname, Where(ids=old))

    def delete_documents(self, name: str, doc_ids: Sequence[str]) -> int:
        self.collection_settings(name)
        if not doc_ids:
            return 0
        with self._lock:
            records = self.qname(self.active_set(name))
            existed = {p.payload["doc_id"] for p in self.driver.scroll(
                records, Where(doc_ids=doc_ids), payload=["doc_id"], vectors=False)}
            for live in self._live(name):
                self.driver.delete(self.qname(live), Where(doc_ids=doc_ids))
            self._bump(name)
        return len(existed)

    def _bump(self, name: str) -> None:
        for found in self.sets(name):
            self._generations[found.id] = self._generations.get(found.id, 0) + 1

    def generation(self, target: EmbeddingSet) -> int:
        if str(target.id) not in self._catalog["sets"]:
            raise StoreError(f"set {target.id} of '{target.collection}' no longer exists")
        return self._generations.get(target.id, 0)

    # vectors -------------------------------------------------------------------------------------

    def pending(self, target: EmbeddingSet, limit: int) -> list[tuple[int, str]]:
        """Up to ``limit`` (chunk id, text) of the records without a vector in ``target``, by chunk id.

        Scans from a per-set cursor: when the previous batch was written in full, every chunk id below its last one
        is done, so a re-embedding of n chunks reads each id about once instead of once per batch.
        """
        records = self.qname(self.active_set(target.collection))
        start = self._cursor.get(target.id)
        where, done = Where(lacks_vector=primary(target.config)), set[int]()
        if self.qname(target) != records:
            where, done = Where(), {p.id for p in self.driver.scroll(
                self.qname(target), Where(has_vector=primary(target.config)), payload=False, vectors=False,
                start=start)}
        found: list[tuple[int, str]] = []
        for point in self.driver.scroll(records, where, payload=[TEXT], vectors=False, start=start):
            if point.id not in done:
                found.append((point.id, str(point.payload.get(TEXT, ""))))
                if len(found) >= limit:
                    break
        self._handed_out[target.id] = [i for i, _ in found]
        return found

    def pending_count(self, target: EmbeddingSet) -> int:
        records = self.qname(self.active_set(target.collection))
        if self.qname(target) == records:
            return self.driver.count(records, Where(lacks_vector=primary(target.config)))
        return self.driver.count(records, Where()) - self.vector_count(target)

    def write_vectors(self, target: EmbeddingSet, rows: Sequence[tuple[int, Embedding]]) -> None:
        """Vectors of existing chunks into ``target``, with the chunk's payload (chunks deleted meanwhile are
        skipped)."""
        for _, emb in rows:
            self._check_dim(target, emb)
        with self._lock:
            records = self.qname(self.active_set(target.collection))
            payloads = {p.id: p.payload for p in self.driver.retrieve(records, [c for c, _ in rows], vectors=False)}
            config = target.config
            self.driver.upsert(self.qname(target), [
                Point(c, {**payloads[c], "fingerprint": config.fingerprint}, _vectors(emb, config.outputs))
                for c, emb in rows if c in payloads])
            self._generations[target.id] = self._generations.get(target.id, 0) + 1
            handed = self._handed_out.pop(target.id, [])
            if handed and set(handed) <= {c for c, _ in rows}:  # the whole last batch: all ids below it are done
                self._cursor[target.id] = max(handed) + 1

    def vector_count(self, target: EmbeddingSet) -> int:
        return self.driver.count(self.qname(target), Where(has_vector=primary(target.config)))


def _vectors(emb: Embedding, outputs: tuple[str, ...]) -> dict[str, Any]:
    """The named vectors of ``emb`` that the set holds (a collection has no space for other outputs)."""
    found: dict[str, Any] = {}
    if emb.dense is not None and "dense" in outputs:
        found[DENSE] = emb.dense
    if emb.sparse is not None and "sparse" in outputs:
        found[SPARSE] = emb.sparse
    if emb.colbert is not None and "colbert" in outputs:
        found[COLBERT] = emb.colbert
    return found
