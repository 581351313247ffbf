"""The queries of a store that searches in its engine (Qdrant), in engine-neutral types: what the retrieval layer
(:mod:`m3search.retrieval.engine`) asks of an :class:`~m3search.store.base.EngineStore`, and what the Qdrant drivers
(:mod:`m3search.store.qdrant.driver`) translate into their library's calls."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from m3search.store.filters import Scalar
from m3search.types import FloatArray, SparseVector

# Named vectors of a set in the engine, and the payload field that carries the chunk text (bm25).
DENSE, SPARSE, COLBERT, TEXT = "dense", "sparse", "colbert", "text"
VectorValue = FloatArray | SparseVector


@dataclass(frozen=True)
class Where:
    """A point filter: metadata filters (on the ``filter`` payload, see :func:`filter_payload`), document ids,
    point ids, and whether a named vector is present."""

    filters: Mapping[str, list[Scalar]] = field(default_factory=dict)
    doc_ids: Sequence[str] | None = None
    ids: Sequence[int] | None = None
    has_vector: str | None = None
    lacks_vector: str | None = None


@dataclass(frozen=True)
class Probe:
    """One scoring stage: nearest neighbours of a vector in a named vector space, or BM25 of a text."""

    using: str
    query: VectorValue | str
    limit: int


@dataclass(frozen=True)
class Query:
    """Prefetch stages, then ``final``: a probe that rescores them (or searches alone). Fusions run in m3search
    (:mod:`m3search.retrieval.fusion`): Qdrant's RRF and DBSF take no per-retriever weights."""

    final: Probe
    limit: int
    prefetch: tuple[Probe, ...] = ()
    where: Where = field(default_factory=Where)
    exact: bool = False
