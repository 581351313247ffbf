"""The contract every store implements: SQLite (:mod:`~m3search.store.sqlite`) and Qdrant
(:mod:`~m3search.store.qdrant.store`); :func:`~m3search.store.urls.open_store` opens one by URL."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, Self, TypeGuard

from m3search.errors import DimensionError, ModelMismatchError
from m3search.store.filters import Scalar
from m3search.store.queries import Query
from m3search.store.reads import SparseRows, TermCounts
from m3search.store.types import EmbeddingConfig, EmbeddingSet, Hit, PreparedDocument
from m3search.types import Embedding, FloatArray, IntArray


class StoreBase:
    """What every store does the same way on top of its own ``active_set`` and ``close``: the model check, the
    dimension check of written vectors, and ``with store:``; the defaults of the declared capabilities. First among a
    store's bases."""

    searches_in_engine: bool = False  # True: the store's engine searches and filters (an EngineStore)
    path: Path | None = None  # the database file, for a store that keeps one

    @property
    def ann_dir(self) -> Path | None:
        """Where HNSW graphs of the store's sets are kept: beside its database file (``index.sqlite3.ann/``)."""
        return Path(f"{self.path}.ann") if self.path is not None else None

    def active_set(self, name: str) -> EmbeddingSet:
        raise NotImplementedError  # the store's own

    def close(self) -> None:
        raise NotImplementedError  # the store's own

    def check_model(self, name: str, config: EmbeddingConfig) -> EmbeddingSet:
        """The active set, if it was made by ``config``; else :class:`ModelMismatchError`."""
        active = self.active_set(name)
        if active.config.fingerprint != config.fingerprint:
            raise ModelMismatchError(name, active.config.describe(), config.describe())
        return active

    @staticmethod
    def _check_dim(target: EmbeddingSet, emb: Embedding) -> None:
        if emb.dense is not None and emb.dense.shape[0] != target.config.vector_dim:
            raise DimensionError(f"a {emb.dense.shape[0]}-d vector cannot go into set {target.id} of "
                                 f"'{target.collection}', which holds {target.config.vector_dim}-d vectors")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Store(Protocol):
    """Collections of documents, chunks and vectors, each vector tagged with the configuration that made it.

    Declared capabilities (defaults in :class:`StoreBase`): ``searches_in_engine`` (the store is an
    :class:`EngineStore`: its engine runs searches, not m3search's in-memory indexes), ``path`` (its database file,
    if it keeps one), ``ann_dir`` (where HNSW graphs of its sets go, if anywhere) and per-set options."""

    @property
    def searches_in_engine(self) -> bool: ...

    @property
    def path(self) -> Path | None: ...

    @property
    def ann_dir(self) -> Path | None: ...

    def collections(self) -> list[str]: ...

    def collection_settings(self, name: str) -> tuple[int, int]: ...

    def create_collection(self, name: str, config: EmbeddingConfig, chunk_tokens: int, overlap: int
                          ) -> EmbeddingSet: ...

    def sets(self, name: str) -> list[EmbeddingSet]: ...

    def active_set(self, name: str) -> EmbeddingSet: ...

    def building_set(self, name: str) -> EmbeddingSet | None: ...

    def embedding_set(self, set_id: int) -> EmbeddingSet | None: ...

    def check_model(self, name: str, config: EmbeddingConfig) -> EmbeddingSet: ...

    def start_set(self, name: str, config: EmbeddingConfig) -> EmbeddingSet: ...

    def activate(self, building: EmbeddingSet) -> None: ...

    def gc(self, name: str) -> int: ...

    def content_hashes(self, name: str) -> dict[str, str]: ...

    def write_documents(self, target: EmbeddingSet, docs: Sequence[PreparedDocument]) -> None: ...

    def delete_documents(self, name: str, doc_ids: Sequence[str]) -> int: ...

    def pending(self, target: EmbeddingSet, limit: int) -> list[tuple[int, str]]: ...

    def pending_count(self, target: EmbeddingSet) -> int: ...

    def write_vectors(self, target: EmbeddingSet, rows: Sequence[tuple[int, Embedding]]) -> None: ...

    def dense_matrix(self, target: EmbeddingSet) -> tuple[list[int], FloatArray]: ...

    def hits(self, scored: Sequence[tuple[int, float]], collection: str | None = None) -> list[Hit]: ...

    def generation(self, target: EmbeddingSet) -> int: ...

    def sparse_rows(self, target: EmbeddingSet) -> SparseRows: ...

    def colbert_vectors(self, target: EmbeddingSet, chunk_ids: Sequence[int]) -> dict[int, FloatArray]: ...

    def chunk_metadata(self, name: str) -> tuple[IntArray, list[dict[str, Any]]]: ...

    def term_counts(self, name: str) -> TermCounts: ...

    def filtered_chunk_ids(self, name: str, filters: dict[str, list[Scalar]]) -> IntArray: ...

    def counts(self, name: str) -> tuple[int, int]: ...

    def vector_count(self, target: EmbeddingSet) -> int: ...

    def export_documents(self, name: str) -> Iterator[PreparedDocument]: ...

    def set_options(self, set_id: int) -> dict[str, Any]: ...

    def put_set_options(self, set_id: int, body: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class EngineStore(Store, Protocol):
    """A store that searches in its engine (``searches_in_engine``): the queries of
    :mod:`~m3search.store.queries`, each a ranking of (chunk id, score), best first."""

    def query(self, target: EmbeddingSet, *queries: Query) -> list[list[tuple[int, float]]]: ...


def in_engine(store: Store) -> TypeGuard[EngineStore]:
    """Whether ``store``'s own engine searches (then it is an :class:`EngineStore`)."""
    return store.searches_in_engine


class CatalogStore(Store, Protocol):
    """A store the HTTP API can serve: the contract plus named configurations and listings."""

    def delete_collection(self, name: str) -> None: ...

    def named_configs(self) -> list[dict[str, Any]]: ...

    def named_config(self, name: str) -> dict[str, Any] | None: ...

    def put_named_config(self, name: str, body: dict[str, Any]) -> bool: ...

    def delete_named_config(self, name: str) -> bool: ...

    def documents(self, name: str, limit: int, offset: int, doc_id: str | None = None) -> list[dict[str, Any]]: ...

    def __enter__(self) -> CatalogStore: ...

    def __exit__(self, *exc: object) -> None: ...
