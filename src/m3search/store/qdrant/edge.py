"""The embedded driver: ``qdrant-edge-py``, Qdrant's Rust shard engine in-process (extra ``qdrant``).

One directory holds everything: ``catalog.json`` (collections, sets and which set is active: the pointer that a
model switch swaps, written by atomic rename) and one shard per set under ``collections/``. One process at a time.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from m3search._optional import require
from m3search.errors import StoreError
from m3search.store.qdrant.driver import Deployment, Layout, Point, numeric, point_from, selection
from m3search.store.queries import COLBERT, DENSE, SPARSE, TEXT, Probe, Query, VectorValue, Where
from m3search.types import SparseVector

_PAGE = 8192
# Points written to a shard after which its optimizers run (segment merges, HNSW build): the embedded engine has
# no background optimizer thread, so the driver runs them here and when the store is closed.
OPTIMIZE_EVERY = 20_000


class EdgeDriver:
    """:class:`~m3search.store.qdrant.driver.Driver` over ``qdrant_edge`` shards in ``root``."""


    def __init__(self, root: Path, deployment: Deployment | None = None) -> None:
        self.deployment = deployment or Deployment()
        self.q = require("qdrant_edge", "qdrant", "the embedded Qdrant store (qdrant+edge://)")
        self.root = root
        try:
            (root / "collections").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot use {root} for an embedded Qdrant store: {exc}") from exc
        self._shards: dict[str, Any] = {}
        self._written: dict[str, int] = {}
        self._lock = threading.Lock()

    # catalog ------------------------------------------------------------------------------------

    def load_catalog(self) -> dict[str, Any] | None:
        path = self.root / "catalog.json"
        try:
            return dict(json.loads(path.read_text("utf-8"))) if path.exists() else None
        except (OSError, ValueError) as exc:
            raise StoreError(f"cannot read {path}: {exc}") from exc

    def save_catalog(self, catalog: dict[str, Any]) -> None:
        """Write to a temporary file, fsync, rename: readers see the old catalog or the new one, never half."""
        path, tmp = self.root / "catalog.json", self.root / "catalog.json.tmp"
        with open(tmp, "w", encoding="utf-8") as out:
            json.dump(catalog, out, sort_keys=True)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)

    # collections --------------------------------------------------------------------------------

    def _shard(self, name: str) -> Any:
        with self._lock:
            if name not in self._shards:
                path = self.root / "collections" / name
                if not path.exists():
                    raise StoreError(f"the Qdrant shard {path} is missing")
                self._shards[name] = self.q.EdgeShard.load(str(path))
            return self._shards[name]

    def create(self, name: str, layout: Layout) -> None:
        q = self.q
        vectors = {}
        quantized = q.ScalarQuantizationConfig(q.ScalarType.Int8, always_ram=True) \
            if self.deployment.quantization == "int8" else None
        if layout.dense_dim:
            vectors[DENSE] = q.EdgeVectorParams(layout.dense_dim, q.Distance.Dot, quantization_config=quantized)
        if layout.colbert_dim:
            vectors[COLBERT] = q.EdgeVectorParams(  # rescoring only: no HNSW graph (m = 0), Qdrant's advice
                layout.colbert_dim, q.Distance.Dot, multivector_config=q.MultiVectorConfig(
                    q.MultiVectorComparator.MaxSim), quantization_config=quantized,
                hnsw_config=q.HnswIndexConfig(m=0, ef_construct=100, full_scan_threshold=10_000))
        sparse = {SPARSE: q.EdgeSparseVectorParams()} if layout.sparse else None
        shard = q.EdgeShard.create(str(self.root / "collections" / name), q.EdgeConfig(  # payload pages in RAM:
            vectors=vectors or None, sparse_vectors=sparse, payload_memory=q.Memory.Cached))  # hits read texts
        shard.update(q.UpdateOperation.create_field_index("doc_id", q.PayloadSchemaType.Keyword))
        shard.update(q.UpdateOperation.create_field_index(TEXT, q.TextIndexParams(
            tokenizer=q.TokenizerType.Word, lowercase=True, scoring=True)))
        with self._lock:
            self._shards[name] = shard

    def drop(self, name: str) -> None:
        with self._lock:
            shard = self._shards.pop(name, None)
            self._written.pop(name, None)
        if shard is not None:
            shard.close()
        shutil.rmtree(self.root / "collections" / name, ignore_errors=True)

    def alias(self, alias: str, name: str) -> None:
        """The catalog's active-set pointer is the alias here (nothing to do in the engine)."""

    def index_field(self, name: str, key: str, kind: Literal["keyword", "float"]) -> None:
        q = self.q
        schema = {"keyword": q.PayloadSchemaType.Keyword, "float": q.PayloadSchemaType.Float}[kind]
        self._shard(name).update(q.UpdateOperation.create_field_index(key, schema))

    # points -------------------------------------------------------------------------------------

    def _vector(self, value: VectorValue) -> Any:
        if isinstance(value, SparseVector):
            return self.q.SparseVector(value.indices.tolist(), value.values.tolist())
        return value.tolist()

    def upsert(self, name: str, points: Sequence[Point]) -> None:
        if not points:
            return
        shard = self._shard(name)
        shard.update(self.q.UpdateOperation.upsert_points([
            self.q.Point(p.id, {k: self._vector(v) for k, v in p.vectors.items()}, p.payload) for p in points]))
        self._written[name] = self._written.get(name, 0) + len(points)
        if self._written[name] >= OPTIMIZE_EVERY:
            self.optimize(name)

    def optimize(self, name: str) -> None:
        """Run the shard's optimizers now (blocking): merged segments, HNSW graphs for indexed search."""
        self._written[name] = 0
        self._shard(name).optimize()

    def delete(self, name: str, where: Where) -> None:
        self._shard(name).update(self.q.UpdateOperation.delete_points_by_filter(self._filter(where)))

    def count(self, name: str, where: Where) -> int:
        return int(self._shard(name).count(self.q.CountRequest(exact=True, filter=self._filter(where))))

    def scroll(self, name: str, where: Where, *, payload: bool | Sequence[str], vectors: bool | Sequence[str],
               start: int | None = None) -> Iterator[Point]:
        shard, offset = self._shard(name), start
        while True:
            records, offset = shard.scroll(self.q.ScrollRequest(
                offset=offset, limit=_PAGE, filter=self._filter(where), with_payload=selection(payload),
                with_vector=selection(vectors)))
            yield from (point_from(r) for r in records)
            if offset is None:
                return

    def retrieve(self, name: str, ids: Sequence[int], *, vectors: bool | Sequence[str]) -> list[Point]:
        records = self._shard(name).retrieve(list(ids), with_payload=True, with_vector=selection(vectors))
        return [point_from(r) for r in records]

    # search -------------------------------------------------------------------------------------

    def _probe(self, probe: Probe) -> Any:
        q = self.q
        if probe.using == TEXT:
            return q.TextQuery(TEXT, str(probe.query))
        assert not isinstance(probe.query, str)
        return q.Query.Nearest(self._vector(probe.query), using=probe.using)

    def query(self, name: str, queries: Sequence[Query]) -> list[list[tuple[int, float]]]:
        """Run ``queries`` in one batch call (one pass through the engine's search pool)."""
        q = self.q
        requests = []
        for query in queries:
            params = q.SearchParams(exact=True) if query.exact else None
            prefetch = [q.Prefetch(p.limit, self._probe(p), params=params) for p in query.prefetch] or None
            final = self._probe(query.final)
            requests.append(q.QueryRequest(limit=query.limit, query=final, prefetches=prefetch, params=params,
                                           filter=self._filter(query.where), with_payload=False))
        found = self._shard(name).query_batch(q.QueryBatchRequest(requests))
        return [[(int(p.id), float(p.score)) for p in points] for points in found]

    def _filter(self, where: Where) -> Any:
        q = self.q
        must: list[Any] = []
        for key, values in where.filters.items():
            path = f"filter.{key}"
            options = [q.IsNullCondition(path) if v is None else
                       q.FieldCondition(path, range=q.RangeFloat(gte=float(v), lte=float(v))) if numeric(v) else
                       q.FieldCondition(path, match=q.MatchValue(v)) for v in values]
            must.append(options[0] if len(options) == 1 else q.Filter(should=options))
        if where.doc_ids is not None:
            must.append(q.FieldCondition("doc_id", match=q.MatchAny(list(where.doc_ids))))
        if where.ids is not None:
            must.append(q.HasIdCondition(set(where.ids)))
        if where.has_vector:
            must.append(q.HasVectorCondition(where.has_vector))
        must_not = [q.HasVectorCondition(where.lacks_vector)] if where.lacks_vector else None
        return q.Filter(must=must or None, must_not=must_not) if must or must_not else None

    def close(self) -> None:
        for name in [n for n, count in self._written.items() if count]:
            self.optimize(name)
        with self._lock:
            shards, self._shards = list(self._shards.values()), {}
        for shard in shards:
            shard.flush()
            shard.close()

