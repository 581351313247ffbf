"""What :class:`~m3search.store.qdrant.store.QdrantStore` asks of a Qdrant engine, in engine-neutral types.

Two drivers implement :class:`Driver`: :mod:`~m3search.store.qdrant.edge` (``qdrant-edge-py``, Qdrant's shard engine
in-process, one directory) and :mod:`~m3search.store.qdrant.client` (``qdrant-client``: a Qdrant server or cluster,
or the client's local mode). The store never touches either library's types.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from m3search.store.filters import Scalar
from m3search.store.queries import SPARSE, Query, VectorValue, Where
from m3search.types import FloatArray, SparseVector


@dataclass(frozen=True)
class Layout:
    """The vectors one Qdrant collection holds: dense (dot product on normalised vectors = cosine), sparse
    (dot product of lexical weights), ColBERT (multivector, MaxSim); the chunk text has a BM25 text index."""

    dense_dim: int | None
    sparse: bool
    colbert_dim: int | None


@dataclass(frozen=True)
class Deployment:
    """How new Qdrant collections are laid out: shards and replicas (a cluster; the embedded engine is one shard),
    and scalar int8 quantization of dense and ColBERT vectors (4x less memory; searches rescore with the originals).
    """

    shards: int = 1
    replicas: int = 1
    quantization: Literal["none", "int8"] = "none"


@dataclass(frozen=True)
class Point:
    """One chunk: its id, payload and whichever named vectors it has (none while its vectors are pending)."""

    id: int
    payload: dict[str, Any]
    vectors: dict[str, VectorValue] = field(default_factory=dict)


class Driver(Protocol):
    """The operations of one Qdrant deployment that the store uses."""

    def load_catalog(self) -> dict[str, Any] | None: ...

    def save_catalog(self, catalog: dict[str, Any]) -> None: ...

    def create(self, name: str, layout: Layout) -> None: ...

    def drop(self, name: str) -> None: ...

    def alias(self, alias: str, name: str) -> None: ...

    def index_field(self, name: str, key: str, kind: Literal["keyword", "float"]) -> None: ...

    def upsert(self, name: str, points: Sequence[Point]) -> None: ...

    def delete(self, name: str, where: Where) -> None: ...

    def count(self, name: str, where: Where) -> int: ...

    def scroll(self, name: str, where: Where, *, payload: bool | Sequence[str], vectors: bool | Sequence[str],
               start: int | None = None) -> Iterator[Point]:
        """Points in id order, from id ``start`` on."""
        ...

    def retrieve(self, name: str, ids: Sequence[int], *, vectors: bool | Sequence[str]) -> list[Point]: ...

    def query(self, name: str, queries: Sequence[Query]) -> list[list[tuple[int, float]]]: ...

    def close(self) -> None: ...


def numeric(value: Scalar) -> bool:
    """Numbers and booleans are matched by range on the ``filter`` payload (so 2 matches 2.0, true matches 1)."""
    return isinstance(value, int | float)


def _filterable(value: Any) -> Scalar:
    return int(value) if isinstance(value, bool) else value


def filter_payload(metadata: Mapping[str, Any]) -> dict[str, Scalar | list[Scalar]]:
    """The payload that filters run on: the metadata's scalars, booleans as 1/0, and lists of its scalars (null
    elements left out), which Qdrant matches element by element.

    This is the SQLite store's semantics (true = 1; a list matches a value it contains; objects match nothing;
    null matches a null value only), and it avoids matching booleans in the engine (qdrant-edge 0.9 matches no
    boolean value).
    """
    payload: dict[str, Scalar | list[Scalar]] = {}
    for key, value in metadata.items():
        if value is None or isinstance(value, str | int | float):
            payload[key] = _filterable(value)
        elif isinstance(value, list):
            payload[key] = [_filterable(v) for v in value if isinstance(v, str | int | float)]
    return payload


def field_kind(values: Sequence[Scalar]) -> Literal["keyword", "float"] | None:
    """The payload index that serves a filter on these values (None when they mix types)."""
    kinds: set[Literal["keyword", "float"]] = {"float" if numeric(v) else "keyword" for v in values if v is not None}
    return kinds.pop() if len(kinds) == 1 else None


def to_array(values: Any) -> FloatArray:
    return np.asarray(values, dtype=np.float32)


def to_sparse(indices: Sequence[int], values: Sequence[float]) -> SparseVector:
    order = np.argsort(np.asarray(indices, dtype=np.int64), kind="stable")
    return SparseVector(np.asarray(indices, dtype=np.int64)[order], np.asarray(values, dtype=np.float32)[order])


def point_from(record: Any) -> Point:
    """A :class:`Point` from a record of either library (both give ``id``, ``payload`` and a dict of vectors whose
    sparse entries have ``indices`` and ``values``)."""
    found: dict[str, VectorValue] = {}
    for key, value in (record.vector or {}).items():
        found[key] = to_sparse(value.indices, value.values) if key == SPARSE else to_array(value)
    return Point(int(record.id), dict(record.payload or {}), found)


def selection(value: bool | Sequence[str]) -> bool | list[str]:
    """``with_payload`` / ``with_vector(s)``: all, nothing, or these names."""
    return value if isinstance(value, bool) else list(value)


def redact(url: str) -> str:
    """``url`` without its password (for messages and logs)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return url.replace(f"{parts.username}:{parts.password}@", f"{parts.username}:***@") if parts.password else url
