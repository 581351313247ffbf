"""Copying a collection between stores with its vectors (no re-embedding), then checking the copy's counts."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from m3search.errors import StoreError
from m3search.store.base import Store
from m3search.store.types import EmbeddingSet, PreparedDocument


@dataclass
class MigrationReport:
    """What a copy did, and the counts it checked on both sides."""

    collection: str
    documents: int = 0
    chunks: int = 0
    vectors: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return {"collection": self.collection, "documents": self.documents, "chunks": self.chunks,
                "vectors": self.vectors, "seconds": round(self.seconds, 3)}


def migrate_collection(source: Store, target: Store, name: str, *, batch_docs: int = 64,
                       progress: Callable[..., object] | None = None) -> MigrationReport:
    """Copy collection ``name`` (its active set: model fingerprint, chunk settings, documents, chunks, vectors)
    from ``source`` into ``target``, where it must not exist yet; then compare documents, chunks and vectors.
    ``progress(advance=documents)`` is called after each batch.

    Raises:
        StoreError: the collection exists in ``target``, or the counts differ after the copy (the copy is left in
            place for inspection; delete it with ``m3search delete-collection``).
    """
    start = time.perf_counter()
    active = source.active_set(name)  # CollectionNotFoundError for an unknown one
    if name in target.collections():
        raise StoreError(f"collection '{name}' already exists in the target store; delete it there first")
    chunk_tokens, overlap = source.collection_settings(name)
    copy = target.create_collection(name, active.config, chunk_tokens, overlap)
    report = MigrationReport(name)
    batch: list[PreparedDocument] = []
    for doc in source.export_documents(name):
        batch.append(doc)
        if len(batch) >= batch_docs:
            _write(target, copy, batch, report, progress)
    _write(target, copy, batch, report, progress)
    expected = (*source.counts(name), source.vector_count(active))
    found = (*target.counts(name), target.vector_count(copy))
    if expected != found:
        raise StoreError(f"the copy of '{name}' has {found[0]} documents, {found[1]} chunks and {found[2]} vectors; "
                         f"the source has {expected[0]}, {expected[1]} and {expected[2]}")
    report.vectors = found[2]
    report.seconds = time.perf_counter() - start
    return report


def _write(target: Store, copy: EmbeddingSet, batch: list[PreparedDocument], report: MigrationReport,
           progress: Callable[..., object] | None) -> None:
    if not batch:
        return
    target.write_documents(copy, batch)
    report.documents += len(batch)
    report.chunks += sum(len(d.chunks) for d in batch)
    if progress is not None:
        progress(advance=len(batch))
    batch.clear()
