"""The client driver: ``qdrant-client`` against a Qdrant server or cluster (``http(s)://``), or the client's local
mode (``qdrant+local://``: Qdrant's pure-Python test double, not the engine; for tests and small experiments).

The catalog (collections, sets, the active set of each) is one point's payload in the ``m3search_catalog``
collection; the active set of collection ``name`` is also reachable through the alias ``m3_<name>``, which a
model switch moves in one atomic ``update_collection_aliases`` call.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, Literal

from m3search._optional import require
from m3search.errors import StoreError
from m3search.store.qdrant.driver import Deployment, Layout, Point, numeric, point_from, redact, selection
from m3search.store.queries import COLBERT, DENSE, SPARSE, TEXT, Probe, Query, VectorValue, Where
from m3search.types import SparseVector

CATALOG = "m3search_catalog"
_PAGE = 8192


class ClientDriver:
    """:class:`~m3search.store.qdrant.driver.Driver` over a ``QdrantClient``."""


    def __init__(self, *, url: str | None = None, path: str | None = None, api_key: str | None = None,
                 timeout: float = 30.0, deployment: Deployment | None = None) -> None:
        self.deployment = deployment or Deployment()
        client = require("qdrant_client", "qdrant", "Qdrant server stores (http(s)://)")
        self.m = require("qdrant_client.models", "qdrant", "Qdrant server stores (http(s)://)")
        self.local = path is not None  # local mode always searches exhaustively (and warns about params)
        try:
            with warnings.catch_warnings():  # an unreachable server is reported once, as a StoreError, below
                warnings.filterwarnings("ignore", message="Failed to obtain server version")
                self.client = (client.QdrantClient(path=path) if path is not None else
                               client.QdrantClient(url=url, api_key=api_key, timeout=int(timeout)))
            self._has_catalog = self.client.collection_exists(CATALOG)
        except Exception as exc:  # connection refused, bad URL, TLS: the client raises many kinds
            raise StoreError(f"cannot reach Qdrant at {redact(url) if url else path}: "
                             f"{str(exc).replace(url or '', redact(url or ''))}") from exc

    # catalog ------------------------------------------------------------------------------------

    def load_catalog(self) -> dict[str, Any] | None:
        if not self._has_catalog:
            return None
        found = self.client.retrieve(CATALOG, [0], with_payload=True)
        return dict(json.loads(found[0].payload["catalog"])) if found else None

    def save_catalog(self, catalog: dict[str, Any]) -> None:
        """One point's upsert: atomic in Qdrant (``wait=True``: visible when this returns)."""
        m = self.m
        if not self._has_catalog:
            self.client.create_collection(CATALOG, vectors_config={"none": m.VectorParams(size=1,
                                                                                           distance=m.Distance.DOT)})
            self._has_catalog = True
        self.client.upsert(CATALOG, [m.PointStruct(id=0, vector={"none": [0.0]}, payload={
            "catalog": json.dumps(catalog, sort_keys=True)})], wait=True)

    # collections --------------------------------------------------------------------------------

    def create(self, name: str, layout: Layout) -> None:
        m = self.m
        vectors = {}
        quantized = m.ScalarQuantization(scalar=m.ScalarQuantizationConfig(type=m.ScalarType.INT8, always_ram=True)) \
            if self.deployment.quantization == "int8" else None
        if layout.dense_dim:
            vectors[DENSE] = m.VectorParams(size=layout.dense_dim, distance=m.Distance.DOT,
                                            quantization_config=quantized)
        if layout.colbert_dim:
            vectors[COLBERT] = m.VectorParams(  # rescoring only: no HNSW graph (m = 0), Qdrant's advice
                size=layout.colbert_dim, distance=m.Distance.DOT, quantization_config=quantized,
                multivector_config=m.MultiVectorConfig(comparator=m.MultiVectorComparator.MAX_SIM),
                hnsw_config=m.HnswConfigDiff(m=0))
        sparse = {SPARSE: m.SparseVectorParams()} if layout.sparse else None
        cluster = {} if self.local else {"shard_number": self.deployment.shards,
                                         "replication_factor": self.deployment.replicas}
        self.client.create_collection(name, vectors_config=vectors, sparse_vectors_config=sparse, **cluster)
        self._index(name, "doc_id", m.PayloadSchemaType.KEYWORD)
        self._index(name, TEXT, m.TextIndexParams(type=m.TextIndexType.TEXT, tokenizer=m.TokenizerType.WORD,
                                                  lowercase=True, scoring=True))

    def _index(self, name: str, key: str, schema: Any) -> None:
        with warnings.catch_warnings():  # local mode warns that it ignores payload indexes
            warnings.simplefilter("ignore", UserWarning)
            self.client.create_payload_index(name, key, schema, wait=True)

    def drop(self, name: str) -> None:
        self.client.delete_collection(name)

    def alias(self, alias: str, name: str) -> None:
        """Point ``alias`` at ``name``: delete and create in one request, so readers never see it missing."""
        m = self.m
        existing = {a.alias_name for a in self.client.get_aliases().aliases}
        actions: list[Any] = [m.DeleteAliasOperation(delete_alias=m.DeleteAlias(alias_name=alias))] \
            if alias in existing else []
        actions.append(m.CreateAliasOperation(create_alias=m.CreateAlias(collection_name=name, alias_name=alias)))
        self.client.update_collection_aliases(actions)

    def index_field(self, name: str, key: str, kind: Literal["keyword", "float"]) -> None:
        m = self.m
        self._index(name, key, {"keyword": m.PayloadSchemaType.KEYWORD, "float": m.PayloadSchemaType.FLOAT}[kind])

    # points -------------------------------------------------------------------------------------

    def _vector(self, value: VectorValue) -> Any:
        if isinstance(value, SparseVector):
            return self.m.SparseVector(indices=value.indices.tolist(), values=value.values.tolist())
        return value.tolist()

    def upsert(self, name: str, points: Sequence[Point]) -> None:
        if points:
            self.client.upsert(name, [self.m.PointStruct(id=p.id, payload=p.payload, vector={
                k: self._vector(v) for k, v in p.vectors.items()}) for p in points], wait=True)

    def delete(self, name: str, where: Where) -> None:
        self.client.delete(name, self.m.FilterSelector(filter=self._filter(where)), wait=True)

    def count(self, name: str, where: Where) -> int:
        return int(self.client.count(name, count_filter=self._filter(where), exact=True).count)

    def scroll(self, name: str, where: Where, *, payload: bool | Sequence[str], vectors: bool | Sequence[str],
               start: int | None = None) -> Iterator[Point]:
        offset = start
        while True:
            records, offset = self.client.scroll(name, scroll_filter=self._filter(where), limit=_PAGE, offset=offset,
                                                 with_payload=selection(payload), with_vectors=selection(vectors))
            yield from (point_from(r) for r in records)
            if offset is None:
                return

    def retrieve(self, name: str, ids: Sequence[int], *, vectors: bool | Sequence[str]) -> list[Point]:
        return [point_from(r) for r in self.client.retrieve(name, list(ids), with_payload=True,
                                                              with_vectors=selection(vectors))]

    # search -------------------------------------------------------------------------------------

    def _probe(self, probe: Probe) -> tuple[Any, str]:
        if probe.using == TEXT:
            return self.m.TextQuery(text=str(probe.query)), TEXT
        assert not isinstance(probe.query, str)
        return self._vector(probe.query), probe.using

    def query(self, name: str, queries: Sequence[Query]) -> list[list[tuple[int, float]]]:
        """Run ``queries`` in one ``query_batch_points`` request."""
        m = self.m
        requests = []
        for query in queries:
            params = m.SearchParams(exact=True) if query.exact and not self.local else None
            prefetch = []
            for probe in query.prefetch:
                vector, space = self._probe(probe)
                prefetch.append(m.Prefetch(query=vector, using=space, limit=probe.limit, params=params))
            final, using = self._probe(query.final)
            requests.append(m.QueryRequest(query=final, using=using, prefetch=prefetch or None, limit=query.limit,
                                           filter=self._filter(query.where), params=params, with_payload=False))
        found = self.client.query_batch_points(name, requests=requests)
        return [[(int(p.id), float(p.score)) for p in response.points] for response in found]

    def _filter(self, where: Where) -> Any:
        m = self.m
        must: list[Any] = []
        for key, values in where.filters.items():
            path = f"filter.{key}"
            options = [m.IsNullCondition(is_null=m.PayloadField(key=path)) if v is None else
                       m.FieldCondition(key=path, range=m.Range(gte=float(v), lte=float(v))) if numeric(v) else
                       m.FieldCondition(key=path, match=m.MatchValue(value=v)) for v in values]
            must.append(options[0] if len(options) == 1 else m.Filter(should=options))
        if where.doc_ids is not None:
            must.append(m.FieldCondition(key="doc_id", match=m.MatchAny(any=list(where.doc_ids))))
        if where.ids is not None:
            must.append(m.HasIdCondition(has_id=list(where.ids)))
        if where.has_vector:
            must.append(m.HasVectorCondition(has_vector=where.has_vector))
        must_not = [m.HasVectorCondition(has_vector=where.lacks_vector)] if where.lacks_vector else None
        return m.Filter(must=must or None, must_not=must_not) if must or must_not else None

    def close(self) -> None:
        self.client.close()

